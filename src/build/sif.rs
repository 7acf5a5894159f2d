//! SIF images from the same staged layers as OCI images: flatten the base and kiln's layers into
//! one root file system, add Singularity's metadata, squash it, write the SIF, and push it as
//! the ORAS artifact `singularity pull oras://` reads (plus an https link to the same bytes).
//!
//! Everything that goes into the file is derived from the lock and the request (the UUID from
//! the image config, every timestamp fixed, nothing of kiln's address or data directory), so
//! the same lock gives the same SIF, byte for byte, on every kiln.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::BuildLog;
use super::native::{Failure, NativeBuilder};
use super::sbom::SbomTarget;
use crate::assemble::flatten::flatten;
use crate::assemble::sif::{SifInput, SifSummary, uuid_from, write_sif};
use crate::assemble::singularity::{
    DefinitionScripts, RuntimeConfig, write_definition_scripts, write_singularity_metadata,
};
use crate::assemble::squashfs::mksquashfs;
use crate::assemble::{self, Descriptor, MEDIA_TYPE_MANIFEST};
use crate::config::Config;
use crate::recipe::{RecipeImages, Recipes};
use crate::registry::client::RegistryClient;
use crate::resolve::Lock;
use crate::spec::{ImageRef, Platform, Request};
use crate::store::{BuildOutcome, BuildRecord, ImageOutput};

/// The creation time written into every SIF: fixed, so rebuilding gives the same bytes.
const SIF_CREATED: i64 = 0;

impl NativeBuilder {
    /// Builds the SIF of a one-platform `request` and pushes it to `repository:tag`.
    pub(super) async fn build_sif(
        &self,
        build: &BuildRecord,
        request: &Request,
        repository: &str,
        tag: &str,
        work: &Path,
        log: &BuildLog,
    ) -> Result<BuildOutcome, Failure> {
        let &[platform] = request.platforms() else {
            return Err(Failure::refused(
                "a SIF holds one platform; sif requests are built once per platform",
            ));
        };
        let mut lock = Lock::default();
        let staged = self
            .stage_platform(request, platform, work, log, &mut lock)
            .await?;
        let mut layers = Vec::new();
        for layer in &staged.base.layers {
            layers.push(
                self.base_blob(&staged.base_repository, &layer.digest)
                    .await?,
            );
        }
        // kiln's layers are multi-member gzip blobs, which flattening reads as one tar each.
        layers.extend(staged.layers.iter().map(|layer| layer.gz_path.clone()));
        let config: Value = serde_json::from_slice(&staged.config.bytes)
            .map_err(Failure::json("the image config is not JSON"))?;
        let labels = singularity_labels(&config["config"], platform);
        let (sif_path, summary) = assemble_sif(
            SifContents {
                platform,
                layers,
                config,
                definition: self.stored_definition(request)?,
                labels,
                scripts: DefinitionScripts::default(),
                // The config holds the request, the lock, the base and every layer: all that
                // makes the image, and nothing of the kiln that made it (the build key hashes
                // kiln's registry host).
                seed: staged.config.digest.clone(),
            },
            work,
            log,
        )
        .await?;
        let started = Instant::now();
        let pushed = push_sif(
            &self.client,
            &self.public_url,
            repository,
            &[tag.to_owned()],
            &sif_path,
            &summary,
        )
        .await?;
        log.line(format!(
            "{platform}: pushed {}@{} in {:.1} s",
            build.image,
            pushed.manifest_digest,
            started.elapsed().as_secs_f64()
        ))
        .await;
        let target = SbomTarget {
            image: &build.image.without_tag(),
            repository,
            platform,
            subject: pushed.manifest.clone(),
        };
        self.attach_sbom(&target, &staged.base, &staged.base_repository, &lock, log)
            .await?;
        Ok(pushed.outcome(platform, &summary, Some(lock.text(platform))))
    }

    /// The definition file stored in the SIF of `request`: its recipe, with the images in
    /// kiln's registry named without kiln's host, so the file is the same on every kiln.
    fn stored_definition(&self, request: &Request) -> Result<String, Failure> {
        let recipes = Recipes::render(request, &self.definition_images)?;
        Ok(format!(
            "# Built natively by kiln; `kiln/...` images are in the registry of the kiln that \
             built it.\n{}",
            recipes.singularity
        ))
    }

