//! The files of library images (reference §2.5): `POST /v2/imagefile/{id}` hands out an
//! upload URL, the client PUTs the file there and confirms with `…/_complete`; multipart
//! uploads answer 404, so clients fall back to that single part; `POST /v1/imagefile/{id}`
//! takes the file in the body for clients older than API 2.0. Tagged images become ORAS
//! artifacts ([`publish`]).
//!
//! The upload URL carries a secret of its own, since clients PUT to it without their token, as
//! to a presigned S3 URL; only the secret handed out last is valid, until the file is in. The
//! file streams into the registry's blob storage at the container's [`registry_repository`]
//! (never whole in memory), is kept only if its sha256 is the image's hash and it starts with a
//! SIF header, and the architecture that header names is recorded.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use chrono::Utc;
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::accounts::{new_secret, token_hash};
use super::error::ApiError;
use super::library::{SIF_HEADER_LEN, image_record, registry_repository, sif_arch_of};
use super::library_push::{Writer, body, data, item_at, writable_image};
use crate::assemble::sif::SifArch;
use crate::assemble::{MEDIA_TYPE_MANIFEST, sif_artifact};
use crate::registry::error::{ErrorCode, RegistryError};
use crate::registry::path::{Digest, Reference};
use crate::store::{ImageKey, LibraryImage, LibraryKey, LibraryLevel, LibraryPath};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/imagefile/{id}", post(upload_url))
        .route("/v2/imagefile/{id}/_upload", put(upload))
        .route("/v2/imagefile/{id}/_complete", put(complete))
        .route(
            "/v2/imagefile/{id}/_multipart",
            post(no_multipart).put(no_multipart),
        )
}

/// What a v2 upload request carries (other fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UploadRequest {
    /// Hex sha256 of the file the client is about to send.
    sha256sum: String,
}

/// `POST /v2/imagefile/{id}`: where to PUT the file — a URL on kiln holding a fresh secret,
/// since the client sends no token with that PUT. Only the secret handed out last is valid.
async fn upload_url(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: Writer,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: UploadRequest = if bytes.is_empty() {
        UploadRequest::default()
    } else {
        body(&bytes, "upload request")?
    };
    let (image, _) = writable_image(&state, &writer, &id).await?;
    if !request.sha256sum.is_empty() && request.sha256sum != image.hash {
        return Err(ApiError::bad_request(format!(
            "the file's sha256 {} is not the hash of image {id}, sha256.{}",
            request.sha256sum, image.hash
        )));
    }
    let secret = new_secret();
    state
        .store
        .set_upload_secret(&image.id, &token_hash(&secret))
        .await?;
    let url = format!(
        "{}/v2/imagefile/{id}/_upload?secret={secret}",
        state.config.public_url()
    );
    Ok(data(json!({ "uploadURL": url })))
}

#[derive(Debug, Deserialize)]
struct SecretQuery {
    #[serde(default)]
    secret: String,
}

/// `PUT <uploadURL>`: the file itself, authorised by the URL's secret.
async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SecretQuery>,
    file: Body,
) -> Result<Json<Value>, ApiError> {
    let image = state
        .store
        .library_image(ImageKey::Id(&id))
        .await?
        .ok_or_else(|| ApiError::does_not_exist(format!("image {id}")))?;
    let valid = image
        .upload_secret
        .as_deref()
        .is_some_and(|kept| kept == token_hash(&query.secret));
    if !valid {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this upload URL is not valid (any more): ask for a new one with \
                 POST /v2/imagefile/{id}"
            ),
        ));
    }
    let key = LibraryKey::Id(LibraryLevel::Container, &image.container_id);
    let path = item_at(
        &state,
        key,
        format!("container id {:?}", image.container_id),
    )
    .await?;
    let image = receive(&state, &path, &image, file).await?;
    Ok(data(image_record(&path, &image, &[])))
}

/// `POST /v1/imagefile/{id}`: the file in the request body (clients older than API 2.0).
pub(super) async fn upload_legacy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: Writer,
    file: Body,
) -> Result<Json<Value>, ApiError> {
    let (image, path) = writable_image(&state, &writer, &id).await?;
    let image = receive(&state, &path, &image, file).await?;
    Ok(data(image_record(&path, &image, &[])))
}

