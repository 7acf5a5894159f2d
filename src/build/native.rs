//! The native backend: solve → install → layer → push, with no container runtime.
//!
//! Each platform is solved and installed on its own (nothing of the target runs here, so arm64
//! builds on amd64 without emulation), its packages are written as layers that depend only on
//! their contents, and the image is assembled on top of the base image's layers, which are
//! mounted from the base's repository in the same registry, never downloaded.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::layers::Packaged;
use super::python::{ImagePython, distributions_in};
use super::sbom::SbomTarget;
use super::{Backend, BuildLog};
use crate::assemble::{self, Descriptor, LayerBlob};
use crate::base;
use crate::base::copy::Upstream;
use crate::base::debian::{BaseMaker, DebianBase};
use crate::config::{BaseProfile, Config};
use crate::install::fetch::WheelCache;
use crate::install::{CONDA_PREFIX, CondaInstaller};
use crate::recipe::RecipeImages;
use crate::registry::client::{Auth, RegistryClient};
use crate::resolve::{
    CondaResolver, Libc, Lock, PipResolver, Provided, Solution, Target, WheelTarget,
};
use crate::spec::{BuildJob, Format, KilnBase, PackageEntry, Platform, RegistryHost, Request};
use crate::store::{BuildOutcome, BuildRecord, ImageOutput, Store};

/// The most layers kiln adds on top of a base image.
pub const LAYER_BUDGET: usize = 20;

/// `PATH` for a base image that sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A base image in kiln's registry, and the facts its profile gives when its labels don't.
#[derive(Debug, Clone)]
pub struct NativeBase {
    /// Repository inside kiln's registry, e.g. `kiln/base/debian`.
    pub repository: String,
    /// Tag, e.g. `bookworm`.
    pub tag: String,
    /// Its glibc version, for the solver's `__glibc` and the wheels' `manylinux` baseline,
    /// when its `io.kiln.base.glibc` label does not say.
    pub glibc: Option<String>,
    /// Its Python version, if it has one and its labels do not say.
    pub python: Option<String>,
    /// Where the image comes from when it lives in another registry: it is copied into
    /// kiln's registry (under `mirror/<host>/…`) before the first build that needs it.
    pub upstream: Option<Upstream>,
    /// For kiln's own default bases: the Debian packages beyond the essentials it is made
    /// of, when a build finds it missing.
    pub made_by_kiln: Option<Vec<String>>,
    /// Named by the request (`base`) rather than configured: only its labels give its facts,
    /// and what to do when it is missing is said to the user, not the operator.
    pub named_by_request: bool,
}

impl NativeBase {
    /// The base `reference` with the facts of `profile`. A reference on kiln's own `registry`
    /// is used in place; any other (`python:3.12-slim` is Docker Hub's) is read from its
    /// registry, anonymously, over plain HTTP only for loopback and `insecure` hosts.
    pub fn from_profile(
        reference: &str,
        profile: &BaseProfile,
        registry: &RegistryHost,
        insecure: &[String],
    ) -> Result<NativeBase, String> {
        let (host, path) = match reference.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, rest.to_owned())
            }
            _ if reference.contains('/') => ("docker.io", reference.to_owned()),
            _ => ("docker.io", format!("library/{reference}")),
        };
        let (repository, tag) = path
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or((path.as_str(), "latest"), |(repository, tag)| {
                (repository, tag)
            });
        let upstream = if host == registry.as_str() {
            None
        } else {
            let client = RegistryClient::new(host, Auth::Anonymous, insecure)
                .map_err(|err| format!("base image {reference}: {}", crate::error_chain(&err)))?;
            Some(Upstream {
                client,
                repository: repository.to_owned(),
                tag: tag.to_owned(),
            })
        };
        let local = match upstream {
            None => repository.to_owned(),
            Some(_) => format!("mirror/{}/{repository}", host.replace(':', "-")),
        };
        Ok(NativeBase {
            repository: local,
            tag: tag.to_owned(),
            glibc: Some(profile.glibc.clone()),
            python: profile.python.clone(),
            upstream,
            made_by_kiln: None,
            named_by_request: false,
        })
    }

    /// The base a request names, in kiln's registry; its labels give the facts.
    pub fn named(base: &KilnBase) -> NativeBase {
        NativeBase {
            repository: base.repository().to_owned(),
            tag: base.tag().to_owned(),
            glibc: None,
            python: None,
            upstream: None,
            made_by_kiln: None,
            named_by_request: true,
        }
    }

    /// `repository:tag`, without kiln's host.
    fn name(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Builds conda and pip requests natively.
#[derive(Clone)]
pub struct NativeBuilder {
    /// Solves conda entries into locks.
    pub resolver: CondaResolver,
    /// Fetches conda packages into the package cache.
    pub installer: CondaInstaller,
    /// Resolves pip entries into wheels.
    pub pip: PipResolver,
    /// Downloads wheels, checked against the lock.
    pub wheels: WheelCache,
    /// Pushes to kiln's registry with the builder's credential.
    pub client: RegistryClient,
    /// The base of conda environments (and mixed requests).
    pub conda_base: NativeBase,
    /// The base of pip-only requests.
    pub python_base: NativeBase,
    /// Scratch space for staging roots, removed after each build.
    pub work_dir: PathBuf,
    /// Layer blobs: each package's own, and those put together from them; shared by all
    /// builds.
    pub layer_dir: PathBuf,
    /// Where each package's layer is recorded.
    pub store: Arc<dyn Store>,
    /// Base image layers downloaded for flattening into SIFs, by digest.
    pub blob_dir: PathBuf,
    /// The URL clients reach kiln at, for SIF download links.
    pub public_url: String,
    /// Makes kiln's default bases from Debian's packages the first time a build needs them.
    pub bases: Arc<BaseMaker>,
    /// The images the definition file stored in a SIF names, kiln's own without its host.
    pub definition_images: RecipeImages,
}

impl std::fmt::Debug for NativeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeBuilder")
            .field("work_dir", &self.work_dir)
            .field("layer_dir", &self.layer_dir)
            .finish_non_exhaustive()
    }
}

