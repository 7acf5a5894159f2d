//! Settings: embedded defaults, overridden by an optional TOML file, overridden by `KILN_*`
//! environment variables. Everything kiln can be told lives in [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::credentials::{Credentials, Secret};
use crate::recipe::RecipeImages;
use crate::signing::SigningKey;
use crate::spec::{BuildKind, Channel, DEFAULT_CHANNELS, ImageRef, Platform, RegistryHost};

/// kiln's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What `kiln serve` runs in this process: the API, build workers, or both.
    pub role: NodeRole,
    /// Where `kiln serve` listens.
    pub listen: SocketAddr,
    /// The key registry tokens and build-context upload tickets are signed with. Every node of
    /// one kiln needs the same one, so that any node accepts what another issued; without it
    /// (role `all` only) each start makes a random key, and tokens die with the process.
    pub secret_key: Option<Secret>,
    /// The registry host written into image names.
    pub registry: RegistryHost,
    /// The URL clients reach kiln at, for links kiln hands out (SIF downloads); by default
    /// `https://<registry>`, or `http://` for a loopback registry.
    pub public_url: Option<String>,
    /// Where kiln keeps its database, caches and blobs.
    pub data_dir: PathBuf,
    /// The store's database: `sqlite://<path>` or `postgres://user:password@host/database`
    /// (the one every node of a multi-node kiln shares); `None` is `sqlite://<data_dir>/kiln.db`,
    /// see [`Config::database_url`]. A secret, as the URL may hold a password.
    pub database_url: Option<Secret>,
    /// Channels for requests that name none, in priority order.
    pub channels: Vec<Channel>,
    /// Channel name → URL of a mirror that serves it (air-gapped sites, tests).
    pub channel_mirrors: BTreeMap<String, String>,
    /// The micromamba image that generated conda recipes solve in.
    pub micromamba_image: ImageRef,
    /// Base image profiles.
    pub base: BaseProfiles,
    /// Settings of image builds.
    pub build: BuildSettings,
    /// Settings of the embedded registry served under `/v2/`.
    pub embedded_registry: EmbeddedRegistry,
    /// A registry kiln keeps everything in instead of its embedded one (which it then stops
    /// serving): what several kiln processes on several machines share.
    pub external_registry: Option<ExternalRegistry>,
    /// Settings of the HTTP APIs.
    pub api: ApiSettings,
    /// Limits of HTTP connections and requests, and what `/health` checks.
    pub http: HttpSettings,
    /// Registry hosts spoken to over plain HTTP besides loopback ones (`host:port`).
    pub insecure_registries: Vec<String>,
    /// How long request records and build logs are kept.
    pub retention: Retention,
}

/// What one `kiln serve` process does. Several processes on one store and registry make one
/// kiln: API nodes behind a load balancer, workers wherever builds should run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// The API and build workers in one process: one machine, today's kiln.
    #[default]
    All,
    /// Serves HTTP and enqueues builds; runs none.
    Api,
    /// Claims and runs builds; serves only `/health` and `/metrics`.
    Worker,
}

impl NodeRole {
    /// The spellings `--role`, `KILN_ROLE` and `role` take.
    pub const NAMES: [&'static str; 3] = ["all", "api", "worker"];

    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::All => "all",
            NodeRole::Api => "api",
            NodeRole::Worker => "worker",
        }
    }

    /// Whether this process serves the HTTP API.
    pub fn serves_api(self) -> bool {
        matches!(self, NodeRole::All | NodeRole::Api)
    }

    /// Whether this process runs builds.
    pub fn runs_builds(self) -> bool {
        matches!(self, NodeRole::All | NodeRole::Worker)
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NodeRole {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "all" => Ok(NodeRole::All),
            "api" => Ok(NodeRole::Api),
            "worker" => Ok(NodeRole::Worker),
            other => Err(format!("{other:?} is not all, api or worker")),
        }
    }
}

/// The shortest `secret_key` taken: 32 characters, as many as 16 random bytes in hex.
pub const MIN_SECRET_KEY_LEN: usize = 32;

/// The registry kiln serves under `/v2/` when no external one is configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedRegistry {
    /// Largest blob accepted, in bytes; larger uploads are answered 413.
    pub max_blob_size: u64,
    /// Upload sessions idle longer than this many seconds are removed.
    pub upload_ttl_secs: u64,
    /// Who may push and delete (HTTP Basic, or a token from `/registry/token`); anyone may
    /// pull. kiln's builders have a credential of their own besides these.
    pub users: Vec<RegistryUser>,
    /// How long a token from `/registry/token` is good for, in seconds.
    pub token_ttl_secs: u64,
    /// Upload sessions one registry user may hold open at once; past it, 429 TOOMANYREQUESTS.
    pub max_upload_sessions: usize,
    /// Seconds between garbage collections by `kiln serve`; `0` turns them off (`kiln gc`
    /// still works with the server stopped).
    pub gc_interval_secs: u64,
    /// Unreferenced blobs younger than this many seconds are kept: longer than the longest push
    /// takes from its first blob to its manifest.
    pub gc_grace_secs: u64,
    /// Remote-build results (`library/<user>/remote-builds/…`) are removed this many seconds
    /// after they were pushed; `0` keeps them.
    pub remote_build_retention_secs: u64,
}

/// A registry user allowed to write.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RegistryUserEntry")]
pub struct RegistryUser {
    /// Who the user is and what proves it.
    pub credentials: Credentials,
    /// Whether this user may also write into kiln's own namespaces (`library/`, `kiln/`,
    /// `mirror/`), e.g. to push bases with `kiln base bootstrap`.
    pub operator: bool,
}

impl RegistryUser {
    /// `user` with `password`, an operator or not.
    pub fn new(user: impl Into<String>, password: impl Into<Secret>, operator: bool) -> Self {
        RegistryUser {
            credentials: Credentials::new(user, password),
            operator,
        }
    }
}

/// A registry user as the file writes it: one flat table (`user`, `password`, `operator`),
/// unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryUserEntry {
    user: String,
    password: Secret,
    #[serde(default)]
    operator: bool,
}

impl From<RegistryUserEntry> for RegistryUser {
    fn from(entry: RegistryUserEntry) -> Self {
        RegistryUser::new(entry.user, entry.password, entry.operator)
    }
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        EmbeddedRegistry {
            max_blob_size: 16 << 30,
            upload_ttl_secs: 3600,
            users: Vec::new(),
            token_ttl_secs: 3600,
            max_upload_sessions: 16,
            gc_interval_secs: 3600,
            gc_grace_secs: 3600,
            remote_build_retention_secs: 7 * 24 * 3600,
        }
    }
}

