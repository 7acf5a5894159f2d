//! Scale-out benchmark: kiln as separate processes on PostgreSQL and CNCF Distribution, the way
//! the scale-out test runs it (`tests/support/cluster.rs`), measuring
//!
//! 1. **builds per minute with one worker**: N different requests (tiny generated conda
//!    packages from a channel on 127.0.0.1, one-layer base) submitted at once through an API
//!    node, timed from the first submission to the last build done;
//! 2. **builds per minute with two workers** on the same queue: N other requests, the same way;
//! 3. **cache-hit requests per second through one API node**: `POST /api/v1/images` for an
//!    image that exists, C at a time, M in all, all to one node;
//! 4. **through two API nodes**: the same, alternating between both.
//!
//! For each it prints the wall time and the CPU seconds each kiln process used, and how busy
//! the whole machine was (its other users included), which is what says where the bound is.
//!
//! ```sh
//! cargo bench --bench scale
//! KILN_BENCH_BUILDS=40 KILN_BENCH_HITS=8000 KILN_BENCH_CONCURRENCY=64 cargo bench --bench scale
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then N = 2 and M = 100, a smoke test
//! of every step.

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures_util::StreamExt as _;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};
use support::bench_channel::{self, CHANNEL_NAME, Channel};
use support::cluster::{Cluster, Node, Shared};
use support::distribution::Distribution;
use support::postgres::PostgresServer;

const BASE: &str = "kiln/base/bench:1";
/// Payload of each generated package: small, so a build measures kiln's per-build work.
const PACKAGE_BYTES: usize = 64 << 10;
/// Longest one phase of builds may take.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

fn main() -> Result<()> {
    let sizes = Sizes::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&sizes))?;
    print_report(&sizes, &report);
    Ok(())
}

/// How much work the benchmark does; overridable through the environment.
#[derive(Debug)]
struct Sizes {
    /// Builds per build phase.
    builds: usize,
    /// Cache-hit requests per request phase.
    hits: usize,
    /// Cache-hit requests in flight at once.
    concurrency: usize,
}

impl Sizes {
    fn from_env() -> Result<Sizes> {
        let full = std::env::args().any(|arg| arg == "--bench");
        let count = |name: &str, full_default: usize, smoke_default: usize| -> Result<usize> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{name}={v:?} is not a positive count")),
                Err(_) if full => Ok(full_default),
                Err(_) => Ok(smoke_default),
            }
        };
        Ok(Sizes {
            builds: count("KILN_BENCH_BUILDS", 20, 2)?,
            hits: count("KILN_BENCH_HITS", 4000, 100)?,
            concurrency: count("KILN_BENCH_CONCURRENCY", 32, 8)?,
        })
    }
}

#[derive(Debug)]
struct Report {
    one_worker: Phase,
    two_workers: Phase,
    one_api: Phase,
    two_apis: Phase,
}

/// One timed phase: how long, how much it did, and the CPU it took.
#[derive(Debug)]
struct Phase {
    done: usize,
    /// How long each build ran on its worker, claim to finish (build phases only).
    runs: Vec<Duration>,
    wall: Duration,
    /// CPU seconds per kiln process (`api 1`, `worker 2`, …), Distribution's, and the
    /// benchmark's own (its HTTP clients and the channel server).
    cpu: Vec<(String, f64)>,
    /// CPU seconds the whole machine spent, every process of every user.
    machine_cpu: f64,
}