impl NativeBuilder {
    /// A builder with the settings of `config` and its caches under the data directory,
    /// pushing with `client`, recording package layers in `store`.
    pub fn from_config(
        config: &Config,
        client: RegistryClient,
        store: Arc<dyn Store>,
    ) -> Result<NativeBuilder, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot set up the HTTP client: {err}"))?;
        let cache = config.data_dir.join("cache");
        let resolver = CondaResolver::new(
            http.clone(),
            cache.join("repodata"),
            config.channel_mirrors.clone(),
        );
        let mirrors = resolver.mirror_map().map_err(|err| err.to_string())?;
        Ok(NativeBuilder {
            resolver,
            installer: CondaInstaller::new(cache.join("pkgs"), http.clone(), mirrors),
            pip: PipResolver {
                uv: config.build.uv.clone(),
                cache_dir: cache.join("uv"),
                index_url: config.build.pip_index_url.clone(),
            },
            wheels: WheelCache::new(cache.join("pkgs/wheels"), http.clone()),
            bases: Arc::new(
                BaseMaker::from_config(config, http, client.clone())
                    .map_err(|err| crate::error_chain(&err))?,
            ),
            client,
            conda_base: NativeBase {
                made_by_kiln: config.base.conda.image.is_none().then(Vec::new),
                ..NativeBase::from_profile(
                    config.conda_base_image().as_str(),
                    &config.base.conda,
                    &config.registry,
                    &config.insecure_registries,
                )?
            },
            python_base: NativeBase {
                made_by_kiln: config
                    .base
                    .python
                    .image
                    .is_none()
                    .then(|| vec!["python3".to_owned()]),
                ..NativeBase::from_profile(
                    config.python_base_image().as_str(),
                    &config.base.python,
                    &config.registry,
                    &config.insecure_registries,
                )?
            },
            work_dir: config.work_dir(),
            layer_dir: cache.join("layers"),
            store,
            blob_dir: cache.join("blobs"),
            public_url: config.public_url(),
            definition_images: super::sif::definition_images(config),
        })
    }
}

/// A build step that failed; the queue renders it as the reason users read.
pub(super) type Failure = super::BuildError;

#[async_trait]
impl Backend for NativeBuilder {
    async fn try_run(&self, build: &BuildRecord, log: &BuildLog) -> Result<BuildOutcome, Failure> {
        let work = self.work_dir.join(&build.id);
        super::fresh_work_dir(&work).await?;
        let outcome = self.build(build, &work, log).await;
        super::remove_work_dir_later(work);
        outcome
    }
}

