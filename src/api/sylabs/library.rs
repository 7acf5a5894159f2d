//! The Sylabs library API (`library://`) for pulls (reference §2.2); pushes are in
//! [`crate::api::sylabs::library_push`] and [`crate::api::sylabs::library_files`]. Answers use the library's
//! `{"data": …}` envelope, errors its `{"error": {"code", "message"}}` (an [`ApiError`] in
//! [`sylabs_shape`](crate::api::error::sylabs_shape)).
//!
//! An image is found first in the library's records (images pushed with `singularity push`,
//! by tag and architecture or by `sha256.<hex>`), then in kiln's registry: the SIF artifact at
//! [`registry_repository`]`:<tag>`, so `library://<kiln>/library/default/<name>:<tag>` is the
//! SIF kiln built at `library/<name>:<tag>`, and SIFs pushed straight into the registry (remote
//! builds) are pullable too. SIF bytes live once, in the registry's blob store.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::accounts::OPERATOR;
use crate::api::error::ApiError;
use crate::api::sylabs::library_files::{self, container_repository};
use crate::assemble::MEDIA_TYPE_SIF_LAYER;
use crate::assemble::sif::SifArch;
use crate::registry::images::{OpenBlob, blob_body, read_head};
use crate::registry::path::{Digest, is_valid_tag, parse_name_str};
use crate::store::{ArchTag, ImageKey, LibraryImage, LibraryKey, LibraryPath, StoreError};

/// The API version that tells clients architecture-specific tags and single-part v2 uploads
/// are supported.
const API_VERSION: &str = "2.0.0-alpha.2";

pub(crate) use crate::registry::LIBRARY_DEFAULT_COLLECTION as DEFAULT_COLLECTION;

/// Bytes of a SIF's header that name its architecture ([`SifArch::of_header`]).
pub(crate) const SIF_HEADER_LEN: usize = 48;

/// See [`crate::registry::library_repository`]; library pushes store their SIFs there and the
/// pull API falls back to it.
pub(crate) use crate::registry::library_repository as registry_repository;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        .route("/v1/oci-redirect", get(no_oci_redirect))
        .route("/v1/images/{*reference}", get(image))
        // One route for both: the legacy upload names an image id where pulls name a
        // reference, and `{id}` beside `{*reference}` would take one-name pulls.
        .route(
            "/v1/imagefile/{*reference}",
            get(image_file).post(library_files::upload_legacy),
        )
}

async fn version() -> Json<Value> {
    Json(json!({"data": {"version": env!("CARGO_PKG_VERSION"), "apiVersion": API_VERSION}}))
}

/// Clients ask whether to read the image from an OCI registry; any failure means "download the
/// file", which is what kiln serves.
async fn no_oci_redirect() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}

#[derive(Debug, Deserialize)]
struct ArchQuery {
    arch: Option<String>,
}

async fn image(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Result<Json<Value>, ApiError> {
    let found = find(&state, &reference, query.arch.as_deref()).await?;
    Ok(Json(json!({ "data": found.record })))
}

async fn image_file(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Result<Response, ApiError> {
    let found = find(&state, &reference, query.arch.as_deref()).await?;
    let Some(digest) = found.file else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the file of image {reference} has not been uploaded"),
        ));
    };
    let blob = state
        .image_store
        .open_blob(&found.repository, &digest)
        .await
        .map_err(|err| ApiError::internal(&err))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the image file is gone"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, blob.size.to_string()),
        ],
        Body::from_stream(blob_body(blob, 1 << 19)),
    )
        .into_response())
}

/// A library reference, `[[entity/]collection/]container[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LibraryRef {
    entity: String,
    collection: String,
    container: String,
    version: Version,
}

/// What follows the `:` of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// A tag (`latest` when the reference has none).
    Tag(String),
    /// `sha256.<hex>`: the image whose file has this sha256.
    Hash(String),
}

