//! The OCI JSON documents: image config, image manifest, image index.
//!
//! Each builder returns the exact bytes (compact JSON, fixed field order, no timestamps but
//! [`CREATED`]) with their digest, so what kiln pushes is what it computed, and the same inputs
//! give the same manifest digest anywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AssembleError, CREATED, Result, sha256_digest};
use crate::spec::Platform;

/// OCI image config media type.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI image manifest media type.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI gzip layer media type, used for every layer kiln writes.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A JSON document as exact bytes, with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The bytes to push.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Its media type.
    pub media_type: &'static str,
}

impl Blob {
    /// A blob of `bytes`.
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
            media_type,
        }
    }

    fn json(media_type: &'static str, value: &impl Serialize) -> Blob {
        // Serializing plain structs of strings, numbers and string maps cannot fail.
        let bytes = serde_json::to_vec(value).expect("OCI documents serialize");
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
            media_type,
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A descriptor pointing at this blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.to_owned(),
            digest: self.digest.clone(),
            size: self.size(),
            annotations: None,
        }
    }
}

/// An OCI content descriptor (manifest config and layers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>` of the referenced content.
    pub digest: String,
    /// Size of the referenced content in bytes.
    pub size: u64,
    /// Optional annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What kiln keeps from the base image's config: how to run it, and the layers it is made of.
/// The base's labels, history and timestamps are dropped: they describe the base, not the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    /// `NAME=value` entries, in the base's order.
    pub env: Vec<String>,
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory (`None` rather than empty).
    pub working_dir: Option<String>,
    /// User (`None` rather than empty).
    pub user: Option<String>,
    /// The base's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
}

impl BaseConfig {
    /// Reads the fields kiln keeps from a base image's config blob (OCI or Docker v2).
    pub fn from_json(bytes: &[u8]) -> Result<BaseConfig> {
        let file: ConfigFile =
            serde_json::from_slice(bytes).map_err(|source| AssembleError::BaseConfig { source })?;
        let config = file.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(BaseConfig {
            env: config.env.unwrap_or_default(),
            cmd: config.cmd,
            entrypoint: config.entrypoint,
            working_dir: non_empty(config.working_dir),
            user: non_empty(config.user),
            diff_ids: file.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
        })
    }

    /// The value of the base's environment variable `name`, e.g. to prefix its `PATH`.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|entry| {
            entry
                .split_once('=')
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v)
        })
    }
}

/// The image config document. Field order is the serialization order; keep it.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ContainerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The image config for `platform`: the base's runtime settings, its layers then `diff_ids`.
///
/// Env: the base's entries in their order; each `env` pair, in the given order, replaces the
/// entry of the same name in place or is appended. So `PATH` replaces the base `PATH` (prefix it
/// with [`BaseConfig::env_var`]). `created` is [`CREATED`]; there is no `history`, since the
/// base's carries timestamps and it is optional in OCI.
pub fn image_config(
    platform: Platform,
    base: &BaseConfig,
    diff_ids: &[String],
    env: &[(String, String)],
    labels: &BTreeMap<String, String>,
) -> Blob {
    let mut merged = base.env.clone();
    for (name, value) in env {
        let entry = format!("{name}={value}");
        let existing = merged
            .iter()
            .position(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == name);
        match existing {
            Some(i) => merged[i] = entry,
            None => merged.push(entry),
        }
    }
    let file = ConfigFile {
        created: Some(CREATED.to_owned()),
        architecture: platform.architecture().to_owned(),
        os: os(platform).to_owned(),
        config: Some(ContainerConfig {
            user: base.user.clone(),
            env: (!merged.is_empty()).then_some(merged),
            entrypoint: base.entrypoint.clone(),
            cmd: base.cmd.clone(),
            working_dir: base.working_dir.clone(),
            labels: (!labels.is_empty()).then(|| labels.clone()),
        }),
        rootfs: Some(RootFs {
            kind: "layers".to_owned(),
            diff_ids: base.diff_ids.iter().chain(diff_ids).cloned().collect(),
        }),
    };
    Blob::json(MEDIA_TYPE_CONFIG, &file)
}

fn os(platform: Platform) -> &'static str {
    platform
        .as_str()
        .split_once('/')
        .map_or("linux", |(os, _)| os)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

/// The config media type of a SIF pushed as an ORAS artifact, as SingularityCE writes it.
pub const MEDIA_TYPE_SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";
/// The media type of the SIF file itself, the artifact's one layer.
pub const MEDIA_TYPE_SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";

/// The ORAS artifact `singularity pull oras://` reads: an OCI image manifest whose config is
/// `{}` (downloadable, as clients fetch it) and whose only layer is the SIF file, named by the
/// title annotation (Singularity 3.x writes nothing without it). Returns (config, manifest).
pub fn sif_artifact(sif_digest: &str, sif_size: u64, title: &str) -> (Blob, Blob) {
    let config = Blob::new(MEDIA_TYPE_SIF_CONFIG, b"{}".to_vec());
    let layer = Descriptor {
        media_type: MEDIA_TYPE_SIF_LAYER.to_owned(),
        digest: sif_digest.to_owned(),
        size: sif_size,
        annotations: Some(BTreeMap::from([(
            "org.opencontainers.image.title".to_owned(),
            title.to_owned(),
        )])),
    };
    let manifest = image_manifest(&config, &[layer], &BTreeMap::new());
    (config, manifest)
}

/// The OCI image manifest for `config` and `layers` (the base's descriptors as given, then
/// kiln's, see [`super::LayerBlob::descriptor`]). Empty annotations are omitted.
pub fn image_manifest(
    config: &Blob,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Blob {
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: config.descriptor(),
        layers,
        annotations: (!annotations.is_empty()).then_some(annotations),
    };
    Blob::json(MEDIA_TYPE_MANIFEST, &manifest)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: &'static str,
    digest: String,
    size: u64,
    platform: IndexPlatform,
}

#[derive(Debug, Serialize)]
struct IndexPlatform {
    architecture: &'static str,
    os: &'static str,
}

/// The OCI image index over per-platform manifests, sorted by platform (stable), so the index
/// digest does not depend on the order builds finished in.
pub fn image_index(manifests: &[(Platform, Blob)]) -> Blob {
    let mut sorted: Vec<&(Platform, Blob)> = manifests.iter().collect();
    sorted.sort_by_key(|(platform, _)| *platform);
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests: sorted
            .into_iter()
            .map(|(platform, blob)| IndexEntry {
                media_type: blob.media_type,
                digest: blob.digest.clone(),
                size: blob.size(),
                platform: IndexPlatform {
                    architecture: platform.architecture(),
                    os: os(*platform),
                },
            })
            .collect(),
    };
    Blob::json(MEDIA_TYPE_INDEX, &index)
}

#[cfg(test)]
mod tests;
