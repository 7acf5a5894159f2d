//! `buildah`, run as a child process: builds Dockerfiles without a daemon or root namespaces.
//!
//! Steps run with the configured isolation (chroot by default: no user namespaces or cgroups
//! needed, but no security boundary either, see [`Isolation`]), timestamps are
//! pinned for reproducible layers, and the site's CA bundle, when configured, is bind-mounted
//! over the image's bundle for RUN steps only, so it never ends up in a layer.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::BufReader;
use tokio::process::Command;

use super::log::{BoundedLines, MAX_LINE_LIMIT};
use crate::config::{BuildSettings, Isolation};
use crate::spec::Platform;

/// Where Debian-family images keep the CA bundle that pip, curl and Python's ssl read.
const IMAGE_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Runs buildah with kiln's settings.
#[derive(Debug, Clone)]
pub struct Buildah {
    program: PathBuf,
    ca_bundle: Option<PathBuf>,
    isolation: Isolation,
}

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
    /// Pull `FROM` images without TLS verification, falling back to plain HTTP: needed when
    /// they come from a loopback or insecure registry (kiln's own, reached over loopback).
    pub insecure_pull: bool,
    /// Remove the intermediate container even when a step fails, so a failed build leaves
    /// nothing behind in local storage.
    pub force_rm: bool,
}

/// A registry credential for `buildah push`.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Buildah {
    /// A runner for the `buildah` on PATH with the given build settings.
    pub fn new(settings: &BuildSettings) -> Self {
        Buildah {
            program: PathBuf::from("buildah"),
            ca_bundle: settings.ca_bundle.clone(),
            isolation: settings.isolation,
        }
    }

    /// Builds `dockerfile` with `context` as build context and tags the result `tag` in local
    /// storage. Each line buildah prints goes to `log`.
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
        log: impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        let mut args: Vec<String> = [
            "bud",
            "--timestamp=0",
            "--identity-label=false",
            "--layers=false",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--isolation={}", self.isolation.as_str()));
        args.push(format!("--platform={platform}"));
        if options.insecure_pull {
            args.push("--tls-verify=false".into());
        }
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
        args.push(context.display().to_string());
        self.run("bud", &args, log).await.map(drop)
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
        self.run("push", &args, log).await?;
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
        self.run("push", &args, |_| {}).await
    }

    /// Creates a working container from `image` and returns its name.
    pub async fn from_image(&self, image: &str) -> Result<String, BuildahError> {
        let args = ["from", "--pull=never", "--quiet", image].map(String::from);
        let mut name = String::new();
        self.run("from", &args, |line| name = line.trim().to_owned())
            .await?;
        Ok(name)
    }

    /// Runs `command` in a working container and returns what it printed.
    pub async fn run_in(&self, container: &str, command: &[&str]) -> Result<String, BuildahError> {
        let isolation = format!("--isolation={}", self.isolation.as_str());
        let mut args = ["run", &isolation, container, "--"]
            .map(String::from)
            .to_vec();
        args.extend(command.iter().map(|arg| arg.to_string()));
        let mut output = String::new();
        self.run("run", &args, |line| {
            output.push_str(line);
            output.push('\n');
        })
        .await?;
        Ok(output)
    }

    /// Removes a working container.
    pub async fn remove_container(&self, container: &str) -> Result<(), BuildahError> {
        let args = ["rm", container].map(String::from);
        self.run("rm", &args, |_| {}).await
    }

    /// Removes an image from local storage.
    pub async fn remove_image(&self, image: &str) -> Result<(), BuildahError> {
        let args = ["rmi", "--force", image].map(String::from);
        self.run("rmi", &args, |_| {}).await
    }

    /// Runs buildah, passing its output line by line (stdout and stderr interleaved as they
    /// come) to `log`.
    async fn run(
        &self,
        step: &'static str,
        args: &[String],
        mut log: impl FnMut(&str),
    ) -> Result<(), BuildahError> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a cancelled build also stops what buildah started
            // (a RUN step's shell under chroot isolation is buildah's grandchild).
            .process_group(0)
            .spawn()
            .map_err(|source| BuildahError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        let mut group = ProcessGroupGuard(child.id());
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

/// Writes a containers-auth.json holding `credentials` for `host`, readable by its owner only.
fn write_auth_file(path: &Path, host: &str, credentials: &Credentials) -> Result<(), BuildahError> {
    use base64::Engine as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.user, credentials.password));
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
