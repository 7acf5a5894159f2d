//! `singularity push image.sif library://entity/collection/container:tag`: the library API's
//! legacy push flow (reference §2.5) — entities, collections and containers are looked up and
//! created, the image is announced by the sha256 of its file, the file is uploaded (see
//! [`crate::api::sylabs::library_files`]), then tagged per architecture.
//!
//! Every write needs a token ([`LibraryWriter`]); a user writes under the entity of their own name
//! only, an operator anywhere. The architecture of a tag is the one read from the image's file;
//! a tag also becomes the SIF's ORAS artifact at the same tag of the container's registry
//! repository ([`crate::api::sylabs::library::registry_repository`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::accounts::{MAX_NAME_LEN, is_library_name, new_secret};
use crate::api::auth::{LibraryWriter, User};
use crate::api::error::ApiError;
use crate::api::sylabs::library::{image_record, time_text};
use crate::api::sylabs::library_files::publish;
use crate::registry::path::{Digest, is_valid_tag};
use crate::store::{
    ArchTag, ImageKey, LibraryImage, LibraryItem, LibraryKey, LibraryLevel, LibraryPath,
};

/// The description clients send when the user gave none.
const NO_DESCRIPTION: &str = "No description";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/entities", post(create_entity))
        .route("/v1/entities/{entity}", get(entity))
        .route("/v1/collections", post(create_collection))
        .route("/v1/collections/{entity}/{collection}", get(collection))
        .route("/v1/containers", post(create_container))
        .route(
            "/v1/containers/{entity}/{collection}/{container}",
            get(container),
        )
        .route("/v1/images", post(create_image))
        .route("/v1/tags/{container}", get(tags_v1).post(set_tag_v1))
        .route("/v2/tags/{container}", get(tags_v2).post(set_tag_v2))
}

/// A JSON body, read by hand so that a bad one is answered in the library's envelope.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request(format!("the body is not a valid {what}: {err}")))
}

/// The `{"data": …}` envelope.
pub(crate) fn data(value: Value) -> Json<Value> {
    Json(json!({ "data": value }))
}

/// 400 unless `name` may name a library entity, collection or container.
fn check_name(level: LibraryLevel, name: &str) -> Result<(), ApiError> {
    if is_library_name(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "`{name}` is not a valid {level} name: use lowercase letters and digits, separated by \
         single `.`, `_` or `-`, at most {MAX_NAME_LEN} characters"
    )))
}

/// What clients send to create an entity, collection or container (other fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NewItem {
    name: String,
    description: String,
    /// The entity id of a new collection.
    entity: String,
    /// The collection id of a new container.
    collection: String,
}

impl NewItem {
    fn item(self, user: &User) -> LibraryItem {
        LibraryItem {
            id: new_id(),
            description: if self.description.is_empty() {
                NO_DESCRIPTION.to_owned()
            } else {
                self.description
            },
            name: self.name,
            created_by: user.name.clone(),
            created_at: Utc::now(),
        }
    }
}

/// A new library id: 24 lowercase hex digits.
fn new_id() -> String {
    new_secret()[..24].to_owned()
}

/// The `Entity`, `Collection` or `Container` document of the item `path` leads to.
async fn record(state: &AppState, path: &LibraryPath) -> Result<Value, ApiError> {
    let item = path.item();
    let level = path.level();
    let children = state.store.library_children(level, &item.id).await?;
    let mut record = json!({
        "id": item.id,
        "name": item.name,
        "description": item.description,
        "size": 0,
        "customData": "",
        "deleted": false,
        "createdBy": item.created_by,
        "createdAt": time_text(item.created_at),
    });
    let fields = match (level, &path.collection) {
        (LibraryLevel::Entity, _) => json!({
            "collections": children,
            "quota": 0,
            "defaultPrivate": false,
        }),
        (LibraryLevel::Collection, _) => json!({
            "entity": path.entity.id,
            "entityName": path.entity.name,
            "containers": children,
            "private": false,
        }),
        (LibraryLevel::Container, collection) => {
            let tags = state.store.library_tags(&item.id).await?;
            json!({
                "fullDescription": "",
                "collection": collection.as_ref().map(|c| c.id.as_str()),
                "collectionName": collection.as_ref().map(|c| c.name.as_str()),
                "entity": path.entity.id,
                "entityName": path.entity.name,
                "images": children,
                "imageTags": tag_map(&tags),
                "archTags": arch_tag_map(&tags),
                "downloadCount": 0,
                "stars": 0,
                "private": false,
                "readOnly": false,
            })
        }
    };
    if let (Value::Object(record), Value::Object(fields)) = (&mut record, fields) {
        record.extend(fields);
    }
    Ok(record)
}

