//! Reading a base back from a registry, whichever way it was made (kiln's own, or pulled from
//! elsewhere): the platform's manifest digest, layers, config and labels.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ACCEPTED, BaseError, BaseManifest, LABEL_GLIBC, LABEL_PYTHON, registry};
use crate::assemble::{BaseConfig, Descriptor};
use crate::registry::client::RegistryClient;
use crate::spec::Platform;

/// The fields kiln reads from an index, manifest list or image manifest.
#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Debug, Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The parts of a config kiln reads beyond [`BaseConfig`]: platform and labels.
#[derive(Debug, Deserialize)]
struct ConfigFacts {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ConfigLabels>,
}

#[derive(Debug, Deserialize)]
struct ConfigLabels {
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

/// Reads `platform`'s image of the base `repository:tag` from the registry: its manifest
/// digest, layers, config and labels. Accepts an OCI index or Docker manifest list (picking the
/// platform's entry) and a single-image manifest (checking its config's platform), so bases
/// pulled from elsewhere work like kiln's own.
pub async fn inspect(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    platform: Platform,
) -> Result<BaseManifest, BaseError> {
    let reference = format!("{}/{repository}:{tag}", client.registry());
    let (bytes, digest) = client
        .pull_manifest(repository, tag, &ACCEPTED)
        .await
        .map_err(registry(format!("pulling {reference}")))?;
    let mut manifest = parse_manifest(&reference, &bytes)?;
    let mut digest = digest;
    if let Some(entries) = &manifest.manifests {
        let entry = entries
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| matches(p, platform)))
            .ok_or_else(|| BaseError::NoPlatform {
                reference: reference.clone(),
                platform,
            })?;
        let child = format!("{}/{repository}@{}", client.registry(), entry.digest);
        let (bytes, child_digest) = client
            .pull_manifest(repository, &entry.digest, &ACCEPTED)
            .await
            .map_err(registry(format!("pulling {child}")))?;
        manifest = parse_manifest(&child, &bytes)?;
        digest = child_digest;
    }
    let image = format!("{}/{repository}@{digest}", client.registry());
    let (Some(config_descriptor), Some(layers)) = (manifest.config, manifest.layers) else {
        return Err(BaseError::Invalid {
            reference: image,
            why: "not an image manifest (no config or layers)".to_owned(),
        });
    };
    let mut config_bytes = Vec::new();
    client
        .pull_blob(repository, &config_descriptor.digest, &mut config_bytes)
        .await
        .map_err(registry(format!("pulling the config of {image}")))?;
    let config = BaseConfig::from_json(&config_bytes).map_err(|source| BaseError::Config {
        reference: image.clone(),
        source,
    })?;
    let facts: ConfigFacts =
        serde_json::from_slice(&config_bytes).map_err(|e| BaseError::Invalid {
            reference: image.clone(),
            why: format!("unreadable image config: {e}"),
        })?;
    let wanted = platform.as_str();
    let found = format!("{}/{}", facts.os, facts.architecture);
    if found != wanted {
        return Err(BaseError::NoPlatform {
            reference: format!("{reference} (a single {found} image)"),
            platform,
        });
    }
    if config.diff_ids.len() != layers.len() {
        return Err(BaseError::Invalid {
            reference: image,
            why: format!(
                "{} layers but {} diff_ids",
                layers.len(),
                config.diff_ids.len()
            ),
        });
    }
    let labels = facts.config.and_then(|c| c.labels).unwrap_or_default();
    Ok(BaseManifest {
        digest,
        layers,
        config,
        glibc: labels.get(LABEL_GLIBC).cloned(),
        python: labels.get(LABEL_PYTHON).cloned(),
        labels,
    })
}

fn parse_manifest(reference: &str, bytes: &[u8]) -> Result<AnyManifest, BaseError> {
    serde_json::from_slice(bytes).map_err(|e| BaseError::Invalid {
        reference: reference.to_owned(),
        why: format!("unreadable manifest: {e}"),
    })
}

/// Whether an index entry is for `platform`; arm64 entries may say `v8` or nothing.
fn matches(entry: &EntryPlatform, platform: Platform) -> bool {
    let os_arch = format!("{}/{}", entry.os, entry.architecture);
    os_arch == platform.as_str()
        && match platform {
            Platform::LinuxArm64 => entry.variant.as_deref().is_none_or(|v| v == "v8"),
            Platform::LinuxAmd64 => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_match_arm64_with_or_without_variant() {
        let entry = |arch: &str, variant: Option<&str>| EntryPlatform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        };
        assert!(matches(&entry("arm64", None), Platform::LinuxArm64));
        assert!(matches(&entry("arm64", Some("v8")), Platform::LinuxArm64));
        assert!(!matches(&entry("arm64", Some("v7")), Platform::LinuxArm64));
        assert!(!matches(&entry("amd64", None), Platform::LinuxArm64));
        assert!(matches(&entry("amd64", None), Platform::LinuxAmd64));
    }
}