/// Streams `file` into the registry's blob storage at the container's repository, keeps it
/// only if its sha256 is the image's hash and it starts with a SIF header, and records the
/// architecture that header names.
async fn receive(
    state: &AppState,
    path: &LibraryPath,
    image: &LibraryImage,
    file: Body,
) -> Result<LibraryImage, ApiError> {
    let repository = repository_of(path);
    let digest = Digest::from_hex(&image.hash)
        .ok_or_else(|| ApiError::bad_request(format!("image {} has no hash", image.id)))?;
    let not_sif = Arc::new(AtomicBool::new(false));
    let storage = state.registry.storage();
    let stored = storage
        .put_blob(
            &repository,
            &digest,
            sif_checked(file, Arc::clone(&not_sif)),
        )
        .await;
    let not_a_sif = || {
        ApiError::bad_request(format!(
            "the uploaded file is not a SIF image (no SIF header with an amd64 or arm64 \
             architecture); image {} stays without a file",
            image.id
        ))
    };
    match stored {
        Ok(()) => {}
        Err(_) if not_sif.load(Ordering::Relaxed) => return Err(not_a_sif()),
        Err(err) if err.code() == Some(ErrorCode::DigestInvalid) => {
            return Err(ApiError::bad_request(format!(
                "the uploaded file's sha256 is not the hash of image {}, sha256.{}; nothing \
                 was kept",
                image.id, image.hash
            )));
        }
        Err(err) => return Err(registry_failure(err)),
    }
    let (file, size) = storage
        .blob_file(&digest)
        .await
        .map_err(registry_failure)?
        .ok_or_else(|| ApiError::does_not_exist(format!("the file of image {}", image.id)))?;
    let Some(arch) = sif_arch_of(&file).await else {
        // Shorter than a SIF header, so the stream check could not see it.
        storage
            .unlink_blob(&repository, &digest)
            .await
            .map_err(registry_failure)?;
        return Err(not_a_sif());
    };
    // An untagged artifact references the file until it is tagged, so that garbage collection
    // keeps it.
    let title = format!("{}.sif", path.item().name);
    push_artifact(state, &repository, &image.hash, size, &title, None).await?;
    Ok(state
        .store
        .finish_upload(&image.id, arch.as_str(), size, Utc::now())
        .await?)
}

/// `file`'s bytes, failing (and setting `not_sif`) as soon as its first bytes are not a SIF
/// header, so that no more of a wrong file is written.
fn sif_checked(
    file: Body,
    not_sif: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Unpin {
    let mut head = Vec::with_capacity(SIF_HEADER_LEN);
    file.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        if head.len() < SIF_HEADER_LEN {
            let wanted = (SIF_HEADER_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..wanted]);
            if head.len() == SIF_HEADER_LEN && SifArch::of_header(&head).is_none() {
                not_sif.store(true, Ordering::Relaxed);
                return Err(axum::Error::new("the file is not a SIF image"));
            }
        }
        Ok(chunk)
    })
}

/// A registry failure while storing a library file: the client's fault (413 for a file over
/// the size limit) or kiln's.
fn registry_failure(err: RegistryError) -> ApiError {
    match err {
        RegistryError::Api {
            status, message, ..
        } => ApiError::new(status, message),
        other => ApiError::internal(&other),
    }
}

/// The registry repository of the container `path` leads to.
fn repository_of(path: &LibraryPath) -> String {
    let collection = path.collection.as_ref().map_or("", |c| c.name.as_str());
    registry_repository(&path.entity.name, collection, &path.item().name)
}

/// `PUT /v2/imagefile/{id}/_complete`: the upload is over; the image must have its file.
async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: Writer,
) -> Result<Json<Value>, ApiError> {
    let (image, path) = writable_image(&state, &writer, &id).await?;
    if !image.uploaded() {
        return Err(ApiError::bad_request(format!(
            "image {id} has no file yet: PUT it to the upload URL first"
        )));
    }
    let collection = path.collection.as_ref().map_or("", |c| c.name.as_str());
    Ok(data(json!({
        "quota": {"quotaTotal": 0, "quotaUsage": 0},
        "containerUrl": format!("{}/{collection}/{}", path.entity.name, path.item().name),
    })))
}

/// Multipart uploads are not offered: a 404 makes clients upload in one part.
async fn no_multipart() -> ApiError {
    ApiError::does_not_exist("multipart upload (upload in one part)")
}

/// Pushes the ORAS artifact of the SIF with sha256 `hash` to `tag` of the container's registry
/// repository (the last architecture tagged wins there; the library keeps one per
/// architecture).
pub(super) async fn publish(
    state: &AppState,
    path: &LibraryPath,
    hash: &str,
    size: u64,
    tag: &str,
) -> Result<(), ApiError> {
    let repository = repository_of(path);
    let title = format!("{}_{tag}.sif", path.item().name);
    push_artifact(state, &repository, hash, size, &title, Some(tag)).await
}

/// Pushes the ORAS artifact of the SIF with sha256 `hash` into `repository`: at `tag`, or by
/// its digest alone.
async fn push_artifact(
    state: &AppState,
    repository: &str,
    hash: &str,
    size: u64,
    title: &str,
    tag: Option<&str>,
) -> Result<(), ApiError> {
    let (config, manifest) = sif_artifact(&format!("sha256:{hash}"), size, title);
    let storage = state.registry.storage();
    let config_digest = Digest::parse(&config.digest).map_err(registry_failure)?;
    let config_bytes =
        futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(config.bytes)) });
    storage
        .put_blob(repository, &config_digest, Box::pin(config_bytes))
        .await
        .map_err(registry_failure)?;
    let reference = match tag {
        Some(tag) => Reference::Tag(tag.to_owned()),
        None => Reference::Digest(Digest::parse(&manifest.digest).map_err(registry_failure)?),
    };
    storage
        .put_manifest(
            repository,
            &reference,
            Some(MEDIA_TYPE_MANIFEST),
            &manifest.bytes,
        )
        .await
        .map_err(registry_failure)?;
    Ok(())
}