    /// A base layer blob on disk, downloaded from kiln's registry the first time.
    pub(super) async fn base_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<PathBuf, Failure> {
        let path = self.blob_dir.join(digest.replace(':', "-"));
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.blob_dir)
            .await
            .map_err(Failure::io(format!(
                "cannot create {}",
                self.blob_dir.display()
            )))?;
        let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(Failure::io(format!("cannot create {}", temp.display())))?;
        // pull_blob checks the digest, so only verified bytes are renamed into place.
        let pulled = self.client.pull_blob(repository, digest, file).await;
        if let Err(err) = pulled {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err.into());
        }
        tokio::fs::rename(&temp, &path)
            .await
            .map_err(Failure::io(format!(
                "cannot move {} into place",
                temp.display()
            )))?;
        Ok(path)
    }
}

/// Everything a SIF is made of.
pub(super) struct SifContents {
    pub(super) platform: Platform,
    /// The image's layer tars (gzip or plain), bottom first.
    pub(super) layers: Vec<PathBuf>,
    /// The whole OCI image config document.
    pub(super) config: Value,
    /// The definition file stored in the SIF and in `/.singularity.d/Singularity`.
    pub(super) definition: String,
    /// `labels.json`, complete.
    pub(super) labels: BTreeMap<String, String>,
    /// A definition file's own scripts, written over the ones derived from the config.
    pub(super) scripts: DefinitionScripts,
    /// Bytes the SIF's UUID is derived from (the build key), so rebuilds give the same file.
    pub(super) seed: String,
}

/// Flattens the layers into one root file system under `work`, adds Singularity's metadata,
/// squashes it and writes `work/image.sif`; returns its path and summary.
pub(super) async fn assemble_sif(
    contents: SifContents,
    work: &Path,
    log: &BuildLog,
) -> Result<(PathBuf, SifSummary), Failure> {
    let platform = contents.platform;
    let started = Instant::now();
    let rootfs = work.join("rootfs");
    let runtime = runtime_config(&contents.config["config"]);
    let layer_count = contents.layers.len();
    {
        let rootfs = rootfs.clone();
        let layers = contents.layers.clone();
        let definition = contents.definition.clone();
        let labels = contents.labels.clone();
        let scripts = contents.scripts.clone();
        tokio::task::spawn_blocking(move || {
            flatten(&layers, &rootfs)?;
            write_singularity_metadata(&rootfs, &runtime, &definition, &labels)
                .and_then(|()| write_definition_scripts(&rootfs, &scripts))
                .map_err(Failure::from)
        })
        .await
        .map_err(Failure::crashed("flattening"))??;
    }
    log.line(format!(
        "{platform}: flattened {layer_count} layers into one root file system in {:.1} s",
        started.elapsed().as_secs_f64()
    ))
    .await;

    let squashfs = work.join("rootfs.squashfs");
    let squashed = mksquashfs(&rootfs, &squashfs).await?;
    log.line(format!(
        "{platform}: mksquashfs wrote {} bytes in {:.1} s",
        squashed.size,
        squashed.duration.as_secs_f64()
    ))
    .await;

    let started = Instant::now();
    let oci_config = serde_json::to_vec(&contents.config["config"])
        .map_err(Failure::json("the image config cannot be written"))?;
    let sif_path = work.join("image.sif");
    let summary = {
        let sif_path = sif_path.clone();
        // Reading the metadata back and writing the SIF are file work: off the runtime.
        tokio::task::spawn_blocking(move || {
            let inspect = inspect_metadata(&rootfs, &contents.definition, &contents.labels)?;
            write_sif(
                &SifInput {
                    id: uuid_from(contents.seed.as_bytes()),
                    created: SIF_CREATED,
                    arch: platform.into(),
                    definition: contents.definition.as_bytes(),
                    inspect: &inspect,
                    oci_config: Some(&oci_config),
                    squashfs: &squashfs,
                },
                &sif_path,
            )
            .map_err(Failure::from)
        })
        .await
        .map_err(Failure::crashed("writing the SIF"))??
    };
    log.line(format!(
        "{platform}: wrote the SIF ({} bytes, sha256 {}) in {:.1} s",
        summary.size,
        summary.sha256,
        started.elapsed().as_secs_f64()
    ))
    .await;
    Ok((sif_path, summary))
}

/// A SIF in kiln's registry.
pub(super) struct PushedSif {
    /// The digest of the ORAS manifest the tags point at.
    pub(super) manifest_digest: String,
    /// The ORAS manifest's descriptor, what referrers such as the SBOM point at.
    pub(super) manifest: Descriptor,
    /// Where the file downloads over plain HTTP(S).
    pub(super) download_url: Option<String>,
}

