//! The definition-file backend: a Singularity definition sent to kiln's remote builder
//! (`singularity build --remote`, `scs-build`), run with buildah and turned into a SIF.
//!
//! The definition becomes a Containerfile ([`Definition::containerfile`]): its base image, the
//! `%files` copies out of the client's uploaded build context and the `%post` script. buildah
//! builds it with its steps contained ([`super::sandbox`]; arm64 under qemu-user binfmt), writes the image as an OCI
//! layout on disk, and the SIF is assembled from those layers like every other SIF kiln makes,
//! with the definition's `%environment`, `%runscript`, `%startscript`, `%labels` and `%help`
//! written where `singularity build` puts them and the definition itself stored in the file.
//! The SIF is pushed to the library repository the build request names, with an SBOM of the
//! Debian packages its layers' dpkg status names as a referrer ([`super::sbom`]).
//!
//! `Bootstrap: localimage` builds on a SIF kiln holds, named by its library reference: its root
//! file system is unpacked into the build context and copied onto `scratch` as the first layer,
//! and its runtime settings (`Env` and the like, from its `oci-config.json`) carry over to the
//! new SIF. `%post` runs without them (buildah's default `PATH`).

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::buildah::{BuildOptions, Buildah};
use super::buildah_build::{
    build_failure, finish, forward, fresh_context, streamed, write_containerfile,
};
use super::contexts::BuildContexts;
use super::native::Failure;
use super::sbom::{SbomTarget, attach_recipe_sbom, local_dpkg_status};
use super::sif::{SifContents, assemble_sif, push_sif, singularity_labels};
use super::{Backend, BuildLog};
use crate::assemble::sif::{SifArch, read_objects};
use crate::assemble::singularity::DefinitionScripts;
use crate::assemble::{MEDIA_TYPE_MANIFEST, MEDIA_TYPE_SIF_LAYER};
use crate::recipe::definition_containerfile::{ContextSource, containerfile};
use crate::registry::client::RegistryClient;
use crate::registry::{LIBRARY_DEFAULT_COLLECTION, LIBRARY_OPERATOR, library_repository};
use crate::spec::{Bootstrap, BuildJob, Definition, DefinitionJob, Platform, Script};
use crate::store::{BuildOutcome, BuildRecord};

/// Where a `Bootstrap: localimage` SIF's root file system is unpacked in the build context.
const LOCAL_IMAGE_DIR: &str = ".kiln-localimage";

/// The shell a script section runs with when it names none, as in `singularity build`.
const DEFAULT_SHELL: &str = "/bin/sh";

/// Where the definition builder reaches things.
#[derive(Debug, Clone)]
pub struct DefinitionSettings {
    /// kiln's registry as the builder reaches it (`host:port`).
    pub registry: String,
    /// The registry host in kiln's public image names; `From:` images there are pulled from
    /// `registry` instead.
    pub public_registry: String,
    /// The URL clients reach kiln at, for download links.
    pub public_url: String,
    /// Uploaded build contexts, by owner and digest.
    pub contexts: BuildContexts,
    /// Scratch space: each build gets `<work_dir>/<build id>/`, removed afterwards.
    pub work_dir: PathBuf,
}

/// Builds definition files with buildah into SIFs in kiln's registry.
#[derive(Debug, Clone)]
pub struct DefinitionBuilder {
    buildah: Buildah,
    /// Pushes to kiln's registry with the builder's credential.
    client: RegistryClient,
    settings: DefinitionSettings,
}

impl DefinitionBuilder {
    /// A builder running `buildah` and pushing with `client`.
    pub fn new(buildah: Buildah, client: RegistryClient, settings: DefinitionSettings) -> Self {
        DefinitionBuilder {
            buildah,
            client,
            settings,
        }
    }

