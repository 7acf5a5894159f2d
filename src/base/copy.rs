//! Bringing a base image from another registry (`python:3.12-slim` from Docker Hub) into
//! kiln's registry, once, so native builds can mount its layers like those of a base kiln made.
//!
//! Only the platforms kiln builds are copied; an index is rewritten to list just those (kiln's
//! registry, like others, refuses an index that names manifests it does not have), while every
//! manifest and blob keeps its bytes and digest.

use std::path::Path;

use bytes::Bytes;
use serde_json::Value;

use super::{ACCEPTED, BaseError, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, registry};
use crate::assemble::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::registry::client::RegistryClient;
use crate::spec::Platform;

/// An image in another registry, read anonymously.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// A client of the other registry.
    pub client: RegistryClient,
    /// Its repository, e.g. `library/python`.
    pub repository: String,
    /// Its tag, e.g. `3.12-slim`.
    pub tag: String,
}

impl Upstream {
    /// `host/repository:tag` as users wrote it.
    pub fn reference(&self) -> String {
        format!(
            "{}/{}:{}",
            self.client.registry(),
            self.repository,
            self.tag
        )
    }
}

/// Makes `to`'s `repository:tag` a copy of `from` for kiln's platforms, unless the tag is there
/// already; says whether it copied. Blobs pass through `scratch` on disk, never whole in memory.
pub async fn copy_image(
    from: &Upstream,
    to: &RegistryClient,
    repository: &str,
    tag: &str,
    scratch: &Path,
) -> Result<bool, BaseError> {
    let target = format!("{}/{repository}:{tag}", to.registry());
    if to
        .tag_digest(repository, tag)
        .await
        .map_err(registry(format!("looking up {target}")))?
        .is_some()
    {
        return Ok(false);
    }
    let source = from.reference();
    let (bytes, _) = from
        .client
        .pull_manifest(&from.repository, &from.tag, &ACCEPTED)
        .await
        .map_err(registry(format!("pulling {source}")))?;
    let document = parse(&source, &bytes)?;
    let Some(entries) = document.get("manifests").and_then(Value::as_array) else {
        copy_manifest(from, to, repository, &source, bytes.clone(), scratch).await?;
        let media_type = media_type(&document);
        return to
            .push_manifest(repository, tag, bytes, media_type)
            .await
            .map(|_| true)
            .map_err(registry(format!("pushing {target}")));
    };
    let mut kept = Vec::new();
    for entry in entries {
        if !Platform::ALL.iter().any(|p| is_platform(entry, *p)) {
            continue;
        }
        let digest = entry["digest"].as_str().unwrap_or_default().to_owned();
        let child = format!("{}/{}@{digest}", from.client.registry(), from.repository);
        let (manifest, _) = from
            .client
            .pull_manifest(&from.repository, &digest, &ACCEPTED)
            .await
            .map_err(registry(format!("pulling {child}")))?;
        let media_type = media_type(&parse(&child, &manifest)?);
        copy_manifest(from, to, repository, &child, manifest.clone(), scratch).await?;
        to.push_manifest(repository, &digest, manifest, media_type)
            .await
            .map_err(registry(format!("pushing {child} to {target}")))?;
        kept.push(entry.clone());
    }
    if kept.is_empty() {
        return Err(BaseError::Invalid {
            reference: source,
            why: "it has no linux/amd64 or linux/arm64 image".to_owned(),
        });
    }
    let mut index = document.clone();
    index["manifests"] = Value::Array(kept);
    let media_type = media_type(&document);
    let bytes = serde_json::to_vec(&index).map_err(|err| BaseError::Invalid {
        reference: source.clone(),
        why: err.to_string(),
    })?;
    to.push_manifest(repository, tag, Bytes::from(bytes), media_type)
        .await
        .map(|_| true)
        .map_err(registry(format!("pushing {target}")))
}

/// Copies the config and layers of one image manifest that `to` does not have yet.
async fn copy_manifest(
    from: &Upstream,
    to: &RegistryClient,
    repository: &str,
    source: &str,
    manifest: Bytes,
    scratch: &Path,
) -> Result<(), BaseError> {
    let document = parse(source, &manifest)?;
    let blobs = std::iter::once(&document["config"])
        .chain(document["layers"].as_array().into_iter().flatten())
        .filter_map(|descriptor| descriptor["digest"].as_str());
    for digest in blobs {
        let exists = to
            .blob_exists(repository, digest)
            .await
            .map_err(registry(format!("looking up blob {digest}")))?;
        if exists {
            continue;
        }
        let path = scratch.join(digest.replace(':', "-"));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(super::io_error(format!("creating {}", path.display())))?;
        from.client
            .pull_blob(&from.repository, digest, file)
            .await
            .map_err(registry(format!("pulling blob {digest} of {source}")))?;
        let pushed = to.push_blob_file(repository, digest, &path, None).await;
        let _ = tokio::fs::remove_file(&path).await;
        pushed.map_err(registry(format!("pushing blob {digest}")))?;
    }
    Ok(())
}

fn parse(reference: &str, bytes: &[u8]) -> Result<Value, BaseError> {
    serde_json::from_slice(bytes).map_err(|err| BaseError::Invalid {
        reference: reference.to_owned(),
        why: format!("unreadable manifest: {err}"),
    })
}

/// The media type a manifest declares, or the OCI one its shape implies.
fn media_type(document: &Value) -> &'static str {
    match document.get("mediaType").and_then(Value::as_str) {
        Some(MEDIA_TYPE_DOCKER_LIST) => MEDIA_TYPE_DOCKER_LIST,
        Some(MEDIA_TYPE_DOCKER_MANIFEST) => MEDIA_TYPE_DOCKER_MANIFEST,
        Some(MEDIA_TYPE_INDEX) => MEDIA_TYPE_INDEX,
        Some(MEDIA_TYPE_MANIFEST) => MEDIA_TYPE_MANIFEST,
        _ if document.get("manifests").is_some() => MEDIA_TYPE_INDEX,
        _ => MEDIA_TYPE_MANIFEST,
    }
}

fn is_platform(entry: &Value, platform: Platform) -> bool {
    let wanted = &entry["platform"];
    wanted["os"] == "linux"
        && wanted["architecture"] == platform.architecture()
        && wanted["variant"].as_str().is_none_or(|v| v == "v8")
}
