//! A build's SBOM as a download: the SPDX document attached to its image as an OCI referrer,
//! found through the registry's referrers index, so the page serves exactly what `oras
//! discover` lists.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::assemble::sbom::MEDIA_TYPE_SPDX;
use crate::registry::images::blob_body;
use crate::registry::path::Digest;
use crate::store::BuildRecord;

/// The download route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/view/builds/{id}/sbom.spdx.json", get(download))
}

/// The link the build page shows for one output.
pub(crate) fn sbom_path(build_id: &str, platform: &str) -> String {
    format!("/view/builds/{build_id}/sbom.spdx.json?platform={platform}")
}

#[derive(Debug, Deserialize)]
struct PlatformQuery {
    /// `linux/amd64`; may be left out when the build has one output.
    platform: Option<String>,
}

async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PlatformQuery>,
) -> Result<Response, ApiError> {
    let build = state
        .public_build(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build {id}")))?;
    let (repository, subject) = subject_of(&build, query.platform.as_deref())?;
    let images = &state.image_store;
    let no_sbom = || {
        ApiError::not_found(format!(
            "an SBOM of build {id} (images built before kiln attached SBOMs have none)"
        ))
    };
    let referrers = images
        .referrers(&repository, &subject, MEDIA_TYPE_SPDX)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    let referrer = referrers.first().ok_or_else(no_sbom)?;
    let document = images
        .first_layer(&repository, &referrer.to_string())
        .await
        .ok()
        .flatten()
        .ok_or_else(no_sbom)?;
    let blob = images
        .open_blob(&repository, &document.digest)
        .await
        .map_err(|err| ApiError::internal(&err))?
        .ok_or_else(no_sbom)?;
    Ok((
        [
            (header::CONTENT_TYPE, MEDIA_TYPE_SPDX.to_owned()),
            (header::CONTENT_LENGTH, blob.size.to_string()),
        ],
        Body::from_stream(blob_body(blob, 4096)),
    )
        .into_response())
}

/// The repository of `build`'s image and the manifest digest of its output for `platform`
/// (the only output when no platform is given).
fn subject_of(build: &BuildRecord, platform: Option<&str>) -> Result<(String, Digest), ApiError> {
    let id = &build.id;
    if build.succeeded != Some(true) {
        return Err(ApiError::not_found(format!(
            "an SBOM of build {id}, which has not succeeded"
        )));
    }
    let output = match platform {
        Some(platform) => build.outputs.iter().find(|o| o.platform == platform),
        None if build.outputs.len() == 1 => build.outputs.first(),
        None => {
            let platforms: Vec<&str> = build.outputs.iter().map(|o| o.platform.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "build {id} has an image per platform; add ?platform= with one of {}",
                platforms.join(", ")
            )));
        }
    };
    let output = output.ok_or_else(|| {
        ApiError::not_found(format!(
            "an output of build {id} for platform {}",
            platform.unwrap_or_default()
        ))
    })?;
    let repository = build.image.repository();
    let digest = Digest::parse(&output.digest)
        .map_err(|_| ApiError::not_found(format!("the image of build {id} (it has no digest)")))?;
    Ok((repository.to_owned(), digest))
}
