//! Wave API load benchmark: how many cache-hit container requests kiln answers per second, and
//! how fast, under many concurrent clients, next to `GET /health` in the same run.
//!
//! Nextflow's Wave client sends `POST /v1alpha2/container` for the containers of a run's
//! processes, and polls `GET /v1alpha2/container/{id}/status` about once a second until each
//! image is ready. Once an image has been built, every request for it is a *cache hit*: kiln
//! answers `{"cached":true,"succeeded":true,...}` from memory (the image was checked against
//! its registry and database once), and hands the request record to a background writer. That
//! path, and the status poll, are what many pipelines at once hammer; this measures both, and
//! `GET /health` (no work at all) as the yardstick of what kiln's HTTP stack answers.
//!
//! It starts kiln in-process on 127.0.0.1 with `kiln::server::run`, as `kiln serve` runs it
//! (app, embedded registry, SQLite store and build queue, data under the temp directory), on a
//! tokio runtime of its own; generates a one-package conda channel (`tests/support/bench_channel.rs`,
//! served on kiln's runtime) and pushes a tiny base image (`tests/support/bench_base.rs`); sends one
//! request for that package and polls its status until the native build is `DONE` and
//! succeeded. Then, for each endpoint, N concurrent connections (default 64: one task with its
//! own keep-alive `reqwest::Client` each, on a second runtime) send requests back to back for a
//! fixed time (default 10 s) after a 1 s warm-up, and it prints requests/s, latency percentiles
//! (p50, p90, p99, max) and errors:
//!
//! 1. **POST (cache hit)**: the same body each time (`freeze: true`, one CONDA entry); each
//!    answer must be 200 with `"cached":true`;
//! 2. **GET /health**: each answer must be 200 with `"status":"ok"`; then one line compares the
//!    POST with it (the goal: at least half its rate, p99 under 5 ms);
//! 3. **GET status**: the status of one cache-hit request; each answer must be 200 with
//!    `"status":"DONE"`.
//!
//! After the status, the same number of tasks on kiln's runtime make just its store calls,
//! through a second `SqliteStore` on kiln's database file, with no HTTP: `request` + `build`.
//! The gap between the two rows is what HTTP and JSON add.
//!
//! kiln and the load generator share the machine's CPUs, so the numbers are a floor for kiln
//! on its own. The CPU time is split by thread during the measured time: the load generator's
//! threads against all others (kiln's runtime, its SQLite connection threads), printed as
//! kiln's CPU time per request and the load generator's share. The anonymous build allowance
//! is off (`anonymous_builds_per_day = 0`), though cache hits never count against it.
//!
//! ```sh
//! cargo bench --bench wave
//! # longer, or fewer connections
//! KILN_BENCH_SECONDS=30 KILN_BENCH_CONNECTIONS=16 cargo bench --bench wave
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then 8 connections for 1 second per
//! run, a smoke test that fails if any request does.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{bench_base as base, bench_channel as channel};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use channel::{CHANNEL_NAME, Channel};
use kiln::config::{BaseProfile, Config, RegistryUser};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::store::{SqliteStore, Store as _};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// The names of the two runs compared side by side.
const POST_RUN: &str = "POST /v1alpha2/container (cache hit)";
const HEALTH_RUN: &str = "GET /health";

