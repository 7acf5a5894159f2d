//! `buildah`, run as a child process: builds Dockerfiles without a daemon.
//!
//! Steps run contained by default (see [`super::sandbox`]): each `bud` in a jail of its own,
//! with every `FROM` image pulled beforehand in the host's network, TLS verified except for
//! loopback and configured insecure registries. Timestamps are pinned for reproducible layers,
//! and the site's CA bundle, when configured, is bind-mounted over the image's bundle for RUN
//! steps only, so it never ends up in a layer. Every buildah gets the allow-listed environment
//! and SIGTERM when kiln dies. `kiln serve` gives buildah a [`Storage`] of its own, so what its
//! builds leave in it is kiln's alone to sweep away ([`Buildah::sweep_storage`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::BufReader;
use tokio::process::Command;

use super::log::{BoundedLines, MAX_LINE_LIMIT};
use super::sandbox::{Jail, Sandbox, SandboxError};
use crate::config::{BuildSettings, Isolation};
use crate::credentials::Credentials;
use crate::spec::Platform;

/// Where Debian-family images keep the CA bundle that pip, curl and Python's ssl read.
const IMAGE_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Runs buildah with kiln's settings.
#[derive(Debug, Clone)]
pub struct Buildah {
    program: PathBuf,
    ca_bundle: Option<PathBuf>,
    isolation: Isolation,
    settings: Arc<BuildSettings>,
    /// Registries pulled from without TLS verification besides loopback ones.
    insecure_registries: Arc<Vec<String>>,
    /// kiln's own registry (`host[:port]`) and who pulls from it: an external registry need not
    /// take anonymous pulls of the bases and images kiln keeps there.
    own_registry: Option<Arc<(String, Credentials)>>,
    /// The containment, found on first use and shared by clones.
    sandbox: Arc<tokio::sync::OnceCell<Result<Arc<Sandbox>, Arc<SandboxError>>>>,
    /// kiln's own image storage; buildah's default (shared with the host's other users of
    /// buildah and podman) when `None`.
    storage: Option<Storage>,
    /// The lock on `storage` that makes this process its only sweeper, once taken; held as long
    /// as the process runs.
    storage_lock: Arc<std::sync::OnceLock<std::fs::File>>,
    /// Turns to run buildah, `build.max_buildah` of them, shared by clones: `kiln serve` makes
    /// one runner for all its builders, so this caps the process.
    runs: Arc<tokio::sync::Semaphore>,
}

/// A containers-storage of kiln's own: images and working containers under `root` (in the
/// data directory), run state under a directory of `/run` named after it, which a reboot
/// empties as containers-storage expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    root: PathBuf,
    run_root: PathBuf,
}

impl Storage {
    /// The storage at `root`, made absolute; its run state goes under `/run/kiln-buildah/`
    /// (`$XDG_RUNTIME_DIR/kiln-buildah/` when kiln does not run as root).
    pub fn new(root: &Path) -> Storage {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let runtime = if rustix::process::geteuid().is_root() {
            PathBuf::from("/run")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
        };
        let digest = crate::registry::client::sha256_digest(root.as_os_str().as_encoded_bytes());
        let name: String = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(16)
            .collect();
        let run_root = runtime.join("kiln-buildah").join(name);
        Storage { root, run_root }
    }

    /// buildah's global options that select this storage.
    pub fn options(&self) -> [String; 2] {
        [
            format!("--root={}", self.root.display()),
            format!("--runroot={}", self.run_root.display()),
        ]
    }
}

/// What [`Buildah::sweep_storage`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Working containers, by name.
    pub containers: Vec<String>,
    /// Images: kiln's local tags of builds, and untagged images, by id.
    pub images: Vec<String>,
}

/// The local tags kiln gives built images between build and push
/// (`localhost/kiln-containerfile:<build>`, `localhost/kiln-definition:<build>`).
pub const LOCAL_TAG_PREFIX: &str = "localhost/kiln-";

/// A buildah invocation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildahError {
    #[error("cannot run {program}; is buildah installed?")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`buildah {step}` failed with {status}")]
    Failed {
        step: &'static str,
        status: std::process::ExitStatus,
    },
    #[error("build steps cannot be contained")]
    Sandbox(#[source] Arc<SandboxError>),
    #[error("the CA bundle {0} does not exist")]
    MissingCaBundle(PathBuf),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// How `buildah bud` treats registries and failed steps, beyond [`Buildah::build`]'s defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Remove the intermediate container even when a step fails, so a failed build leaves
    /// nothing behind in local storage.
    pub force_rm: bool,
}

