//! Containment of users' build steps (`RUN`, `%post`): what buildah needs around it so a step
//! sees nothing of the host, reaches nothing but the internet, and dies with its build.
//!
//! [`Sandbox::prepare`] runs once per process: it finds the OCI runtime that works on this host
//! (runc or crun: crun fails on hybrid cgroups), the subordinate id range the steps' root maps
//! to, and sweeps up jails whose kiln died. Each `buildah bud` then runs in a [`Jail`]:
//!
//! - a cgroup `/kiln/<jail>` in every v1 hierarchy, holding the memory and pids limits; the
//!   step's container is its child `run` (`--cgroup-parent`), so a step that rewrites its own
//!   cgroup's limits still meets its parent's;
//! - a network namespace held by a `sleep` process, connected to the internet by slirp4netns
//!   (host loopback disabled) and filtered by nftables rules: no loopback, link-local,
//!   slirp's host gateway, the host's own addresses or `build.blocked_networks`;
//! - a launcher that joins the jail's freezer cgroup, enters the network namespace and sets a
//!   parent-death signal before it execs buildah, so everything a build started is found in
//!   one cgroup and stopped with it.
//!
//! Closing a jail (or dropping it, when a build is cancelled) stops buildah with SIGTERM (it
//! then stops the step and removes its working container), kills whatever is left, deletes
//! runtime state and bundles left by a killed buildah, and removes the cgroups. Needs root,
//! cgroup v1 or hybrid, runc or crun, slirp4netns, nft, nsenter, unshare, setpriv and
//! useradd. Depends on nothing else in kiln but `config` and `child`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::child;
use crate::config::BuildSettings;

/// Where cgroup v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup, under each hierarchy's root, that holds kiln's jails.
const CGROUP_DIR: &str = "kiln";

/// Where jails record their owner, so a later kiln can tell abandoned ones.
const STATE_DIR: &str = "/run/kiln-sandbox";

/// Where runc and crun keep their containers' state by default.
const RUNTIME_ROOTS: &[&str] = &["/run/runc", "/run/crun"];

/// The runtimes tried, in order of preference.
const RUNTIMES: &[&str] = &["runc", "crun"];

/// How many ids the steps' user namespace maps: all a Debian image uses.
const ID_COUNT: u32 = 65536;

/// slirp4netns's DNS forwarder inside the namespace.
const SLIRP_DNS: &str = "10.0.2.3";

/// Destinations no step may reach, besides the host's own addresses and the blocked networks.
/// 10.0.2.0/24 is slirp's own network, whose gateway is the host.
const ALWAYS_BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.2.0/24",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/3",
];
const ALWAYS_BLOCKED_V6: &[&str] = &["::1/128", "fe80::/10", "ff00::/8"];

/// How long buildah gets to stop a step and remove its container after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The launcher: joins the cgroups named before `--` (their `cgroup.procs` files), then
/// becomes the command after it. Only kiln's own paths are arguments, never user text.
const JOIN_AND_EXEC: &str =
    r#"for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@""#;