async fn measure(sizes: &Sizes) -> Result<Report> {
    // Started once per test binary (initdb takes seconds); the database is this run's own.
    let postgres = tokio::task::spawn_blocking(PostgresServer::shared)
        .await
        .expect("PostgreSQL starts");
    let database_url = postgres.url().await;
    let distribution = Distribution::start().await;
    let pusher = RegistryClient::new(
        &distribution.host,
        Auth::Basic(Credentials::new(distribution.user, distribution.password)),
        &[],
    )?;
    let (repository, tag) = BASE.split_once(':').context("BASE has a tag")?;
    support::bench_base::push_base(&pusher, repository, tag).await?;

    let names = |prefix: &str| -> Vec<String> {
        (1..=sizes.builds)
            .map(|i| format!("{prefix}-{i:03}"))
            .collect()
    };
    let (one, two, warm) = (names("one"), names("two"), names("warm"));
    let all: Vec<String> = [&one[..], &two[..], &warm[..2.min(warm.len())]]
        .concat()
        .into_iter()
        .chain(["hit".to_owned()])
        .collect();
    let channel = Channel::generate(&all, PACKAGE_BYTES)?;
    let channel_url = bench_channel::serve(channel.dir.clone()).await?;
    let shared = Shared {
        database_url: &database_url,
        distribution: &distribution,
        channel: CHANNEL_NAME,
        channel_url: &channel_url,
        base: BASE,
    };
    let settings = shared.settings(
        "workers = 1\nmax_queued = 100000",
        &format!("wait_for_build_ms = 0\ntokens = [\"{OPERATOR}\"]"),
    );
    let mut cluster = Cluster::start(2, 1, &settings).await;

    // A first build warms the worker (channel index, package cache), as a running kiln is.
    build_all(&cluster, &["hit".to_owned()]).await?;
    let one_worker = timed(&cluster, &distribution, || build_all(&cluster, &one)).await?;
    cluster.add_worker().await;
    build_all(&cluster, &warm[..2.min(warm.len())]).await?;
    let two_workers = timed(&cluster, &distribution, || build_all(&cluster, &two)).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(sizes.concurrency)
        .build()?;
    let one_api = timed(&cluster, &distribution, || {
        hits(&client, &cluster.apis[..1], sizes.hits, sizes.concurrency)
    })
    .await?;
    let two_apis = timed(&cluster, &distribution, || {
        hits(&client, &cluster.apis, sizes.hits, sizes.concurrency)
    })
    .await?;
    Ok(Report {
        one_worker,
        two_workers,
        one_api,
        two_apis,
    })
}

/// Not limited by allowances or per-address queue caps.
const OPERATOR: &str = "bench-operator-token";

/// Runs `work` (which gives how much it did) and measures it.
async fn timed<F, Fut>(cluster: &Cluster, distribution: &Distribution, work: F) -> Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(usize, Vec<Duration>)>>,
{
    let nodes = running(cluster);
    let cpu_before: Vec<f64> = nodes.iter().map(|(_, n)| process_cpu(n)).collect();
    let own_before = pid_cpu("self");
    let registry = distribution.pid().to_string();
    let registry_before = pid_cpu(&registry);
    let machine_before = machine_cpu()?;
    let started = Instant::now();
    let (done, runs) = work().await?;
    let wall = started.elapsed();
    let machine_cpu = machine_cpu()? - machine_before;
    let mut cpu: Vec<(String, f64)> = nodes
        .iter()
        .zip(cpu_before)
        .map(|((name, node), before)| (name.clone(), process_cpu(node) - before))
        .collect();
    cpu.push((
        "Distribution".to_owned(),
        pid_cpu(&registry) - registry_before,
    ));
    cpu.push((
        "bench (clients, channel)".to_owned(),
        pid_cpu("self") - own_before,
    ));
    Ok(Phase {
        done,
        runs,
        wall,
        cpu,
        machine_cpu,
    })
}

/// The running nodes, named `api 1`, `worker 2`, ….
fn running(cluster: &Cluster) -> Vec<(String, &Node)> {
    let name = |role: &str, i: usize| format!("{role} {}", i + 1);
    cluster
        .apis
        .iter()
        .enumerate()
        .map(|(i, node)| (name("api", i), node))
        .chain(
            cluster
                .workers
                .iter()
                .enumerate()
                .map(|(i, node)| (name("worker", i), node)),
        )
        .filter(|(_, node)| node.pid().is_some())
        .collect()
}