impl Buildah {
    /// A runner for the `buildah` on PATH with the given build settings.
    pub fn new(settings: &BuildSettings) -> Self {
        Buildah {
            program: PathBuf::from("buildah"),
            ca_bundle: settings.ca_bundle.clone(),
            isolation: settings.isolation,
            settings: Arc::new(settings.clone()),
            insecure_registries: Arc::new(Vec::new()),
            own_registry: None,
            sandbox: Arc::default(),
            storage: None,
            storage_lock: Arc::default(),
            runs: Arc::new(tokio::sync::Semaphore::new(settings.buildah_runs())),
        }
    }

    /// This runner, keeping images and working containers in `storage` rather than buildah's
    /// default storage, which others on the host may use.
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// This runner, pulling from `registries` (`host:port`) without TLS verification, as
    /// from loopback ones.
    pub fn with_insecure_registries(mut self, registries: &[String]) -> Self {
        self.insecure_registries = Arc::new(registries.to_vec());
        self
    }

    /// This runner, pulling from kiln's own registry `host` as `credentials`, and without TLS
    /// verification when `insecure` (a plain-HTTP registry).
    pub fn with_own_registry(
        mut self,
        host: &str,
        credentials: Credentials,
        insecure: bool,
    ) -> Self {
        if insecure && !self.insecure_registries.iter().any(|h| h == host) {
            let mut registries = self.insecure_registries.to_vec();
            registries.push(host.to_owned());
            self.insecure_registries = Arc::new(registries);
        }
        self.own_registry = Some(Arc::new((host.to_owned(), credentials)));
        self
    }

    /// Sets up the containment now rather than at the first build (kiln does at start): refuses
    /// chroot isolation the operator did not acknowledge, finds the runtime and id ranges and
    /// sweeps abandoned builds. Returns the line build logs show about containment.
    pub async fn prepare(&self) -> Result<String, BuildahError> {
        Ok(match self.sandbox().await? {
            Some(sandbox) => sandbox.describe(),
            None => CHROOT_WARNING.to_owned(),
        })
    }