    /// The image buildah pulls for `From:`: kiln's own images over its local address, names
    /// without a registry from Docker Hub, fully qualified (buildah refuses to guess).
    fn base_image(&self, from: &str) -> String {
        let from = from.strip_prefix("docker://").unwrap_or(from);
        let (first, rest) = from.split_once('/').unwrap_or(("", from));
        let is_host = first.contains(['.', ':']) || first == "localhost";
        if !is_host {
            let path = if from.contains('/') {
                from.to_owned()
            } else {
                format!("library/{from}")
            };
            return format!("docker.io/{path}");
        }
        if first == self.settings.public_registry {
            format!("{}/{rest}", self.settings.registry)
        } else {
            from.to_owned()
        }
    }
}

#[async_trait]
impl Backend for DefinitionBuilder {
    async fn try_run(&self, build: &BuildRecord, log: &BuildLog) -> Result<BuildOutcome, Failure> {
        let work = self.settings.work_dir.join(&build.id);
        let local = format!("localhost/kiln-definition:{}", build.id.replace('_', "-"));
        let result = match super::fresh_work_dir(&work).await {
            Ok(()) => self.build(build, &work, &local, log).await,
            Err(err) => Err(err),
        };
        super::remove_work_dir_later(work);
        finish(&self.buildah, &local, result).await
    }
}

impl DefinitionBuilder {
    async fn build(
        &self,
        build: &BuildRecord,
        work: &Path,
        local: &str,
        log: &BuildLog,
    ) -> Result<BuildOutcome, Failure> {
        let BuildJob::Definition(request) = &build.job else {
            return Err(Failure::Refused(format!(
                "the definition builder builds definition files, not {} builds",
                build.job.kind()
            )));
        };
        let definition = Definition::parse(&build.containerfile).map_err(|err| {
            Failure::refused(format!("the definition file cannot be built: {err}"))
        })?;
        let platform = request.platform;

        let context = fresh_context(work).await?;
        let sources = self
            .stage_files(&definition, request, &context, log)
            .await?;
        let (base, text, sif_config) = match definition.bootstrap {
            Bootstrap::Docker => {
                let base = self.base_image(&definition.from);
                let text = containerfile(&definition, &base, &sources);
                (base, text, None)
            }
            Bootstrap::LocalImage => {
                let imported = self
                    .import_sif(&definition.from, platform, work, &context, log)
                    .await?;
                // The SIF's root file system, unpacked into the context, is the first layer.
                let text = containerfile(&definition, "scratch", &sources).replacen(
                    "\n",
                    &format!("\nCOPY [\"{LOCAL_IMAGE_DIR}/\", \"/\"]\n"),
                    1,
                );
                (format!("library://{}", definition.from), text, imported)
            }
        };
        let containerfile = write_containerfile(work, &text).await?;

        log.line(format!(
            "building the definition file for {platform} from {base} with buildah"
        ))
        .await;
        let options = BuildOptions { force_rm: true };
        let (built, tail) = streamed(log, |lines| {
            self.buildah.build_with(
                &context,
                &containerfile,
                local,
                platform,
                &options,
                forward(lines),
            )
        })
        .await;
        if let Err(err) = built {
            return Err(build_failure(err, &tail, "the build"));
        }

        let layout = work.join("oci");
        self.buildah.push_to_oci_layout(local, &layout).await?;
        let mut image = read_oci_layout(&layout).await?;
        if let Some(old) = sif_config {
            // The runtime settings of the SIF built on (its Env, above all) carry over where
            // the definition set none.
            inherit_config(&mut image.config["config"], old);
        }

        let status = local_dpkg_status(image.layers.clone()).await?;
        let mut labels = singularity_labels(&image.config["config"], platform);
        labels.extend(definition.labels.iter().cloned());
        let (sif_path, summary) = assemble_sif(
            SifContents {
                platform,
                layers: image.layers,
                config: image.config.clone(),
                definition: definition.raw.clone(),
                labels,
                scripts: scripts_of(&definition),
                seed: build.key.to_string(),
            },
            work,
            log,
        )
        .await?;
        let pushed = push_sif(
            &self.client,
            &self.settings.public_url,
            &request.repository,
            &request.tags,
            &sif_path,
            &summary,
        )
        .await?;
        log.line(format!(
            "pushed library://{}:{} ({} bytes, sha256.{})",
            request.library_ref,
            request.tags.join(","),
            summary.size,
            summary.sha256
        ))
        .await;
        let target = SbomTarget {
            image: &build.image.without_tag(),
            repository: &request.repository,
            platform,
            subject: pushed.manifest.clone(),
        };
        attach_recipe_sbom(&self.client, &target, &status, &image.config, log).await?;
        Ok(pushed.outcome(platform, &summary, None))
    }

