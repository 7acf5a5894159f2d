//! What kiln would build, and under which key and image name: every build's key and name is
//! made here, for package requests (with their recipes, so that the name always matches the
//! texts it was hashed from), users' Dockerfiles and users' definition files.

use sha2::{Digest as _, Sha256};

use crate::recipe::{RecipeError, RecipeImages, Recipes};
use crate::spec::{
    BuildJob, DefinitionJob, DockerfileJob, Format, ImageKey, ImageName, KeyInputs, Platform,
    RegistryHost, Request,
};
use crate::store::NewBuild;

/// One image to build: a docker request gives one (a multi-platform index), a sif request one
/// per platform, since a SIF file holds a single architecture.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The request this image is for, narrowed to one platform for sif.
    pub request: Request,
    /// The generated recipes.
    pub recipes: Recipes,
    /// The sha256 key.
    pub key: ImageKey,
    /// Where the image lives.
    pub image: ImageName,
}

impl ImagePlan {
    /// Plans the images of `request`.
    pub fn for_request(
        request: &Request,
        images: &RecipeImages,
        registry: &RegistryHost,
    ) -> Result<Vec<ImagePlan>, RecipeError> {
        let recipes = Recipes::render(request, images)?;
        let requests = match request.format() {
            Format::Docker => vec![request.clone()],
            Format::Sif => request
                .platforms()
                .iter()
                .map(|platform| request.for_platform(*platform))
                .collect(),
        };
        let namespace = ImageName::namespace(registry);
        Ok(requests
            .into_iter()
            .map(|request| {
                let key = ImageKey::compute(&KeyInputs {
                    recipe: recipes.for_format(request.format()),
                    environment: &recipes.environment,
                    platforms: request.platforms(),
                    repository: &namespace,
                });
                let image = ImageName::new(registry, &request, &key);
                ImagePlan {
                    request,
                    recipes: recipes.clone(),
                    key,
                    image,
                }
            })
            .collect())
    }
}

impl ImagePlan {
    /// The store record that builds this image.
    pub fn new_build(&self) -> NewBuild {
        NewBuild {
            key: self.key.clone(),
            image: self.image.clone(),
            job: BuildJob::Native(self.request.clone()),
            containerfile: self.recipes.for_format(self.request.format()).to_owned(),
            environment: self.recipes.environment.clone(),
        }
    }
}