/// One platform resolved, installed and written as layers, ready to push.
pub(super) struct Staged {
    pub(super) platform: Platform,
    /// The base image the layers go on.
    pub(super) base: base::BaseManifest,
    /// The base's repository in kiln's registry.
    pub(super) base_repository: String,
    /// kiln's layers, in order.
    pub(super) layers: Vec<LayerBlob>,
    /// The image config (base settings, kiln's environment and labels, all diff_ids).
    pub(super) config: assemble::Blob,
}

/// One platform's finished image.
struct PlatformImage {
    platform: Platform,
    manifest: assemble::Blob,
    size: u64,
}

impl NativeBuilder {
    async fn build(
        &self,
        build: &BuildRecord,
        work: &Path,
        log: &BuildLog,
    ) -> Result<BuildOutcome, Failure> {
        let BuildJob::Native(request) = &build.job else {
            return Err(Failure::Refused(format!(
                "the native builder builds package requests, not {} builds",
                build.job.kind()
            )));
        };
        let (repository, tag) = (build.image.repository(), build.image.tag());
        let image_name = build.image.without_tag();
        self.ensure_base(request, work, log).await?;
        let mut lock = Lock::default();
        let mut images = Vec::new();
        if request.format() == Format::Sif {
            return self
                .build_sif(build, request, repository, tag, work, log)
                .await;
        }
        for &platform in request.platforms() {
            let staged = self
                .stage_platform(request, platform, work, log, &mut lock)
                .await?;
            let image = self.push_image(&staged, repository, log).await?;
            let target = SbomTarget {
                image: &image_name,
                repository,
                platform,
                subject: image.manifest.descriptor(),
            };
            self.attach_sbom(&target, &staged.base, &staged.base_repository, &lock, log)
                .await?;
            images.push(image);
        }
        let top = if let [only] = images.as_slice() {
            only.manifest.clone()
        } else {
            let manifests: Vec<(Platform, assemble::Blob)> = images
                .iter()
                .map(|image| (image.platform, image.manifest.clone()))
                .collect();
            assemble::image_index(&manifests)
        };
        self.client
            .push_manifest(repository, tag, top.bytes.clone().into(), top.media_type)
            .await?;
        log.line(format!("pushed {}@{}", build.image, top.digest))
            .await;
        let texts: Vec<String> = request
            .platforms()
            .iter()
            .map(|platform| lock.text(*platform))
            .collect();
        Ok(BuildOutcome::Succeeded {
            digest: top.digest,
            outputs: images
                .iter()
                .map(|image| ImageOutput {
                    platform: image.platform.to_string(),
                    digest: image.manifest.digest.clone(),
                    size: image.size,
                    download_url: None,
                })
                .collect(),
            lock: Some(texts.join("\n")),
        })
    }