    /// The containment of build steps: none for acknowledged chroot isolation.
    async fn sandbox(&self) -> Result<Option<Arc<Sandbox>>, BuildahError> {
        if super::sandbox::check_settings(&self.settings)
            .map_err(|err| BuildahError::Sandbox(Arc::new(err)))?
        {
            return Ok(None);
        }
        let settings = self.settings.clone();
        let prepared = self
            .sandbox
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || Sandbox::prepare(&settings))
                    .await
                    .map_err(|err| SandboxError::Failed {
                        what: "preparing the build sandbox".into(),
                        detail: err.to_string(),
                    })
                    .and_then(|prepared| prepared)
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await;
        prepared.clone().map(Some).map_err(BuildahError::Sandbox)
    }

    /// Whether pulls from `image`'s registry skip TLS verification: kiln's own loopback
    /// registry and configured insecure ones only.
    fn insecure_source(&self, image: &str) -> bool {
        let host = registry_host(image);
        crate::registry::client::is_loopback(host)
            || self.insecure_registries.iter().any(|h| h == host)
    }

    /// Pulls `image` for `platform` into local storage (fetching only what changed), in the
    /// host's network: a contained build has no route to kiln's loopback registry.
    async fn pull(
        &self,
        image: &str,
        platform: Platform,
        log: &mut impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        let mut args = vec![
            "pull".to_owned(),
            "--policy=always".to_owned(),
            "--quiet".to_owned(),
            format!("--platform={platform}"),
            format!("--tls-verify={}", !self.insecure_source(image)),
        ];
        // kiln's registry's credential goes in a private auth file, as for pushes.
        let scratch = tempfile::tempdir().map_err(|source| BuildahError::Io {
            what: "cannot create a temporary directory for `buildah pull`".into(),
            source,
        })?;
        if let Some((host, credentials)) = self.own_registry.as_deref()
            && registry_host(image) == host
        {
            let auth_file = scratch.path().join("auth.json");
            write_auth_file(&auth_file, host, credentials)?;
            args.push(format!("--authfile={}", auth_file.display()));
        }
        args.push(image.to_owned());
        self.run("pull", self.command(), None, &args, |line| log(line))
            .await
    }

    /// Builds `dockerfile` with `context` as build context and tags the result `tag` in local
    /// storage. Each line buildah prints goes to `log`, after one saying how steps are
    /// contained.
    pub async fn build(
        &self,
        context: &Path,
        dockerfile: &Path,
        tag: &str,
        platform: Platform,
        log: impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        self.build_with(
            context,
            dockerfile,
            tag,
            platform,
            &BuildOptions::default(),
            log,
        )
        .await
    }

    /// [`build`](Self::build) with `options`.
    pub async fn build_with(
        &self,
        context: &Path,
        dockerfile: &Path,
        tag: &str,
        platform: Platform,
        options: &BuildOptions,
        mut log: impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        let sandbox = self.sandbox().await?;
        log(&match &sandbox {
            Some(sandbox) => sandbox.describe(),
            None => CHROOT_WARNING.to_owned(),
        });
        let text = std::fs::read_to_string(dockerfile).map_err(|source| BuildahError::Io {
            what: format!("cannot read {}", dockerfile.display()),
            source,
        })?;
        for image in base_images(&text) {
            self.pull(&image, platform, &mut log).await?;
        }
        let mut args: Vec<String> = [
            "bud",
            "--timestamp=0",
            "--identity-label=false",
            "--layers=false",
            "--pull=never",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--isolation={}", self.isolation.as_str()));
        args.push(format!("--platform={platform}"));
        if options.force_rm {
            args.push("--force-rm".into());
        }
        if let Some(bundle) = &self.ca_bundle {
            if !bundle.is_file() {
                return Err(BuildahError::MissingCaBundle(bundle.clone()));
            }
            args.push(format!(
                "--volume={}:{IMAGE_CA_BUNDLE}:ro",
                bundle.display()
            ));
        }
        args.push(format!("--file={}", dockerfile.display()));
        args.push(format!("--tag={tag}"));
        let Some(sandbox) = sandbox else {
            args.push(context.display().to_string());
            return self.run("bud", self.command(), None, &args, log).await;
        };
        let jail = sandbox
            .open_jail()
            .await
            .map_err(|err| BuildahError::Sandbox(Arc::new(err)))?;
        args.extend(sandbox.bud_args(&jail));
        args.push(context.display().to_string());
        let built = self
            .run("bud", jail.command(&self.program), Some(&jail), &args, log)
            .await;
        jail.close().await;
        built
    }

    /// Pushes local `image` to `destination` (`host/repository:tag`) and returns the pushed
    /// manifest's digest. `insecure` allows plain HTTP and unverified TLS, for loopback and
    /// insecure registries. The credential goes to buildah in a private auth file rather than
    /// `--creds`, so it never shows in the process list.
    pub async fn push(
        &self,
        image: &str,
        destination: &str,
        credentials: Option<&Credentials>,
        insecure: bool,
        log: impl FnMut(&str),
    ) -> Result<String, BuildahError> {
        let scratch = tempfile::tempdir().map_err(|source| BuildahError::Io {
            what: "cannot create a temporary directory for `buildah push`".into(),
            source,
        })?;
        let digest_file = scratch.path().join("digest");
        let mut args: Vec<String> = vec!["push".into()];
        args.push(format!("--digestfile={}", digest_file.display()));
        if insecure {
            args.push("--tls-verify=false".into());
        }
        if let Some(credentials) = credentials {
            let host = destination.split('/').next().unwrap_or(destination);
            let auth_file = scratch.path().join("auth.json");
            write_auth_file(&auth_file, host, credentials)?;
            args.push(format!("--authfile={}", auth_file.display()));
        }
        args.push(image.to_owned());
        args.push(format!("docker://{destination}"));
        self.run("push", self.command(), None, &args, log).await?;
        let digest = std::fs::read_to_string(&digest_file).map_err(|source| BuildahError::Io {
            what: format!(
                "`buildah push` wrote no digest to {}",
                digest_file.display()
            ),
            source,
        })?;
        Ok(digest.trim().to_owned())
    }

    /// Writes local `image` as an uncompressed OCI image layout into the directory `dir`, for
    /// kiln to read its layers and config without a registry.
    pub async fn push_to_oci_layout(&self, image: &str, dir: &Path) -> Result<(), BuildahError> {
        let args = [
            "push".to_owned(),
            "--disable-compression".to_owned(),
            "--quiet".to_owned(),
            image.to_owned(),
            format!("oci:{}", dir.display()),
        ];
        self.run("push", self.command(), None, &args, |_| {}).await
    }

    /// Creates a working container from `image` and returns its name.
    pub async fn from_image(&self, image: &str) -> Result<String, BuildahError> {
        let args = ["from", "--pull=never", "--quiet", image].map(String::from);
        let mut name = String::new();
        self.run("from", self.command(), None, &args, |line| {
            name = line.trim().to_owned()
        })
        .await?;
        Ok(name)
    }

    /// Runs `command` in a working container and returns what it printed.
    pub async fn run_in(&self, container: &str, command: &[&str]) -> Result<String, BuildahError> {
        let mut args = vec![
            "run".to_owned(),
            format!("--isolation={}", self.isolation.as_str()),
        ];
        if let Some(sandbox) = self.sandbox().await? {
            args.push(format!("--runtime={}", sandbox.runtime()));
            args.push("--network=none".into());
        }
        args.push(container.to_owned());
        args.push("--".to_owned());
        args.extend(command.iter().map(|arg| arg.to_string()));
        let mut output = String::new();
        self.run("run", self.command(), None, &args, |line| {
            output.push_str(line);
            output.push('\n');
        })
        .await?;
        Ok(output)
    }

    /// Removes what builds of a killed kiln (or a killed buildah) left in kiln's storage: every
    /// working container, kiln's local tags of built images and untagged (intermediate)
    /// images. Pulled base images stay: they are a cache. Only a storage of kiln's own is
    /// swept, and only by the one process holding its lock, so a second kiln sharing the data
    /// directory never removes the first one's containers. Run it before builds start.
    pub async fn sweep_storage(&self) -> Result<Swept, BuildahError> {
        let Some(storage) = &self.storage else {
            return Ok(Swept::default());
        };
        // A storage no buildah has made yet holds nothing: no need to run buildah to know.
        let fresh = !storage.root.exists();
        if !self.lock_storage(storage)? {
            tracing::warn!(root = %storage.root.display(),
                "another process holds kiln's buildah storage; its leftovers are not swept");
            return Ok(Swept::default());
        }
        let mut swept = Swept::default();
        if fresh {
            return Ok(swept);
        }
        let listed = self.list("containers", &["--all"]).await?;
        for container in listed.as_array().into_iter().flatten() {
            let Some(id) = container["id"].as_str() else {
                continue;
            };
            let name = container["containername"].as_str().unwrap_or(id).to_owned();
            match self.remove_container(id).await {
                Ok(()) => swept.containers.push(name),
                Err(err) => tracing::warn!(container = %name, error = %crate::error_chain(&err),
                    "cannot remove a buildah container an interrupted build left"),
            }
        }
        let listed = self.list("images", &["--all"]).await?;
        for image in listed.as_array().into_iter().flatten() {
            let Some(id) = image["id"].as_str() else {
                continue;
            };
            let names: Vec<&str> = image["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .collect();
            if names.iter().all(|name| name.starts_with(LOCAL_TAG_PREFIX)) {
                // An image another removal took along (a parent) is gone already.
                if self.remove_image(id).await.is_ok() {
                    swept.images.push(id.to_owned());
                }
            }
        }
        Ok(swept)
    }

    /// Takes the lock that makes this process the sweeper of `storage`: false when another
    /// process holds it.
    fn lock_storage(&self, storage: &Storage) -> Result<bool, BuildahError> {
        if self.storage_lock.get().is_some() {
            return Ok(true);
        }
        let path = storage.root.join("kiln.lock");
        let io = |what: String| move |source| BuildahError::Io { what, source };
        std::fs::create_dir_all(&storage.root)
            .map_err(io(format!("cannot create {}", storage.root.display())))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = self.storage_lock.set(file);
                Ok(true)
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            Err(err) => Err(BuildahError::Io {
                what: format!("cannot lock {}", path.display()),
                source: err.into(),
            }),
        }
    }

    /// What `buildah <what> --json <options>` lists (its stdout alone: warnings go to stderr).
    async fn list(
        &self,
        what: &'static str,
        options: &[&str],
    ) -> Result<serde_json::Value, BuildahError> {
        let storage = self.storage.as_ref().map(Storage::options);
        let output = self
            .command()
            .args(storage.iter().flatten())
            .args([what, "--json"])
            .args(options)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| BuildahError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(BuildahError::Failed {
                step: what,
                status: output.status,
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|err| BuildahError::Io {
            what: format!("`buildah {what} --json` printed no JSON list"),
            source: std::io::Error::other(err),
        })
    }

    /// Removes a working container.
    pub async fn remove_container(&self, container: &str) -> Result<(), BuildahError> {
        let args = ["rm", container].map(String::from);
        self.run("rm", self.command(), None, &args, |_| {}).await
    }

    /// Removes an image from local storage.
    pub async fn remove_image(&self, image: &str) -> Result<(), BuildahError> {
        let args = ["rmi", "--force", image].map(String::from);
        self.run("rmi", self.command(), None, &args, |_| {}).await
    }

    /// buildah outside any jail, with the allow-listed environment, sent SIGTERM (which
    /// makes it stop and clean up) when kiln dies.
    fn command(&self) -> Command {
        let mut command = crate::child::command("setpriv");
        command
            .args(["--pdeathsig", "TERM", "--"])
            .arg(&self.program);
        command
    }

    /// Runs buildah through `command` (from [`Buildah::command`] or [`Jail::command`]),
    /// passing its output line by line (stdout and stderr interleaved as they come) to `log`.
    /// Dropped before buildah exits, it stops buildah: a jailed one through the jail's
    /// teardown, others by killing their process group.
    async fn run(
        &self,
        step: &'static str,
        mut command: Command,
        jail: Option<&Jail>,
        args: &[String],
        mut log: impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        // Waits for a turn while `build.max_buildah` runs go on; never closed, so this cannot
        // fail.
        let _turn = self.runs.acquire().await.ok();
        let storage = self.storage.as_ref().map(Storage::options);
        let mut child = command
            .args(storage.iter().flatten())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A jailed buildah is stopped by its jail, with SIGTERM, so it removes its
            // working container; SIGKILL would leave it behind.
            .kill_on_drop(jail.is_none())
            // Its own process group, so a cancelled build also stops what buildah started
            // (a RUN step's shell under chroot isolation is buildah's grandchild).
            .process_group(0)
            .spawn()
            .map_err(|source| BuildahError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        let mut group = ProcessGroupGuard(child.id().filter(|_| jail.is_none()));
        if let (Some(jail), Some(pid)) = (jail, child.id()) {
            jail.set_leader(pid);
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Bounded: a step printing one endless line costs one capped line of memory.
        let mut stdout = BoundedLines::new(BufReader::new(stdout), MAX_LINE_LIMIT);
        let mut stderr = BoundedLines::new(BufReader::new(stderr), MAX_LINE_LIMIT);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                line = stdout.next_line(), if out_open => match line {
                    Ok(Some(line)) => log(&line),
                    _ => out_open = false,
                },
                line = stderr.next_line(), if err_open => match line {
                    Ok(Some(line)) => log(&line),
                    _ => err_open = false,
                },
            }
        }
        let status = child.wait().await.map_err(|source| BuildahError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        group.0 = None;
        if status.success() {
            Ok(())
        } else {
            Err(BuildahError::Failed { step, status })
        }
    }
}

/// Kills a buildah process group when the future running it is dropped before buildah
/// exited: the build was cancelled or abandoned, and nothing it started may outlive it.
struct ProcessGroupGuard(Option<u32>);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        let group = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group
            && let Err(err) =
                rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
            && err != rustix::io::Errno::SRCH
        {
            tracing::warn!(group = group.as_raw_nonzero().get(), error = %err,
                "cannot kill a cancelled buildah's processes");
        }
    }
}