/// The base image the conda environment is built on.
const BASE_REPOSITORY: &str = "bench/base";
const BASE_TAG: &str = "1";
/// The registry user the base is pushed as.
const PUSH_USER: &str = "kiln-bench";
/// The one package of the channel, and of the request.
const PACKAGE: &str = "wave-bench-hit";
const PACKAGE_BYTES: usize = 16 << 10;
/// Requests sent before latencies are recorded: connections opened, caches filled.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long the first (building) request may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Thread name of the load generator's runtime; every other thread's CPU time is kiln's.
const LOAD_THREADS: &str = "wave-load";
/// `/proc`'s clock ticks per second (`USER_HZ`, 100 on every Linux architecture kiln runs on).
const TICKS_PER_SECOND: f64 = 100.0;

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let load_average = load_average();
    let channel = Channel::generate(&[PACKAGE.to_owned()], PACKAGE_BYTES)?;
    let package = channel.package(PACKAGE)?;
    let archive = package
        .archive
        .file_name()
        .context("the archive has a file name")?
        .to_string_lossy()
        .into_owned();
    let (kiln, runtime) = start_kiln(&channel)?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(LOAD_THREADS)
        .build()?;
    let measured = load.block_on(measure(&settings, &kiln));
    drop(load);
    drop(runtime);
    let measured = measured?;
    print_report(&Report {
        settings,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load_average,
        package: format!(
            "{archive}: {} KiB payload, {:.1} KiB archive",
            package.payload_bytes >> 10,
            package.archive_bytes as f64 / 1024.0
        ),
        image: measured.image,
        build_time: measured.build_time,
        runs: &measured.runs,
    });
    if !settings.full {
        for run in &measured.runs {
            ensure!(
                run.errors == 0,
                "{}: {} of {} requests failed, the first with: {}",
                run.name,
                run.errors,
                run.requests,
                run.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// How hard and how long to push; overridable through the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// `cargo bench` (`--bench`), not the smoke test.
    full: bool,
    /// Concurrent connections, one task each.
    connections: usize,
    /// Measured time per endpoint, after the warm-up.
    duration: Duration,
}

impl Settings {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    /// as a smoke test that keeps the benchmark working, so then the run is short and light.
    fn from_env() -> Result<Self> {
        let full = std::env::args().any(|arg| arg == "--bench");
        let seconds = env_or("KILN_BENCH_SECONDS", if full { 10 } else { 1 })?;
        let connections = env_or("KILN_BENCH_CONNECTIONS", if full { 64 } else { 8 })?;
        ensure!(
            seconds > 0 && connections > 0,
            "KILN_BENCH_SECONDS and KILN_BENCH_CONNECTIONS must be 1 or more"
        );
        Ok(Settings {
            full,
            connections: usize::try_from(connections)?,
            duration: Duration::from_secs(seconds),
        })
    }
}

fn env_or(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a count")),
        Err(_) => Ok(default),
    }
}

/// kiln as the load generator sees it.
#[derive(Debug)]
struct KilnServer {
    address: SocketAddr,
    password: String,
    /// kiln's SQLite database.
    database: std::path::PathBuf,
    /// The runtime kiln runs on.
    runtime: tokio::runtime::Handle,
    _data: tempfile::TempDir,
}

impl KilnServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// Serves the channel and kiln on a runtime of their own, `kiln::server::run` as `kiln serve`
/// runs it, configured with the channel's mirror, the bench base and no build allowance.
/// Dropping the runtime stops both.
fn start_kiln(channel: &Channel) -> Result<(KilnServer, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-server")
        .build()?;
    let data = tempfile::tempdir()?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let dir = channel.dir.clone();
    let config_password = password.clone();
    let data_dir = data.path().to_owned();
    let (address, database) = runtime.block_on(async move {
        let channel_url = channel::serve(dir).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut config = Config {
            data_dir,
            registry: address.to_string().parse()?,
            channel_mirrors: BTreeMap::from([(CHANNEL_NAME.to_owned(), channel_url)]),
            ..Config::default()
        };
        config.embedded_registry.users = vec![RegistryUser::new(
            PUSH_USER,
            config_password,
            // It pushes bases and images into kiln's own namespaces.
            true,
        )];
        config.base.conda = BaseProfile {
            image: Some(format!("{address}/{BASE_REPOSITORY}:{BASE_TAG}").parse()?),
            glibc: "2.36".into(),
            python: None,
        };
        config.api.anonymous_builds_per_day = 0;
        let database = config.database_path();
        tokio::spawn(async move {
            if let Err(err) = kiln::server::run(config, listener, std::future::pending()).await {
                eprintln!("kiln server stopped: {err:#}");
            }
        });
        anyhow::Ok((address, database))
    })?;
    let kiln = KilnServer {
        address,
        password,
        database,
        runtime: runtime.handle().clone(),
        _data: data,
    };
    Ok((kiln, runtime))
}

/// What [`measure`] found.
#[derive(Debug)]
struct Measured {
    image: String,
    /// From the first POST to its status `DONE`.
    build_time: Duration,
    runs: Vec<Run>,
}

/// Pushes the base, builds the image through the Wave API, then loads both endpoints.
async fn measure(settings: &Settings, kiln: &KilnServer) -> Result<Measured> {
    let pusher = RegistryClient::new(
        &kiln.address.to_string(),
        Auth::Basic(Credentials::new(PUSH_USER, kiln.password.clone())),
        &[],
    )?;
    base::push_base(&pusher, BASE_REPOSITORY, BASE_TAG).await?;
    let client = client()?;
    let body = Bytes::from(serde_json::to_vec(&json!({
        "packages": {"type": "CONDA", "entries": [PACKAGE], "channels": [CHANNEL_NAME]},
        "freeze": true,
    }))?);
    let submit_url = kiln.url("/v1alpha2/container");

    let started = Instant::now();
    let first = post_json(&client, &submit_url, &body).await?;
    let first_id = text_field(&first, "requestId")?;
    wait_until_built(&client, kiln, &first_id, first["buildId"].as_str()).await?;
    let build_time = started.elapsed();
    eprintln!("built in {:.1} s", build_time.as_secs_f64());

    let hit = post_json(&client, &submit_url, &body).await?;
    ensure!(
        hit["cached"] == json!(true) && hit["succeeded"] == json!(true),
        "the second request is not a cache hit: {hit}"
    );
    let image = text_field(&hit, "targetImage")?;
    let build_id = text_field(&hit, "buildId")?;
    let hit_id = text_field(&hit, "requestId")?;
    let status_url = kiln.url(&format!("/v1alpha2/container/{hit_id}/status"));

    // A second pool on kiln's database, as kiln opens it, for the store calls alone; the
    // request's record is written off the request path, so it may take a moment to be there.
    let store = SqliteStore::open(&kiln.database).await?;
    let stored_by = Instant::now() + Duration::from_secs(10);
    while store.request(&hit_id).await?.is_none() {
        ensure!(
            Instant::now() < stored_by,
            "the cache-hit request {hit_id} was never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kiln_runtime = kiln.runtime.clone();
    let here = tokio::runtime::Handle::current();
    let runs = [
        (
            POST_RUN,
            Work::Http(Endpoint {
                url: submit_url,
                body: Some(body),
                expect: r#""cached":true"#,
            }),
            &here,
        ),
        (
            HEALTH_RUN,
            Work::Http(Endpoint {
                url: kiln.url("/health"),
                body: None,
                expect: r#""status":"ok""#,
            }),
            &here,
        ),
        (
            "GET /v1alpha2/container/{id}/status",
            Work::Http(Endpoint {
                url: status_url,
                body: None,
                expect: r#""status":"DONE""#,
            }),
            &here,
        ),
        (
            "  its store calls alone",
            Work::Status {
                store,
                request_id: hit_id,
                build_id,
            },
            &kiln_runtime,
        ),
    ];
    let mut measured = Vec::new();
    for (name, work, runtime) in runs {
        eprintln!(
            "{}: {} connections, {:.0} s + {:.0} s warm-up",
            name.trim(),
            settings.connections,
            settings.duration.as_secs_f64(),
            WARM_UP.as_secs_f64()
        );
        measured.push(hammer(settings, name, &work, runtime).await?);
    }
    Ok(Measured {
        image,
        build_time,
        runs: measured,
    })
}

/// A client with one keep-alive connection to kiln (no proxy: kiln is on loopback).
fn client() -> Result<Client> {
    Ok(Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn post_json(client: &Client, url: &str, body: &Bytes) -> Result<Value> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status == StatusCode::OK, "POST {url}: {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

fn text_field(value: &Value, name: &str) -> Result<String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{name}` in {value}"))
}

/// Polls the request's status, as Nextflow does, until it is `DONE`; fails, with the build
/// log, unless the build succeeded.
async fn wait_until_built(
    client: &Client,
    kiln: &KilnServer,
    request_id: &str,
    build_id: Option<&str>,
) -> Result<()> {
    let url = kiln.url(&format!("/v1alpha2/container/{request_id}/status"));
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        let status: Value = client.get(&url).send().await?.json().await?;
        if status["status"] == json!("DONE") {
            if status["succeeded"] == json!(true) {
                return Ok(());
            }
            let log = match build_id {
                Some(id) => {
                    let url = kiln.url(&format!("/v1alpha1/builds/{id}/logs"));
                    client.get(&url).send().await?.text().await?
                }
                None => String::new(),
            };
            bail!("the build failed: {status}\n{log}");
        }
        ensure!(
            Instant::now() < deadline,
            "the build took longer than {BUILD_TIMEOUT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the tasks of a run do, each call after the last.
#[derive(Debug, Clone)]
enum Work {
    /// An HTTP request to kiln, sent from the load generator's runtime.
    Http(Endpoint),
    /// What a status GET asks of the store, on kiln's runtime: `request` and `build`.
    Status {
        store: SqliteStore,
        request_id: String,
        build_id: String,
    },
}

/// One HTTP request, sent the same way each time, and what its answer must contain.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    /// A JSON body to POST; a GET without.
    body: Option<Bytes>,
    expect: &'static str,
}

/// What one run did during the measured time.
#[derive(Debug)]
struct Run {
    name: &'static str,
    /// Calls sent during the measured time.
    requests: usize,
    /// Their latencies, sorted.
    latencies: Vec<Duration>,
    /// Failed calls (transport error, not 200, or an unexpected body), warm-up included.
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    cpu: CpuSplit,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest rank.
    fn percentile(&self, p: f64) -> Duration {
        let rank = (p / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// What one task saw.
#[derive(Debug, Default)]
struct TaskResult {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// Runs `work` from `settings.connections` tasks on `runtime`, call after call, for the
/// warm-up and then the measured time; samples the CPU time at both ends of the measured time.
async fn hammer(
    settings: &Settings,
    name: &'static str,
    work: &Work,
    runtime: &tokio::runtime::Handle,
) -> Result<Run> {
    // A client per task, so a keep-alive connection each; made before the clock starts (each
    // loads the system's root certificates).
    let clients = (0..settings.connections)
        .map(|_| match work {
            Work::Http(_) => client().map(Some),
            Work::Status { .. } => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let begin = Instant::now();
    let measure_from = begin + WARM_UP;
    let until = measure_from + settings.duration;
    let mut tasks = Vec::with_capacity(settings.connections);
    for client in clients {
        let work = work.clone();
        tasks.push(runtime.spawn(async move {
            let mut result = TaskResult::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    return result;
                }
                let outcome = once(client.as_ref(), &work).await;
                let took = sent.elapsed();
                if sent >= measure_from {
                    result.latencies.push(took);
                }
                if let Err(err) = outcome {
                    result.errors += 1;
                    result.first_error.get_or_insert(err);
                }
            }
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuTicks::now()?;
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = CpuTicks::now()?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await?;
        latencies.extend(result.latencies);
        errors += result.errors;
        first_error = first_error.or(result.first_error);
    }
    latencies.sort_unstable();
    Ok(Run {
        name,
        requests: latencies.len(),
        latencies,
        errors,
        first_error,
        elapsed: settings.duration,
        cpu: cpu_after.since(&cpu_before),
    })
}

/// One call; the error says what was wrong with its answer.
async fn once(client: Option<&Client>, work: &Work) -> Result<(), String> {
    match work {
        Work::Http(endpoint) => send(client.ok_or("no HTTP client")?, endpoint).await,
        Work::Status {
            store,
            request_id,
            build_id,
        } => {
            store
                .request(request_id)
                .await
                .map_err(|err| err.to_string())?
                .ok_or("no such request")?;
            store
                .build(build_id)
                .await
                .map_err(|err| err.to_string())?
                .ok_or("no such build")?;
            Ok(())
        }
    }
}

/// One HTTP request; the error says what was wrong with its answer.
async fn send(client: &Client, endpoint: &Endpoint) -> Result<(), String> {
    let request = match &endpoint.body {
        Some(body) => client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone()),
        None => client.get(&endpoint.url),
    };
    let response = request.send().await.map_err(|err| format!("{err:#}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|err| format!("{err:#}"))?;
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        return Err(format!("{status}: {text}"));
    }
    if !text.contains(endpoint.expect) {
        return Err(format!("no {} in {text}", endpoint.expect));
    }
    Ok(())
}

/// CPU time (user + system) of this process, and of the load generator's threads, in ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    process: u64,
    load: u64,
}

/// CPU seconds spent by kiln (every thread but the load generator's) and by the load generator.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSplit {
    kiln: f64,
    load: f64,
}

impl CpuTicks {
    /// Reads `/proc/self/stat` (all threads, exited ones included) and the stat of each live
    /// thread named [`LOAD_THREADS`] (a runtime's threads live as long as it does).
    fn now() -> Result<Self> {
        let process = stat_ticks(&std::fs::read_to_string("/proc/self/stat")?)?;
        let mut load = 0;
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            // A thread may exit between listing and reading: skip it.
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(task.join("comm")),
                std::fs::read_to_string(task.join("stat")),
            ) else {
                continue;
            };
            if comm.trim_end() == LOAD_THREADS {
                load += stat_ticks(&stat)?;
            }
        }
        Ok(CpuTicks { process, load })
    }

    fn since(&self, before: &CpuTicks) -> CpuSplit {
        let process = self.process.saturating_sub(before.process);
        let load = self.load.saturating_sub(before.load);
        CpuSplit {
            kiln: process.saturating_sub(load) as f64 / TICKS_PER_SECOND,
            load: load as f64 / TICKS_PER_SECOND,
        }
    }
}

/// `utime + stime` of a `/proc/…/stat` line (fields 14 and 15; the name in parentheses may
/// hold spaces, so count from its closing parenthesis).
fn stat_ticks(stat: &str) -> Result<u64> {
    let (_, rest) = stat.rsplit_once(')').context("a stat line has `(comm)`")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("a stat line with {} fields", fields.len()))?
            .parse()
            .context("a stat field is a count")
    };
    // After `)` the fields start at 3 (state): utime is field 14, stime 15.
    Ok(field(14 - 3)? + field(15 - 3)?)
}

/// Everything the report shows.
#[derive(Debug)]
struct Report<'a> {
    settings: Settings,
    cpus: usize,
    /// `/proc/loadavg` before the run: other work competing for the CPUs.
    load_average: String,
    package: String,
    image: String,
    build_time: Duration,
    runs: &'a [Run],
}

fn print_report(report: &Report<'_>) {
    let settings = &report.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nWave API benchmark: cache hits, {} connections (one keep-alive client each), \
         {:.0} s per run after a {:.0} s warm-up",
        settings.connections,
        settings.duration.as_secs_f64(),
        WARM_UP.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs (nproc), shared by kiln and the load generator (same process, a \
         tokio runtime each, {} worker threads each); load average before the run {}; \
         kiln's data under the temp directory",
        report.cpus, report.cpus, report.load_average
    );
    let _ = writeln!(
        out,
        "image: {} (built through the API in {:.1} s; {})\n",
        report.image,
        report.build_time.as_secs_f64(),
        report.package
    );
    let _ = writeln!(
        out,
        "| {:<37} | {:>10} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>14} | {:>8} |",
        "run", "requests/s", "p50", "p90", "p99", "max", "errors", "kiln CPU / req", "load CPU"
    );
    let _ = writeln!(
        out,
        "|{:-<39}|{:->12}|{:->11}|{:->11}|{:->11}|{:->11}|{:->8}|{:->16}|{:->10}|",
        "", ":", ":", ":", ":", ":", ":", ":", ":"
    );
    for run in report.runs {
        let kiln_per_request = if run.requests == 0 {
            0.0
        } else {
            run.cpu.kiln / run.requests as f64
        };
        let _ = writeln!(
            out,
            "| {:<37} | {:>10.0} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>14} | {:>7.0}% |",
            run.name,
            run.per_second(),
            time(run.percentile(50.0)),
            time(run.percentile(90.0)),
            time(run.percentile(99.0)),
            time(run.latencies.last().copied().unwrap_or_default()),
            run.errors,
            format!("{:.0} µs", kiln_per_request * 1e6),
            100.0 * run.cpu.load / (run.cpu.kiln + run.cpu.load).max(f64::MIN_POSITIVE),
        );
    }
    let named = |name: &str| report.runs.iter().find(|run| run.name == name);
    if let (Some(post), Some(health)) = (named(POST_RUN), named(HEALTH_RUN)) {
        let _ = writeln!(
            out,
            "\ncache-hit POST against /health in the same run: {:.0} against {:.0} requests/s \
             ({:.0}% of its rate; goal 50%), p50 {} against {}, p90 {} against {}, p99 {} \
             against {} (goal under 5 ms)",
            post.per_second(),
            health.per_second(),
            100.0 * post.per_second() / health.per_second().max(f64::MIN_POSITIVE),
            time(post.percentile(50.0)),
            time(health.percentile(50.0)),
            time(post.percentile(90.0)),
            time(health.percentile(90.0)),
            time(post.percentile(99.0)),
            time(health.percentile(99.0)),
        );
    }
    let available = settings.duration.as_secs_f64() * report.cpus as f64;
    let _ = writeln!(
        out,
        "\nerrors: failed requests (not 200, or not the expected answer), warm-up included\n\
         kiln CPU / req: CPU time of every thread but the load generator's, per request; \
         load CPU: the load generator's share of the CPU time used\n\
         CPU time used during each run, of {available:.0} CPU-s available:"
    );
    for run in report.runs {
        let _ = writeln!(
            out,
            "  {:<37} kiln {:>5.1} CPU-s, load generator {:>5.1} CPU-s",
            run.name.trim_start(),
            run.cpu.kiln,
            run.cpu.load
        );
        if let Some(error) = &run.first_error {
            let _ = writeln!(out, "    first error: {error}");
        }
    }
    print!("{out}");
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A latency in microseconds below a millisecond, milliseconds below a second, else seconds.
fn time(latency: Duration) -> String {
    if latency < Duration::from_millis(1) {
        format!("{} µs", latency.as_micros())
    } else if latency < Duration::from_secs(1) {
        format!("{:.2} ms", latency.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", latency.as_secs_f64())
    }
}