/// `{tag: imageID}` over all architectures, the tag set last winning (v1 clients).
fn tag_map(tags: &[ArchTag]) -> BTreeMap<&str, &str> {
    tags.iter()
        .map(|tag| (tag.tag.as_str(), tag.image_id.as_str()))
        .collect()
}

/// `{arch: {tag: imageID}}`.
fn arch_tag_map(tags: &[ArchTag]) -> BTreeMap<&str, BTreeMap<&str, &str>> {
    let mut map: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for tag in tags {
        map.entry(&tag.arch)
            .or_default()
            .insert(&tag.tag, &tag.image_id);
    }
    map
}

/// The item at `key`, or 404 naming `what`.
pub(crate) async fn item_at(
    state: &AppState,
    key: LibraryKey<'_>,
    what: String,
) -> Result<LibraryPath, ApiError> {
    state
        .store
        .library_item(key)
        .await?
        .ok_or_else(|| ApiError::does_not_exist(what))
}

async fn entity(
    State(state): State<AppState>,
    Path(entity): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = LibraryKey::Names(&[&entity]);
    let path = item_at(&state, key, format!("entity {entity}")).await?;
    Ok(data(record(&state, &path).await?))
}

async fn collection(
    State(state): State<AppState>,
    Path((entity, collection)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = LibraryKey::Names(&[&entity, &collection]);
    let what = format!("collection {entity}/{collection}");
    let path = item_at(&state, key, what).await?;
    Ok(data(record(&state, &path).await?))
}

async fn container(
    State(state): State<AppState>,
    Path((entity, collection, container)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = LibraryKey::Names(&[&entity, &collection, &container]);
    let what = format!("container {entity}/{collection}/{container}");
    let path = item_at(&state, key, what).await?;
    Ok(data(record(&state, &path).await?))
}

/// `POST /v1/entities {"name"}`: a user creates the entity of their own name.
async fn create_entity(
    State(state): State<AppState>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: NewItem = body(&bytes, "entity")?;
    check_name(LibraryLevel::Entity, &new.name)?;
    writer.check(&new.name)?;
    let item = new.item(&writer.0);
    let path = state
        .store
        .add_library_item(LibraryLevel::Entity, None, &item)
        .await?;
    Ok(data(record(&state, &path).await?))
}

/// `POST /v1/collections {"name", "entity": <entity id>}`.
async fn create_collection(
    State(state): State<AppState>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: NewItem = body(&bytes, "collection")?;
    let key = LibraryKey::Id(LibraryLevel::Entity, &new.entity);
    let parent = item_at(&state, key, format!("entity id {:?}", new.entity)).await?;
    writer.check(&parent.entity.name)?;
    check_name(LibraryLevel::Collection, &new.name)?;
    let parent_id = parent.entity.id;
    let item = new.item(&writer.0);
    let path = state
        .store
        .add_library_item(LibraryLevel::Collection, Some(&parent_id), &item)
        .await?;
    Ok(data(record(&state, &path).await?))
}

/// `POST /v1/containers {"name", "collection": <collection id>}`.
async fn create_container(
    State(state): State<AppState>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: NewItem = body(&bytes, "container")?;
    let key = LibraryKey::Id(LibraryLevel::Collection, &new.collection);
    let parent = item_at(&state, key, format!("collection id {:?}", new.collection)).await?;
    writer.check(&parent.entity.name)?;
    check_name(LibraryLevel::Container, &new.name)?;
    let parent_id = parent.item().id.clone();
    let item = new.item(&writer.0);
    let path = state
        .store
        .add_library_item(LibraryLevel::Container, Some(&parent_id), &item)
        .await?;
    Ok(data(record(&state, &path).await?))
}

/// What clients send to announce an image (other fields ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NewImage {
    /// `sha256.<hex>` of the file.
    hash: String,
    /// The container id.
    container: String,
    description: String,
}

/// The container with id `id`, which `writer` must be allowed to write to.
async fn writable_container(
    state: &AppState,
    writer: &LibraryWriter,
    id: &str,
) -> Result<LibraryPath, ApiError> {
    let key = LibraryKey::Id(LibraryLevel::Container, id);
    let path = item_at(state, key, format!("container id {id:?}")).await?;
    writer.check(&path.entity.name)?;
    Ok(path)
}

/// `POST /v1/images {"hash", "container"}`: announces an image by its file's hash (the same
/// hash twice in a container is the same image).
async fn create_image(
    State(state): State<AppState>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let new: NewImage = body(&bytes, "image")?;
    let path = writable_container(&state, &writer, &new.container).await?;
    let hash = new
        .hash
        .strip_prefix("sha256.")
        .and_then(Digest::from_hex)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{}` is not an image hash: write sha256.<64 lowercase hex digits>",
                new.hash
            ))
        })?;
    let image = LibraryImage {
        id: new_id(),
        container_id: path.item().id.clone(),
        hash: hash.hex().to_owned(),
        description: new.description,
        arch: None,
        size: None,
        uploaded_at: None,
        upload_secret: None,
        created_by: writer.0.name.clone(),
        created_at: Utc::now(),
    };
    let image = state.store.add_library_image(&image).await?;
    let tags = state.store.library_tags(&image.container_id).await?;
    Ok(data(image_record(&path, &image, &tags)))
}

/// Image `id` and its container, which `writer` must be allowed to write to.
pub(crate) async fn writable_image(
    state: &AppState,
    writer: &LibraryWriter,
    id: &str,
) -> Result<(LibraryImage, LibraryPath), ApiError> {
    let image = state
        .store
        .library_image(ImageKey::Id(id))
        .await?
        .ok_or_else(|| ApiError::does_not_exist(format!("image {id}")))?;
    let path = writable_container(state, writer, &image.container_id).await?;
    Ok((image, path))
}

/// The container with id `id`, for reading.
async fn container_by_id(state: &AppState, id: &str) -> Result<LibraryPath, ApiError> {
    let key = LibraryKey::Id(LibraryLevel::Container, id);
    item_at(state, key, format!("container id {id:?}")).await
}

/// `GET /v1/tags/{container}`: `{tag: imageID}`.
async fn tags_v1(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    container_by_id(&state, &id).await?;
    let tags = state.store.library_tags(&id).await?;
    Ok(data(json!(tag_map(&tags))))
}

/// `GET /v2/tags/{container}`: `{arch: {tag: imageID}}`.
async fn tags_v2(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    container_by_id(&state, &id).await?;
    let tags = state.store.library_tags(&id).await?;
    Ok(data(json!(arch_tag_map(&tags))))
}

/// `POST /v1/tags/{container}` (`ImageTag`: capitalised keys, as Go writes a struct without
/// JSON tags).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct TagRequest {
    /// Empty in v1 requests: the image's own architecture.
    arch: String,
    tag: String,
    #[serde(rename = "ImageID")]
    image_id: String,
}

async fn set_tag_v1(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TagRequest = body(&bytes, "tag (ImageTag)")?;
    let tags = set_tag(&state, &writer, &id, request).await?;
    Ok(data(json!(tag_map(&tags))))
}

/// `POST /v2/tags/{container}` (`ArchImageTag`).
async fn set_tag_v2(
    State(state): State<AppState>,
    Path(id): Path<String>,
    writer: LibraryWriter,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TagRequest = body(&bytes, "tag (ArchImageTag)")?;
    let tags = set_tag(&state, &writer, &id, request).await?;
    Ok(data(json!(arch_tag_map(&tags))))
}

/// Points `request.tag` of container `id` at the image for that image's architecture (read
/// from its file; a different `Arch` is refused), pushes the SIF's ORAS artifact to the same
/// registry tag, and gives the container's tags back.
async fn set_tag(
    state: &AppState,
    writer: &LibraryWriter,
    id: &str,
    request: TagRequest,
) -> Result<Vec<ArchTag>, ApiError> {
    let path = writable_container(state, writer, id).await?;
    if !is_valid_tag(&request.tag) || request.tag.starts_with("sha256.") {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid tag: use letters, digits, `.`, `_` and `-`, at most 128 \
             characters, not starting with `.`, `-` or `sha256.`",
            request.tag
        )));
    }
    let image = state
        .store
        .library_image(ImageKey::Id(&request.image_id))
        .await?
        .filter(|image| image.container_id == id)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container {id} has no image {:?}",
                request.image_id
            ))
        })?;
    let (Some(arch), Some(size)) = (image.arch.as_deref(), image.size) else {
        return Err(ApiError::bad_request(format!(
            "image {} has no file yet: upload it before tagging",
            image.id
        )));
    };
    if !request.arch.is_empty() && request.arch != arch {
        return Err(ApiError::bad_request(format!(
            "image {} is {arch} (read from its file), not {}",
            image.id, request.arch
        )));
    }
    publish(state, &path, &image.hash, size, &request.tag).await?;
    state
        .store
        .set_library_tag(&ArchTag {
            container_id: id.to_owned(),
            arch: arch.to_owned(),
            tag: request.tag,
            image_id: image.id.clone(),
            updated_at: Utc::now(),
        })
        .await?;
    Ok(state.store.library_tags(id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(arch: &str, tag: &str, image: &str) -> ArchTag {
        ArchTag {
            container_id: "c".into(),
            arch: arch.into(),
            tag: tag.into(),
            image_id: image.into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn tag_maps_keep_each_architecture_and_the_last_tag_set() {
        let tags = [
            tag("amd64", "latest", "i1"),
            tag("arm64", "latest", "i2"),
            tag("amd64", "1.0", "i1"),
        ];
        assert_eq!(json!(tag_map(&tags)), json!({"latest": "i2", "1.0": "i1"}));
        assert_eq!(
            json!(arch_tag_map(&tags)),
            json!({"amd64": {"latest": "i1", "1.0": "i1"}, "arm64": {"latest": "i2"}})
        );
    }

    #[test]
    fn tag_requests_have_capitalised_keys() {
        let request: TagRequest =
            body(br#"{"Arch":"arm64","Tag":"latest","ImageID":"abc"}"#, "tag").unwrap();
        assert_eq!(
            (
                request.arch.as_str(),
                request.tag.as_str(),
                request.image_id.as_str()
            ),
            ("arm64", "latest", "abc")
        );
        let v1: TagRequest = body(br#"{"Tag":"1.0","ImageID":"abc"}"#, "tag").unwrap();
        assert_eq!((v1.arch.as_str(), v1.tag.as_str()), ("", "1.0"));
        let err = body::<TagRequest>(b"[", "tag").unwrap_err();
        assert_eq!(
            err,
            ApiError::bad_request(
                "the body is not a valid tag: EOF while parsing a list at line 1 column 1"
            )
        );
    }

    #[test]
    fn ids_are_24_hex_digits() {
        let id = new_id();
        assert_eq!(id.len(), 24);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(id, new_id());
    }
}