    /// Resolves and installs `request` for `platform` under `work` and writes its layers and
    /// image config: everything but pushing, which differs between OCI images and SIFs.
    pub(super) async fn stage_platform(
        &self,
        request: &Request,
        platform: Platform,
        work: &Path,
        log: &BuildLog,
        lock: &mut Lock,
    ) -> Result<Staged, Failure> {
        let profile = self.base_for(request);
        let base = base::inspect(&self.client, &profile.repository, &profile.tag, platform).await?;
        let glibc = base
            .glibc
            .clone()
            .or_else(|| profile.glibc.clone())
            .ok_or_else(|| {
                Failure::refused(format!(
                    "the base image {} has no {} label, so kiln cannot tell which packages run \
                     on it; bases made with `kiln base create` have it",
                    profile.name(),
                    base::LABEL_GLIBC
                ))
            })?;
        let root = work.join(platform.architecture());
        let mut packages: Vec<Packaged> = Vec::new();

        let python = if request.has_conda() {
            let solution = self
                .solve_conda(request, platform, &glibc, log, lock)
                .await?;
            packages = self.conda_layers(&solution, platform, &root, log).await?;
            let conda_python = solution
                .packages
                .iter()
                .find(|package| package.name == "python");
            match conda_python {
                _ if !request.has_pip() => None,
                Some(package) => {
                    Some(ImagePython::conda(&package.version).map_err(Failure::refused)?)
                }
                None => {
                    return Err(Failure::refused(
                        "the conda environment has no python for the pip packages",
                    ));
                }
            }
        } else {
            if profile.named_by_request && base.python.is_none() {
                return Err(no_python_in_named_base(&profile));
            }
            Some(ImagePython::of_base(&base, profile.python.as_deref()).map_err(Failure::refused)?)
        };
        if let Some(python) = python.filter(|_| request.has_pip()) {
            let target = WheelTarget {
                platform,
                python: python.major_minor,
                libc: Libc::Glibc(glibc.clone()),
            };
            // What the conda packages install into this Python, as their layers recorded it.
            let prefix = Path::new(CONDA_PREFIX);
            let metadata: Vec<PathBuf> = packages
                .iter()
                .flat_map(|package| &package.record.python_metadata)
                .map(|path| prefix.join(path))
                .collect();
            let provided = distributions_in(
                &python.layout.site_packages,
                metadata.iter().map(PathBuf::as_path),
            );
            let wheels = self
                .install_wheels(request, &python, &target, &provided, &root, log, lock)
                .await?;
            packages.extend(wheels);
        }
        let layers = self.compose_layers(&packages, platform, log).await?;

        // kiln's layers only: the config lists the base's own diff_ids before them.
        let diff_ids: Vec<String> = layers.iter().map(|layer| layer.diff_id.clone()).collect();
        let base_path = base.config.env_var("PATH").unwrap_or(DEFAULT_PATH);
        let env = if request.has_conda() {
            vec![
                ("PATH".to_owned(), format!("{CONDA_PREFIX}/bin:{base_path}")),
                ("CONDA_PREFIX".to_owned(), CONDA_PREFIX.to_owned()),
                ("MAMBA_ROOT_PREFIX".to_owned(), CONDA_PREFIX.to_owned()),
            ]
        } else {
            vec![("PATH".to_owned(), base_path.to_owned())]
        };
        let labels = BTreeMap::from([
            (
                "io.kiln.request".to_owned(),
                serde_json::to_string(request)
                    .map_err(Failure::json("the request cannot be written as JSON"))?,
            ),
            ("io.kiln.lock".to_owned(), lock.text(platform)),
            // Named without kiln's host: the same image is made on every kiln, whatever
            // address it serves its registry at.
            (
                "org.opencontainers.image.base.name".to_owned(),
                profile.name(),
            ),
            (
                "org.opencontainers.image.base.digest".to_owned(),
                base.digest.clone(),
            ),
        ]);
        let config = assemble::image_config(platform, &base.config, &diff_ids, &env, &labels);
        Ok(Staged {
            platform,
            base,
            base_repository: profile.repository.clone(),
            layers,
            config,
        })
    }

    /// Pushes a staged platform as an OCI image manifest into `repository`: base layers
    /// mounted, kiln's layers uploaded unless the registry has them.
    async fn push_image(
        &self,
        staged: &Staged,
        repository: &str,
        log: &BuildLog,
    ) -> Result<PlatformImage, Failure> {
        let Staged {
            platform,
            base,
            base_repository,
            layers,
            config,
        } = staged;
        let started = Instant::now();
        for layer in &base.layers {
            self.client
                .mount_from(repository, &layer.digest, base_repository)
                .await?;
        }
        let mut uploaded = 0;
        for layer in layers {
            // A layer kiln pushed before, to any repository, is mounted from there: images
            // that share a package share its blob, sent once.
            let seen_in = self.layer_home(&layer.digest).await;
            let pushed = self
                .client
                .push_blob_file(
                    repository,
                    &layer.digest,
                    &layer.gz_path,
                    seen_in.as_deref(),
                )
                .await?;
            if pushed == crate::registry::client::BlobPush::Uploaded {
                uploaded += 1;
                self.remember_layer_home(&layer.digest, repository).await;
            }
        }
        self.client
            .push_blob_bytes(repository, config.bytes.clone().into(), None)
            .await?;
        let mut descriptors: Vec<Descriptor> = base.layers.clone();
        descriptors.extend(layers.iter().map(LayerBlob::descriptor));
        let manifest = assemble::image_manifest(config, &descriptors, &BTreeMap::new());
        self.client
            .push_manifest(
                repository,
                &manifest.digest,
                manifest.bytes.clone().into(),
                manifest.media_type,
            )
            .await?;
        log.line(format!(
            "{platform}: pushed {} ({uploaded} of {} layers uploaded, the rest already there) in {:.1} s",
            manifest.digest,
            layers.len(),
            started.elapsed().as_secs_f64()
        ))
        .await;
        let size = descriptors.iter().map(|d| d.size).sum::<u64>() + config.size();
        Ok(PlatformImage {
            platform: *platform,
            manifest,
            size,
        })
    }

