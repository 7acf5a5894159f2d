//! Every native image's SBOM: made from the lock and the base's dpkg status, pushed next to
//! the image as an OCI referrer (`artifactType: application/spdx+json`), so `oras discover`
//! lists it and kiln's build page serves it.

use std::path::PathBuf;

use super::BuildLog;
use super::native::{Failure, NativeBuilder};
use crate::assemble::sbom::{SbomInput, parse_dpkg_status, sbom_referrer, spdx_document};
use crate::assemble::{Descriptor, MEDIA_TYPE_MANIFEST};
use crate::base::{BaseManifest, LABEL_SUITE};
use crate::registry::client::RegistryClient;
use crate::resolve::Lock;
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
        let sbom = spdx_document(&SbomInput {
            image: target.image,
            digest: &target.subject.digest,
            platform,
            packages: lock.packages(platform),
            wheels: lock.wheels(platform),
            debian: &debian,
            distro: base.labels.get(LABEL_SUITE).map(String::as_str),
        });
        let (config, manifest) = sbom_referrer(&sbom, &target.subject);
        push_referrer(
            &self.client,
            target.repository,
            [config.bytes, sbom.bytes],
            &manifest.bytes,
        )
        .await?;
        log.line(format!(
            "{platform}: attached the SBOM ({} conda packages, {} wheels, {} Debian packages) as {}",
            lock.packages(platform).len(),
            lock.wheels(platform).len(),
            debian.len(),
            manifest.digest
        ))
        .await;
        Ok(())
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
        let status = tokio::task::spawn_blocking(move || crate::base::dpkg::dpkg_status(&layers))
            .await
            .map_err(|err| format!("reading the base's dpkg status crashed: {err}"))?
            .map_err(|err| crate::error_chain(&err))?
            .unwrap_or_default();
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
            .await
            .map_err(|err| crate::error_chain(&err))?;
    }
    let digest = crate::registry::client::sha256_digest(manifest);
    client
        .push_manifest(
            repository,
            &digest,
            manifest.to_vec().into(),
            MEDIA_TYPE_MANIFEST,
        )
        .await
        .map_err(|err| crate::error_chain(&err))?;
    Ok(())
}