/// Containment that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "isolation = \"chroot\" runs users' build steps as root on the host; set \
         build.allow_root_on_host = true (KILN_ALLOW_ROOT_ON_HOST) to accept that, or use \
         isolation = \"oci\""
    )]
    ChrootNotAcknowledged,
    #[error("contained builds need kiln to run as root (it makes cgroups and network namespaces)")]
    NotRoot,
    #[error("no OCI runtime works on this host ({0}); install runc")]
    NoRuntime(String),
    #[error(
        "this host has cgroup v2 only; contained builds need cgroup v1 or hybrid cgroups for now"
    )]
    CgroupV2Only,
    #[error("the sandbox user name {0:?} is not a valid user name")]
    BadUser(String),
    #[error(
        "the user {user} has no subordinate {kind} range of {ID_COUNT} ids in /etc/sub{kind}; \
         add a line `{user}:<first id>:{ID_COUNT}` that overlaps no other range"
    )]
    NoIdRange { user: String, kind: &'static str },
    #[error("cannot run {program}; is it installed?")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// A host id range: the first host id and how many follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

/// What contains build steps on this host, found once at start.
#[derive(Debug)]
pub struct Sandbox {
    runtime: String,
    uids: IdRange,
    gids: IdRange,
    memory_limit_mib: u64,
    pids_limit: u64,
    blocked: Vec<ipnet::IpNet>,
}

/// Whether `settings` may run at all: chroot isolation only with the operator's
/// acknowledgment. Returns whether steps run as root on the host.
pub fn check_settings(settings: &BuildSettings) -> Result<bool, SandboxError> {
    match settings.isolation {
        crate::config::Isolation::Chroot if !settings.allow_root_on_host => {
            Err(SandboxError::ChrootNotAcknowledged)
        }
        crate::config::Isolation::Chroot => Ok(true),
        _ => Ok(false),
    }
}

impl Sandbox {
    /// Finds the runtime and id ranges and sweeps abandoned jails. Blocking: call it off the
    /// async runtime.
    pub fn prepare(settings: &BuildSettings) -> Result<Sandbox, SandboxError> {
        if !rustix::process::geteuid().is_root() {
            return Err(SandboxError::NotRoot);
        }
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            return Err(SandboxError::CgroupV2Only);
        }
        let (uids, gids) = id_ranges(&settings.sandbox_user)?;
        sweep();
        let runtime = probe_runtime()?;
        Ok(Sandbox {
            runtime,
            uids,
            gids,
            memory_limit_mib: settings.memory_limit_mib,
            pids_limit: settings.pids_limit,
            blocked: settings.blocked_networks.clone(),
        })
    }

    /// The OCI runtime steps run in.
    pub fn runtime(&self) -> &str {
        &self.runtime
    }

    /// One line for build logs saying how steps are contained.
    pub fn describe(&self) -> String {
        format!(
            "build steps run in {} containers (own PID, mount, IPC, UTS and network \
             namespaces; root is host uid {}), reaching the internet but not the host, \
             loopback or link-local addresses, limited to {} MiB of memory and {} processes",
            self.runtime, self.uids.first, self.memory_limit_mib, self.pids_limit
        )
    }

    /// buildah's options that put a step into `jail`.
    pub fn bud_args(&self, jail: &Jail) -> Vec<String> {
        vec![
            format!("--runtime={}", self.runtime),
            "--network=host".into(),
            format!("--userns-uid-map=0:{}:{}", self.uids.first, self.uids.count),
            format!("--userns-gid-map=0:{}:{}", self.gids.first, self.gids.count),
            format!("--cgroup-parent=/{CGROUP_DIR}/{}/run", jail.id),
        ]
    }

    /// Makes a jail: its cgroups with the limits, its network namespace and filter.
    pub async fn open_jail(&self) -> Result<Jail, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut jail = Jail {
            id: id.clone(),
            holder: 0,
            leader: Arc::new(AtomicU32::new(0)),
            closed: false,
        };
        let memory = self.memory_limit_mib.saturating_mul(1 << 20);
        let pids = self.pids_limit;
        let made = tokio::task::spawn_blocking(move || make_cgroups(&id, memory, pids))
            .await
            .map_err(|err| SandboxError::Failed {
                what: "making the build's cgroups".into(),
                detail: err.to_string(),
            })?;
        made?;
        jail.holder = jail.start_network(&self.blocked).await?;
        Ok(jail)
    }
}

/// One build's cgroups and network namespace. [`Jail::close`] it; a jail dropped unclosed (a
/// cancelled build) is torn down in the background.
#[derive(Debug)]
pub struct Jail {
    id: String,
    /// The process holding the network namespace.
    holder: u32,
    /// The process the jail runs (buildah), once started; 0 before.
    leader: Arc<AtomicU32>,
    closed: bool,
}

impl Jail {
    /// A command running `program` in this jail: in its freezer cgroup and network
    /// namespace, sent SIGTERM if kiln dies. Set its leader with [`Jail::set_leader`].
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = launcher("TERM", &self.id);
        command
            .arg("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.holder))
            .arg("--")
            .arg(program);
        command
    }

    /// Records the process [`Jail::command`] started, to stop it first on teardown.
    pub fn set_leader(&self, pid: u32) {
        self.leader.store(pid, Ordering::SeqCst);
    }

    /// Stops what is left in the jail and removes it.
    pub async fn close(mut self) {
        self.closed = true;
        let id = self.id.clone();
        let leader = self.leader.load(Ordering::SeqCst);
        if let Err(err) = tokio::task::spawn_blocking(move || teardown(&id, leader)).await {
            tracing::warn!(error = %err, "tearing down a build jail crashed");
        }
    }