/// Asks for every package in `names` (one image each) through the first API node at once and
/// waits until every build is done and succeeded; how many, and how long each ran on its
/// worker (claimed to finished).
async fn build_all(cluster: &Cluster, names: &[String]) -> Result<(usize, Vec<Duration>)> {
    let api = &cluster.apis[0];
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for name in names {
        let answer = ask(&client, api, name).await?;
        let id = answer["build"]["id"]
            .as_str()
            .with_context(|| format!("no build in {answer}"))?;
        ids.push(id.to_owned());
    }
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut runs = Vec::new();
    for id in &ids {
        loop {
            let build: Value = client
                .get(api.url(&format!("/api/v1/builds/{id}")))
                .send()
                .await?
                .json()
                .await?;
            if build["status"] == "DONE" {
                ensure!(build["succeeded"] == true, "build {id} failed: {build}");
                runs.push(run_time(&build)?);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "build {id} not done in {PHASE_LIMIT:?}:\n{}",
                    cluster.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((ids.len(), runs))
}

/// How long build record `build` ran: from its claim (`started_at`) to `finished_at`.
fn run_time(build: &Value) -> Result<Duration> {
    let at = |field: &str| -> Result<chrono::DateTime<chrono::FixedOffset>> {
        let text = build[field]
            .as_str()
            .with_context(|| format!("no {field} in {build}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(text)?)
    };
    Ok((at("finished_at")? - at("started_at")?)
        .to_std()
        .unwrap_or_default())
}

/// `POST /api/v1/images` for `package` on `node`; the answer, which must be a 200.
async fn ask(client: &reqwest::Client, node: &Node, package: &str) -> Result<Value> {
    let response = client
        .post(node.url("/api/v1/images"))
        .bearer_auth(OPERATOR)
        .json(&json!({
            "packages": [package],
            "channels": [CHANNEL_NAME],
            "platforms": ["linux/amd64"],
        }))
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    ensure!(status == 200, "{status}: {answer}");
    Ok(answer)
}

/// `count` requests for the built image `hit`, `concurrency` at a time, spread over `nodes`
/// in turn; each must be answered as cached. How many.
async fn hits(
    client: &reqwest::Client,
    nodes: &[Node],
    count: usize,
    concurrency: usize,
) -> Result<(usize, Vec<Duration>)> {
    let mut answers = futures_util::stream::iter(0..count)
        .map(|i| ask(client, &nodes[i % nodes.len()], "hit"))
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        ensure!(answer["cached"] == true, "not a cache hit: {answer}");
        done += 1;
    }
    Ok((done, Vec::new()))
}

/// CPU seconds (user and system) process `node` and its finished children used so far; 0 once
/// it is gone.
fn process_cpu(node: &Node) -> f64 {
    node.pid().map_or(0.0, |pid| pid_cpu(&pid.to_string()))
}

/// CPU seconds process `pid` (or `self`) and its finished children used so far; 0 when it is
/// gone.
fn pid_cpu(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name: utime, stime, and the same for waited-for
    // children (tools a build runs) are the 14th to 17th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11..15]
        .iter()
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

/// CPU seconds every CPU of the machine spent busy so far (all but idle and iowait).
fn machine_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    ensure!(fields.len() >= 5, "/proc/stat: {line}");
    let busy: f64 = fields.iter().sum::<f64>() - fields[3] - fields[4];
    Ok(busy / clock_ticks())
}

/// Kernel clock ticks per second, in which /proc counts CPU time.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

fn print_report(sizes: &Sizes, report: &Report) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "kiln scale-out: PostgreSQL, CNCF Distribution, 2 API processes, 1 then 2 worker \
         processes (1 build at a time each), {cpus} CPUs"
    );
    let per_minute = |phase: &Phase| phase.done as f64 / phase.wall.as_secs_f64() * 60.0;
    let per_second = |phase: &Phase| phase.done as f64 / phase.wall.as_secs_f64();
    for (title, phase, rate) in [
        (
            "builds, one worker",
            &report.one_worker,
            format!("{:.1} builds/min", per_minute(&report.one_worker)),
        ),
        (
            "builds, two workers",
            &report.two_workers,
            format!("{:.1} builds/min", per_minute(&report.two_workers)),
        ),
        (
            "cache hits, one API node",
            &report.one_api,
            format!("{:.0} requests/s", per_second(&report.one_api)),
        ),
        (
            "cache hits, two API nodes",
            &report.two_apis,
            format!("{:.0} requests/s", per_second(&report.two_apis)),
        ),
    ] {
        let cpu: Vec<String> = phase
            .cpu
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1}"))
            .collect();
        println!(
            "{title:<26} {rate:>18}  ({} in {:.1} s; CPU s: {}; machine busy {:.1} of {:.1} CPU s)",
            phase.done,
            phase.wall.as_secs_f64(),
            cpu.join(", "),
            phase.machine_cpu,
            phase.wall.as_secs_f64() * cpus as f64,
        );
        if !phase.runs.is_empty() {
            let total: Duration = phase.runs.iter().sum();
            println!(
                "{:<26} {:>18}  mean build {:.2} s claim to finish; the rest of the wall time \
                 is between builds",
                "",
                "",
                total.as_secs_f64() / phase.runs.len() as f64,
            );
        }
    }
    println!(
        "(N = {} builds per build phase, M = {} requests {} at a time per request phase)",
        sizes.builds, sizes.hits, sizes.concurrency
    );
}
