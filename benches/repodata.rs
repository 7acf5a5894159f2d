//! Repodata benchmark: kiln's Wave API against a channel the size of conda-forge, a cold
//! request and new combinations of cached packages side by side with rattler's own lazy load
//! and solve, and kiln's memory after.
//!
//! It generates `kiln-big` (`tests/support/big_channel.rs`: 300,000 records in `linux-64` and
//! in `linux-aarch64`, 100,000 in `noarch`, each subdir as `repodata.json` and
//! `repodata.json.zst`) and serves it on 127.0.0.1; starts kiln in-process with
//! `kiln::server::run`, as `kiln serve` runs it (app, embedded registry, SQLite store and build
//! queue, data in a temp directory, the channel's mirror set to the local server, settings
//! otherwise the defaults, `api.wait_for_build_ms` = 2000 among them); pushes a one-layer base
//! (`tests/support/bench_base.rs`); then sends, one after the other, the `POST
//! /v1alpha2/container` Nextflow's Wave client sends for a `conda` directive, without a token,
//! and times each from the POST until the image is ready: the POST's own answer when it says
//! `succeeded: true` (kiln waited for a quick build), else its status polled every 20 ms until
//! `DONE` and succeeded. It measures:
//!
//! 1. **cold request**: [`BigChannel::FULL_REQUEST`] on an empty data directory: repodata
//!    download (the `.zst`), solve, package downloads, install, layers, push;
//! 2. **new combinations**: the three [`BigChannel::COMBINATIONS`], each a different subset of
//!    what the cold request installed (only the packages it installed have archives in the
//!    channel, so nothing new can be installed), each answered by a build of its own (a build
//!    id not seen before), and their median;
//! 3. **kiln resident memory** after them (`VmRSS` and `VmHWM` of this process, where kiln
//!    runs; the generator holds little, and the channel server reads each file it serves into
//!    memory while it sends it, so the peak may hold a `.zst` of tens of MB that is not kiln's);
//!    the build logs go to stderr, after each request's clock stopped, showing what each build
//!    installed and what it reused;
//! 4. **rattler anchor**: rattler's own gateway (sparse, lazy) and resolvo, in-process, with
//!    a cache of its own, loading over HTTP and solving the cold request; and rattler's
//!    `SparseRepoData` on the files on disk (as py-rattler reads them) and resolvo. Both must
//!    pick what kiln installed.
//!
//! It prints the figures as one table, with the issue's goals (a new combination under 1 s
//! median, under 700 MB resident).
//!
//! ```sh
//! cargo bench --bench repodata
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then the channel has a few thousand
//! records, a smoke test of every step.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{bench_base as base, big_channel, conda_channel};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use big_channel::{BIG_CHANNEL_NAME, BigChannel, Scale};
use kiln::config::{BaseProfile, Config, RegistryUser};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, ParseMatchSpecOptions, Subdir,
};
use rattler_solve::{SolverImpl as _, SolverTask};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const BASE_REPOSITORY: &str = "bench/base";
const BASE_TAG: &str = "1";
/// The registry user the base is pushed as.
const PUSH_USER: &str = "kiln-bench";
/// How often a request's status is polled until its image is ready (Nextflow polls about
/// once a second; this is finer, to time kiln rather than the poll).
const POLL: Duration = Duration::from_millis(20);
/// How long one request may take to be ready.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
const MB: f64 = 1e6;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it this is the smoke run of `cargo test`.
    let full = std::env::args().any(|arg| arg == "--bench");
    let scale = if full {
        Scale::CONDA_FORGE
    } else {
        Scale::SMALL
    };
    let load_average = load_average();
    let started = Instant::now();
    let channel = BigChannel::generate(scale)?;
    let generated = started.elapsed();
    let memory_before = Memory::now()?;
    let server = conda_channel::serve_dir(channel.dir.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(measure(&channel, &server.url))?;
    print_report(&Report {
        scale,
        channel: &channel,
        generated,
        load_average,
        memory_before,
        figures: &figures,
    });
    Ok(())
}

/// One request through the Wave API, timed until its image was ready.
#[derive(Debug)]
struct Timed {
    entries: Vec<String>,
    image: String,
    build_id: String,
    /// From sending the POST to the answer that the image is ready.
    elapsed: Duration,
    /// Whether the POST's answer already said `succeeded: true` (no poll needed).
    answered_ready: bool,
}

#[derive(Debug)]
struct Figures {
    cold: Timed,
    combinations: Vec<Timed>,
    kiln_memory: Memory,
    anchor: Duration,
    local_anchor: Duration,
    anchor_memory: Memory,
}