    /// Starts the namespace holder and slirp4netns, loads the filter, and returns the
    /// holder's pid.
    async fn start_network(&self, blocked: &[ipnet::IpNet]) -> Result<u32, SandboxError> {
        let mut holder = launcher("KILL", &self.id);
        holder.args(["unshare", "--net", "--", "sleep", "infinity"]);
        let holder = spawn_detached(holder, "unshare")?;
        let own_netns = std::fs::read_link("/proc/self/ns/net").ok();
        wait_for("the build's network namespace", || {
            let netns = std::fs::read_link(format!("/proc/{holder}/ns/net")).ok();
            netns.is_some() && netns != own_netns
        })
        .await?;

        let mut slirp = launcher("KILL", &self.id);
        slirp
            .args(["slirp4netns", "--configure", "--mtu=65520"])
            .args([
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
            ])
            .arg(holder.to_string())
            .arg("tap0");
        spawn_detached(slirp, "slirp4netns")?;
        wait_for("slirp4netns", || {
            std::fs::read_to_string(format!("/proc/{holder}/net/route")).is_ok_and(|routes| {
                routes
                    .lines()
                    .any(|line| line.starts_with("tap0\t00000000"))
            })
        })
        .await?;

        let rules = nft_rules(blocked, &host_addresses());
        let mut nft = child::command("nsenter");
        nft.arg(format!("--net=/proc/{holder}/ns/net"))
            .args(["--", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut nft = nft.spawn().map_err(|source| SandboxError::Spawn {
            program: "nsenter nft".into(),
            source,
        })?;
        if let Some(mut stdin) = nft.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            stdin
                .write_all(rules.as_bytes())
                .await
                .map_err(io_error("cannot pass the build network's rules to nft"))?;
        }
        let output = nft
            .wait_with_output()
            .await
            .map_err(io_error("nft did not finish"))?;
        if !output.status.success() {
            return Err(SandboxError::Failed {
                what: "loading the build network's rules with nft".into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(holder)
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let id = self.id.clone();
        let leader = self.leader.load(Ordering::SeqCst);
        // The build was cancelled: buildah gets its grace period on a thread of its own.
        std::thread::spawn(move || teardown(&id, leader));
    }
}

/// `setpriv --pdeathsig SIGNAL -- sh -c JOIN_AND_EXEC sh <jail freezer>/cgroup.procs --`, to
/// which the caller appends the command. The parent-death signal survives the execs (none of
/// these programs is set-uid), so the command gets it when kiln dies.
fn launcher(signal: &str, jail: &str) -> tokio::process::Command {
    let mut command = child::command("setpriv");
    command
        .args(["--pdeathsig", signal, "--", "sh", "-c", JOIN_AND_EXEC, "sh"])
        .arg(cgroup_dir("freezer", jail).join("cgroup.procs"))
        .arg("--");
    command
}

/// Starts a helper that lives as long as its jail; the jail's teardown kills it.
fn spawn_detached(
    mut command: tokio::process::Command,
    program: &str,
) -> Result<u32, SandboxError> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    child.id().ok_or_else(|| SandboxError::Failed {
        what: format!("starting {program}"),
        detail: "it exited at once".into(),
    })
}

/// Polls `ready` for up to five seconds.
async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), SandboxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        if Instant::now() > deadline {
            return Err(SandboxError::Failed {
                what: format!("starting {what}"),
                detail: "it was not ready after 5 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The nftables ruleset of a build's network namespace: DNS to slirp's forwarder, then
/// everything but the blocked destinations. Rejections answer "no route to host", so a step
/// (and its log) says why it could not connect.
pub fn nft_rules(blocked: &[ipnet::IpNet], host: &[std::net::IpAddr]) -> String {
    let mut networks: Vec<ipnet::IpNet> = ALWAYS_BLOCKED_V4
        .iter()
        .chain(ALWAYS_BLOCKED_V6)
        .filter_map(|network| network.parse().ok())
        .collect();
    networks.extend(blocked.iter().map(ipnet::IpNet::trunc));
    networks.extend(host.iter().map(|&address| ipnet::IpNet::from(address)));
    // nft refuses overlapping elements in one set: merge them first.
    let networks = ipnet::IpNet::aggregate(&networks);
    let list = |v4: bool| {
        networks
            .iter()
            .filter(|network| matches!(network, ipnet::IpNet::V4(_)) == v4)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rules = String::new();
    let _ = write!(
        rules,
        "table inet kiln {{\n  chain output {{\n    type filter hook output priority 0; \
         policy accept;\n    oifname \"lo\" accept\n    ip daddr {SLIRP_DNS} meta l4proto \
         {{ tcp, udp }} th dport 53 accept\n    ip daddr {{ {} }} reject with icmp type \
         host-unreachable\n    ip6 daddr {{ {} }} reject with icmpv6 type \
         addr-unreachable\n  }}\n}}\n",
        list(true),
        list(false)
    );
    rules
}

/// The host's own addresses: slirp4netns connects from the host, so a step reaching one of
/// them reaches the host's listeners on 0.0.0.0.
fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut addresses = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        // Lines "|-- A.B.C.D" followed by "/32 host LOCAL" name the host's IPv4 addresses.
        let mut last = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(address) = line.strip_prefix("|-- ") {
                last = address.parse().ok();
            } else if line.contains("host LOCAL")
                && let Some(address) = last
                && !addresses.contains(&address)
            {
                addresses.push(address);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                addresses.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits)));
            }
        }
    }
    addresses
}