    /// Unpacks the build context into `context` and returns, for each `%files` entry, where its
    /// source is relative to `context`. Sources are looked up as the client packed them: made
    /// absolute against its working directory, without the leading `/`.
    async fn stage_files(
        &self,
        definition: &Definition,
        request: &DefinitionJob,
        context: &Path,
        log: &BuildLog,
    ) -> Result<Vec<ContextSource>, Failure> {
        if definition.files.is_empty() {
            return Ok(Vec::new());
        }
        let Some(digest) = &request.context else {
            return Err(Failure::refused(
                "the definition has a %files section, but the client uploaded no build context",
            ));
        };
        let hex = digest.strip_prefix("sha256.").unwrap_or(digest);
        let unpacked = self
            .settings
            .contexts
            .unpack(&request.user, hex, context)
            .await
            .map_err(|err| Failure::refused(crate::error_chain(&err)))?;
        log.line(format!(
            "unpacked the build context {digest}: {unpacked} files"
        ))
        .await;
        let mut sources = Vec::new();
        for copy in &definition.files {
            let absolute = if copy.source.starts_with('/') {
                copy.source.clone()
            } else {
                format!(
                    "{}/{}",
                    request.working_dir.trim_end_matches('/'),
                    copy.source
                )
            };
            let relative = normalise(&absolute).ok_or_else(|| {
                Failure::refused(format!(
                    "the %files source {} leaves the build context",
                    copy.source
                ))
            })?;
            let has_glob = relative.contains(['*', '?', '[']);
            let directory = match tokio::fs::symlink_metadata(context.join(&relative)).await {
                Ok(meta) => meta.is_dir(),
                Err(_) if has_glob => false,
                Err(_) => {
                    return Err(Failure::Refused(format!(
                        "the %files source {} ({absolute}) is not in the uploaded build context",
                        copy.source
                    )));
                }
            };
            sources.push(ContextSource {
                path: relative,
                directory,
            });
        }
        Ok(sources)
    }
}