impl Figures {
    fn median_combination(&self) -> Duration {
        let mut times: Vec<Duration> = self.combinations.iter().map(|c| c.elapsed).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }
}

async fn measure(channel: &BigChannel, channel_url: &str) -> Result<Figures> {
    let kiln = start_kiln(channel_url).await?;
    let pusher = RegistryClient::new(
        &kiln.address.to_string(),
        Auth::Basic(Credentials::new(PUSH_USER, kiln.password.clone())),
        &[],
    )?;
    base::push_base(&pusher, BASE_REPOSITORY, BASE_TAG).await?;
    let client = Client::builder()
        .no_proxy()
        .timeout(BUILD_TIMEOUT)
        .build()?;

    let cold = request(&client, &kiln, &BigChannel::FULL_REQUEST).await?;
    let mut combinations: Vec<Timed> = Vec::new();
    for entries in BigChannel::COMBINATIONS {
        let timed = request(&client, &kiln, entries).await?;
        let earlier = std::iter::once(&cold).chain(&combinations);
        for other in earlier {
            ensure!(
                timed.build_id != other.build_id && timed.image != other.image,
                "{:?} was answered with the build of {:?} ({}, {}), not a build of its own",
                timed.entries,
                other.entries,
                other.build_id,
                other.image
            );
        }
        combinations.push(timed);
    }
    let kiln_memory = Memory::now()?;

    let expected: Vec<(String, String)> = channel
        .archives
        .iter()
        .map(|(name, version, _)| ((*name).to_owned(), version.clone()))
        .collect();
    let anchor = anchor(channel_url).await?;
    ensure!(anchor.1 == expected, "rattler picked {:?}", anchor.1);
    let local = local_anchor(channel)?;
    ensure!(local.1 == expected, "rattler picked {:?}", local.1);
    Ok(Figures {
        cold,
        combinations,
        kiln_memory,
        anchor: anchor.0,
        local_anchor: local.0,
        anchor_memory: Memory::now()?,
    })
}

/// kiln as the benchmark talks to it.
#[derive(Debug)]
struct KilnServer {
    address: SocketAddr,
    password: String,
    _data: tempfile::TempDir,
}

impl KilnServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// Starts kiln on the current runtime, `kiln::server::run` as `kiln serve` runs it, with its
/// data in a temp directory, `kiln-big` mirrored at `channel_url` and the bench base for conda
/// environments; every other setting is the default.
async fn start_kiln(channel_url: &str) -> Result<KilnServer> {
    let data = tempfile::tempdir()?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut config = Config {
        data_dir: data.path().to_owned(),
        registry: address.to_string().parse()?,
        channel_mirrors: BTreeMap::from([(BIG_CHANNEL_NAME.to_owned(), channel_url.to_owned())]),
        ..Config::default()
    };
    config.embedded_registry.users = vec![RegistryUser::new(
        PUSH_USER,
        password.clone(),
        // It pushes the base into kiln's own namespaces.
        true,
    )];
    config.base.conda = BaseProfile {
        image: Some(format!("{address}/{BASE_REPOSITORY}:{BASE_TAG}").parse()?),
        glibc: "2.36".into(),
        python: None,
    };
    tokio::spawn(async move {
        if let Err(err) = kiln::server::run(config, listener, std::future::pending()).await {
            eprintln!("kiln server stopped: {err:#}");
        }
    });
    Ok(KilnServer {
        address,
        password,
        _data: data,
    })
}

/// The body Nextflow's Wave client sends for a `conda` directive of `entries` from `kiln-big`.
fn wave_body(entries: &[&str]) -> Value {
    support::wave::nextflow_body(json!({
        "packages": {"entries": entries, "channels": [BIG_CHANNEL_NAME]},
        "timestamp": "2026-12-07T21:00:00.000000Z",
        "fingerprint": "0d1f6a2c5e8b4b7e9c3a1f0e2d4c6b8a",
    }))
}