/// The directory of `jail` in the v1 hierarchy `controller`.
fn cgroup_dir(controller: &str, jail: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join(controller)
        .join(CGROUP_DIR)
        .join(jail)
}

/// The mounted cgroup hierarchies (v1 controllers, the named `systemd` one and the empty v2
/// `unified` one runc also uses).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .filter(|path| path.join("cgroup.procs").exists())
        .collect()
}

/// Makes `/kiln/<jail>` in every v1 hierarchy, with the limits, and records its owner.
fn make_cgroups(jail: &str, memory_bytes: u64, pids: u64) -> Result<(), SandboxError> {
    let state = Path::new(STATE_DIR).join(jail);
    std::fs::create_dir_all(&state).map_err(io_error(format!(
        "cannot create the jail record {}",
        state.display()
    )))?;
    let me = std::process::id();
    let owner = format!("{me} {}\n", start_time(me).unwrap_or_default());
    std::fs::write(state.join("owner"), owner).map_err(io_error(format!(
        "cannot write the jail record {}",
        state.display()
    )))?;
    for hierarchy in hierarchies() {
        if hierarchy.ends_with("unified") {
            continue;
        }
        let parent = hierarchy.join(CGROUP_DIR);
        let dir = parent.join(jail);
        for path in [&parent, &dir] {
            match std::fs::create_dir(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(SandboxError::Io {
                        what: format!("cannot create the cgroup {}", path.display()),
                        source,
                    });
                }
            }
            if hierarchy.ends_with("cpuset") {
                // A cpuset cgroup takes no task until it has CPUs and memory nodes.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let current = std::fs::read_to_string(path.join(file)).unwrap_or_default();
                    if current.trim().is_empty() {
                        let from = path.parent().map(|p| p.join(file)).unwrap_or_default();
                        let value = std::fs::read_to_string(&from).unwrap_or_default();
                        write_cgroup(&path.join(file), value.trim())?;
                    }
                }
            }
        }
    }
    write_cgroup(
        &cgroup_dir("memory", jail).join("memory.limit_in_bytes"),
        &memory_bytes.to_string(),
    )?;
    write_cgroup(
        &cgroup_dir("pids", jail).join("pids.max"),
        &pids.to_string(),
    )?;
    Ok(())
}

fn write_cgroup(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(io_error(format!(
        "cannot write {value} to {}",
        path.display()
    )))
}

/// When process `pid` started (field 22 of its stat), telling it from a later process that
/// reused its pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` runs (exists and is no zombie).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Every process in the subtree of `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        found.extend(
            procs
                .lines()
                .filter_map(|line| line.trim().parse::<u32>().ok()),
        );
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                found.extend(processes_in(&entry.path()));
            }
        }
    }
    found
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Serializes teardowns: two at once would fight over the shared runtime state.
static TEARDOWN: Mutex<()> = Mutex::new(());

/// Stops everything in `jail` and removes it. `leader` (buildah), when running, gets SIGTERM
/// and [`STOP_GRACE`] to stop its step and remove its container; then every process left is
/// killed (frozen first, so none can fork away), runtime state and bundles that reference the
/// jail are deleted, and its cgroups and record removed.
fn teardown(jail: &str, leader: u32) {
    let freezer = cgroup_dir("freezer", jail);
    if leader != 0 && processes_in(&freezer).contains(&leader) && is_running(leader) {
        kill(leader, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while is_running(leader) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _serial = TEARDOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let state = freezer.join("freezer.state");
    let frozen = std::fs::write(&state, "FROZEN").is_ok();
    if frozen {
        let deadline = Instant::now() + Duration::from_secs(2);
        while std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "FROZEN")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for pid in processes_in(&freezer) {
        kill(pid, rustix::process::Signal::KILL);
    }
    if frozen {
        let _ = std::fs::write(&state, "THAWED");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&freezer).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    delete_runtime_state(jail);
    for hierarchy in hierarchies() {
        remove_cgroup_tree(&hierarchy.join(CGROUP_DIR).join(jail));
    }
    let _ = std::fs::remove_dir_all(Path::new(STATE_DIR).join(jail));
}

/// Removes a cgroup and its children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Err(err) = std::fs::remove_dir(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(cgroup = %dir.display(), error = %err, "cannot remove a build's cgroup");
    }
}