    /// Makes sure the base `request` builds on is in kiln's registry: kiln's own default
    /// bases are made on first use, bases from other registries copied in, and a configured
    /// base that is missing is reported with what to do.
    async fn ensure_base(
        &self,
        request: &Request,
        work: &Path,
        log: &BuildLog,
    ) -> Result<(), Failure> {
        let profile = self.base_for(request);
        let profile = profile.as_ref();
        if let Some(packages) = &profile.made_by_kiln {
            return self.make_base(profile, packages, log).await;
        }
        let Some(upstream) = &profile.upstream else {
            return self.check_configured_base(profile).await;
        };
        let started = Instant::now();
        let scratch = work.join("base");
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(Failure::io(format!("cannot create {}", scratch.display())))?;
        let copied = base::copy::copy_image(
            upstream,
            &self.client,
            &profile.repository,
            &profile.tag,
            &scratch,
        )
        .await?;
        if !copied {
            return Ok(());
        }
        log.line(format!(
            "copied base {} into kiln's registry as {}:{} in {:.1} s",
            upstream.reference(),
            profile.repository,
            profile.tag,
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(())
    }

    /// Makes one of kiln's default bases unless it is in the registry already.
    async fn make_base(
        &self,
        profile: &NativeBase,
        packages: &[String],
        log: &BuildLog,
    ) -> Result<(), Failure> {
        let wanted = DebianBase {
            repository: profile.repository.clone(),
            tag: profile.tag.clone(),
            packages: packages.to_vec(),
            platforms: Platform::ALL.to_vec(),
        };
        let mut lines = Vec::new();
        let made = self
            .bases
            .ensure(&wanted, |line| lines.push(line.to_owned()))
            .await;
        for line in lines {
            log.line(format!("base: {line}")).await;
        }
        match made {
            Ok(Some(image)) => {
                log.line(format!(
                    "made kiln's base {} on first use ({})",
                    image.reference, image.digest
                ))
                .await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => Err(Failure::step(
                format!(
                    "kiln's base {}:{} is not in the registry yet and making it failed",
                    profile.repository, profile.tag,
                ),
                err,
            )),
        }
    }

    /// A configured base on kiln's own registry, or one a request names, must have been
    /// pushed there; the message says who can make it and how.
    async fn check_configured_base(&self, profile: &NativeBase) -> Result<(), Failure> {
        let found = self
            .client
            .tag_digest(&profile.repository, &profile.tag)
            .await?;
        if found.is_some() {
            return Ok(());
        }
        let registry = self.client.registry();
        let name = profile.name();
        if profile.named_by_request {
            return Err(Failure::Refused(format!(
                "the base image {registry}/{name} named in the request does not exist. Leave \
                 `base` out to build on kiln's default base, which kiln makes itself, or have an \
                 operator make this one first, e.g. `kiln base create --name {name} --package \
                 <debian package>`"
            )));
        }
        Err(Failure::Refused(format!(
            "the configured base image {registry}/{name} does not exist. kiln makes its default \
             bases itself (leave base.conda.image and base.python.image unset); to use your own, \
             push it first, e.g. `kiln base create --name {name} --package <debian package>` or \
             `skopeo copy` an image to {registry}/{name}"
        )))
    }

    /// A base the request names, for conda and pip-only requests alike; otherwise conda
    /// environments (with or without pip packages) go onto the conda base, and pip-only
    /// requests onto the Python base, whose interpreter they use.
    fn base_for(&self, request: &Request) -> Cow<'_, NativeBase> {
        match request.base() {
            Some(base) => Cow::Owned(NativeBase::named(base)),
            None if request.has_conda() => Cow::Borrowed(&self.conda_base),
            None => Cow::Borrowed(&self.python_base),
        }
    }

    /// Solves the conda entries for `platform`, and adds the solution to `lock`.
    async fn solve_conda(
        &self,
        request: &Request,
        platform: Platform,
        glibc: &str,
        log: &BuildLog,
        lock: &mut Lock,
    ) -> Result<Solution, Failure> {
        let started = Instant::now();
        let target = Target {
            platform,
            glibc: glibc.to_owned(),
        };
        let solution = self.resolver.solve(request, &target).await?;
        log.line(format!(
            "{platform}: solved {} conda packages in {:.1} s",
            solution.packages.len(),
            started.elapsed().as_secs_f64()
        ))
        .await;
        lock.platforms.insert(platform, solution.packages.clone());
        Ok(solution)
    }

    /// Resolves the pip entries for `python` on `target` (beside the distributions `provided`
    /// by the conda environment), fetches the wheels and gives their layers, made under `root`
    /// unless the layer cache has them.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument distinct"
    )]
    async fn install_wheels(
        &self,
        request: &Request,
        python: &ImagePython,
        target: &WheelTarget,
        provided: &Provided,
        root: &Path,
        log: &BuildLog,
        lock: &mut Lock,
    ) -> Result<Vec<Packaged>, Failure> {
        let platform = target.platform;
        let started = Instant::now();
        let requirements: Vec<String> = request
            .pip_entries()
            .filter_map(|entry| match entry {
                PackageEntry::Pip(spec) => Some(spec.to_string()),
                PackageEntry::Conda(_) => None,
            })
            .collect();
        let resolved = self
            .pip
            .resolve(&requirements, provided, target, &python.version)
            .await?;
        log.line(format!(
            "{platform}: resolved {} wheels for Python {} in {:.1} s",
            resolved.len(),
            python.version,
            started.elapsed().as_secs_f64()
        ))
        .await;

        let fetched = self.wheels.fetch_all(&resolved).await?;
        let packages = self
            .wheel_layers(&fetched, python, platform, root, log)
            .await?;
        // A wheel's license is in its METADATA, read when its layer was made.
        let locked = fetched
            .iter()
            .zip(&packages)
            .map(|(wheel, package)| {
                let mut entry = wheel.locked.clone();
                entry.license = package.record.license.clone();
                entry
            })
            .collect();
        lock.wheels.insert(platform, locked);
        Ok(packages)
    }
}