/// Sends the Wave request for `entries` and waits until its image is ready; fails, with the
/// build log, unless it was built and succeeded.
async fn request(client: &Client, kiln: &KilnServer, entries: &[&str]) -> Result<Timed> {
    let body = serde_json::to_vec(&wave_body(entries))?;
    eprintln!("requesting {}", entries.join(", "));
    let started = Instant::now();
    let response = client
        .post(kiln.url("/v1alpha2/container"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status == StatusCode::OK, "POST: {status}: {text}");
    let answer: Value = serde_json::from_str(&text)?;
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no `{name}` in {answer}"))
    };
    let request_id = field("requestId")?;
    let build_id = field("buildId")?;
    let image = field("targetImage")?;
    let answered_ready = answer["succeeded"] == json!(true);
    if !answered_ready {
        wait_until_built(client, kiln, &request_id, &build_id, started).await?;
    }
    let elapsed = started.elapsed();
    // The build's log, after the clock stopped: what the build did (downloads, layers).
    let logs = kiln.url(&format!("/v1alpha1/builds/{build_id}/logs"));
    eprint!("{}", client.get(&logs).send().await?.text().await?);
    eprintln!(
        "{image} ready in {:.3} s ({})",
        elapsed.as_secs_f64(),
        if answered_ready {
            "the POST said so"
        } else {
            "polled"
        }
    );
    Ok(Timed {
        entries: entries.iter().map(|e| (*e).to_owned()).collect(),
        image,
        build_id,
        elapsed,
        answered_ready,
    })
}

