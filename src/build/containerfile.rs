//! The containerfile backend: a user's Dockerfile (Wave's `containerFile`) built with buildah
//! and pushed to kiln's registry, and [`Dispatch`], which hands each build to the backend its
//! request names.
//!
//! Such a build's record holds the Dockerfile in `containerfile`, the target image in `image`
//! and a [`ContainerfileRequest`] in `request`. The Dockerfile is built in an empty context
//! (clients send no files), its steps contained ([`super::sandbox`]), and the image is pushed to
//! kiln's registry at the address the builder reaches it by, with an SBOM of its Debian
//! packages as a referrer ([`super::sbom`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::buildah::{BuildOptions, Buildah, BuildahError, Credentials};
use super::native::image_without_tag;
use super::sbom::{SbomTarget, attach_recipe_sbom, pushed_dpkg_status};
use super::{Backend, BuildLog};
use crate::assemble::{Descriptor, MEDIA_TYPE_MANIFEST};
use crate::registry::client::{Auth, ClientError, RegistryClient};
use crate::spec::{Dockerfile, Platform};
use crate::store::{BuildOutcome, BuildRecord, ImageOutput};

/// Docker's schema 2 manifest, which buildah pushes when a base image made it keep that format.
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The largest image config read back (for its labels); buildah writes a few KiB.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// How many of buildah's last output lines a failure reason quotes.
const TAIL_LINES: usize = 12;

/// Longest quoted output line; buildah's progress lines can be very long.
const TAIL_LINE_CHARS: usize = 400;

/// What the `request` column of a Dockerfile build holds:
/// `{"containerfile":{"platform":"linux/amd64"}}`. The Dockerfile itself is the record's
/// `containerfile`, so this only says how to build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Tagged", into = "Tagged")]
pub struct ContainerfileRequest {
    /// The one platform the image is built for.
    pub platform: Platform,
}

/// The stored form: tagged, so it can never be mistaken for a package request.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Tagged {
    Containerfile { platform: Platform },
}

impl From<Tagged> for ContainerfileRequest {
    fn from(tagged: Tagged) -> Self {
        let Tagged::Containerfile { platform } = tagged;
        ContainerfileRequest { platform }
    }
}

impl From<ContainerfileRequest> for Tagged {
    fn from(request: ContainerfileRequest) -> Self {
        Tagged::Containerfile {
            platform: request.platform,
        }
    }
}

impl ContainerfileRequest {
    /// A request to build for `platform`.
    pub const fn new(platform: Platform) -> Self {
        ContainerfileRequest { platform }
    }

    /// The JSON text stored in a build record's `request`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "containerfile": { "platform": self.platform } }).to_string()
    }

    /// Reads a stored request.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether a stored request is meant for the containerfile backend: a JSON object with a
    /// `containerfile` key. Even a malformed one is, so its build fails saying what is wrong
    /// with it rather than being read as a package request.
    pub fn is_containerfile(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|value| value.get("containerfile").is_some())
    }
}

/// Where the containerfile builder pushes and where it works.
#[derive(Clone)]
pub struct ContainerfileSettings {
    /// kiln's registry as the builder reaches it (`host:port`, e.g. its loopback listener);
    /// images named `<public host>/<repository>:<tag>` are pushed to
    /// `<registry>/<repository>:<tag>`.
    pub registry: String,
    /// The registry user the builder pushes as.
    pub user: String,
    /// Its password or token.
    pub password: String,
    /// Whether `registry` is spoken to over plain HTTP though it is not loopback (it is listed
    /// in `insecure_registries`). Loopback registries always are.
    pub insecure: bool,
    /// Scratch space: each build gets `<work_dir>/<build id>/`, removed afterwards.
    pub work_dir: PathBuf,
}