/// An OCI registry kiln keeps its images, SIFs and build contexts in (Harbor, a cloud
/// registry, CNCF Distribution). Image names still use `registry`, the public host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalRegistry {
    /// `https://host[:port]`, or `http://` for a registry without TLS.
    pub url: url::Url,
    /// Who kiln pushes and pulls as (both are needed; optional here so that the environment
    /// can give them one by one).
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl ExternalRegistry {
    /// The registry's `host[:port]`, as image references and the registry client name it.
    pub fn host(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Whether it is spoken to over plain HTTP.
    pub fn plain_http(&self) -> bool {
        self.url.scheme() == "http"
    }

    /// What kiln logs in with, if anything.
    pub fn credentials(&self) -> Option<Credentials> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password.clone())),
            _ => None,
        }
    }

    /// Refuses a URL that names no registry, or credentials given by half.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            setting: "external_registry",
            message,
        };
        let url = &self.url;
        let bare = matches!(url.path(), "" | "/") && url.query().is_none();
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !bare {
            return Err(invalid(format!(
                "url `{url}` is not a registry's address; write it as https://host[:port] \
                 (or http:// for one without TLS), without a path"
            )));
        }
        if self.user.is_none() || self.password.is_none() {
            return Err(invalid(
                "needs a user and a password to push and pull with (user and password, or \
                 KILN_EXTERNAL_REGISTRY_USER and KILN_EXTERNAL_REGISTRY_PASSWORD)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Who may ask for builds, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Builds a client without a token may start per day (by address), as Wave's public
    /// service allows 25; `0` means no limit. Requests whose image exists never count.
    pub anonymous_builds_per_day: u32,
    /// Tokens (`Authorization: Bearer …`, or Wave's `towerAccessToken`) whose requests are not
    /// limited. They are also the operators' tokens of the Singularity library API, acting as
    /// the user `library`, who may write anywhere.
    pub tokens: Vec<Secret>,
    /// Whether anyone may get a library token at `/auth/tokens` for a user name nobody holds
    /// yet (first come, first served). When false, only an operator mints tokens (on that page
    /// with a token from `tokens`, or with `kiln token create`).
    pub open_signup: bool,
    /// Remote builds (`singularity build --remote`) a library user may start per day; `0`
    /// means no limit. Operators are never limited.
    pub user_builds_per_day: u32,
    /// Whether requests that run a user's recipe (Wave's `containerFile`) are taken without a
    /// token. Recipes are strangers' code, so by default they need one: an operator's (`tokens`)
    /// or a library user's from `/auth/tokens`. Package requests never need one. Remote builds
    /// of definition files always do (the result goes to the user's library entity).
    pub anonymous_recipes: bool,
    /// Most conda channels one request may name.
    pub max_channels: usize,
    /// Most bytes a build context (`%files` of a remote build) may unpack to, tar headers
    /// included.
    pub context_max_unpacked_bytes: u64,
    /// Most entries (files, directories, links) a build context may hold.
    pub context_max_files: u64,
    /// Most a build context may grow when unpacked, beyond its first 16 MiB: unpacked bytes
    /// over uploaded bytes. Source trees compress about tenfold; a decompression bomb a
    /// thousandfold and more.
    pub context_max_expansion: u64,
    /// Seconds the lookup of a base image's registry host may take at submit.
    pub resolve_timeout_secs: u64,
    /// Milliseconds a request that starts a build waits for it: a build done well by then is
    /// answered as a ready image (Wave: `succeeded: true`), so the client need not poll. `0`
    /// answers at once.
    pub wait_for_build_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            anonymous_builds_per_day: 25,
            tokens: Vec::new(),
            open_signup: true,
            user_builds_per_day: 50,
            anonymous_recipes: false,
            max_channels: 16,
            context_max_unpacked_bytes: 2 << 30,
            context_max_files: 100_000,
            context_max_expansion: 100,
            resolve_timeout_secs: 5,
            wait_for_build_ms: 2000,
        }
    }
}

/// Limits of HTTP connections and requests: what a client can hold of kiln without sending a
/// whole request, and how much it may send. `/health`'s free-space threshold is here too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Seconds a client has to send a request's headers, counted from when the connection is
    /// opened or its previous answer was sent; a connection that has not sent them by then is
    /// closed. This is also how long an idle kept-alive connection stays open.
    pub header_timeout_secs: u64,
    /// Seconds a connection may send and receive nothing while a request is under way (a
    /// stalled upload, a client that stopped reading) before it is closed.
    pub idle_timeout_secs: u64,
    /// Connections kiln serves at once; further ones wait until one closes. It is lowered at
    /// start to fit the process's open-file limit (`ulimit -n`), keeping a quarter of that
    /// limit (at least 64) for the database, blobs and builds.
    pub max_connections: usize,
    /// Connections one client address may hold while more than half of `max_connections` are
    /// in use; further ones are answered 503 (when kiln is less busy a client may hold more).
    /// `0` means no limit. Behind a reverse proxy every client has the proxy's address: raise
    /// it or set `0` there, and let the proxy limit clients.
    pub max_connections_per_client: usize,
    /// Largest request body kiln's own APIs and forms take, in bytes; larger ones are answered
    /// 413. Registry uploads, SIF pushes and build contexts have limits of their own.
    pub max_body_bytes: usize,
    /// Free space on the data directory's disk, in MiB, below which `/health` answers 503.
    pub health_min_free_mb: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout_secs: 30,
            idle_timeout_secs: 120,
            max_connections: 1024,
            max_connections_per_client: 64,
            max_body_bytes: 2 << 20,
            health_min_free_mb: 512,
        }
    }
}

/// The base images kiln builds on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseProfiles {
    /// The base of conda environments; by default kiln's own Debian base in its registry.
    pub conda: BaseProfile,
    /// The base of pip-only requests: it must have python3; by default kiln's own Debian
    /// Python base.
    pub python: BaseProfile,
    /// The Debian mirror kiln makes its own bases from (plain HTTP is normal: the archive's
    /// signature, not the transport, is what is trusted).
    pub debian_mirror: url::Url,
    /// The Debian suite (codename) of kiln's own bases, and their tag.
    pub debian_suite: String,
    /// An OpenPGP keyring (binary or armored) that replaces Debian's archive keys embedded in
    /// kiln, for a mirror signed by a key of its own.
    pub debian_keyring: Option<PathBuf>,
}

/// A base image and the facts about it that resolvers need.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseProfile {
    /// The image; unset means kiln's default for this profile.
    pub image: Option<ImageRef>,
    /// The glibc version of the image (conda's `__glibc` virtual package).
    pub glibc: String,
    /// The Python version of the image, if it has one.
    pub python: Option<String>,
}

