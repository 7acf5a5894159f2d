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