impl DefinitionBuilder {
    /// Fetches the SIF `from` names (a library reference of a SIF kiln holds), checks it is
    /// for `platform`, and unpacks its root file system into `context/`[`LOCAL_IMAGE_DIR`].
    /// Returns the OCI config `config` object the SIF carries, if any.
    async fn import_sif(
        &self,
        from: &str,
        platform: Platform,
        work: &Path,
        context: &Path,
        log: &BuildLog,
    ) -> Result<Option<Value>, Failure> {
        let (repository, tag) = library_location(from).ok_or_else(|| {
            Failure::refused(format!(
                "Bootstrap: localimage needs From: to name a SIF in kiln's library \
                 ([entity/collection/]name[:tag]), not {from:?}"
            ))
        })?;
        let missing =
            |cause: Failure| Failure::step(format!("From: {from}: kiln holds no such SIF"), cause);
        let (manifest, _) = self
            .client
            .pull_manifest(&repository, &tag, &[MEDIA_TYPE_MANIFEST])
            .await
            .map_err(|err| missing(err.into()))?;
        let manifest: Value = serde_json::from_slice(&manifest)
            .map_err(|err| missing(Failure::json("its manifest is not JSON")(err)))?;
        let layer = &manifest["layers"][0];
        let Some(digest) = layer["digest"]
            .as_str()
            .filter(|_| layer["mediaType"] == MEDIA_TYPE_SIF_LAYER)
        else {
            return Err(missing(Failure::refused("the image there is not a SIF")));
        };
        let sif = work.join("base.sif");
        let file = tokio::fs::File::create(&sif)
            .await
            .map_err(Failure::io(format!("cannot create {}", sif.display())))?;
        self.client
            .pull_blob(&repository, digest, file)
            .await
            .map_err(|err| missing(err.into()))?;

        let mut header = [0u8; 48];
        let read_header = async {
            use tokio::io::AsyncReadExt as _;
            tokio::fs::File::open(&sif)
                .await?
                .read_exact(&mut header)
                .await
        };
        read_header
            .await
            .map_err(Failure::io(format!("cannot read {}", sif.display())))?;
        let arch = SifArch::of_header(&header)
            .ok_or_else(|| missing(Failure::refused("not a SIF file")))?;
        if arch != SifArch::from(platform) {
            return Err(Failure::Refused(format!(
                "From: {from} is a SIF for {}; this build is for {platform}",
                arch.as_str()
            )));
        }
        let objects = read_objects(&sif).map_err(|err| missing(err.into()))?;
        let root = objects
            .iter()
            .find(|object| object.primary_partition)
            .ok_or_else(|| missing(Failure::refused("the SIF has no root file system")))?;
        let config = match objects.iter().find(|o| o.name == "oci-config.json") {
            Some(object) => {
                let bytes = read_range(&sif, object.offset, object.size).await?;
                serde_json::from_slice::<Value>(&bytes).ok()
            }
            None => None,
        };

        let target = context.join(LOCAL_IMAGE_DIR);
        let output = crate::child::command("unsquashfs")
            .args([
                "-no-xattrs",
                "-quiet",
                "-offset",
                &root.offset.to_string(),
                "-dest",
            ])
            .arg(&target)
            .arg(&sif)
            .output()
            .await
            .map_err(Failure::io(
                "cannot run unsquashfs; is squashfs-tools installed?",
            ))?;
        if !output.status.success() {
            return Err(Failure::Refused(format!(
                "unsquashfs could not unpack the root file system of {from}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        // The copy is a build context entry now; the download is not needed any more.
        let _ = tokio::fs::remove_file(&sif).await;
        log.line(format!(
            "building on the SIF {from} ({}, {} bytes of root file system)",
            arch.as_str(),
            root.size
        ))
        .await;
        Ok(config)
    }
}

/// Where a library reference (`[library://][[entity/]collection/]name[:tag]`) lives in kiln's
/// registry: one name is `library/default/<name>`, two `library/<collection>/<name>`.
fn library_location(from: &str) -> Option<(String, String)> {
    let reference = from.strip_prefix("library://").unwrap_or(from);
    let (path, tag) = match reference.rsplit_once(':') {
        Some((path, tag)) => (path, tag),
        None => (reference, "latest"),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (entity, collection, container) = match parts.as_slice() {
        [container] => (LIBRARY_OPERATOR, LIBRARY_DEFAULT_COLLECTION, *container),
        [collection, container] => (LIBRARY_OPERATOR, *collection, *container),
        [entity, collection, container] => (*entity, *collection, *container),
        _ => return None,
    };
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if ![entity, collection, container, tag].into_iter().all(valid) {
        return None;
    }
    Some((
        library_repository(entity, collection, container),
        tag.to_owned(),
    ))
}

/// `size` bytes of `path` from `offset`.
async fn read_range(path: &Path, offset: u64, size: u64) -> Result<Vec<u8>, Failure> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let failed = |err: std::io::Error| Failure::io(format!("cannot read {}", path.display()))(err);
    let mut file = tokio::fs::File::open(path).await.map_err(failed)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(failed)?;
    let mut bytes = vec![0u8; usize::try_from(size).unwrap_or(0).min(1 << 20)];
    file.read_exact(&mut bytes).await.map_err(failed)?;
    Ok(bytes)
}

/// Fills in from `old` the runtime settings (`Env`, `Entrypoint`, `Cmd`, `WorkingDir`,
/// `Labels`) that `config` lacks.
fn inherit_config(config: &mut Value, old: Value) {
    let Value::Object(old) = old else {
        return;
    };
    if !config.is_object() {
        *config = Value::Object(serde_json::Map::new());
    }
    for key in ["Env", "Entrypoint", "Cmd", "WorkingDir", "Labels"] {
        let missing = config.get(key).is_none_or(|value| {
            value.is_null() || value.as_array().is_some_and(Vec::is_empty) || value == ""
        });
        if missing && let Some(value) = old.get(key) {
            config[key] = value.clone();
        }
    }
}

/// `/home/u/./a/../b` → `home/u/b`; `None` if `..` climbs above the root.
fn normalise(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

/// The image buildah wrote: its config document and its layer tars, bottom first.
struct LayoutImage {
    config: Value,
    layers: Vec<PathBuf>,
}

/// Reads the one image of the OCI layout at `dir`.
async fn read_oci_layout(dir: &Path) -> Result<LayoutImage, Failure> {
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        dir.join("blobs/sha256").join(hex)
    };
    let read_json = |path: PathBuf| async move {
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(Failure::io(format!("cannot read {}", path.display())))?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(Failure::json(format!("{} is not JSON", path.display())))
    };
    let index = read_json(dir.join("index.json")).await?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| Failure::refused("buildah wrote an OCI layout without a manifest"))?;
    let manifest = read_json(blob(manifest_digest)).await?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Failure::refused("the built image's manifest has no config"))?;
    let config = read_json(blob(config_digest)).await?;
    let layers = manifest["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .filter_map(|layer| layer["digest"].as_str().map(blob))
                .collect()
        })
        .unwrap_or_default();
    Ok(LayoutImage { config, layers })
}

/// The scripts the definition's sections give, in the form `singularity build` writes them.
fn scripts_of(definition: &Definition) -> DefinitionScripts {
    let script = |script: &Script| {
        let shell = script.interpreter.as_deref().unwrap_or(DEFAULT_SHELL);
        format!("#!{shell}\n\n{}\n", script.body.trim_end_matches('\n'))
    };
    DefinitionScripts {
        environment: definition.environment.clone(),
        runscript: definition.runscript.as_ref().map(script),
        startscript: definition.startscript.as_ref().map(script),
        help: definition.help.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_images_are_library_references() {
        let location = |from: &str| library_location(from);
        assert_eq!(
            location("samtools:1.21"),
            Some(("library/samtools".into(), "1.21".into()))
        );
        assert_eq!(
            location("library://alice/tools/samtools"),
            Some(("library/alice/tools/samtools".into(), "latest".into()))
        );
        assert_eq!(
            location("tools/samtools:v1"),
            Some(("library/library/tools/samtools".into(), "v1".into()))
        );
        assert_eq!(location("/home/alice/base.sif"), None);
        assert_eq!(location("a/b/c/d"), None);
        assert_eq!(location("Alice/b/c"), None);
    }

    #[test]
    fn a_sif_s_settings_fill_in_what_the_build_lacks() {
        let mut config = serde_json::json!({"Env": [], "Cmd": ["sh"]});
        inherit_config(
            &mut config,
            serde_json::json!({"Env": ["PATH=/opt/conda/bin:/usr/bin"], "Cmd": ["python"]}),
        );
        assert_eq!(config["Env"][0], "PATH=/opt/conda/bin:/usr/bin");
        assert_eq!(config["Cmd"][0], "sh");
        let mut empty = Value::Null;
        inherit_config(&mut empty, serde_json::json!({"WorkingDir": "/data"}));
        assert_eq!(empty["WorkingDir"], "/data");
    }

    #[test]
    fn paths_are_normalised_inside_the_context() {
        assert_eq!(normalise("/home/u/./a/../b").as_deref(), Some("home/u/b"));
        assert_eq!(normalise("/data/*.txt").as_deref(), Some("data/*.txt"));
        assert_eq!(normalise("/../etc/passwd"), None);
    }
}