/// Settings of image builds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSettings {
    /// How many builds run at once.
    pub workers: usize,
    /// The kinds of build this process's workers take (`native`, `dockerfile`,
    /// `definition`); other kinds wait for workers elsewhere that take them. All by default.
    pub kinds: Vec<BuildKind>,
    /// The platforms this process's workers build for; a build waits for a worker that has
    /// all of its platforms. Empty (the default): any platform (with qemu-user for foreign
    /// ones).
    pub platforms: Vec<Platform>,
    /// Credentials `kiln build` pushes with (`kiln serve` pushes to its embedded registry with
    /// a credential of its own).
    pub push_user: Option<String>,
    /// Password or token for `push_user`.
    pub push_password: Option<Secret>,
    /// A CA bundle made available to build steps that reach the network (`RUN pip install`),
    /// for sites behind a TLS-intercepting proxy. It is mounted, never baked into images.
    pub ca_bundle: Option<PathBuf>,
    /// The uv executable kiln resolves pip packages with (a name on `PATH`, or a path).
    pub uv: PathBuf,
    /// The package index pip packages come from, when not PyPI (a mirror, a proxy).
    pub pip_index_url: Option<String>,
    /// How buildah isolates the steps of Dockerfiles and definition files (`RUN`, `%post`).
    pub isolation: Isolation,
    /// Acknowledges that `isolation = "chroot"` runs users' build steps as root on the host,
    /// with no boundary at all; kiln refuses to start with chroot isolation without it.
    pub allow_root_on_host: bool,
    /// The user whose subordinate id ranges (`/etc/subuid`, `/etc/subgid`) the root of a
    /// contained build step maps to; created (with a fresh range) if missing.
    pub sandbox_user: String,
    /// Memory a contained build's steps may use together, in MiB; past it they are killed.
    pub memory_limit_mib: u64,
    /// Processes and threads a contained build's steps may have at once.
    pub pids_limit: u64,
    /// Networks that build steps may not reach and that `FROM`/`From:` hosts may not resolve
    /// into, besides loopback and link-local addresses, which are always blocked. Private
    /// ranges are not blocked by default: resolvers and proxies often live there.
    pub blocked_networks: Vec<ipnet::IpNet>,

    // Bounds of one build (queue engineer's settings, kept together).
    /// The longest a build may run, in seconds, unless its kind has a limit of its own in
    /// `timeouts`; it is then stopped and fails with "timed out after N s".
    pub timeout_secs: u64,
    /// Time limits, in seconds, of one kind of build, overriding `timeout_secs`.
    pub timeouts: KindTimeouts,
    /// How often a build is taken up at most: after its worker stopped this many times (kiln
    /// crashed or lost the build's lease) it fails instead of being tried again.
    pub max_attempts: u32,
    /// Bytes of one log line kept (at most 1 MiB); the rest is cut, and a marker says how much.
    pub log_max_line_bytes: usize,
    /// Bytes of one build's log kept; what comes after is counted in one last line.
    pub log_max_bytes: u64,
    /// Builds waiting for a worker, at most; past it, new builds are answered 503 with
    /// `Retry-After`. `0`: no cap.
    pub max_queued: u64,
    /// Builds waiting for a worker per anonymous client address; `0`: no cap.
    pub max_queued_per_address: u64,
    /// Seconds a worker's claim on a build lasts without a heartbeat (renewed every third):
    /// how long a build of a crashed kiln waits before another worker starts it again.
    pub lease_secs: u64,
    /// `mksquashfs` runs (SIF images) at once in this process, across builds; each uses every
    /// core. `0`: the number of cores.
    pub max_mksquashfs: usize,
    /// `buildah` runs (Dockerfile and definition builds) at once in this process. `0`: the
    /// number of cores.
    pub max_buildah: usize,
}

/// Time limits of the kinds of builds, in seconds; unset ones use `build.timeout_secs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindTimeouts {
    /// Package builds (conda, pip): kiln's own builder.
    pub native: Option<u64>,
    /// Wave `containerFile` builds.
    pub containerfile: Option<u64>,
    /// Singularity definition files (remote builds).
    pub definition: Option<u64>,
}

/// How long kiln keeps records that grow with use; a background pass deletes older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Days a Wave container request record is kept after its last use; `0`: forever.
    pub request_days: u64,
    /// Days a finished build's log is kept; `0`: forever. The build record stays.
    pub log_days: u64,
    /// Seconds between pruning passes.
    pub prune_every_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            request_days: 30,
            log_days: 90,
            prune_every_secs: 3600,
        }
    }
}

impl BuildSettings {
    /// What `kiln build` pushes with: `push_user` and `push_password` when both are set.
    pub fn push_credentials(&self) -> Option<Credentials> {
        match (&self.push_user, &self.push_password) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password.clone())),
            _ => None,
        }
    }

    /// Which builds this process's workers claim: of `kinds`, on `platforms` (any if empty).
    pub fn worker_scope(&self) -> crate::store::WorkerScope {
        crate::store::WorkerScope {
            kinds: self.kinds.clone(),
            platforms: self.platforms.clone(),
        }
    }

    /// `mksquashfs` runs allowed at once: the setting, or the number of cores.
    pub fn mksquashfs_runs(&self) -> usize {
        or_cores(self.max_mksquashfs)
    }

    /// `buildah` runs allowed at once: the setting, or the number of cores.
    pub fn buildah_runs(&self) -> usize {
        or_cores(self.max_buildah)
    }

    /// The bounds of each build's log.
    pub fn log_limits(&self) -> crate::build::LogLimits {
        crate::build::LogLimits {
            max_line: self
                .log_max_line_bytes
                .clamp(1, crate::build::log::MAX_LINE_LIMIT),
            max_total: self.log_max_bytes,
        }
    }
}

/// `setting`, or the number of cores when it is `0`.
fn or_cores(setting: usize) -> usize {
    if setting > 0 {
        setting
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }
}

/// How build steps are isolated. Build steps are users' code: `oci` (the default) runs them
/// in an OCI runtime container with its own namespaces, in a user namespace whose root is an
/// unprivileged host id, with a filtered network and a cgroup holding its limits. `chroot`
/// needs nothing from the host but runs them as root in a chroot, which is no security
/// boundary: it needs `allow_root_on_host`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A chroot, as root, without namespaces: works anywhere (containers, CI), contains
    /// nothing.
    Chroot,
    /// An OCI runtime (runc, crun) container in a user namespace, network and cgroup of
    /// kiln's making.
    #[default]
    Oci,
    /// As `oci`, with buildah's `rootless` isolation inside the same user namespace,
    /// network and cgroup.
    Rootless,
}

impl Isolation {
    /// The value buildah takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Chroot => "chroot",
            Isolation::Oci => "oci",
            Isolation::Rootless => "rootless",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "chroot" => Ok(Isolation::Chroot),
            "oci" => Ok(Isolation::Oci),
            "rootless" => Ok(Isolation::Rootless),
            other => Err(format!("{other:?} is not chroot, oci or rootless")),
        }
    }
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            workers: 2,
            kinds: BuildKind::ALL.to_vec(),
            platforms: Vec::new(),
            push_user: None,
            push_password: None,
            ca_bundle: None,
            uv: PathBuf::from("uv"),
            pip_index_url: None,
            isolation: Isolation::Oci,
            allow_root_on_host: false,
            sandbox_user: "kiln-build".into(),
            memory_limit_mib: 4096,
            pids_limit: 1024,
            blocked_networks: Vec::new(),
            timeout_secs: 3600,
            timeouts: KindTimeouts::default(),
            max_attempts: 3,
            log_max_line_bytes: 16 << 10,
            log_max_bytes: 8 << 20,
            max_queued: 1000,
            max_queued_per_address: 10,
            lease_secs: 45,
            max_mksquashfs: 0,
            max_buildah: 0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: NodeRole::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            secret_key: None,
            registry: RegistryHost::default_host(),
            public_url: None,
            data_dir: PathBuf::from("./kiln-data"),
            database_url: None,
            channels: DEFAULT_CHANNELS
                .iter()
                .map(|name| name.parse().expect("default channels are valid"))
                .collect(),
            channel_mirrors: BTreeMap::new(),
            micromamba_image: "mambaorg/micromamba:2-amazon2023"
                .parse()
                .expect("default image is valid"),
            base: BaseProfiles::default(),
            build: BuildSettings::default(),
            embedded_registry: EmbeddedRegistry::default(),
            external_registry: None,
            api: ApiSettings::default(),
            http: HttpSettings::default(),
            insecure_registries: Vec::new(),
            retention: Retention::default(),
        }
    }
}

