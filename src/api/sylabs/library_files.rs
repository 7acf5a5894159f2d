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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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

use crate::api::AppState;
use crate::api::accounts::{new_secret, token_hash};
use crate::api::auth::LibraryWriter;
use crate::api::error::ApiError;
use crate::api::sylabs::library::{SIF_HEADER_LEN, image_record, registry_repository};
use crate::api::sylabs::library_push::{body, data, item_at, writable_image};
use crate::assemble::sif::SifArch;
use crate::registry::images::ImagesError;
use crate::registry::path::Digest;
use crate::store::{ImageKey, LibraryImage, LibraryKey, LibraryLevel, LibraryPath};

pub(crate) fn routes() -> Router<AppState> {
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
    writer: LibraryWriter,
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
pub(crate) async fn upload_legacy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: LibraryWriter,
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
    let repository = container_repository(path);
    let digest = Digest::from_hex(&image.hash)
        .ok_or_else(|| ApiError::bad_request(format!("image {} has no hash", image.id)))?;
    let check = Arc::new(SifCheck::default());
    let stored = state
        .image_store
        .put_blob(&repository, &digest, sif_checked(file, Arc::clone(&check)))
        .await;
    match stored {
        Ok(()) => {}
        Err(_) if check.not_sif.load(Ordering::Relaxed) => {
            return Err(ApiError::bad_request(format!(
                "the uploaded file is not a SIF image (no SIF header with an amd64 or arm64 \
                 architecture); image {} stays without a file",
                image.id
            )));
        }
        Err(ImagesError::DigestMismatch) => {
            return Err(ApiError::bad_request(format!(
                "the uploaded file's sha256 is not the hash of image {}, sha256.{}; nothing \
                 was kept",
                image.id, image.hash
            )));
        }
        Err(err) => return Err(images_failure(err)),
    }
    // The stream passed its end, so it had a SIF header; the registry checked its digest, so
    // those bytes are the stored file.
    let arch = check.arch.get().copied().ok_or_else(|| {
        ApiError::internal(&std::io::Error::other("a stored SIF has no architecture"))
    })?;
    let size = check.size.load(Ordering::Relaxed);
    // An untagged artifact references the file until it is tagged, so that garbage collection
    // keeps it.
    let title = format!("{}.sif", path.item().name);
    push_artifact(state, &repository, &image.hash, size, &title, None).await?;
    Ok(state
        .store
        .finish_upload(&image.id, arch.as_str(), size, Utc::now())
        .await?)
}

/// What [`sif_checked`] saw of a file going by.
#[derive(Debug, Default)]
struct SifCheck {
    /// Its first bytes are not a SIF header, or it ended before one.
    not_sif: AtomicBool,
    /// The architecture its header names.
    arch: OnceLock<SifArch>,
    /// Bytes so far.
    size: AtomicU64,
}

/// `file`'s bytes, failing (and setting `not_sif`) as soon as its first bytes are not a SIF
/// header, or at its end when it is shorter than one, so that no more of a wrong file is
/// written and none of it is kept.
fn sif_checked(
    file: Body,
    check: Arc<SifCheck>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static {
    let mut head = Vec::with_capacity(SIF_HEADER_LEN);
    let seen = Arc::clone(&check);
    let bytes = file.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        seen.size.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if head.len() < SIF_HEADER_LEN {
            let wanted = (SIF_HEADER_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..wanted]);
            if head.len() == SIF_HEADER_LEN {
                match SifArch::of_header(&head) {
                    Some(arch) => {
                        let _ = seen.arch.set(arch);
                    }
                    None => {
                        seen.not_sif.store(true, Ordering::Relaxed);
                        return Err(axum::Error::new("the file is not a SIF image"));
                    }
                }
            }
        }
        Ok(chunk)
    });
    let end = futures_util::stream::once(async move {
        if check.arch.get().is_some() {
            return None;
        }
        check.not_sif.store(true, Ordering::Relaxed);
        Some(Err(axum::Error::new(
            "the file is shorter than a SIF header",
        )))
    })
    .filter_map(std::future::ready);
    Box::pin(bytes.chain(end))
}

/// An image store failure while storing a library file: the client's fault (413 for a file
/// over the size limit) or kiln's.
fn images_failure(err: ImagesError) -> ApiError {
    match err {
        ImagesError::Refused { status, message } => ApiError::new(status, message),
        other => ApiError::internal(&other),
    }
}

/// The registry repository of the container `path` leads to.
pub(crate) fn container_repository(path: &LibraryPath) -> String {
    let collection = path.collection.as_ref().map_or("", |c| c.name.as_str());
    registry_repository(&path.entity.name, collection, &path.item().name)
}

/// `PUT /v2/imagefile/{id}/_complete`: the upload is over; the image must have its file.
async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: LibraryWriter,
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
pub(crate) async fn publish(
    state: &AppState,
    path: &LibraryPath,
    hash: &str,
    size: u64,
    tag: &str,
) -> Result<(), ApiError> {
    let repository = container_repository(path);
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
    let digest = Digest::from_hex(hash)
        .ok_or_else(|| ApiError::bad_request(format!("{hash} is not a sha256 hash")))?;
    state
        .image_store
        .publish_sif(repository, &digest, size, title, tag)
        .await
        .map_err(images_failure)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `bytes`, sent in `chunk`-byte pieces, through [`sif_checked`].
    async fn checked(bytes: &[u8], chunk: usize) -> (Result<usize, String>, Arc<SifCheck>) {
        let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let check = Arc::new(SifCheck::default());
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        let mut stream = sif_checked(body, Arc::clone(&check));
        let mut passed = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => passed += chunk.len(),
                Err(err) => return (Err(err.to_string()), check),
            }
        }
        (Ok(passed), check)
    }

    #[tokio::test]
    async fn only_sif_files_pass_whole() {
        let mut sif = vec![b'#'; 32];
        sif.extend_from_slice(b"SIF_MAGIC\0");
        sif.extend_from_slice(b"01\0");
        sif.extend_from_slice(b"04\0");
        sif.resize(5000, 0);
        let (passed, check) = checked(&sif, 7).await;
        assert_eq!(passed, Ok(5000));
        assert_eq!(check.arch.get(), Some(&SifArch::Arm64));
        assert_eq!(check.size.load(Ordering::Relaxed), 5000);
        assert!(!check.not_sif.load(Ordering::Relaxed));

        let (passed, check) = checked(&[b'x'; 5000], 1000).await;
        assert!(passed.is_err());
        assert!(check.not_sif.load(Ordering::Relaxed));

        // Shorter than a header: refused at its end, so the registry keeps none of it.
        for short in [&sif[..SIF_HEADER_LEN - 1], &[][..]] {
            let (passed, check) = checked(short, 10).await;
            assert!(passed.is_err(), "{} bytes", short.len());
            assert!(check.not_sif.load(Ordering::Relaxed));
        }
    }
}
