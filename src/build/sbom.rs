//! Every image's SBOM, pushed next to the image as an OCI referrer (`artifactType:
//! application/spdx+json`), so `oras discover` lists it and kiln's build page serves it.
//!
//! A native image's SBOM is made from its lock and its base's dpkg status. An image buildah
//! built from a user's Dockerfile or definition has no lock (kiln installed none of its conda
//! or pip packages), so its SBOM lists the Debian packages its own layers' dpkg status names.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::BuildLog;
use super::native::{Failure, NativeBuilder};
use crate::assemble::sbom::{
    DebianPackage, SbomInput, parse_dpkg_status, sbom_referrer, spdx_document,
};
use crate::assemble::{Descriptor, MEDIA_TYPE_MANIFEST};
use crate::base::dpkg::{LayerStatus, layer_dpkg_status};
use crate::base::{BaseManifest, LABEL_SUITE};
use crate::registry::client::RegistryClient;
use crate::resolve::{Lock, LockedPackage, LockedWheel};
use crate::spec::Platform;

/// The image an SBOM describes and where it goes.
pub(super) struct SbomTarget<'a> {
    /// `host/repository` of the image, as users name it.
    pub(super) image: &'a str,
    /// The repository in kiln's registry the image was pushed to.
    pub(super) repository: &'a str,
    /// The image's platform.
    pub(super) platform: Platform,
    /// The pushed image manifest (or SIF artifact manifest) the SBOM is attached to.
    pub(super) subject: Descriptor,
}

/// What an SBOM lists inside the image.
struct SbomContents<'a> {
    packages: &'a [LockedPackage],
    wheels: &'a [LockedWheel],
    debian: &'a [DebianPackage],
    /// The Debian release (`bookworm`), when the image's labels name it.
    distro: Option<&'a str>,
}

impl NativeBuilder {
    /// Writes the SBOM of `target` from `lock` and its base, and pushes it into the image's
    /// repository as a referrer of the image manifest.
    pub(super) async fn attach_sbom(
        &self,
        target: &SbomTarget<'_>,
        base: &BaseManifest,
        base_repository: &str,
        lock: &Lock,
        log: &BuildLog,
    ) -> Result<(), Failure> {
        let platform = target.platform;
        let status = self.base_dpkg_status(base, base_repository).await?;
        let debian = parse_dpkg_status(&status);
        if debian.is_empty() {
            log.line(format!(
                "{platform}: the base lists no Debian packages; the SBOM has the lock only"
            ))
            .await;
        }
        let contents = SbomContents {
            packages: lock.packages(platform),
            wheels: lock.wheels(platform),
            debian: &debian,
            distro: base.labels.get(LABEL_SUITE).map(String::as_str),
        };
        attach(&self.client, target, &contents, log).await
    }