impl Default for BaseProfiles {
    fn default() -> Self {
        BaseProfiles {
            conda: BaseProfile {
                image: None,
                glibc: "2.36".into(),
                python: None,
            },
            python: BaseProfile {
                image: None,
                glibc: "2.36".into(),
                python: Some("3.11".into()),
            },
            debian_mirror: crate::base::DEFAULT_MIRROR
                .parse()
                .expect("the default mirror is a URL"),
            debian_suite: crate::base::DEFAULT_SUITE.to_owned(),
            debian_keyring: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var} is not valid: {message}")]
    Env { var: &'static str, message: String },
    #[error("setting {setting} is not valid: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Loads the defaults, then `file` if given, then `KILN_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|err| ConfigError::Parse {
                    path: path.to_owned(),
                    message: err.message().to_owned(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that parse but cannot work.
    fn check(&self) -> Result<(), ConfigError> {
        let suite = &self.base.debian_suite;
        let suite_ok = !suite.is_empty()
            && suite.len() <= 64
            && !suite.starts_with(['-', '.'])
            && suite
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !suite_ok {
            return Err(ConfigError::Invalid {
                setting: "base.debian_suite",
                message: format!(
                    "`{suite}` is not a Debian suite name; use a codename such as bookworm"
                ),
            });
        }
        if self.build.kinds.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "build.kinds",
                message: "is empty, so this kiln's workers would take no build; list some of \
                          native, dockerfile and definition, or leave it out for all"
                    .into(),
            });
        }
        if let Some(key) = &self.secret_key
            && key.expose().chars().count() < MIN_SECRET_KEY_LEN
        {
            return Err(ConfigError::Invalid {
                setting: "secret_key",
                message: format!(
                    "is shorter than {MIN_SECRET_KEY_LEN} characters; make one with \
                     `openssl rand -hex 32` and give every node the same"
                ),
            });
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            let known = ["sqlite://", "postgres://", "postgresql://"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                // Only the scheme is shown: the rest may hold a password.
                let scheme = url.split_once("://").map_or("(none)", |(scheme, _)| scheme);
                return Err(ConfigError::Invalid {
                    setting: "database_url",
                    message: format!(
                        "the scheme `{scheme}` is not one kiln stores in; write \
                         sqlite:///path/to/kiln.db or postgres://user:password@host:5432/kiln"
                    ),
                });
            }
        }
        if !matches!(self.base.debian_mirror.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                setting: "base.debian_mirror",
                message: format!(
                    "`{}` is not an http(s) URL; use one such as http://deb.debian.org/debian",
                    self.base.debian_mirror
                ),
            });
        }
        if let Some(external) = &self.external_registry {
            external.check()?;
        }
        Ok(())
    }

    /// Refuses a role that cannot work with these settings: an `api` or `worker` node is one of
    /// several, which must accept each other's tokens and tickets, so it needs the shared
    /// `secret_key`; a worker pushes what it builds to a registry the others read.
    pub fn check_role(&self) -> Result<(), ConfigError> {
        if self.role != NodeRole::All && self.secret_key.is_none() {
            return Err(ConfigError::Invalid {
                setting: "secret_key",
                message: format!(
                    "is missing, and role {} needs it: every node of a kiln signs and checks \
                     tokens with the same key; set KILN_SECRET_KEY (or secret_key in the \
                     configuration file) on every node to one value of at least \
                     {MIN_SECRET_KEY_LEN} characters, e.g. from `openssl rand -hex 32`",
                    self.role
                ),
            });
        }
        // TODO(lead): once wip/registry lands `external_registry`, refuse a worker without it:
        // if self.role == NodeRole::Worker && self.external_registry.is_none() { Err(Invalid {
        //     setting: "external_registry", message: "is missing, and role worker needs it: a
        //     worker pushes its images to the registry every node reads; set [external_registry]
        //     url, user and password (KILN_EXTERNAL_REGISTRY_URL, _USER, _PASSWORD)" }) }
        Ok(())
    }

    /// The key this process signs tokens and tickets with: derived from `secret_key`, or, when
    /// none is set (role `all`), a random one that lives as long as the process does.
    pub fn signing_key(&self) -> SigningKey {
        match &self.secret_key {
            Some(secret) => SigningKey::from_secret(secret),
            None => SigningKey::random(),
        }
    }

    /// Loads from the process environment and the file `KILN_CONFIG` names, if any.
    pub fn from_process(file: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os("KILN_CONFIG").map(PathBuf::from);
        let file = file.map(Path::to_owned).or(from_env);
        Config::load(file.as_deref(), |name| std::env::var(name).ok())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|err: T::Err| ConfigError::Env {
                var,
                message: err.to_string(),
            })
        }
        if let Some(value) = env("KILN_ROLE") {
            self.role = parsed("KILN_ROLE", &value)?;
        }
        if let Some(value) = env("KILN_SECRET_KEY") {
            self.secret_key = Some(value.into());
        }
        if let Some(value) = env("KILN_BUILD_KINDS") {
            self.build.kinds = value
                .split(',')
                .filter(|kind| !kind.trim().is_empty())
                .map(|kind| parsed("KILN_BUILD_KINDS", kind.trim()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(value) = env("KILN_BUILD_PLATFORMS") {
            self.build.platforms = value
                .split(',')
                .filter(|platform| !platform.trim().is_empty())
                .map(|platform| parsed("KILN_BUILD_PLATFORMS", platform.trim()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(value) = env("KILN_LISTEN") {
            self.listen = parsed("KILN_LISTEN", &value)?;
        }
        if let Some(value) = env("KILN_REGISTRY") {
            self.registry = parsed("KILN_REGISTRY", &value)?;
        }
        if let Some(value) = env("KILN_PUBLIC_URL") {
            self.public_url = Some(value);
        }
        if let Some(value) = env("KILN_DATA_DIR") {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = env("KILN_DATABASE_URL") {
            self.database_url = Some(value.into());
        }
        if let Some(value) = env("KILN_CHANNELS") {
            self.channels = value
                .split(',')
                .map(|channel| parsed("KILN_CHANNELS", channel.trim()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(value) = env("KILN_MICROMAMBA_IMAGE") {
            self.micromamba_image = parsed("KILN_MICROMAMBA_IMAGE", &value)?;
        }
        if let Some(value) = env("KILN_CONDA_BASE_IMAGE") {
            self.base.conda.image = Some(parsed("KILN_CONDA_BASE_IMAGE", &value)?);
        }
        if let Some(value) = env("KILN_PYTHON_BASE_IMAGE") {
            self.base.python.image = Some(parsed("KILN_PYTHON_BASE_IMAGE", &value)?);
        }
        if let Some(value) = env("KILN_DEBIAN_MIRROR") {
            self.base.debian_mirror = parsed("KILN_DEBIAN_MIRROR", &value)?;
        }
        if let Some(value) = env("KILN_DEBIAN_SUITE") {
            self.base.debian_suite = value;
        }
        if let Some(value) = env("KILN_REGISTRY_USERS") {
            self.embedded_registry.users = value
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once(':') {
                    Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                        Ok(RegistryUser::new(user, password, false))
                    }
                    _ => Err(ConfigError::Env {
                        var: "KILN_REGISTRY_USERS",
                        message: "write user:password pairs separated by commas".into(),
                    }),
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(value) = env("KILN_REGISTRY_OPERATORS") {
            let operators: Vec<&str> = value.split(',').map(str::trim).collect();
            for user in &mut self.embedded_registry.users {
                user.operator = operators.contains(&user.credentials.user.as_str());
            }
        }
        if let Some(value) = env("KILN_REGISTRY_TOKEN_TTL_SECS") {
            self.embedded_registry.token_ttl_secs = parsed("KILN_REGISTRY_TOKEN_TTL_SECS", &value)?;
        }
        if let Some(value) = env("KILN_REGISTRY_MAX_UPLOAD_SESSIONS") {
            self.embedded_registry.max_upload_sessions =
                parsed("KILN_REGISTRY_MAX_UPLOAD_SESSIONS", &value)?;
        }
        if let Some(value) = env("KILN_GC_INTERVAL_SECS") {
            self.embedded_registry.gc_interval_secs = parsed("KILN_GC_INTERVAL_SECS", &value)?;
        }
        if let Some(value) = env("KILN_GC_GRACE_SECS") {
            self.embedded_registry.gc_grace_secs = parsed("KILN_GC_GRACE_SECS", &value)?;
        }
        if let Some(value) = env("KILN_REMOTE_BUILD_RETENTION_SECS") {
            self.embedded_registry.remote_build_retention_secs =
                parsed("KILN_REMOTE_BUILD_RETENTION_SECS", &value)?;
        }
        if let Some(value) = env("KILN_EXTERNAL_REGISTRY_URL") {
            let url = parsed("KILN_EXTERNAL_REGISTRY_URL", &value)?;
            match &mut self.external_registry {
                Some(external) => external.url = url,
                None => {
                    self.external_registry = Some(ExternalRegistry {
                        url,
                        user: None,
                        password: None,
                    });
                }
            }
        }
        for (var, is_user) in [
            ("KILN_EXTERNAL_REGISTRY_USER", true),
            ("KILN_EXTERNAL_REGISTRY_PASSWORD", false),
        ] {
            let Some(value) = env(var) else { continue };
            let Some(external) = &mut self.external_registry else {
                return Err(ConfigError::Env {
                    var,
                    message: "is set, but no external registry is: set \
                              KILN_EXTERNAL_REGISTRY_URL too"
                        .into(),
                });
            };
            if is_user {
                external.user = Some(value);
            } else {
                external.password = Some(value.into());
            }
        }
        if let Some(value) = env("KILN_BUILD_WORKERS") {
            self.build.workers = parsed("KILN_BUILD_WORKERS", &value)?;
        }
        if let Some(value) = env("KILN_PUSH_USER") {
            self.build.push_user = Some(value);
        }
        if let Some(value) = env("KILN_PUSH_PASSWORD") {
            self.build.push_password = Some(value.into());
        }
        if let Some(value) = env("KILN_CA_BUNDLE") {
            self.build.ca_bundle = Some(PathBuf::from(value));
        }
        if let Some(value) = env("KILN_ANONYMOUS_BUILDS_PER_DAY") {
            self.api.anonymous_builds_per_day = parsed("KILN_ANONYMOUS_BUILDS_PER_DAY", &value)?;
        }
        if let Some(value) = env("KILN_API_TOKENS") {
            self.api.tokens = value
                .split(',')
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(Secret::from)
                .collect();
        }
        if let Some(value) = env("KILN_USER_BUILDS_PER_DAY") {
            self.api.user_builds_per_day = parsed("KILN_USER_BUILDS_PER_DAY", &value)?;
        }
        if let Some(value) = env("KILN_OPEN_SIGNUP") {
            self.api.open_signup = parsed("KILN_OPEN_SIGNUP", &value)?;
        }
        if let Some(value) = env("KILN_ANONYMOUS_RECIPES") {
            self.api.anonymous_recipes = parsed("KILN_ANONYMOUS_RECIPES", &value)?;
        }
        if let Some(value) = env("KILN_MAX_CHANNELS") {
            self.api.max_channels = parsed("KILN_MAX_CHANNELS", &value)?;
        }
        if let Some(value) = env("KILN_CONTEXT_MAX_UNPACKED_BYTES") {
            self.api.context_max_unpacked_bytes =
                parsed("KILN_CONTEXT_MAX_UNPACKED_BYTES", &value)?;
        }
        if let Some(value) = env("KILN_CONTEXT_MAX_FILES") {
            self.api.context_max_files = parsed("KILN_CONTEXT_MAX_FILES", &value)?;
        }
        if let Some(value) = env("KILN_CONTEXT_MAX_EXPANSION") {
            self.api.context_max_expansion = parsed("KILN_CONTEXT_MAX_EXPANSION", &value)?;
        }
        if let Some(value) = env("KILN_RESOLVE_TIMEOUT_SECS") {
            self.api.resolve_timeout_secs = parsed("KILN_RESOLVE_TIMEOUT_SECS", &value)?;
        }
        if let Some(value) = env("KILN_WAIT_FOR_BUILD_MS") {
            self.api.wait_for_build_ms = parsed("KILN_WAIT_FOR_BUILD_MS", &value)?;
        }
        if let Some(value) = env("KILN_MAX_MKSQUASHFS") {
            self.build.max_mksquashfs = parsed("KILN_MAX_MKSQUASHFS", &value)?;
        }
        if let Some(value) = env("KILN_MAX_BUILDAH") {
            self.build.max_buildah = parsed("KILN_MAX_BUILDAH", &value)?;
        }
        if let Some(value) = env("KILN_UV") {
            self.build.uv = PathBuf::from(value);
        }
        if let Some(value) = env("KILN_PIP_INDEX_URL") {
            self.build.pip_index_url = Some(value);
        }
        if let Some(value) = env("KILN_BUILD_ISOLATION") {
            self.build.isolation = parsed("KILN_BUILD_ISOLATION", &value)?;
        }
        if let Some(value) = env("KILN_HTTP_HEADER_TIMEOUT_SECS") {
            self.http.header_timeout_secs = parsed("KILN_HTTP_HEADER_TIMEOUT_SECS", &value)?;
        }
        if let Some(value) = env("KILN_HTTP_IDLE_TIMEOUT_SECS") {
            self.http.idle_timeout_secs = parsed("KILN_HTTP_IDLE_TIMEOUT_SECS", &value)?;
        }
        if let Some(value) = env("KILN_HTTP_MAX_CONNECTIONS") {
            self.http.max_connections = parsed("KILN_HTTP_MAX_CONNECTIONS", &value)?;
        }
        if let Some(value) = env("KILN_HTTP_MAX_CONNECTIONS_PER_CLIENT") {
            self.http.max_connections_per_client =
                parsed("KILN_HTTP_MAX_CONNECTIONS_PER_CLIENT", &value)?;
        }
        if let Some(value) = env("KILN_HTTP_MAX_BODY_BYTES") {
            self.http.max_body_bytes = parsed("KILN_HTTP_MAX_BODY_BYTES", &value)?;
        }
        if let Some(value) = env("KILN_HEALTH_MIN_FREE_MB") {
            self.http.health_min_free_mb = parsed("KILN_HEALTH_MIN_FREE_MB", &value)?;
        }
        if let Some(value) = env("KILN_ALLOW_ROOT_ON_HOST") {
            self.build.allow_root_on_host = parsed("KILN_ALLOW_ROOT_ON_HOST", &value)?;
        }
        if let Some(value) = env("KILN_SANDBOX_USER") {
            self.build.sandbox_user = value;
        }
        if let Some(value) = env("KILN_BUILD_MEMORY_LIMIT_MIB") {
            self.build.memory_limit_mib = parsed("KILN_BUILD_MEMORY_LIMIT_MIB", &value)?;
        }
        if let Some(value) = env("KILN_BUILD_PIDS_LIMIT") {
            self.build.pids_limit = parsed("KILN_BUILD_PIDS_LIMIT", &value)?;
        }
        if let Some(value) = env("KILN_BLOCKED_NETWORKS") {
            self.build.blocked_networks = value
                .split(',')
                .filter(|network| !network.trim().is_empty())
                .map(|network| parsed("KILN_BLOCKED_NETWORKS", network.trim()))
                .collect::<Result<_, _>>()?;
        }
        let numbers: [(&'static str, &mut u64); 7] = [
            ("KILN_BUILD_LEASE_SECS", &mut self.build.lease_secs),
            ("KILN_BUILD_TIMEOUT_SECS", &mut self.build.timeout_secs),
            ("KILN_LOG_MAX_BYTES", &mut self.build.log_max_bytes),
            ("KILN_MAX_QUEUED_BUILDS", &mut self.build.max_queued),
            (
                "KILN_MAX_QUEUED_PER_ADDRESS",
                &mut self.build.max_queued_per_address,
            ),
            (
                "KILN_REQUEST_RETENTION_DAYS",
                &mut self.retention.request_days,
            ),
            ("KILN_LOG_RETENTION_DAYS", &mut self.retention.log_days),
        ];
        for (var, setting) in numbers {
            if let Some(value) = env(var) {
                *setting = parsed(var, &value)?;
            }
        }
        if let Some(value) = env("KILN_BUILD_MAX_ATTEMPTS") {
            self.build.max_attempts = parsed("KILN_BUILD_MAX_ATTEMPTS", &value)?;
        }
        if let Some(value) = env("KILN_LOG_MAX_LINE_BYTES") {
            self.build.log_max_line_bytes = parsed("KILN_LOG_MAX_LINE_BYTES", &value)?;
        }
        Ok(())
    }

    /// The URL clients reach kiln at, without a trailing `/`.
    pub fn public_url(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = self.registry.as_str();
        let loopback = ["localhost", "127.", "[::1]"]
            .iter()
            .any(|prefix| host.starts_with(prefix));
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// The channels of requests that name none, as requests write them: the page sends them
    /// with every request, so what its search offers (it searches these) is what the build
    /// solves from.
    pub fn channel_names(&self) -> Vec<String> {
        self.channels.iter().map(ToString::to_string).collect()
    }

    /// Where clients' uploads of build contexts (for remote builds' `%files`) are checked before
    /// they go to the registry, which keeps them.
    pub fn build_contexts_dir(&self) -> PathBuf {
        self.data_dir.join("build-contexts")
    }

    /// The conda base image: the configured one, or kiln's Debian base in its own registry.
    pub fn conda_base_image(&self) -> ImageRef {
        self.base.conda.image.clone().unwrap_or_else(|| {
            format!(
                "{}/{}:{}",
                self.registry,
                crate::base::CONDA_BASE_REPOSITORY,
                self.base.debian_suite
            )
            .parse()
            .expect("a registry host and a fixed path make a valid reference")
        })
    }

    /// The Python base image: the configured one, or kiln's Debian Python base.
    pub fn python_base_image(&self) -> ImageRef {
        self.base.python.image.clone().unwrap_or_else(|| {
            format!(
                "{}/{}:{}",
                self.registry,
                crate::base::PYTHON_BASE_REPOSITORY,
                self.base.debian_suite
            )
            .parse()
            .expect("a registry host and a fixed path make a valid reference")
        })
    }

    /// The images generated recipes start from.
    pub fn recipe_images(&self) -> RecipeImages {
        RecipeImages {
            micromamba: self.micromamba_image.clone(),
            conda_base: self.conda_base_image(),
            python_base: self.python_base_image(),
            registry: Some(self.registry.clone()),
        }
    }

    /// The settings of the embedded registry, its blobs under the data directory.
    pub fn registry_config(&self) -> crate::registry::RegistryConfig {
        crate::registry::RegistryConfig {
            root: self.data_dir.join("registry"),
            max_blob_size: self.embedded_registry.max_blob_size,
            upload_ttl: std::time::Duration::from_secs(self.embedded_registry.upload_ttl_secs),
            users: self
                .embedded_registry
                .users
                .iter()
                .map(|u| {
                    let role = if u.operator {
                        crate::registry::auth::Role::Operator
                    } else {
                        crate::registry::auth::Role::User
                    };
                    crate::registry::User {
                        credentials: u.credentials.clone(),
                        role,
                    }
                })
                .collect(),
            token_ttl: std::time::Duration::from_secs(self.embedded_registry.token_ttl_secs),
            signing_key: self.signing_key(),
            max_upload_sessions: self.embedded_registry.max_upload_sessions,
        }
    }

    /// What the embedded registry's garbage collection may remove.
    pub fn gc_policy(&self) -> crate::registry::gc::GcPolicy {
        let secs = std::time::Duration::from_secs;
        let retention = self.embedded_registry.remote_build_retention_secs;
        crate::registry::gc::GcPolicy {
            grace: secs(self.embedded_registry.gc_grace_secs),
            upload_ttl: secs(self.embedded_registry.upload_ttl_secs),
            remote_build_retention: (retention > 0).then(|| secs(retention)),
        }
    }

    /// The SQLite database file kiln uses when `database_url` is not set.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("kiln.db")
    }

    /// The URL [`crate::store::open`] takes: `database_url`, or the SQLite file under
    /// `data_dir`.
    pub fn database_url(&self) -> Secret {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.database_path().display()).into())
    }

    /// buildah's image storage: kiln's alone, so a start can sweep what killed builds left.
    pub fn buildah_storage_dir(&self) -> PathBuf {
        self.data_dir.join("buildah")
    }

    /// Where builds work, one directory per build id.
    pub fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults() {
        let config = Config::load(None, no_env).expect("defaults load");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.registry.as_str(), "localhost:9090");
        assert_eq!(config.data_dir, PathBuf::from("./kiln-data"));
        assert_eq!(
            config.conda_base_image().as_str(),
            "localhost:9090/kiln/base/debian:bookworm"
        );
        assert_eq!(
            config.python_base_image().as_str(),
            "localhost:9090/kiln/base/debian-python:bookworm"
        );
        assert_eq!(
            config.base.debian_mirror.as_str(),
            "http://deb.debian.org/debian"
        );
        assert!(config.api.open_signup);
        assert!(!config.api.anonymous_recipes);
        assert_eq!(config.api.max_channels, 16);
    }

    #[test]
    fn the_database_is_a_sqlite_file_in_the_data_dir_unless_a_url_is_set() {
        let config = Config::load(None, no_env).expect("defaults load");
        assert_eq!(
            config.database_url().expose(),
            "sqlite://./kiln-data/kiln.db"
        );
        let env = |name: &str| match name {
            "KILN_DATA_DIR" => Some("/var/lib/kiln".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env).expect("loads");
        assert_eq!(
            config.database_url().expose(),
            "sqlite:///var/lib/kiln/kiln.db"
        );
        let postgres = "postgres://kiln:pw@db.example:5432/kiln";
        let env = |name: &str| (name == "KILN_DATABASE_URL").then(|| postgres.to_owned());
        let config = Config::load(None, env).expect("loads");
        assert_eq!(config.database_url().expose(), postgres);
        let env =
            |name: &str| (name == "KILN_DATABASE_URL").then(|| "mysql://kiln:pw@db/k".to_owned());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(
            err.contains("database_url") && err.contains("`mysql`"),
            "{err}"
        );
        assert!(!err.contains("pw"), "the password is not shown: {err}");
    }

    #[test]
    fn submit_limits_can_be_set_by_environment() {
        let env = |name: &str| match name {
            "KILN_ANONYMOUS_RECIPES" => Some("true".to_owned()),
            "KILN_MAX_CHANNELS" => Some("4".to_owned()),
            "KILN_CONTEXT_MAX_UNPACKED_BYTES" => Some("1048576".to_owned()),
            "KILN_CONTEXT_MAX_FILES" => Some("10".to_owned()),
            "KILN_CONTEXT_MAX_EXPANSION" => Some("20".to_owned()),
            "KILN_RESOLVE_TIMEOUT_SECS" => Some("2".to_owned()),
            "KILN_WAIT_FOR_BUILD_MS" => Some("0".to_owned()),
            "KILN_MAX_MKSQUASHFS" => Some("3".to_owned()),
            "KILN_MAX_BUILDAH" => Some("5".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env).expect("loads");
        assert_eq!(config.api.wait_for_build_ms, 0);
        assert_eq!(
            (config.build.mksquashfs_runs(), config.build.buildah_runs()),
            (3, 5)
        );
        assert!(Config::default().build.buildah_runs() >= 1);
        let api = config.api;
        assert!(api.anonymous_recipes);
        assert_eq!(
            (
                api.max_channels,
                api.context_max_unpacked_bytes,
                api.context_max_files,
                api.context_max_expansion,
                api.resolve_timeout_secs
            ),
            (4, 1 << 20, 10, 20, 2)
        );
        let env = |name: &str| (name == "KILN_MAX_CHANNELS").then(|| "many".to_owned());
        assert!(Config::load(None, env).is_err());
    }

    #[test]
    fn signup_can_be_closed_by_file_or_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(&path, "[api]\nopen_signup = false\n").expect("write config");
        let config = Config::load(Some(&path), no_env).expect("config loads");
        assert!(!config.api.open_signup);
        let env = |name: &str| (name == "KILN_OPEN_SIGNUP").then(|| "true".to_owned());
        assert!(
            Config::load(Some(&path), env)
                .expect("loads")
                .api
                .open_signup
        );
        let env = |name: &str| (name == "KILN_OPEN_SIGNUP").then(|| "yes".to_owned());
        let err = Config::load(None, env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable KILN_OPEN_SIGNUP is not valid"),
            "{err}"
        );
    }

    #[test]
    fn build_isolation_is_oci_unless_set() {
        assert_eq!(Config::default().build.isolation, Isolation::Oci);
        assert!(!Config::default().build.allow_root_on_host);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(&path, "[build]\nisolation = \"rootless\"\n").expect("write config");
        let config = Config::load(Some(&path), no_env).expect("config loads");
        assert_eq!(config.build.isolation, Isolation::Rootless);
        let env = |name: &str| (name == "KILN_BUILD_ISOLATION").then(|| "chroot".to_owned());
        let config = Config::load(Some(&path), env).expect("loads");
        assert_eq!(config.build.isolation, Isolation::Chroot);
        let env = |name: &str| (name == "KILN_BUILD_ISOLATION").then(|| "vm".to_owned());
        let err = Config::load(None, env).unwrap_err();
        assert!(err.to_string().contains("KILN_BUILD_ISOLATION"), "{err}");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(
            &path,
            r#"
registry = "containers.example.org"
data_dir = "/var/lib/kiln"
channels = ["bioconda", "conda-forge"]

[channel_mirrors]
conda-forge = "http://mirror.example.org/conda-forge"

[base.python]
image = "localhost:9090/kiln/base/debian-python:bookworm"
glibc = "2.36"
python = "3.11"

[build]
ca_bundle = "/etc/ssl/certs/ca-certificates.crt"
"#,
        )
        .expect("write config");
        let env = |name: &str| (name == "KILN_LISTEN").then(|| "0.0.0.0:8080".to_owned());
        let config = Config::load(Some(&path), env).expect("config loads");
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.registry.as_str(), "containers.example.org");
        assert_eq!(config.channels[0].as_str(), "bioconda");
        assert_eq!(
            config.conda_base_image().as_str(),
            "containers.example.org/kiln/base/debian:bookworm"
        );
        assert_eq!(config.base.python.python.as_deref(), Some("3.11"));
        assert!(config.build.ca_bundle.is_some());
    }

    #[test]
    fn registry_operators_and_collection_settings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(
            &path,
            "[embedded_registry]\ngc_grace_secs = 60\nremote_build_retention_secs = 0\n\n\
             [[embedded_registry.users]]\nuser = \"ops\"\npassword = \"x\"\noperator = true\n\n\
             [[embedded_registry.users]]\nuser = \"me\"\npassword = \"y\"\n",
        )
        .expect("write config");
        let config = Config::load(Some(&path), no_env).expect("config loads");
        let operators: Vec<bool> = config
            .embedded_registry
            .users
            .iter()
            .map(|u| u.operator)
            .collect();
        assert_eq!(operators, [true, false]);
        let policy = config.gc_policy();
        assert_eq!(policy.grace.as_secs(), 60);
        assert_eq!(policy.remote_build_retention, None);
        assert_eq!(config.embedded_registry.token_ttl_secs, 3600);

        let env = |name: &str| match name {
            "KILN_REGISTRY_USERS" => Some("a:1,b:2".to_owned()),
            "KILN_REGISTRY_OPERATORS" => Some("b".to_owned()),
            "KILN_REGISTRY_MAX_UPLOAD_SESSIONS" => Some("3".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env).expect("loads");
        let roles: Vec<_> = config
            .registry_config()
            .users
            .iter()
            .map(|u| (u.credentials.user.clone(), u.role))
            .collect();
        use crate::registry::auth::Role;
        assert_eq!(
            roles,
            [
                ("a".to_owned(), Role::User),
                ("b".to_owned(), Role::Operator)
            ]
        );
        assert_eq!(config.registry_config().max_upload_sessions, 3);
    }

    #[test]
    fn debug_shows_no_password_or_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(
            &path,
            "[api]\ntokens = [\"file-token-4f1c\"]\n\n[build]\npush_user = \"ci\"\n\
             push_password = \"push-password-9a2e\"\n\n[[embedded_registry.users]]\n\
             user = \"ops\"\npassword = \"registry-password-77d0\"\n",
        )
        .expect("write config");
        let env = |name: &str| match name {
            "KILN_API_TOKENS" => Some("env-token-b3e1".to_owned()),
            "KILN_REGISTRY_USERS" => Some("me:env-password-0c5d".to_owned()),
            _ => None,
        };
        let from_file = Config::load(Some(&path), no_env).expect("loads");
        assert_eq!(from_file.api.tokens, [Secret::from("file-token-4f1c")]);
        assert_eq!(
            from_file.build.push_credentials(),
            Some(Credentials::new("ci", "push-password-9a2e"))
        );
        let printed = format!("{from_file:?} {:?}", from_file.registry_config());
        for secret in [
            "file-token-4f1c",
            "push-password-9a2e",
            "registry-password-77d0",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("\"ops\""), "{printed}");
        let from_env = format!("{:?}", Config::load(Some(&path), env).expect("loads"));
        for secret in ["env-token-b3e1", "env-password-0c5d"] {
            assert!(!from_env.contains(secret), "{secret} in {from_env}");
        }
    }

    #[test]
    fn roles_kinds_and_platforms_by_file_or_environment() {
        let config = Config::default();
        assert_eq!(config.role, NodeRole::All);
        assert_eq!(config.build.kinds, BuildKind::ALL);
        assert!(config.build.platforms.is_empty());
        assert!(
            config.check_role().is_ok(),
            "role all runs without a secret"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(
            &path,
            "role = \"worker\"\nsecret_key = \"0123456789abcdef0123456789abcdef\"\n\n\
             [build]\nkinds = [\"dockerfile\", \"definition\"]\nplatforms = [\"linux/arm64\"]\n",
        )
        .expect("write config");
        let config = Config::load(Some(&path), no_env).expect("loads");
        assert_eq!(config.role, NodeRole::Worker);
        assert_eq!(
            config.build.kinds,
            [BuildKind::Dockerfile, BuildKind::Definition]
        );
        assert_eq!(config.build.platforms, [Platform::LinuxArm64]);
        let scope = config.build.worker_scope();
        assert_eq!(
            (scope.kinds, scope.platforms),
            (config.build.kinds.clone(), vec![Platform::LinuxArm64])
        );
        assert!(config.check_role().is_ok());
        assert!(!format!("{config:?}").contains("0123456789abcdef"));

        let env = |name: &str| match name {
            "KILN_ROLE" => Some("api".to_owned()),
            "KILN_BUILD_KINDS" => Some("native".to_owned()),
            "KILN_BUILD_PLATFORMS" => Some("linux/amd64, linux/arm64".to_owned()),
            _ => None,
        };
        let config = Config::load(Some(&path), env).expect("loads");
        assert_eq!(config.role, NodeRole::Api);
        assert_eq!(config.build.kinds, [BuildKind::Native]);
        assert_eq!(config.build.platforms, Platform::ALL);

        // An api or worker node without the shared secret is refused, saying how to set it.
        let env = |name: &str| (name == "KILN_ROLE").then(|| "worker".to_owned());
        let err = Config::load(None, env)
            .expect("loads")
            .check_role()
            .unwrap_err();
        assert!(err.to_string().contains("KILN_SECRET_KEY"), "{err}");

        for (var, value, named) in [
            ("KILN_ROLE", "builder", "KILN_ROLE"),
            ("KILN_BUILD_KINDS", "native,conda", "KILN_BUILD_KINDS"),
            (
                "KILN_BUILD_PLATFORMS",
                "linux/riscv64",
                "KILN_BUILD_PLATFORMS",
            ),
            ("KILN_BUILD_KINDS", "", "build.kinds"),
            ("KILN_SECRET_KEY", "too-short", "secret_key"),
        ] {
            let env = |name: &str| (name == var).then(|| value.to_owned());
            let err = Config::load(None, env).unwrap_err();
            assert!(err.to_string().contains(named), "{var}={value}: {err}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let env = |name: &str| (name == "KILN_REGISTRY").then(|| "http://x".to_owned());
        let err = Config::load(None, env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable KILN_REGISTRY is not valid"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(&path, "registy = \"typo\"\n").expect("write config");
        let err = Config::load(Some(&path), no_env).unwrap_err();
        assert!(err.to_string().contains("registy"), "{err}");
    }

    #[test]
    fn an_external_registry_from_the_environment_or_the_file() {
        let vars = [
            ("KILN_EXTERNAL_REGISTRY_URL", "http://127.0.0.1:5000"),
            ("KILN_EXTERNAL_REGISTRY_USER", "kiln"),
            ("KILN_EXTERNAL_REGISTRY_PASSWORD", "registry-password-71c3"),
        ];
        let env = |name: &str| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let config = Config::load(None, env).unwrap();
        let external = config.external_registry.expect("configured");
        assert_eq!(external.host(), "127.0.0.1:5000");
        assert!(external.plain_http());
        assert_eq!(
            external.credentials(),
            Some(Credentials::new("kiln", "registry-password-71c3"))
        );
        assert!(!format!("{external:?}").contains("registry-password-71c3"));

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(
            &path,
            "[external_registry]\nurl = \"https://registry.example.org\"\nuser = \"k\"\n\
             password = \"p\"\n",
        )
        .unwrap();
        let external = Config::load(Some(&path), no_env)
            .unwrap()
            .external_registry
            .expect("configured");
        assert_eq!(external.host(), "registry.example.org");
        assert!(!external.plain_http());

        for (text, named) in [
            ("url = \"https://r.example.org/v2/\"\n", "without a path"),
            ("url = \"ftp://r.example.org\"\n", "https://host"),
            (
                "url = \"https://r.example.org\"\nuser = \"u\"\n",
                "a password",
            ),
        ] {
            std::fs::write(&path, format!("[external_registry]\n{text}")).unwrap();
            let err = Config::load(Some(&path), no_env).unwrap_err().to_string();
            assert!(
                err.contains("external_registry") && err.contains(named),
                "{err}"
            );
        }
        let user_alone =
            |name: &str| (name == "KILN_EXTERNAL_REGISTRY_USER").then(|| "kiln".to_owned());
        let err = Config::load(None, user_alone).unwrap_err().to_string();
        assert!(err.contains("KILN_EXTERNAL_REGISTRY_URL"), "{err}");
    }
}