impl LibraryRef {
    /// One name is `library/default/<name>` and two are `library/<collection>/<name>`, as
    /// Sylabs' library reads them; `None` for anything that cannot name an image.
    fn parse(reference: &str) -> Option<LibraryRef> {
        let reference = reference.trim_start_matches('/');
        let (path, version) = match reference.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, tag),
            _ => (reference, "latest"),
        };
        let (entity, collection, container) = match path.split('/').collect::<Vec<_>>()[..] {
            [container] => (OPERATOR, DEFAULT_COLLECTION, container),
            [collection, container] => (OPERATOR, collection, container),
            [entity, collection, container] => (entity, collection, container),
            _ => return None,
        };
        if [entity, collection, container].contains(&"") {
            return None;
        }
        let version = match version.strip_prefix("sha256.") {
            Some(hex) => Version::Hash(Digest::from_hex(hex)?.hex().to_owned()),
            None if is_valid_tag(version) => Version::Tag(version.to_owned()),
            None => return None,
        };
        Some(LibraryRef {
            entity: entity.to_owned(),
            collection: collection.to_owned(),
            container: container.to_owned(),
            version,
        })
    }
}

/// An image the pull API answers with: its `Image` document, and its file once uploaded, a
/// blob of `repository`.
#[derive(Debug)]
struct Found {
    record: Value,
    file: Option<Digest>,
    repository: String,
}

/// Resolves `reference` for `arch` (any architecture when `None`): the library's records
/// first, then the SIF artifact in the registry at [`registry_repository`]`:<tag>`, whose
/// architecture is read from the file.
async fn find(state: &AppState, reference: &str, arch: Option<&str>) -> Result<Found, ApiError> {
    let missing = || {
        let arch = arch.map(|a| format!(" ({a})")).unwrap_or_default();
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("image does not exist in the library: {reference}{arch}"),
        )
    };
    let parsed = LibraryRef::parse(reference).ok_or_else(missing)?;
    if let Some(found) = find_recorded(state, &parsed, arch).await? {
        return Ok(found);
    }
    let Version::Tag(tag) = &parsed.version else {
        return Err(missing());
    };
    find_in_registry(state, &parsed, tag, arch)
        .await
        .ok_or_else(missing)
}

/// The image of `reference` among pushed ones, if any.
async fn find_recorded(
    state: &AppState,
    reference: &LibraryRef,
    arch: Option<&str>,
) -> Result<Option<Found>, StoreError> {
    let names = [
        reference.entity.as_str(),
        &reference.collection,
        &reference.container,
    ];
    let Some(path) = state.store.library_item(LibraryKey::Names(&names)).await? else {
        return Ok(None);
    };
    let container_id = path.item().id.clone();
    let tags = state.store.library_tags(&container_id).await?;
    let image = match &reference.version {
        Version::Hash(hash) => state
            .store
            .library_image(ImageKey::Hash {
                container_id: &container_id,
                hash,
            })
            .await?
            // An image without a file has no architecture yet: it matches any.
            .filter(|image| match (&image.arch, arch) {
                (Some(have), Some(want)) => have == want,
                _ => true,
            }),
        Version::Tag(tag) => {
            // The last one set wins when no architecture is asked for.
            let tagged = tags
                .iter()
                .rev()
                .find(|t| t.tag == *tag && arch.is_none_or(|want| want == t.arch));
            match tagged {
                Some(tagged) => {
                    state
                        .store
                        .library_image(ImageKey::Id(&tagged.image_id))
                        .await?
                }
                None => None,
            }
        }
    };
    Ok(image.map(|image| Found {
        repository: container_repository(&path),
        file: if image.uploaded() {
            Digest::from_hex(&image.hash)
        } else {
            None
        },
        record: image_record(&path, &image, &tags),
    }))
}