impl PushedSif {
    /// The successful build of this SIF for `platform`, with its lock text, if any.
    pub(super) fn outcome(
        self,
        platform: Platform,
        summary: &SifSummary,
        lock: Option<String>,
    ) -> BuildOutcome {
        BuildOutcome::Succeeded {
            digest: self.manifest_digest.clone(),
            outputs: vec![ImageOutput {
                platform: platform.to_string(),
                digest: self.manifest_digest,
                size: summary.size,
                download_url: self.download_url,
            }],
            lock,
        }
    }
}

/// Pushes the SIF at `sif_path` as the ORAS artifact `singularity pull oras://` reads, tagged
/// with each of `tags` in `repository`.
pub(super) async fn push_sif(
    client: &RegistryClient,
    public_url: &str,
    repository: &str,
    tags: &[String],
    sif_path: &Path,
    summary: &SifSummary,
) -> Result<PushedSif, Failure> {
    let sif_digest = format!("sha256:{}", summary.sha256);
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let title = format!(
        "{name}_{}.sif",
        tags.first().map_or("latest", String::as_str)
    );
    let (artifact_config, manifest) = assemble::sif_artifact(&sif_digest, summary.size, &title);
    client
        .push_blob_bytes(repository, artifact_config.bytes.into(), None)
        .await?;
    client
        .push_blob_file(repository, &sif_digest, sif_path, None)
        .await?;
    for tag in tags {
        client
            .push_manifest(
                repository,
                tag,
                manifest.bytes.clone().into(),
                MEDIA_TYPE_MANIFEST,
            )
            .await?;
    }
    Ok(PushedSif {
        manifest: manifest.descriptor(),
        manifest_digest: manifest.digest,
        // The repository lets kiln read the blob from an external registry, which keeps blobs
        // per repository; the embedded registry, which reads by digest alone, ignores it.
        download_url: crate::registry::blob_download_path(&sif_digest)
            .map(|path| format!("{public_url}{path}?repository={repository}")),
    })
}

/// The recipe images of `config`, those in kiln's own registry named without its host
/// (`kiln/base/debian:bookworm`), for definition files stored in SIFs.
pub(super) fn definition_images(config: &Config) -> RecipeImages {
    let own = format!("{}/", config.registry);
    let without_host = |image: ImageRef| {
        image
            .as_str()
            .strip_prefix(&own)
            .and_then(|path| path.parse().ok())
            .unwrap_or(image)
    };
    let images = config.recipe_images();
    RecipeImages {
        micromamba: without_host(images.micromamba),
        conda_base: without_host(images.conda_base),
        python_base: without_host(images.python_base),
        registry: None,
    }
}

/// The parts of an OCI `config` object Singularity's runtime uses.
fn runtime_config(config: &Value) -> RuntimeConfig {
    let strings = |value: &Value| -> Option<Vec<String>> {
        value.as_array().map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
    };
    RuntimeConfig {
        env: strings(&config["Env"]).unwrap_or_default(),
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
    }
}

/// The image's labels plus the ones `singularity build` adds (without its build date, which
/// would make every build differ).
pub(super) fn singularity_labels(config: &Value, platform: Platform) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = config["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    labels.insert("org.label-schema.schema-version".into(), "1.0".into());
    labels.insert(
        "org.label-schema.build-arch".into(),
        platform.architecture().into(),
    );
    labels
}

/// `inspect-metadata.json`, what `singularity inspect` shows without mounting the image: the
/// environment scripts, labels, runscript and definition, as they are in the root file system.
fn inspect_metadata(
    rootfs: &Path,
    definition: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<u8>, Failure> {
    let meta = rootfs.join(".singularity.d");
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(Failure::io(format!("cannot read {}", path.display())))
    };
    let mut environment = BTreeMap::new();
    let env_dir = meta.join("env");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&env_dir)
        .map_err(Failure::io(format!("cannot read {}", env_dir.display())))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    scripts.sort();
    for script in scripts {
        let name = script
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        environment.insert(format!("/.singularity.d/env/{name}"), read(&script)?);
    }
    let document = json!({
        "data": {
            "attributes": {
                "deffile": definition,
                "environment": environment,
                "labels": labels,
                "runscript": read(&meta.join("runscript"))?,
                "startscript": read(&meta.join("startscript"))?,
            }
        },
        "type": "container",
    });
    serde_json::to_vec(&document).map_err(Failure::json("inspect metadata"))
}
