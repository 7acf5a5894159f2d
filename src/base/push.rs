//! Pushing a made base: its one layer, a config with kiln's base labels, the platform
//! manifests and the index. Shared by both makers ([`super::bootstrap`] and
//! [`super::debian`]), so every kiln base has the same shape and labels.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use super::{
    BaseError, BaseImage, LABEL_GLIBC, LABEL_PYTHON, LABEL_PYTHON_INTERPRETER,
    LABEL_PYTHON_SITE_PACKAGES, LABEL_SUITE, LABEL_TITLE, registry,
};
use crate::assemble::{
    self, BaseConfig, Blob, Descriptor, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
};
use crate::registry::client::RegistryClient;
use crate::spec::Platform;

/// Pushes the index of a base's platform `manifests` under `repository:tag` and returns the
/// base with the facts every platform satisfies (the lowest glibc and python).
pub(super) async fn push_index(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    manifests: &[(Platform, Blob)],
    facts: &[Facts],
) -> Result<BaseImage, BaseError> {
    let index = assemble::image_index(manifests);
    let reference = format!("{}/{repository}:{tag}", client.registry());
    let digest = client
        .push_manifest(repository, tag, Bytes::from(index.bytes), MEDIA_TYPE_INDEX)
        .await
        .map_err(registry(format!("pushing the index {reference}")))?;
    let glibc = lowest(facts.iter().map(|f| f.glibc.as_str())).ok_or(BaseError::NoPlatforms)?;
    let python = lowest(facts.iter().filter_map(|f| f.python.as_deref()));
    Ok(BaseImage {
        reference,
        digest,
        glibc,
        python,
    })
}

/// Facts read from one platform's dpkg database.
#[derive(Debug)]
pub(super) struct Facts {
    pub(super) glibc: String,
    pub(super) python: Option<String>,
}

/// Pushes one platform's base image: its single gzip `layer` (the file `gz_path`), a config
/// with kiln's base labels and `facts`, and the manifest, by digest.
#[expect(clippy::too_many_arguments, reason = "each is one part of the image")]
pub(super) async fn push_platform(
    client: &RegistryClient,
    repository: &str,
    title: &str,
    suite: &str,
    platform: Platform,
    facts: &Facts,
    layer: &Compressed,
    gz_path: &Path,
) -> Result<Blob, BaseError> {
    client
        .push_blob_file(repository, &layer.digest, gz_path, None)
        .await
        .map_err(registry(format!("{platform}: pushing the layer")))?;
    let mut labels = BTreeMap::from([
        (LABEL_TITLE.to_owned(), title.to_owned()),
        (LABEL_SUITE.to_owned(), suite.to_owned()),
        (LABEL_GLIBC.to_owned(), facts.glibc.clone()),
    ]);
    if let Some(python) = &facts.python {
        // Debian's layout: its python3 is /usr/bin/python3, and pip (like kiln) installs into
        // /usr/local, leaving /usr/lib/python3/dist-packages to dpkg.
        labels.insert(LABEL_PYTHON.to_owned(), python.clone());
        labels.insert(
            LABEL_PYTHON_INTERPRETER.to_owned(),
            "/usr/bin/python3".to_owned(),
        );
        labels.insert(
            LABEL_PYTHON_SITE_PACKAGES.to_owned(),
            format!("/usr/local/lib/python{python}/dist-packages"),
        );
    }
    let base = BaseConfig {
        cmd: Some(vec!["/bin/bash".to_owned()]),
        ..BaseConfig::default()
    };
    let env = [
        (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    let config = assemble::image_config(
        platform,
        &base,
        std::slice::from_ref(&layer.diff_id),
        &env,
        &labels,
    );
    client
        .push_blob_bytes(repository, Bytes::from(config.bytes.clone()), None)
        .await
        .map_err(registry(format!("{platform}: pushing the config")))?;
    let descriptor = Descriptor {
        media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
        digest: layer.digest.clone(),
        size: layer.size,
        annotations: None,
    };
    let manifest = assemble::image_manifest(&config, &[descriptor], &BTreeMap::new());
    client
        .push_manifest(
            repository,
            &manifest.digest,
            Bytes::from(manifest.bytes.clone()),
            MEDIA_TYPE_MANIFEST,
        )
        .await
        .map_err(registry(format!("{platform}: pushing the manifest")))?;
    Ok(manifest)
}

/// `major.minor` of a Debian version's upstream part: `2.36-9+deb12u13` → `2.36`,
/// `3.11.2-1+b1` → `3.11`, `1:2.3.4-1` → `2.3`.
pub(super) fn upstream_major_minor(version: &str) -> Option<String> {
    let without_epoch = version.split_once(':').map_or(version, |(_, v)| v);
    let upstream = without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(u, _)| u);
    let mut parts = upstream.split(['.', '+', '~']);
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = parts.next().filter(|p| is_number(p))?;
    Some(format!("{major}.{minor}"))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The lowest `major.minor` version, numerically: the one every platform satisfies.
fn lowest<'a>(versions: impl Iterator<Item = &'a str>) -> Option<String> {
    let key = |v: &str| -> (u64, u64) {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
        (
            parts.next().unwrap_or(u64::MAX),
            parts.next().unwrap_or(u64::MAX),
        )
    };
    versions.min_by_key(|v| key(v)).map(str::to_owned)
}

/// The gzip blob of a tar, with both digests.
#[derive(Debug)]
pub(super) struct Compressed {
    pub(super) diff_id: String,
    pub(super) digest: String,
    pub(super) size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_major_minor_of_the_upstream_version() {
        assert_eq!(
            upstream_major_minor("2.36-9+deb12u13").as_deref(),
            Some("2.36")
        );
        assert_eq!(upstream_major_minor("3.11.2-1+b1").as_deref(), Some("3.11"));
        assert_eq!(upstream_major_minor("1:2.3.4-1").as_deref(), Some("2.3"));
        assert_eq!(upstream_major_minor("2.41").as_deref(), Some("2.41"));
        assert_eq!(upstream_major_minor(""), None);
        assert_eq!(upstream_major_minor("3"), None);
    }

    #[test]
    fn picks_the_lowest_version_numerically() {
        assert_eq!(
            lowest(["2.36", "2.9", "2.40"].into_iter()).as_deref(),
            Some("2.9")
        );
        assert_eq!(lowest(std::iter::empty()), None);
    }
}