/// Polls the request's status until it is `DONE`; fails, with the build log, unless the build
/// succeeded.
async fn wait_until_built(
    client: &Client,
    kiln: &KilnServer,
    request_id: &str,
    build_id: &str,
    started: Instant,
) -> Result<()> {
    let url = kiln.url(&format!("/v1alpha2/container/{request_id}/status"));
    loop {
        let status: Value = client.get(&url).send().await?.json().await?;
        if status["status"] == json!("DONE") {
            if status["succeeded"] == json!(true) {
                return Ok(());
            }
            let logs = kiln.url(&format!("/v1alpha1/builds/{build_id}/logs"));
            let log = client.get(&logs).send().await?.text().await?;
            bail!("the build failed: {status}\n{log}");
        }
        ensure!(
            started.elapsed() < BUILD_TIMEOUT,
            "the build took longer than {BUILD_TIMEOUT:?}: {status}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The cold request as rattler takes it.
fn full_request_specs() -> Result<Vec<MatchSpec>> {
    Ok(BigChannel::FULL_REQUEST
        .iter()
        .map(|entry| MatchSpec::from_str(entry, ParseMatchSpecOptions::lenient()))
        .collect::<Result<_, _>>()?)
}

fn glibc() -> Result<Vec<GenericVirtualPackage>> {
    Ok(vec![GenericVirtualPackage {
        name: "__glibc".parse()?,
        version: "2.36".parse()?,
        build_string: "0".parse()?,
    }])
}

/// rattler alone: a gateway with an empty cache of its own loads what the cold request needs
/// from `url` (lazily), and resolvo solves; returns the time and the picks.
async fn anchor(url: &str) -> Result<(Duration, Vec<(String, String)>)> {
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    let gateway = rattler_repodata_gateway::Gateway::builder()
        .with_cache_dir(cache.path())
        .finish();
    let channel = Channel::from_url(url::Url::parse(&format!("{url}/"))?);
    let specs = full_request_specs()?;
    let repodata = gateway
        .query([channel], [Subdir::Linux64, Subdir::NoArch], specs.clone())
        .recursive(true)
        .execute()
        .await?
        .repodata;
    let virtual_packages = glibc()?;
    let solved = tokio::task::spawn_blocking(move || {
        let task = SolverTask {
            virtual_packages,
            specs,
            ..SolverTask::from_iter(&repodata)
        };
        rattler_solve::resolvo::Solver.solve(task)
    })
    .await?
    .context("rattler's solve")?;
    Ok((started.elapsed(), picks(&solved.records)))
}

/// rattler alone on the channel's files as they are on disk (no download, as py-rattler's
/// `SparseRepoData` reads them): index `linux-64` and `noarch`, load the cold request's records
/// recursively, solve.
fn local_anchor(channel: &BigChannel) -> Result<(Duration, Vec<(String, String)>)> {
    use rattler_repodata_gateway::sparse::{PackageFormatSelection, SparseRepoData};
    let started = Instant::now();
    let canonical = Channel::from_url(url::Url::parse(&format!(
        "https://conda.anaconda.org/{BIG_CHANNEL_NAME}/"
    ))?);
    let sparse = ["linux-64", "noarch"]
        .iter()
        .map(|subdir| {
            SparseRepoData::from_file(
                canonical.clone(),
                *subdir,
                channel.dir.join(subdir).join("repodata.json"),
                None,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let specs = full_request_specs()?;
    let names = specs
        .iter()
        .map(|spec| {
            spec.name
                .as_exact()
                .cloned()
                .with_context(|| format!("{spec} names no package"))
        })
        .collect::<Result<Vec<_>>>()?;
    let records = SparseRepoData::load_records_recursive(
        &sparse,
        names,
        None,
        PackageFormatSelection::default(),
    )?;
    let task = SolverTask {
        virtual_packages: glibc()?,
        specs,
        ..SolverTask::from_iter(&records)
    };
    let solved = rattler_solve::resolvo::Solver
        .solve(task)
        .context("rattler's solve")?;
    Ok((started.elapsed(), picks(&solved.records)))
}

/// (name, version) of each record, sorted.
fn picks(records: &[rattler_conda_types::RepoDataRecord]) -> Vec<(String, String)> {
    let mut picked: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r.package_record.name.as_normalized().to_owned(),
                r.package_record.version.to_string(),
            )
        })
        .collect();
    picked.sort();
    picked
}

/// Everything the report shows.
struct Report<'a> {
    scale: Scale,
    channel: &'a BigChannel,
    generated: Duration,
    /// `/proc/loadavg` before the run: other work competing for the CPUs.
    load_average: String,
    memory_before: Memory,
    figures: &'a Figures,
}

fn print_report(report: &Report<'_>) {
    let figures = report.figures;
    println!();
    println!(
        "repodata: {} records in {} ({}), generated in {:.1} s",
        BigChannel::record_count(report.scale),
        BIG_CHANNEL_NAME,
        report
            .channel
            .repodata_bytes
            .iter()
            .zip(&report.channel.zst_bytes)
            .map(|((subdir, json), (_, zst))| format!(
                "{subdir}: {:.0} MB json, {:.1} MB zst",
                *json as f64 / MB,
                *zst as f64 / MB
            ))
            .collect::<Vec<_>>()
            .join("; "),
        report.generated.as_secs_f64()
    );
    println!(
        "machine: {} CPUs (nproc), load average before the run {}; kiln in-process, settings \
         the defaults (api.wait_for_build_ms 2000), data in a temp directory",
        std::thread::available_parallelism().map_or(1, usize::from),
        report.load_average
    );
    println!(
        "every request: POST /v1alpha2/container (Nextflow's body, no token) until the image is \
         ready; \"POST\": its answer said succeeded, \"poll\": its status polled every {} ms \
         until DONE",
        POLL.as_millis()
    );
    println!();
    let row = |step: &str, figure: String, note: &str| {
        println!("| {step:<59} | {figure:>9} | {note} |");
    };
    row("step", "figure".into(), "request, and how it was answered");
    println!("|{:-<61}|{:->11}|{:-<34}|", "", ":", "");
    let ready = |timed: &Timed| {
        format!(
            "{} ({})",
            timed.entries.join(", "),
            if timed.answered_ready { "POST" } else { "poll" }
        )
    };
    row(
        "kiln cold request (repodata download, solve, install, push)",
        seconds(figures.cold.elapsed),
        &ready(&figures.cold),
    );
    for (i, timed) in figures.combinations.iter().enumerate() {
        row(
            &format!("kiln new combination {} of cached packages", i + 1),
            seconds(timed.elapsed),
            &ready(timed),
        );
    }
    row(
        "kiln new combination, median of 3 (goal under 1 s)",
        seconds(figures.median_combination()),
        "",
    );
    row(
        "rattler gateway over HTTP + resolvo (anchor)",
        seconds(figures.anchor),
        "the cold request, cache of its own",
    );
    row(
        "rattler SparseRepoData from local files + resolvo",
        seconds(figures.local_anchor),
        "the cold request",
    );
    row(
        "kiln resident memory after (goal under 700 MB)",
        format!("{:.0} MB", figures.kiln_memory.rss as f64 / MB),
        "VmRSS after the cold request and combinations",
    );
    row(
        "kiln peak resident memory after",
        format!("{:.0} MB", figures.kiln_memory.hwm as f64 / MB),
        "VmHWM",
    );
    println!();
    println!(
        "resident memory of the process: before kiln started {:.0} MB (peak {:.0} MB, the \
         generator's); after the rattler anchors too {:.0} MB (peak {:.0} MB)",
        report.memory_before.rss as f64 / MB,
        report.memory_before.hwm as f64 / MB,
        figures.anchor_memory.rss as f64 / MB,
        figures.anchor_memory.hwm as f64 / MB,
    );
    println!("images:");
    for timed in std::iter::once(&figures.cold).chain(&figures.combinations) {
        println!("  {} (build {})", timed.image, timed.build_id);
    }
}

fn seconds(time: Duration) -> String {
    format!("{:.3} s", time.as_secs_f64())
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

/// This process's resident memory, from `/proc/self/status`, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

impl Memory {
    fn now() -> Result<Memory> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .with_context(|| format!("no {name} in /proc/self/status"))?;
            let kib: u64 = line.split_whitespace().nth(1).context("a value")?.parse()?;
            Ok(kib * 1024)
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}