/// The `Image` document of `image` in container `path` whose tags are `tags`.
pub(crate) fn image_record(path: &LibraryPath, image: &LibraryImage, tags: &[ArchTag]) -> Value {
    let collection = path.collection.as_ref();
    let container = path.item();
    let mut names: Vec<&str> = tags
        .iter()
        .filter(|tag| tag.image_id == image.id)
        .map(|tag| tag.tag.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut record = json!({
        "id": image.id,
        "hash": format!("sha256.{}", image.hash),
        "description": image.description,
        "container": container.id,
        "size": image.size.unwrap_or(0),
        "uploaded": image.uploaded(),
        "signed": false,
        "encrypted": false,
        "fingerprints": [],
        "customData": "",
        "entity": path.entity.id,
        "entityName": path.entity.name,
        "collection": collection.map(|c| c.id.as_str()),
        "collectionName": collection.map(|c| c.name.as_str()),
        "containerName": container.name,
        "tags": names,
        "containerStars": 0,
        "containerDownloads": 0,
        "deleted": false,
        "createdBy": image.created_by,
        "createdAt": time_text(image.created_at),
    });
    if let Some(arch) = &image.arch {
        record["arch"] = json!(arch);
    }
    record
}

/// The SIF artifact at [`registry_repository`]`:<tag>`, if it is one for `arch`.
async fn find_in_registry(
    state: &AppState,
    reference: &LibraryRef,
    tag: &str,
    arch: Option<&str>,
) -> Option<Found> {
    let repository = registry_repository(
        &reference.entity,
        &reference.collection,
        &reference.container,
    );
    let repository = parse_name_str(&repository).ok()?;
    let images = &state.image_store;
    let layer = images.first_layer(&repository, tag).await.ok()??;
    if layer.media_type != MEDIA_TYPE_SIF_LAYER {
        return None;
    }
    let digest = layer.digest;
    let mut blob = images.open_blob(&repository, &digest).await.ok()??;
    let size = blob.size;
    let sif_arch = sif_arch_of(&mut blob).await?;
    if arch.is_some_and(|wanted| wanted != sif_arch.as_str()) {
        return None;
    }
    Some(Found {
        record: json!({
            "id": &digest.hex()[..24],
            "hash": format!("sha256.{}", digest.hex()),
            "description": "",
            "size": size,
            "uploaded": true,
            "signed": false,
            "encrypted": false,
            "arch": sif_arch.as_str(),
            "fingerprints": [],
            "customData": "",
            "entityName": reference.entity,
            "collectionName": reference.collection,
            "containerName": reference.container,
            "tags": [tag],
            "containerStars": 0,
            "containerDownloads": 0,
            "deleted": false,
        }),
        file: Some(digest),
        repository,
    })
}

/// The architecture in the header of the SIF `blob`; `None` when it is not a SIF.
async fn sif_arch_of(blob: &mut OpenBlob) -> Option<SifArch> {
    let header = read_head(blob, SIF_HEADER_LEN).await?;
    SifArch::of_header(&header)
}

/// A time as the library's Go client reads it.
pub(crate) fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(entity: &str, collection: &str, container: &str, version: Version) -> LibraryRef {
        LibraryRef {
            entity: entity.into(),
            collection: collection.into(),
            container: container.into(),
            version,
        }
    }

    #[test]
    fn references_name_entity_collection_container_and_version() {
        let hash = "ab".repeat(32);
        let tag = |t: &str| Version::Tag(t.into());
        for (text, expected) in [
            (
                "samtools",
                Some(reference("library", "default", "samtools", tag("latest"))),
            ),
            (
                "/samtools:1.21--abc",
                Some(reference(
                    "library",
                    "default",
                    "samtools",
                    tag("1.21--abc"),
                )),
            ),
            (
                "tools/samtools:1.21",
                Some(reference("library", "tools", "samtools", tag("1.21"))),
            ),
            (
                "alice/tools/samtools:1.21",
                Some(reference("alice", "tools", "samtools", tag("1.21"))),
            ),
            (
                &format!("alice/tools/samtools:sha256.{hash}"),
                Some(reference(
                    "alice",
                    "tools",
                    "samtools",
                    Version::Hash(hash.clone()),
                )),
            ),
            ("alice/tools/samtools:sha256.abc", None),
            ("alice/tools/samtools:bad tag", None),
            ("a/b/c/d:1", None),
            ("alice//samtools:1", None),
            ("", None),
        ] {
            assert_eq!(LibraryRef::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn kilns_own_sifs_keep_their_repositories() {
        assert_eq!(
            registry_repository("library", "default", "samtools"),
            "library/samtools"
        );
        assert_eq!(
            registry_repository("library", "tools", "samtools"),
            "library/library/tools/samtools"
        );
        assert_eq!(
            registry_repository("alice", "default", "samtools"),
            "library/alice/default/samtools"
        );
    }
}