impl NativeBuilder {
    /// The repository a layer blob was first uploaded to, if the store remembers one (kept in
    /// the store, so a worker on any node mounts what another pushed). A failing store only
    /// costs an upload.
    async fn layer_home(&self, digest: &str) -> Option<String> {
        match self.store.layer_home(digest).await {
            Ok(home) => home,
            Err(err) => {
                tracing::warn!(%digest, error = %err, "looking up where a layer lives failed; it is uploaded");
                None
            }
        }
    }

    /// Notes where a layer blob lives; a lost note only costs one upload.
    async fn remember_layer_home(&self, digest: &str, repository: &str) {
        if let Err(err) = self.store.set_layer_home(digest, repository).await {
            tracing::warn!(%digest, error = %err, "recording where a layer lives failed");
        }
    }
}

/// Why a pip-only request cannot build on the base it names: pip packages go into the base's
/// own python3.
fn no_python_in_named_base(named: &NativeBase) -> Failure {
    Failure::Refused(format!(
        "the base image {} named in the request has no python3 (its {} label is not set), and a \
         request of pip packages only installs them with the base's python3. Name a base that \
         has it (e.g. made with `kiln base create --name kiln/base/<name>:<tag> --package \
         python3 …`), add the conda package `python` to the request, or leave `base` out",
        named.name(),
        base::LABEL_PYTHON
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_elsewhere_are_mirrored_under_their_host() {
        let profile = BaseProfile {
            image: None,
            glibc: "2.36".into(),
            python: Some("3.12".into()),
        };
        let registry: RegistryHost = "kiln.example.org".parse().unwrap();
        let hub = NativeBase::from_profile("python:3.12-slim", &profile, &registry, &[]).unwrap();
        assert_eq!(hub.repository, "mirror/docker.io/library/python");
        assert_eq!(hub.tag, "3.12-slim");
        let upstream = hub.upstream.expect("Docker Hub is another registry");
        assert_eq!(upstream.repository, "library/python");
        let other =
            NativeBase::from_profile("127.0.0.1:5000/tools/py", &profile, &registry, &[]).unwrap();
        assert_eq!(
            (other.repository.as_str(), other.tag.as_str()),
            ("mirror/127.0.0.1-5000/tools/py", "latest")
        );
        let own = NativeBase::from_profile(
            "kiln.example.org/kiln/base/debian:bookworm",
            &profile,
            &registry,
            &[],
        )
        .unwrap();
        assert!(own.upstream.is_none());
        assert_eq!(own.repository, "kiln/base/debian");
    }
}
