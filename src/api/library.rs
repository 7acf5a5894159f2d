//! The part of the Sylabs library API that `singularity pull library://…` needs, for every SIF
//! kiln holds: `library://<kiln>/library/default/<name>:<tag>` is the SIF kiln pushed to
//! `library/<name>:<tag>` (reference §2.2). Answers use the library's `{"data": …}` envelope;
//! errors its `{"error": {"code", "message"}}`.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use super::AppState;
use crate::assemble::MEDIA_TYPE_SIF_LAYER;
use crate::assemble::sif::SifArch;
use crate::registry::path::{Digest, Reference};

/// The API version that tells clients architecture-specific tags are supported.
const API_VERSION: &str = "2.0.0-alpha.2";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        .route("/v1/oci-redirect", get(no_oci_redirect))
        .route("/v1/images/{*reference}", get(image))
        .route("/v1/imagefile/{*reference}", get(image_file))
}

async fn version() -> Json<Value> {
    Json(json!({"data": {"version": env!("CARGO_PKG_VERSION"), "apiVersion": API_VERSION}}))
}

/// Clients ask whether to read the image from an OCI registry; any failure means "download the
/// file", which is what kiln serves.
async fn no_oci_redirect() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

#[derive(Debug, Deserialize)]
struct ArchQuery {
    arch: Option<String>,
}

/// One SIF in kiln's registry, as the library names it.
struct LibraryImage {
    name: String,
    tag: String,
    digest: Digest,
    size: u64,
    arch: SifArch,
}

async fn image(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Response {
    match find(&state, &reference, query.arch.as_deref()).await {
        Ok(found) => Json(json!({"data": {
            "id": &found.digest.hex()[..24],
            "hash": format!("sha256.{}", found.digest.hex()),
            "description": "",
            "size": found.size,
            "uploaded": true,
            "signed": false,
            "encrypted": false,
            "arch": found.arch.as_str(),
            "fingerprints": [],
            "customData": "",
            "entityName": "library",
            "collectionName": "default",
            "containerName": found.name,
            "tags": [found.tag],
            "containerStars": 0,
            "containerDownloads": 0,
            "deleted": false,
        }}))
        .into_response(),
        Err(response) => response,
    }
}

async fn image_file(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Response {
    let found = match find(&state, &reference, query.arch.as_deref()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Ok(Some((path, size))) = state.registry.storage().blob_file(&found.digest).await else {
        return error(StatusCode::NOT_FOUND, "the image file is gone");
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 19)),
        )
            .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// Resolves `[library/default/]<name>[:<tag>]` (tag `latest` when absent) to the SIF kiln
/// holds under `library/<name>:<tag>`, checking its architecture against `arch`.
async fn find(
    state: &AppState,
    reference: &str,
    arch: Option<&str>,
) -> Result<LibraryImage, Response> {
    let reference = reference.trim_start_matches('/');
    let (path, tag) = match reference.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (reference, "latest"),
    };
    let missing = || {
        let arch = arch.map(|a| format!(" ({a})")).unwrap_or_default();
        error(
            StatusCode::NOT_FOUND,
            &format!("image does not exist in the library: {reference}{arch}"),
        )
    };
    let name = match path.split('/').collect::<Vec<_>>().as_slice() {
        [name] | ["library", "default", name] => (*name).to_owned(),
        _ => return Err(missing()),
    };
    let repository = format!("library/{name}");
    let Ok(reference_tag) = Reference::parse(tag) else {
        return Err(missing());
    };
    let Ok(manifest) = state
        .registry
        .storage()
        .get_manifest(&repository, &reference_tag)
        .await
    else {
        return Err(missing());
    };
    let document: Value = serde_json::from_slice(&manifest.bytes).map_err(|_| missing())?;
    let layer = &document["layers"][0];
    if layer["mediaType"] != MEDIA_TYPE_SIF_LAYER {
        return Err(missing());
    }
    let digest = layer["digest"]
        .as_str()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(missing)?;
    let Ok(Some((path, size))) = state.registry.storage().blob_file(&digest).await else {
        return Err(missing());
    };
    let mut header = [0u8; 48];
    let read = async {
        let mut file = tokio::fs::File::open(&path).await?;
        file.read_exact(&mut header).await
    };
    if read.await.is_err() {
        return Err(missing());
    }
    let sif_arch = SifArch::of_header(&header).ok_or_else(missing)?;
    if arch.is_some_and(|wanted| wanted != sif_arch.as_str()) {
        return Err(missing());
    }
    Ok(LibraryImage {
        name,
        tag: tag.to_owned(),
        digest,
        size,
        arch: sif_arch,
    })
}

/// The library's error envelope, with the same HTTP status.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}
