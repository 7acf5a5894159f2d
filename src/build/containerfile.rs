//! The containerfile backend: a user's Dockerfile (Wave's `containerFile`) built with buildah
//! and pushed to kiln's registry.
//!
//! Such a build's record holds the Dockerfile in `containerfile`, the target image in `image`
//! and a [`BuildJob::Dockerfile`] as its job. The Dockerfile is built in an empty context
//! (clients send no files), its steps contained ([`super::sandbox`]), and the image is pushed to
//! kiln's registry at the address the builder reaches it by, with an SBOM of its Debian
//! packages as a referrer ([`super::sbom`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;

use super::buildah::{BuildOptions, Buildah};
use super::buildah_build::{
    build_failure, failure_detail, finish, forward, fresh_context, streamed, write_containerfile,
};
use super::sbom::{SbomTarget, attach_recipe_sbom, pushed_dpkg_status};
use super::{Backend, BuildLog};
use crate::assemble::{Descriptor, MEDIA_TYPE_MANIFEST};
use crate::credentials::Credentials;
use crate::registry::client::{Auth, ClientError, RegistryClient, is_loopback};
use crate::spec::{BuildJob, Dockerfile};
use crate::store::{BuildOutcome, BuildRecord, ImageOutput};

/// Docker's schema 2 manifest, which buildah pushes when a base image made it keep that format.
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The largest image config read back (for its labels); buildah writes a few KiB.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Where the containerfile builder pushes and where it works.
#[derive(Debug, Clone)]
pub struct ContainerfileSettings {
    /// kiln's registry as the builder reaches it (`host:port`, e.g. its loopback listener);
    /// images named `<public host>/<repository>:<tag>` are pushed to
    /// `<registry>/<repository>:<tag>`.
    pub registry: String,
    /// The registry user the builder pushes as.
    pub credentials: Credentials,
    /// Whether `registry` is spoken to over plain HTTP though it is not loopback (it is listed
    /// in `insecure_registries`). Loopback registries always are.
    pub insecure: bool,
    /// Scratch space: each build gets `<work_dir>/<build id>/`, removed afterwards.
    pub work_dir: PathBuf,
}

/// Builds users' Dockerfiles with buildah and pushes them to kiln's registry.
#[derive(Debug, Clone)]
pub struct ContainerfileBuilder {
    buildah: Buildah,
    settings: ContainerfileSettings,
    /// Reads pushed manifests back, for the sizes clients are told and the SBOM, and pushes
    /// the SBOM.
    client: RegistryClient,
}

impl ContainerfileBuilder {
    /// A builder running `buildah` (which carries the site's CA bundle for RUN steps) and
    /// pushing as `settings` say.
    pub fn new(buildah: Buildah, settings: ContainerfileSettings) -> Result<Self, ClientError> {
        let insecure_hosts = if settings.insecure {
            vec![settings.registry.clone()]
        } else {
            Vec::new()
        };
        let client = RegistryClient::new(
            &settings.registry,
            Auth::Basic(settings.credentials.clone()),
            &insecure_hosts,
        )?;
        Ok(ContainerfileBuilder {
            buildah,
            settings,
            client,
        })
    }

    /// Whether buildah must skip TLS verification for kiln's registry: it cannot speak plain
    /// HTTP to it otherwise.
    fn registry_insecure(&self) -> bool {
        self.settings.insecure || is_loopback(&self.settings.registry)
    }
}

/// A build step that failed; the queue renders it as the reason users read.
type Failure = super::BuildError;

#[async_trait]
impl Backend for ContainerfileBuilder {
    async fn try_run(&self, build: &BuildRecord, log: &BuildLog) -> Result<BuildOutcome, Failure> {
        let work = self.settings.work_dir.join(&build.id);
        let local = local_tag(&build.id);
        let result = match super::fresh_work_dir(&work).await {
            Ok(()) => self.build(build, &work, &local, log).await,
            Err(err) => Err(err),
        };
        // A Dockerfile's work directory is small: removed before answering.
        super::remove_work_dir(&work).await;
        finish(&self.buildah, &local, result).await
    }
}