impl std::fmt::Debug for ContainerfileSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerfileSettings")
            .field("registry", &self.registry)
            .field("user", &self.user)
            .field("insecure", &self.insecure)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
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
            Auth::Basic {
                user: settings.user.clone(),
                password: settings.password.clone(),
            },
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
        let request = ContainerfileRequest::from_json(&build.request).map_err(Failure::json(
            "the stored Dockerfile request cannot be read",
        ))?;
        if build.format != "docker" {
            return Err(Failure::Refused(format!(
                "a Dockerfile builds a container image (format docker), not {}",
                build.format
            )));
        }
        // The check kiln's API made before taking it: stored text is not trusted either.
        Dockerfile::parse(&build.containerfile).map_err(|err| Failure::Refused(err.to_string()))?;
        let (repository, tag) = split_image(&build.image)?;
        let context = fresh_context(work).await?;
        let dockerfile = write_containerfile(work, &build.containerfile).await?;
        let platform = request.platform;

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
        let credentials = Credentials {
            user: self.settings.user.clone(),
            password: self.settings.password.clone(),
        };
        let insecure = self.registry_insecure();
        let (pushed, tail) = streamed(log, |lines| {
            self.buildah.push(
                local,
                &destination,
                Some(&credentials),
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

        let pushed = self.read_back(&repository, &digest).await?;
        log.line(format!("pushed {}@{digest}", build.image)).await;
        let status = pushed_dpkg_status(
            &self.client,
            &repository,
            &pushed.layers,
            &work.join("sbom"),
        )
        .await?;
        let target = SbomTarget {
            image: &image_without_tag(&build.image),
            repository: &repository,
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

/// Makes `work` afresh with an empty build context in it, and returns the context's path.
pub(super) async fn fresh_context(work: &Path) -> Result<PathBuf, Failure> {
    if let Err(err) = tokio::fs::remove_dir_all(work).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        return Err(Failure::io(format!("cannot clear {}", work.display()))(err));
    }
    let context = work.join("context");
    tokio::fs::create_dir_all(&context)
        .await
        .map_err(Failure::io(format!("cannot create {}", context.display())))?;
    Ok(context)
}

/// Writes `text` as `work/Containerfile` and returns its path.
pub(super) async fn write_containerfile(work: &Path, text: &str) -> Result<PathBuf, Failure> {
    let path = work.join("Containerfile");
    tokio::fs::write(&path, text)
        .await
        .map_err(Failure::io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// Ends a buildah build however it went: removes its image `local` from buildah's storage
/// (absent when the build failed before committing, which is nothing to report) and passes
/// the result on.
pub(super) async fn finish(
    buildah: &Buildah,
    local: &str,
    result: Result<BuildOutcome, Failure>,
) -> Result<BuildOutcome, Failure> {
    if let Err(err) = buildah.remove_image(local).await {
        tracing::debug!(image = %local, error = %err, "removing a build's local image failed");
    }
    result
}

/// Runs a buildah step whose output arrives through a sync callback, appending each line to
/// `log` as it comes (so clients following the log watch the build) and returning the last
/// ones for a failure reason. `step` gets the [`Lines`] its callback ([`forward`]) queues lines
/// on; what waits for the store is bounded by the log's cap, and while a batch is being
/// stored the step is not polled, so a fast printer waits on its pipe.
pub(super) async fn streamed<T>(log: &BuildLog, step: impl FnOnce(Lines) -> T) -> (T::Output, Tail)
where
    T: Future,
{
    let lines = Lines {
        log: log.clone(),
        tail: Arc::default(),
        queued: Arc::default(),
    };
    let (tail, queued) = (Arc::clone(&lines.tail), Arc::clone(&lines.queued));
    let mut running = std::pin::pin!(step(lines));
    let output = loop {
        tokio::select! {
            output = &mut running => break output,
            () = queued.notified() => log.flush().await,
        }
    };
    log.flush().await;
    let tail = std::mem::take(
        &mut *tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (output, tail)
}

/// What [`forward`] hands buildah's lines to: the log's queue and the failure tail.
pub(super) struct Lines {
    log: BuildLog,
    tail: Arc<std::sync::Mutex<Tail>>,
    /// Wakes [`streamed`] to store what was queued.
    queued: Arc<tokio::sync::Notify>,
}

/// buildah's line callback for [`streamed`]: queues each line for the log and keeps the last
/// ones (also those a full log drops) for the failure reason.
pub(super) fn forward(lines: Lines) -> impl FnMut(&str) + Send {
    move |line| {
        lines
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        lines.log.push(line);
        lines.queued.notify_one();
    }
}

/// The last lines of buildah's output and the last Dockerfile step it started.
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    step: Option<String>,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line: String = line.chars().take(TAIL_LINE_CHARS).collect();
        if line.starts_with("STEP ") {
            self.step = Some(line.clone());
        }
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why `buildah bud` failed building `what` ("the Dockerfile"), naming the step and quoting
/// buildah's last lines when it ran; what kept it from running otherwise.
pub(super) fn build_failure(err: BuildahError, tail: &Tail, what: &str) -> Failure {
    match (&err, &tail.step) {
        (BuildahError::Failed { .. }, Some(step)) => Failure::Refused(format!(
            "{what} failed at {step}: {}",
            failure_detail(&err, tail)
        )),
        (BuildahError::Failed { .. }, None) => Failure::Refused(format!(
            "buildah could not build {what}: {}",
            failure_detail(&err, tail)
        )),
        _ => err.into(),
    }
}

/// buildah's exit status and its last output lines, or what kept it from running.
fn failure_detail(err: &BuildahError, tail: &Tail) -> String {
    match err {
        BuildahError::Failed { step, status } => {
            let status = status
                .code()
                .map_or_else(|| status.to_string(), |code| format!("exit code {code}"));
            if tail.lines.is_empty() {
                format!("`buildah {step}` ended with {status} and printed nothing")
            } else {
                format!(
                    "`buildah {step}` ended with {status}; its last output:\n{}",
                    tail.text()
                )
            }
        }
        other => crate::error_chain(other),
    }
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

/// `host/library/name:tag` → (`library/name`, `tag`). The host in image names is the public
/// one; the builder reaches the same registry by its own address.
fn split_image(image: &str) -> Result<(String, String), String> {
    image
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .filter(|(repository, tag)| !repository.is_empty() && !tag.is_empty() && !tag.contains('/'))
        .map(|(repository, tag)| (repository.to_owned(), tag.to_owned()))
        .ok_or_else(|| format!("image {image} is not of the form host/repository:tag"))
}

/// Whether `registry` (`host[:port]`) is on this machine; such registries speak plain HTTP.
pub(super) fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Sends each build to the backend its request is for: Dockerfile builds
/// ([`ContainerfileRequest`]) to the containerfile builder, remote builds of definition files
/// to the definition builder, package requests to the native one.
#[derive(Clone)]
pub struct Dispatch {
    native: Arc<dyn Backend>,
    containerfile: Arc<dyn Backend>,
    definition: Arc<dyn Backend>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl Dispatch {
    /// Routes to `native`, `containerfile` or `definition` (remote builds of Singularity
    /// definition files).
    pub fn new(
        native: Arc<dyn Backend>,
        containerfile: Arc<dyn Backend>,
        definition: Arc<dyn Backend>,
    ) -> Self {
        Dispatch {
            native,
            containerfile,
            definition,
        }
    }
}

#[async_trait]
impl Backend for Dispatch {
    async fn try_run(&self, build: &BuildRecord, log: &BuildLog) -> Result<BuildOutcome, Failure> {
        if ContainerfileRequest::is_containerfile(&build.request) {
            self.containerfile.try_run(build, log).await
        } else if super::definition::DefinitionRequest::is_definition(&build.request) {
            self.definition.try_run(build, log).await
        } else {
            self.native.try_run(build, log).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_in_their_stored_form() {
        let request = ContainerfileRequest {
            platform: Platform::LinuxArm64,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"containerfile":{"platform":"linux/arm64"}}"#);
        assert_eq!(request.to_json(), text);
        assert_eq!(ContainerfileRequest::from_json(&text).unwrap(), request);
        assert!(ContainerfileRequest::is_containerfile(&text));
        assert!(ContainerfileRequest::is_containerfile(
            r#"{"containerfile":{"platform":"linux/s390x"}}"#
        ));
        assert!(!ContainerfileRequest::is_containerfile(
            r#"{"entries":["samtools"],"platforms":["linux/amd64"]}"#
        ));
        assert!(ContainerfileRequest::from_json(r#"{"entries":["samtools"]}"#).is_err());
        assert!(
            ContainerfileRequest::from_json(
                r#"{"containerfile":{"platform":"linux/amd64","x":1}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn failures_name_the_step_and_quote_the_last_lines() {
        let mut tail = Tail::default();
        for line in ["STEP 1/2: FROM base", "STEP 2/2: RUN exit 3"] {
            tail.push(line);
        }
        for n in 0..20 {
            tail.push(&format!("noise {n}"));
        }
        tail.push("error building at STEP \"RUN exit 3\": exit status 3");
        let status = std::process::Command::new("sh")
            .args(["-c", "exit 1"])
            .status()
            .unwrap();
        let err = BuildahError::Failed {
            step: "bud",
            status,
        };
        let reason = build_failure(err, &tail, "the Dockerfile").reason();
        assert!(
            reason.starts_with("the Dockerfile failed at STEP 2/2: RUN exit 3: `buildah bud` ended with exit code 1"),
            "{reason}"
        );
        assert!(reason.ends_with("exit status 3"), "{reason}");
        assert!(!reason.contains("noise 8\n"), "{reason}");
        assert_eq!(reason.lines().count(), 1 + TAIL_LINES);
    }

    #[test]
    fn images_and_hosts() {
        assert_eq!(
            split_image("kiln.example.org/wave/build:abc123"),
            Ok(("wave/build".to_owned(), "abc123".to_owned()))
        );
        assert!(split_image("no-host:tag").is_err());
        assert!(split_image("host/no-tag").is_err());
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:80"));
        assert!(!is_loopback("kiln.example.org:443"));
        assert_eq!(
            local_tag("bd-0123456789abcdef_1"),
            "localhost/kiln-containerfile:bd-0123456789abcdef_1"
        );
    }
}
