//! SIF download links (`/blobs/sha256/<aa>/<hex>/data?repository=<repository>`) when kiln keeps
//! its images in an external registry: the blob is read through [`crate::registry::Images`]
//! with kiln's credentials and streamed to the caller, who needs none, as the embedded
//! registry serves the same links. Users' build contexts are never served.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::registry::images::blob_body;
use crate::registry::{is_private, parse_download_path};

/// Read size when streaming a blob through.
const CHUNK: usize = 512 << 10;

/// The download route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/blobs/{*rest}", get(download))
}

/// `GET`/`HEAD` of a download link: the blob from the repository the link names.
async fn download(
    State(state): State<AppState>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let not_found = |message: String| ApiError::new(StatusCode::NOT_FOUND, message);
    let rest = uri.path().strip_prefix("/blobs/").unwrap_or_default();
    let digest = parse_download_path(rest).ok_or_else(|| {
        not_found(format!(
            "{} is not a blob link: blob links look like \
             /blobs/sha256/<first 2 hex digits>/<64 lowercase hex digits>/data?repository=<name>",
            uri.path()
        ))
    })?;
    let repository = query
        .get("repository")
        .filter(|name| !is_private(name))
        .ok_or_else(|| {
            not_found(format!(
                "the link to blob {digest} names no repository (…/data?repository=<name>); \
                 ask kiln for the image again to get a current link"
            ))
        })?;
    let blob = state
        .image_store
        .open_blob(repository, &digest)
        .await
        .map_err(|err| ApiError::internal(&err))?
        .ok_or_else(|| not_found(format!("blob {digest} unknown in {repository}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, blob.size.to_string()),
            (header::ETAG, format!("\"{digest}\"")),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
        ],
        Body::from_stream(blob_body(blob, CHUNK)),
    )
        .into_response())
}