/// Deletes runtime containers left in `jail`'s cgroup by a killed buildah, and their bundles.
fn delete_runtime_state(jail: &str) {
    let needle = format!("/{CGROUP_DIR}/{jail}/");
    for root in RUNTIME_ROOTS {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let state =
                std::fs::read_to_string(entry.path().join("state.json")).unwrap_or_default();
            if !state.contains(&needle) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let runtime = Path::new(root)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let deleted = child::std_command(&runtime)
                .arg("--root")
                .arg(root)
                .args(["delete", "--force", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !deleted.is_ok_and(|status| status.success()) {
                tracing::warn!(container = %name, "cannot delete an abandoned build step's runtime state");
            }
            if let Some(bundle) = bundle_of(&state) {
                remove_bundle(&bundle);
            }
        }
    }
}

/// The bundle directory buildah made for a step, from the runtime state's labels.
fn bundle_of(state: &str) -> Option<PathBuf> {
    let state: serde_json::Value = serde_json::from_str(state).ok()?;
    let labels = state["config"]["labels"].as_array()?;
    labels
        .iter()
        .filter_map(|label| label.as_str()?.strip_prefix("bundle="))
        .map(PathBuf::from)
        .find(|path| {
            path.parent() == Some(Path::new("/var/tmp"))
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("buildah"))
        })
}

/// Removes a step's bundle unless something is still mounted in it (its root file system is
/// a bind mount of the working container's: deleting through it would delete that).
fn remove_bundle(bundle: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", bundle.display());
    let mounted = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .any(|point| point.starts_with(&prefix));
    if mounted {
        let _ = child::std_command("umount")
            .args(["--recursive", "--lazy"])
            .arg(bundle.join("mnt"))
            .status();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .any(|point| point.starts_with(&prefix))
        {
            tracing::warn!(bundle = %bundle.display(), "an abandoned build step's bundle is still mounted; left in place");
            return;
        }
    }
    let _ = std::fs::remove_dir_all(bundle);
}

/// Tears down the jails whose kiln is gone (killed, crashed, host restarted into a new
/// process): their steps, helpers, runtime state and cgroups. Jails of running kilns, on this
/// host or sharing it, are left alone.
pub fn sweep() {
    let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let jail = entry.file_name().to_string_lossy().into_owned();
        let owner = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        let mut fields = owner.split_whitespace();
        let pid = fields.next().and_then(|pid| pid.parse::<u32>().ok());
        let started = fields.next().and_then(|time| time.parse::<u64>().ok());
        let alive = pid.is_some_and(|pid| is_running(pid) && start_time(pid) == started);
        if !alive {
            tracing::info!(%jail, "removing an abandoned build jail");
            teardown(&jail, 0);
        }
    }
}

/// The subordinate uid and gid ranges of `user`, creating the user (which gives it fresh
/// ranges, `SUB_UID_*` in /etc/login.defs) when it does not exist.
fn id_ranges(user: &str) -> Result<(IdRange, IdRange), SandboxError> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(SandboxError::BadUser(user.to_owned()));
    }
    let find = || {
        (
            sub_range("/etc/subuid", user),
            sub_range("/etc/subgid", user),
        )
    };
    if let (Some(uids), Some(gids)) = find() {
        return Ok((uids, gids));
    }
    let exists = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(':').next() == Some(user));
    if !exists {
        let output = child::std_command("useradd")
            .args(["--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "--user-group", user])
            .output()
            .map_err(|source| SandboxError::Spawn {
                program: "useradd".into(),
                source,
            })?;
        if !output.status.success() {
            return Err(SandboxError::Failed {
                what: format!("creating the sandbox user {user}"),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        tracing::info!(%user, "created the user build steps' root maps to");
    }
    match find() {
        (Some(uids), Some(gids)) => Ok((uids, gids)),
        (None, _) => Err(SandboxError::NoIdRange {
            user: user.to_owned(),
            kind: "uid",
        }),
        (_, None) => Err(SandboxError::NoIdRange {
            user: user.to_owned(),
            kind: "gid",
        }),
    }
}

/// The first range of at least [`ID_COUNT`] ids `user` has in `file` (`/etc/subuid` format).
fn sub_range(file: &str, user: &str) -> Option<IdRange> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_sub_range(&text, user)
}

/// See [`sub_range`].
pub fn parse_sub_range(text: &str, user: &str) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        (fields.next()? == user).then_some(())?;
        let first: u32 = fields.next()?.parse().ok()?;
        let count: u32 = fields.next()?.parse().ok()?;
        (first > 0 && count >= ID_COUNT).then_some(IdRange {
            first,
            count: ID_COUNT,
        })
    })
}

