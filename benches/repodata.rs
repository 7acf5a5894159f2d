//! Repodata benchmark: a small request against a channel the size of conda-forge.
//!
//! It generates `kiln-big` (`tests/support/big_channel.rs`: 300,000 records in `linux-64` and
//! in `linux-aarch64`, 100,000 in `noarch`, each subdir as `repodata.json` and
//! `repodata.json.zst`), serves it on 127.0.0.1, starts kiln in-process with a one-layer base,
//! and measures:
//!
//! 1. **kiln cold**: a build of the 4-package request from an empty data directory, as a queue
//!    worker runs it: repodata download (the `.zst`), solve, package downloads, install,
//!    layers, push;
//! 2. **kiln solve, repodata in memory**: the same request solved again by the same builder;
//! 3. **kiln resident memory** after both (`VmRSS` and `VmHWM` of this process);
//! 4. **rattler anchor**: rattler's own gateway (sparse, lazy) and resolvo, in-process, with
//!    a cache of its own: load and solve the same request, what kiln's cold solve is measured
//!    against.
//!
//! ```sh
//! cargo bench --bench repodata
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then the channel has a few thousand
//! records, a smoke test of every step.

#[path = "support/base.rs"]
mod base;
#[path = "../tests/support/big_channel.rs"]
mod big_channel;
#[path = "../tests/support/conda_channel.rs"]
#[expect(dead_code, reason = "only its server is used here")]
mod conda_channel;
#[path = "support/kiln.rs"]
mod kiln_app;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use big_channel::{BIG_CHANNEL_NAME, BigChannel, Scale};
use kiln::build::native::NativeBuilder;
use kiln::config::Config;
use kiln::resolve::Target;
use kiln::spec::{Platform, Request, RequestInput};
use kiln::store::{SqliteStore, Store};
use kiln_app::Kiln;
use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, ParseMatchSpecOptions, Subdir,
};
use rattler_solve::{SolverImpl as _, SolverTask};

const BASE_REPOSITORY: &str = "bench/base";
const BASE_TAG: &str = "1";
const MB: f64 = 1e6;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it this is the smoke run of `cargo test`.
    let full = std::env::args().any(|arg| arg == "--bench");
    let scale = if full {
        Scale::CONDA_FORGE
    } else {
        Scale::SMALL
    };
    let started = Instant::now();
    let channel = BigChannel::generate(scale)?;
    let generated = started.elapsed();
    let memory_before = Memory::now()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(measure(&channel))?;

    println!();
    println!(
        "repodata: {} records in {} ({}), generated in {:.1} s",
        BigChannel::record_count(scale),
        BIG_CHANNEL_NAME,
        channel
            .repodata_bytes
            .iter()
            .zip(&channel.zst_bytes)
            .map(|((subdir, json), (_, zst))| format!(
                "{subdir}: {:.0} MB json, {:.1} MB zst",
                *json as f64 / MB,
                *zst as f64 / MB
            ))
            .collect::<Vec<_>>()
            .join("; "),
        generated.as_secs_f64()
    );
    println!(
        "request: {}; image {}@{} ({:.1} MB)",
        BigChannel::REQUEST.join(", "),
        figures.image.image,
        figures.image.digest,
        figures.image.image_bytes as f64 / MB
    );
    println!();
    println!("| {:<50} | {:>10} |", "step", "time");
    println!("|{:-<52}|{:->12}|", "", "");
    for (name, time) in [
        (
            "kiln cold build (download, solve, install, push)",
            figures.image.elapsed,
        ),
        ("kiln solve again (repodata in memory)", figures.warm_solve),
        ("rattler gateway + resolvo (anchor)", figures.anchor),
        (
            "rattler sparse from local files + resolvo",
            figures.local_anchor,
        ),
    ] {
        println!("| {name:<50} | {:>8.3} s |", time.as_secs_f64());
    }
    println!();
    println!(
        "kiln resident memory: before kiln {:.0} MB (peak {:.0} MB); after the build and solve {:.0} MB (peak {:.0} MB)",
        memory_before.rss as f64 / MB,
        memory_before.hwm as f64 / MB,
        figures.kiln_memory.rss as f64 / MB,
        figures.kiln_memory.hwm as f64 / MB,
    );
    println!(
        "after the anchor too: {:.0} MB (peak {:.0} MB)",
        figures.anchor_memory.rss as f64 / MB,
        figures.anchor_memory.hwm as f64 / MB,
    );
    Ok(())
}

struct Figures {
    image: kiln_app::Build,
    warm_solve: Duration,
    anchor: Duration,
    local_anchor: Duration,
    kiln_memory: Memory,
    anchor_memory: Memory,
}