impl ContainerfileBuilder {
    async fn build(
        &self,
        build: &BuildRecord,
        work: &Path,
        local: &str,
        log: &BuildLog,
    ) -> Result<BuildOutcome, Failure> {
        let BuildJob::Dockerfile(job) = &build.job else {
            return Err(Failure::Refused(format!(
                "the containerfile builder builds Dockerfiles, not {} builds",
                build.job.kind()
            )));
        };
        // The check kiln's API made before taking it: stored text is not trusted either.
        Dockerfile::parse(&build.containerfile).map_err(|err| Failure::Refused(err.to_string()))?;
        let (repository, tag) = (build.image.repository(), build.image.tag());
        let context = fresh_context(work).await?;
        let dockerfile = write_containerfile(work, &build.containerfile).await?;
        let platform = job.platform;

        log.line(format!(
            "building the Dockerfile for {platform} with buildah"
        ))
        .await;
        let options = BuildOptions { force_rm: true };
        let (built, tail) = streamed(log, |lines| {
            self.buildah.build_with(
                &context,
                &dockerfile,
                local,
                platform,
                &options,
                forward(lines),
            )
        })
        .await;
        if let Err(err) = built {
            return Err(build_failure(err, &tail, "the Dockerfile"));
        }

        let destination = format!("{}/{repository}:{tag}", self.settings.registry);
        log.line(format!("pushing to {destination}")).await;
        let insecure = self.registry_insecure();
        let (pushed, tail) = streamed(log, |lines| {
            self.buildah.push(
                local,
                &destination,
                Some(&self.settings.credentials),
                insecure,
                forward(lines),
            )
        })
        .await;
        let digest = pushed.map_err(|err| {
            Failure::Refused(format!(
                "pushing the image to {} failed: {}",
                self.settings.registry,
                failure_detail(&err, &tail)
            ))
        })?;

        let pushed = self.read_back(repository, &digest).await?;
        log.line(format!("pushed {}@{digest}", build.image)).await;
        let status =
            pushed_dpkg_status(&self.client, repository, &pushed.layers, &work.join("sbom"))
                .await?;
        let target = SbomTarget {
            image: &build.image.without_tag(),
            repository,
            platform,
            subject: pushed.manifest,
        };
        attach_recipe_sbom(&self.client, &target, &status, &pushed.config, log).await?;
        Ok(BuildOutcome::Succeeded {
            digest: digest.clone(),
            outputs: vec![ImageOutput {
                platform: platform.to_string(),
                digest,
                size: pushed.size,
                download_url: None,
            }],
            lock: None,
        })
    }

    /// Reads the pushed manifest `digest` back: its descriptor, its layers, its config and
    /// the bytes a pull downloads (config and layers).
    async fn read_back(&self, repository: &str, digest: &str) -> Result<PushedImage, Failure> {
        let unreadable =
            |cause: Failure| Failure::step("the pushed image cannot be read back", cause);
        let (bytes, _) = self
            .client
            .pull_manifest(
                repository,
                digest,
                &[MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST],
            )
            .await
            .map_err(|err| unreadable(err.into()))?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|err| {
            unreadable(Failure::json("its manifest is not an image manifest")(err))
        })?;
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let mut config = Vec::new();
        if manifest.config.size <= MAX_CONFIG_BYTES {
            self.client
                .pull_blob(repository, &manifest.config.digest, &mut config)
                .await
                .map_err(|err| unreadable(err.into()))?;
        }
        Ok(PushedImage {
            manifest: Descriptor {
                media_type: manifest
                    .media_type
                    .unwrap_or_else(|| MEDIA_TYPE_MANIFEST.to_owned()),
                digest: digest.to_owned(),
                size: bytes.len() as u64,
                annotations: None,
            },
            config: serde_json::from_slice(&config).unwrap_or_default(),
            layers: manifest.layers,
            size,
        })
    }
}

/// An image manifest (OCI or Docker schema 2), as far as kiln reads pushed ones.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What buildah pushed, read back from the registry.
struct PushedImage {
    /// The image manifest, as referrers name their subject.
    manifest: Descriptor,
    /// The OCI config document (`null` if it could not be read as JSON).
    config: serde_json::Value,
    /// The layers, bottom first.
    layers: Vec<Descriptor>,
    /// Bytes a pull downloads: config and layers.
    size: u64,
}

/// The name the image has in buildah's local storage between build and push; unique per build.
fn local_tag(build_id: &str) -> String {
    let tag: String = build_id
        .trim_start_matches(['.', '-'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    format!("localhost/kiln-containerfile:{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tags_are_unique_per_build_and_valid() {
        assert_eq!(
            local_tag("bd-0123456789abcdef_1"),
            "localhost/kiln-containerfile:bd-0123456789abcdef_1"
        );
    }
}