/// Runs a trivial container with each runtime in turn, with namespaces and a cgroup under
/// kiln's, and returns the first that works. crun, for one, fails on hybrid cgroups.
fn probe_runtime() -> Result<String, SandboxError> {
    let mut failures = Vec::new();
    for runtime in RUNTIMES {
        match probe(runtime) {
            Ok(()) => return Ok((*runtime).to_owned()),
            Err(detail) => failures.push(format!("{runtime}: {detail}")),
        }
    }
    Err(SandboxError::NoRuntime(failures.join("; ")))
}

fn probe(runtime: &str) -> Result<(), String> {
    let bundle = tempfile::tempdir().map_err(|err| err.to_string())?;
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|err| err.to_string())?;
    let mut mounts = vec![serde_json::json!({
        "destination": "/proc", "type": "proc", "source": "proc"
    })];
    for dir in ["usr", "bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(dir);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).map_err(|err| err.to_string())?;
                std::os::unix::fs::symlink(target, rootfs.join(dir))
                    .map_err(|err| err.to_string())?;
            }
            Ok(_) => {
                std::fs::create_dir(rootfs.join(dir)).map_err(|err| err.to_string())?;
                mounts.push(serde_json::json!({
                    "destination": host, "type": "bind", "source": host,
                    "options": ["rbind", "ro"]
                }));
            }
            Err(_) => {}
        }
    }
    let name = format!("kiln-probe-{}", std::process::id());
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["true"],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "kiln-probe",
        "mounts": mounts,
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "cgroupsPath": format!("/{CGROUP_DIR}/{name}")
        }
    });
    std::fs::write(bundle.path().join("config.json"), config.to_string())
        .map_err(|err| err.to_string())?;
    let state = bundle.path().join("state");
    let output = child::std_command(runtime)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&name)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| err.to_string())?;
    for hierarchy in hierarchies() {
        remove_cgroup_tree(&hierarchy.join(CGROUP_DIR).join(&name));
    }
    if output.status.success() {
        Ok(())
    } else {
        let _ = child::std_command(runtime)
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &name])
            .output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(stderr.lines().last().unwrap_or("failed").trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_range_is_the_users_first_full_one() {
        let text = "alice:100000:65536\nkiln-build:165536:65536\nbob:1:10\n";
        assert_eq!(
            parse_sub_range(text, "kiln-build"),
            Some(IdRange {
                first: 165536,
                count: 65536
            })
        );
        assert_eq!(parse_sub_range(text, "bob"), None, "too small");
        assert_eq!(parse_sub_range(text, "kiln"), None, "names match whole");
    }

    #[test]
    fn the_filter_blocks_host_loopback_link_local_and_configured_networks() {
        let blocked = ["192.168.7.0/24".parse().expect("net")];
        let host = [
            "192.0.2.2".parse().expect("ip"),
            "fd00::2".parse().expect("ip"),
        ];
        let rules = nft_rules(&blocked, &host);
        for needle in [
            "127.0.0.0/8",
            "169.254.0.0/16",
            "10.0.2.0/24",
            "192.168.7.0/24",
            "192.0.2.2/32",
            "::1/128",
            "fe80::/10",
            "fd00::2/128",
            "th dport 53 accept",
        ] {
            assert!(rules.contains(needle), "{needle} missing from\n{rules}");
        }
        assert!(!rules.contains("10.0.0.0/8"), "private ranges stay open");
        assert!(
            !rules.contains("127.0.0.1/32") && !rules.contains("fe80::1/128"),
            "addresses inside blocked networks are merged away (nft refuses overlaps)"
        );
    }
}