async fn measure(channel: &BigChannel) -> Result<Figures> {
    let server = conda_channel::serve_dir(channel.dir.clone());
    let kiln = Kiln::start().await?;
    base::push_base(&kiln.pusher()?, BASE_REPOSITORY, BASE_TAG).await?;
    let data = tempfile::tempdir()?;
    let config = Config {
        registry: kiln.address.to_string().parse()?,
        data_dir: data.path().to_owned(),
        channel_mirrors: BTreeMap::from([(BIG_CHANNEL_NAME.to_owned(), server.url.clone())]),
        base: kiln::config::BaseProfiles {
            conda: kiln::config::BaseProfile {
                image: Some(format!("{}/{BASE_REPOSITORY}:{BASE_TAG}", kiln.address).parse()?),
                glibc: "2.36".into(),
                python: None,
            },
            ..kiln::config::BaseProfiles::default()
        },
        ..Config::default()
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path().join("kiln.db")).await?);
    let builder = NativeBuilder::from_config(&config, kiln.pusher()?, store.clone())
        .map_err(anyhow::Error::msg)?;
    let request = Request::try_from(RequestInput {
        entries: BigChannel::REQUEST.map(str::to_owned).to_vec(),
        channels: vec![BIG_CHANNEL_NAME.to_owned()],
        ..RequestInput::default()
    })?;
    let (build, _log) = kiln_app::timed_build(&builder, &store, &kiln, &request).await?;

    let target = Target {
        platform: Platform::LinuxAmd64,
        glibc: "2.36".into(),
    };
    let started = Instant::now();
    let solution = builder.resolver.solve(&request, &target).await?;
    let warm_solve = started.elapsed();
    let picked: Vec<(String, String)> = solution
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let expected: Vec<(String, String)> = channel
        .expected
        .iter()
        .map(|(name, version, _)| ((*name).to_owned(), version.clone()))
        .collect();
    ensure!(
        picked == expected,
        "kiln picked {picked:?}, not {expected:?}"
    );
    let kiln_memory = Memory::now()?;

    let anchor = anchor(&server.url).await?;
    ensure!(anchor.1 == expected, "rattler picked {:?}", anchor.1);
    let local = local_anchor(channel)?;
    ensure!(local.1 == expected, "rattler picked {:?}", local.1);
    Ok(Figures {
        image: build,
        warm_solve,
        anchor: anchor.0,
        local_anchor: local.0,
        kiln_memory,
        anchor_memory: Memory::now()?,
    })
}

/// rattler alone: a gateway with an empty cache of its own loads what the request needs from
/// `url` (lazily), and resolvo solves; returns the time and the picks.
async fn anchor(url: &str) -> Result<(Duration, Vec<(String, String)>)> {
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    let gateway = rattler_repodata_gateway::Gateway::builder()
        .with_cache_dir(cache.path())
        .finish();
    let channel = Channel::from_url(url::Url::parse(&format!("{url}/"))?);
    let specs: Vec<MatchSpec> = BigChannel::REQUEST
        .iter()
        .map(|entry| MatchSpec::from_str(entry, ParseMatchSpecOptions::lenient()))
        .collect::<Result<_, _>>()?;
    let repodata = gateway
        .query([channel], [Subdir::Linux64, Subdir::NoArch], specs.clone())
        .recursive(true)
        .execute()
        .await?
        .repodata;
    let virtual_packages = vec![GenericVirtualPackage {
        name: "__glibc".parse()?,
        version: "2.36".parse()?,
        build_string: "0".parse()?,
    }];
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
    let elapsed = started.elapsed();
    let mut picked: Vec<(String, String)> = solved
        .records
        .iter()
        .map(|r| {
            (
                r.package_record.name.as_normalized().to_owned(),
                r.package_record.version.to_string(),
            )
        })
        .collect();
    picked.sort();
    Ok((elapsed, picked))
}

/// rattler alone on the channel's files as they are on disk (no download, as py-rattler's
/// `SparseRepoData` reads them): index `linux-64` and `noarch`, load the request's records
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
    let specs: Vec<MatchSpec> = BigChannel::REQUEST
        .iter()
        .map(|entry| MatchSpec::from_str(entry, ParseMatchSpecOptions::lenient()))
        .collect::<Result<_, _>>()?;
    let names = ["kiln-app", "kiln-tool"]
        .map(|name| name.parse())
        .into_iter();
    let records = SparseRepoData::load_records_recursive(
        &sparse,
        names.collect::<Result<Vec<_>, _>>()?,
        None,
        PackageFormatSelection::default(),
    )?;
    let task = SolverTask {
        virtual_packages: vec![GenericVirtualPackage {
            name: "__glibc".parse()?,
            version: "2.36".parse()?,
            build_string: "0".parse()?,
        }],
        specs,
        ..SolverTask::from_iter(&records)
    };
    let solved = rattler_solve::resolvo::Solver
        .solve(task)
        .context("rattler's solve")?;
    let elapsed = started.elapsed();
    let mut picked: Vec<(String, String)> = solved
        .records
        .iter()
        .map(|r| {
            (
                r.package_record.name.as_normalized().to_owned(),
                r.package_record.version.to_string(),
            )
        })
        .collect();
    picked.sort();
    Ok((elapsed, picked))
}

/// This process's resident memory, from `/proc/self/status`, in bytes.
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