/// The build of a user's Dockerfile `text` for `platform`: keyed by the two alone (the same
/// Dockerfile is built once) and named `<registry>/library/dockerfile:<key16>`.
pub fn dockerfile_build(registry: &RegistryHost, text: String, platform: Platform) -> NewBuild {
    let mut hasher = Sha256::new();
    for part in ["kiln containerfile v1", &text, platform.as_str()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let key = sha256_key(hasher);
    NewBuild {
        image: ImageName::dockerfile(registry, &key),
        key,
        job: BuildJob::Dockerfile(DockerfileJob { platform }),
        containerfile: text,
        environment: String::new(),
    }
}

/// A fresh key for a remote build of `definition`: every remote build is new, like
/// `singularity build`, so a random UUID goes in with the text.
pub fn definition_key(definition: &str) -> ImageKey {
    let mut hasher = Sha256::new();
    hasher.update(uuid::Uuid::new_v4().as_bytes());
    hasher.update(definition.as_bytes());
    sha256_key(hasher)
}

/// The build of `definition` under `key` (see [`definition_key`]), pushed to the job's library
/// repository at its first tag.
pub fn definition_build(
    registry: &RegistryHost,
    key: ImageKey,
    definition: String,
    job: DefinitionJob,
) -> NewBuild {
    let tag = job.tags.first().map_or("latest", String::as_str);
    NewBuild {
        image: ImageName::library(registry, &job.repository, tag),
        key,
        job: BuildJob::Definition(job),
        containerfile: definition,
        environment: String::new(),
    }
}

/// The key a finished sha256 is.
fn sha256_key(hasher: Sha256) -> ImageKey {
    hex::encode(hasher.finalize())
        .parse()
        .expect("a sha256 in hex is a key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::spec::RequestInput;

    fn plan(entries: &[&str], format: &str, base: Option<&str>) -> ImagePlan {
        let request = Request::try_from(RequestInput {
            entries: entries.iter().map(|e| e.to_string()).collect(),
            format: Some(format.to_owned()),
            base: base.map(str::to_owned),
            ..RequestInput::default()
        })
        .expect("valid");
        let config = Config::default();
        ImagePlan::for_request(&request, &config.recipe_images(), &config.registry)
            .expect("plans")
            .remove(0)
    }

    /// Keys of kiln before requests could name a base: they must not move.
    #[test]
    fn requests_on_the_default_base_keep_their_names() {
        assert_eq!(
            plan(&["samtools=1.21"], "docker", None).image.to_string(),
            "localhost:9090/library/samtools:1.21--3a37806fb4b8d392"
        );
        assert_eq!(
            plan(&["pip:requests==2.32.3"], "sif", None)
                .image
                .to_string(),
            "oras://localhost:9090/library/pip_requests:f659f7d5584d373a"
        );
    }

    #[test]
    fn a_named_base_starts_every_recipe_and_changes_the_key() {
        let default = plan(&["samtools=1.21"], "docker", None);
        let on_gl = plan(&["samtools=1.21"], "docker", Some("kiln/base/gl:bookworm"));
        assert_ne!(default.key, on_gl.key);
        assert_eq!(default.image.repository(), on_gl.image.repository());
        assert!(on_gl.image.tag().starts_with("1.21--"), "{}", on_gl.image);
        assert_eq!(default.recipes.environment, on_gl.recipes.environment);
        assert!(
            on_gl
                .recipes
                .dockerfile
                .contains("\nFROM localhost:9090/kiln/base/gl:bookworm\n"),
            "{}",
            on_gl.recipes.dockerfile
        );
        assert!(
            on_gl
                .recipes
                .singularity
                .contains("\nFrom: localhost:9090/kiln/base/gl:bookworm\n"),
            "{}",
            on_gl.recipes.singularity
        );
        assert!(!on_gl.recipes.dockerfile.contains("kiln/base/debian"));
        assert_eq!(
            on_gl.new_build().job.to_json(),
            r#"{"entries":["samtools=1.21"],"channels":["conda-forge","bioconda"],"format":"docker","platforms":["linux/amd64"],"base":"kiln/base/gl:bookworm"}"#
        );

        let pip = plan(&["pip:requests"], "sif", Some("kiln/base/py:bookworm"));
        assert!(
            pip.recipes
                .singularity
                .contains("\nFrom: localhost:9090/kiln/base/py:bookworm\n"),
            "{}",
            pip.recipes.singularity
        );
        assert_ne!(pip.key, plan(&["pip:requests"], "sif", None).key);

        // Definition files stored in SIFs name kiln's images without its host.
        let images = RecipeImages {
            registry: None,
            ..Config::default().recipe_images()
        };
        let stored = Recipes::render(&pip.request, &images).expect("renders");
        assert!(
            stored
                .singularity
                .contains("\nFrom: kiln/base/py:bookworm\n"),
            "{}",
            stored.singularity
        );
    }

    /// Dockerfile keys of kiln before keys were made here: they must not move.
    #[test]
    fn dockerfiles_keep_their_keys_and_definitions_get_fresh_ones() {
        let registry: RegistryHost = "kiln.example.org".parse().expect("a host");
        let build = dockerfile_build(&registry, "FROM scratch\n".into(), Platform::LinuxAmd64);
        let mut hasher = Sha256::new();
        for part in ["kiln containerfile v1", "FROM scratch\n", "linux/amd64"] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        assert_eq!(build.key.as_str(), hex::encode(hasher.finalize()));
        assert_eq!(
            build.image.to_string(),
            format!("kiln.example.org/library/dockerfile:{}", build.key.short())
        );
        assert_eq!(build.containerfile, "FROM scratch\n");

        let text = "Bootstrap: docker\nFrom: debian\n";
        assert_ne!(definition_key(text), definition_key(text));
        let job = DefinitionJob {
            platform: Platform::LinuxArm64,
            user: "alice".into(),
            library_ref: "alice/tools/x".into(),
            tags: vec!["1.0".into(), "latest".into()],
            repository: "alice/tools/x".into(),
            context: None,
            working_dir: "/".into(),
        };
        let build = definition_build(&registry, definition_key(text), text.into(), job);
        assert_eq!(
            build.image.to_string(),
            "kiln.example.org/alice/tools/x:1.0"
        );
        assert_eq!(build.job.format(), Format::Sif);
    }
}
