//! What kiln would build for a request: its recipes, key and image name, computed together so
//! that the name always matches the texts it was hashed from.

use crate::recipe::{RecipeError, RecipeImages, Recipes};
use crate::spec::{Format, ImageKey, ImageName, KeyInputs, RegistryHost, Request};

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
    pub fn new_build(&self) -> crate::store::NewBuild {
        crate::store::NewBuild {
            key: self.key.as_str().to_owned(),
            image: self.image.to_string(),
            format: self.request.format().to_string(),
            platforms: self
                .request
                .platforms()
                .iter()
                .map(ToString::to_string)
                .collect(),
            // A request always serializes: it is plain data.
            request: serde_json::to_string(&self.request).unwrap_or_default(),
            containerfile: self.recipes.for_format(self.request.format()).to_owned(),
            environment: self.recipes.environment.clone(),
        }
    }
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
            on_gl.new_build().request,
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
}