/// What build logs say when steps run under acknowledged chroot isolation.
const CHROOT_WARNING: &str = "WARNING: build steps run as root on the host (isolation = \"chroot\", \
    allow_root_on_host = true): nothing contains them";

/// The images a Dockerfile's `FROM` lines name, in order, without `scratch` and earlier
/// stages. `FROM` lines with variables cannot be pulled ahead; buildah names them when it
/// finds no such local image.
pub fn base_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("FROM"))
        {
            continue;
        }
        let mut words = words.skip_while(|word| word.starts_with("--"));
        let Some(image) = words.next() else { continue };
        if words
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("AS"))
            && let Some(stage) = words.next()
        {
            stages.push(stage.to_ascii_lowercase());
        }
        let known = stages[..stages.len().saturating_sub(1)]
            .iter()
            .any(|stage| stage.eq_ignore_ascii_case(image));
        if image.eq_ignore_ascii_case("scratch") || known || image.contains('$') {
            continue;
        }
        if !images.iter().any(|seen| seen == image) {
            images.push(image.to_owned());
        }
    }
    images
}

/// The registry host of an image reference, as buildah reads it: the first component if it
/// looks like a host, else Docker Hub.
fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Writes a containers-auth.json holding `credentials` for `host`, readable by its owner only.
fn write_auth_file(path: &Path, host: &str, credentials: &Credentials) -> Result<(), BuildahError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let auth = credentials.basic();
    let document = serde_json::json!({ "auths": { host: { "auth": auth } } });
    let io_error = |source| BuildahError::Io {
        what: format!("cannot write the registry credential to {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error)?;
    file.write_all(document.to_string().as_bytes())
        .map_err(io_error)
}
