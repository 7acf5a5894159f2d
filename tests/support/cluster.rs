//! kiln past one machine, for the scale-out test and benchmark: separate `kiln serve` processes
//! of the built binary, each with a role, its own data directory and free loopback port, and a
//! configuration file of settings every node shares (database URL, secret key, external
//! registry). Processes, not in-process apps: a node must share nothing with another but what
//! a real deployment shares, and a worker must be killable with SIGKILL mid-build.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::distribution::Distribution;

/// How long a node may take to answer `/health` with 200: it migrates the database first.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The process role, as `kiln serve --role` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and workers in one process, kiln's default.
    All,
    /// HTTP and enqueueing only.
    Api,
    /// Claims and builds; serves `/health` and `/metrics` only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }
}

/// One `kiln serve` process, killed on drop.
#[derive(Debug)]
pub struct Node {
    pub role: Role,
    pub port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// Starts `kiln serve --role ROLE` with `settings` (TOML, top-level keys before any table)
    /// after the node's own `listen` and `data_dir`; stderr goes to `kiln.log` in its data
    /// directory. Does not wait: see [`Node::healthy`].
    pub fn start(role: Role, settings: &str) -> Node {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{settings}",
            data.path().display()
        );
        let config_path = data.path().join("kiln.toml");
        std::fs::write(&config_path, config).expect("write the node's configuration");
        let log = std::fs::File::create(data.path().join("kiln.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--role", role.as_str()])
            .env("KILN_CONFIG", &config_path)
            .env_remove("KILN_ROLE")
            .env_remove("KILN_DATABASE_URL")
            .env_remove("KILN_SECRET_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln serve starts");
        Node {
            role,
            port,
            data,
            child: Some(child),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// What the node wrote to stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("kiln.log")).unwrap_or_default()
    }

    /// Waits until `/health` answers 200; panics with the node's log if it exits or takes
    /// longer than a minute.
    pub async fn healthy(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(response) = reqwest::get(self.url("/health")).await
                && response.status() == 200
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!(
                    "kiln --role {} exited ({exit}) before it was healthy:\n{}",
                    self.role.as_str(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kiln --role {} not healthy in {START_LIMIT:?}:\n{}",
                self.role.as_str(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash or the OOM killer would end the process; reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A counter or gauge from the node's `/metrics`: the sum of the series named `name` whose
    /// labels contain `labels` (`outcome="succeeded"`; empty for all).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        sum_series(&text, name, labels)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of the samples of series `name` (exactly: not `name_bucket`) in Prometheus text
/// `text` whose label set contains `labels`.
pub fn sum_series(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest),
                None => (series, ""),
            };
            (series_name == name && series_labels.contains(labels))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// API nodes and worker nodes sharing one configuration.
#[derive(Debug)]
pub struct Cluster {
    pub apis: Vec<Node>,
    pub workers: Vec<Node>,
    /// The shared settings, to start more nodes like these.
    pub settings: String,
}

impl Cluster {
    /// Starts `apis` API nodes, then `workers` worker nodes, all with `settings`, and waits
    /// until every one is healthy. API nodes come first so that one of them migrates the
    /// database before the workers look at it (each node also migrates; the order only
    /// avoids every node racing at once).
    pub async fn start(apis: usize, workers: usize, settings: &str) -> Cluster {
        let mut cluster = Cluster {
            apis: Vec::new(),
            workers: Vec::new(),
            settings: settings.to_owned(),
        };
        for _ in 0..apis {
            let mut node = Node::start(Role::Api, settings);
            node.healthy().await;
            cluster.apis.push(node);
        }
        for _ in 0..workers {
            cluster.add_worker().await;
        }
        cluster
    }

    /// Starts one more worker with the shared settings and waits until it is healthy.
    pub async fn add_worker(&mut self) -> &mut Node {
        let mut node = Node::start(Role::Worker, &self.settings);
        node.healthy().await;
        self.workers.push(node);
        self.workers.last_mut().expect("just added")
    }

    /// The sum of a metric over the worker nodes still running.
    pub async fn workers_metric(&self, name: &str, labels: &str) -> f64 {
        let mut sum = 0.0;
        for worker in self.workers.iter().filter(|w| w.pid().is_some()) {
            sum += worker.metric(name, labels).await;
        }
        sum
    }

    /// Every node's log, headed by its role and port, for failure messages.
    pub fn logs(&self) -> String {
        self.apis
            .iter()
            .chain(&self.workers)
            .map(|node| {
                format!(
                    "==== {} on {} ====\n{}",
                    node.role.as_str(),
                    node.port,
                    node.log()
                )
            })
            .collect()
    }
}

/// A free port on 127.0.0.1 (free when asked; the node binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// What every node of a test cluster shares: one database, one secret key, Distribution as
/// the external registry (image names use its host, so what kiln answers is pullable from it
/// directly), a conda channel on 127.0.0.1 as the mirror of `channel`, and `base` (in
/// Distribution) as the base of conda and pip builds.
#[derive(Debug)]
pub struct Shared<'a> {
    pub database_url: &'a str,
    pub distribution: &'a Distribution,
    /// The channel's name, as requests name it.
    pub channel: &'a str,
    /// Where the channel is served.
    pub channel_url: &'a str,
    /// `repository:tag` in Distribution.
    pub base: &'a str,
}

/// The secret key every node of a test cluster signs with.
pub const SECRET_KEY: &str = "kiln-cluster-test-secret-key-0123456789abcdef";

impl Shared<'_> {
    /// The settings as TOML, top-level keys first; `build` and `api` are the bodies of the
    /// `[build]` and `[api]` tables (`workers`, `lease_secs`, `tokens`, …).
    pub fn settings(&self, build: &str, api: &str) -> String {
        let registry = &self.distribution.host;
        let base = format!("{registry}/{}", self.base);
        format!(
            "registry = \"{registry}\"\n\
             database_url = \"{database_url}\"\n\
             secret_key = \"{SECRET_KEY}\"\n\
             [external_registry]\n\
             url = \"{url}\"\nuser = \"{user}\"\npassword = \"{password}\"\n\
             [channel_mirrors]\n\"{channel}\" = \"{channel_url}\"\n\
             [base.conda]\nimage = \"{base}\"\nglibc = \"2.36\"\n\
             [base.python]\nimage = \"{base}\"\nglibc = \"2.36\"\n\
             [build]\n{build}\n[api]\n{api}\n",
            database_url = self.database_url,
            url = self.distribution.url(),
            user = self.distribution.user,
            password = self.distribution.password,
            channel = self.channel,
            channel_url = self.channel_url,
        )
    }
}
