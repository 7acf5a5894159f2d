//! The Dockerfile, Singularity definition file and conda environment file of a request.
//!
//! Users read these, build them elsewhere, and kiln hashes them into the image key, so they are
//! plain, stable texts: no dates, no host paths, no kiln version (only the recipe format
//! version). Templates live in `recipes/`. Package entries arrive here already validated and
//! are written in their canonical form. [`definition_containerfile`] writes the Containerfile a
//! definition file sent to the remote builder is built with. Depends on `spec` only.

pub mod definition_containerfile;

use askama::Template;

use crate::spec::{Format, IMAGE_FORMAT_VERSION, ImageRef, RegistryHost, Request};

/// The images recipes start from. They come from kiln's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeImages {
    /// The image with micromamba that solves and installs conda environments.
    pub micromamba: ImageRef,
    /// The image conda environments are copied onto.
    pub conda_base: ImageRef,
    /// The image with Python and pip that pip-only requests install onto.
    pub python_base: ImageRef,
    /// kiln's registry, which a base the request names (`kiln/base/gl:bookworm`) is pulled
    /// from; `None` names such a base without a host, as the definition files stored in SIFs
    /// name kiln's own images.
    pub registry: Option<RegistryHost>,
}

impl RecipeImages {
    /// The base the request names, as recipes pull it, if it names one: it replaces both the
    /// conda and the Python base.
    fn named_base(&self, request: &Request) -> Option<String> {
        let base = request.base()?;
        Some(match &self.registry {
            Some(registry) => format!("{registry}/{base}"),
            None => base.to_string(),
        })
    }
}

/// The three generated texts of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipes {
    /// The Dockerfile; builds with docker, podman or buildah next to `conda.yml`.
    pub dockerfile: String,
    /// The Singularity/Apptainer definition file; builds next to `conda.yml`.
    pub singularity: String,
    /// The conda environment file (`conda.yml`).
    pub environment: String,
}

/// A template failed to render (a bug in a template, not in the request).
#[derive(Debug, thiserror::Error)]
#[error("the {recipe} template failed to render")]
pub struct RecipeError {
    recipe: &'static str,
    #[source]
    source: askama::Error,
}

impl Recipes {
    /// Renders every recipe of `request`.
    ///
    /// Requests with conda packages install them with micromamba (pip packages of a mixed
    /// request go through the environment file's `pip:` section); pip-only requests install
    /// with pip onto the Python base image. A base the request names replaces either.
    pub fn render(request: &Request, images: &RecipeImages) -> Result<Recipes, RecipeError> {
        let named_base = images.named_base(request);
        let pip: Vec<String> = request.pip_entries().map(pip_requirement).collect();
        let environment = render(
            "conda environment",
            &EnvironmentFile {
                channels: request.channels().iter().map(ToString::to_string).collect(),
                conda: request.conda_entries().map(ToString::to_string).collect(),
                pip: pip.iter().map(|r| yaml_scalar(r)).collect(),
            },
        )?;
        let (dockerfile, singularity) = if request.has_conda() {
            let conda = CondaRecipe {
                format_version: IMAGE_FORMAT_VERSION,
                micromamba_image: images.micromamba.as_str(),
                base_image: named_base.as_deref().unwrap_or(images.conda_base.as_str()),
            };
            (
                render("conda Dockerfile", &CondaDockerfile { r: conda })?,
                render("conda definition file", &CondaDefinition { r: conda })?,
            )
        } else {
            let pip = PipRecipe {
                format_version: IMAGE_FORMAT_VERSION,
                base_image: named_base.as_deref().unwrap_or(images.python_base.as_str()),
                requirements: &pip,
            };
            (
                render("pip Dockerfile", &PipDockerfile { r: pip })?,
                render("pip definition file", &PipDefinition { r: pip })?,
            )
        };
        Ok(Recipes {
            dockerfile,
            singularity,
            environment,
        })
    }

    /// The recipe that builds an image of `format`: the Dockerfile or the definition file.
    pub fn for_format(&self, format: Format) -> &str {
        match format {
            Format::Docker => &self.dockerfile,
            Format::Sif => &self.singularity,
        }
    }
}

fn render(recipe: &'static str, template: &impl Template) -> Result<String, RecipeError> {
    let mut text = template
        .render()
        .map_err(|source| RecipeError { recipe, source })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A pip entry as pip reads it: the canonical requirement without kiln's `pip:` prefix.
fn pip_requirement(entry: &crate::spec::PackageEntry) -> String {
    let text = entry.to_string();
    text.strip_prefix("pip:").unwrap_or(&text).to_owned()
}

/// Requirements with a marker contain `: `-free text but also spaces and quotes; a YAML
/// double-quoted scalar holds them safely (validation already refused `"` and `\`).
fn yaml_scalar(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "=<>!~.,*_-[]".contains(c))
    {
        text.to_owned()
    } else {
        format!("\"{text}\"")
    }
}

/// The fields of both conda recipes.
#[derive(Debug, Clone, Copy)]
struct CondaRecipe<'a> {
    format_version: u32,
    micromamba_image: &'a str,
    base_image: &'a str,
}

/// The fields of both pip recipes.
#[derive(Debug, Clone, Copy)]
struct PipRecipe<'a> {
    format_version: u32,
    base_image: &'a str,
    requirements: &'a [String],
}

#[derive(Template, Debug)]
#[template(path = "conda.Dockerfile", escape = "none")]
struct CondaDockerfile<'a> {
    r: CondaRecipe<'a>,
}

#[derive(Template, Debug)]
#[template(path = "conda.def", escape = "none")]
struct CondaDefinition<'a> {
    r: CondaRecipe<'a>,
}

#[derive(Template, Debug)]
#[template(path = "pip.Dockerfile", escape = "none")]
struct PipDockerfile<'a> {
    r: PipRecipe<'a>,
}

#[derive(Template, Debug)]
#[template(path = "pip.def", escape = "none")]
struct PipDefinition<'a> {
    r: PipRecipe<'a>,
}

#[derive(Template, Debug)]
#[template(path = "conda.yml", escape = "none")]
struct EnvironmentFile {
    channels: Vec<String>,
    conda: Vec<String>,
    pip: Vec<String>,
}