    /// The base's `/var/lib/dpkg/status` ("" when it has none), read from its layers once per
    /// base manifest and kept beside the downloaded layers.
    async fn base_dpkg_status(
        &self,
        base: &BaseManifest,
        base_repository: &str,
    ) -> Result<String, Failure> {
        let cached = self
            .blob_dir
            .join(format!("{}.dpkg-status", base.digest.replace(':', "-")));
        if let Ok(text) = tokio::fs::read_to_string(&cached).await {
            return Ok(text);
        }
        let mut layers: Vec<PathBuf> = Vec::new();
        for layer in &base.layers {
            layers.push(self.base_blob(base_repository, &layer.digest).await?);
        }
        let status = local_dpkg_status(layers).await?;
        let temp = cached.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        // A lost cache file only costs reading the layers again.
        if tokio::fs::write(&temp, &status).await.is_ok()
            && tokio::fs::rename(&temp, &cached).await.is_err()
        {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        Ok(status)
    }
}

/// Writes the SBOM of an image built from a user's recipe, listing the Debian packages of
/// `status` (its dpkg status, "" when it has none) and nothing else, and pushes it as a
/// referrer of `target`'s manifest. `config` is the image's OCI config document, whose labels
/// name the Debian release when the image is built on one of kiln's bases.
pub(super) async fn attach_recipe_sbom(
    client: &RegistryClient,
    target: &SbomTarget<'_>,
    status: &str,
    config: &Value,
    log: &BuildLog,
) -> Result<(), Failure> {
    let debian = parse_dpkg_status(status);
    if debian.is_empty() {
        log.line(format!(
            "{}: the image lists no Debian packages (it has no dpkg status); its SBOM names \
             the image alone",
            target.platform
        ))
        .await;
    }
    let contents = SbomContents {
        packages: &[],
        wheels: &[],
        debian: &debian,
        distro: config["config"]["Labels"][LABEL_SUITE].as_str(),
    };
    attach(client, target, &contents, log).await
}

/// The dpkg status ("" when there is none) of the image whose layer tars are `layers`,
/// bottom first.
pub(super) async fn local_dpkg_status(layers: Vec<PathBuf>) -> Result<String, Failure> {
    Ok(
        tokio::task::spawn_blocking(move || crate::base::dpkg::dpkg_status(&layers))
            .await
            .map_err(Failure::crashed("reading the image's dpkg status"))??
            .unwrap_or_default(),
    )
}

/// The dpkg status ("" when there is none) of an image in `repository` whose layers are
/// `layers`, bottom first. Layers are fetched from the top, one at a time into `scratch`, until
/// one has the status file or deletes it: most images need one or two of them.
pub(super) async fn pushed_dpkg_status(
    client: &RegistryClient,
    repository: &str,
    layers: &[Descriptor],
    scratch: &Path,
) -> Result<String, Failure> {
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(Failure::io(format!("cannot create {}", scratch.display())))?;
    for layer in layers.iter().rev() {
        let path = scratch.join(layer.digest.replace(':', "-"));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(Failure::io(format!("cannot create {}", path.display())))?;
        client.pull_blob(repository, &layer.digest, file).await?;
        let read = path.clone();
        let found = tokio::task::spawn_blocking(move || layer_dpkg_status(&read))
            .await
            .map_err(Failure::crashed("reading the image's dpkg status"))?
            .map_err(Failure::from);
        let _ = tokio::fs::remove_file(&path).await;
        match found? {
            LayerStatus::Status(text) => return Ok(text),
            LayerStatus::Deleted => return Ok(String::new()),
            LayerStatus::Untouched => {}
        }
    }
    Ok(String::new())
}

/// Writes `target`'s SBOM listing `contents` and pushes it as a referrer of its manifest.
async fn attach(
    client: &RegistryClient,
    target: &SbomTarget<'_>,
    contents: &SbomContents<'_>,
    log: &BuildLog,
) -> Result<(), Failure> {
    let platform = target.platform;
    let sbom = spdx_document(&SbomInput {
        image: target.image,
        digest: &target.subject.digest,
        platform,
        packages: contents.packages,
        wheels: contents.wheels,
        debian: contents.debian,
        distro: contents.distro,
    });
    let (config, manifest) = sbom_referrer(&sbom, &target.subject);
    push_referrer(
        client,
        target.repository,
        [config.bytes, sbom.bytes],
        &manifest.bytes,
    )
    .await?;
    log.line(format!(
        "{platform}: attached the SBOM ({} conda packages, {} wheels, {} Debian packages) as {}",
        contents.packages.len(),
        contents.wheels.len(),
        contents.debian.len(),
        manifest.digest
    ))
    .await;
    Ok(())
}

/// Pushes `blobs` (the empty config, the document) and then the referrer `manifest` by digest.
async fn push_referrer(
    client: &RegistryClient,
    repository: &str,
    blobs: [Vec<u8>; 2],
    manifest: &[u8],
) -> Result<(), Failure> {
    for blob in blobs {
        client
            .push_blob_bytes(repository, blob.into(), None)
            .await?;
    }
    let digest = crate::registry::client::sha256_digest(manifest);
    client
        .push_manifest(
            repository,
            &digest,
            manifest.to_vec().into(),
            MEDIA_TYPE_MANIFEST,
        )
        .await?;
    Ok(())
}
