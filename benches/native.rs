//! Native-build benchmark: how long kiln takes to turn a request of local-channel conda packages
//! into an image in its registry, and how that compares with the least work the cold case needs.
//!
//! It generates a conda channel (default: 30 `linux-64` packages of 8 MiB each, 240 MiB in all,
//! half pseudo-random bytes, half compressible text, as `.conda` archives; plus 2 more) and
//! serves it on 127.0.0.1, starts kiln (app and embedded registry) in-process on 127.0.0.1,
//! pushes a one-layer base image `bench/base:1` into that registry, and then measures, with a
//! `NativeBuilder` run as the queue runs it:
//!
//! 1. **cold**: the 30-package request from an empty data directory (no package cache, no layer
//!    cache): solve, download, install, write layers, push;
//! 2. **warm**: same data directory, a new combination (29 of the same packages and the 2
//!    others), so a new image;
//! 3. **repeated**: what a client sees for the first request again, the cache hit: one HEAD of
//!    the image's tag in the registry (median of 20);
//! 4. **lower bound** for the cold case: extracting the same 30 archives (from disk) and
//!    gzip-compressing (level 6, as kiln's layers) the same payload bytes once, nothing else;
//!    on one thread, and on one thread per CPU;
//!
//! and prints the wall times and kiln's cold time as a ratio to the lower bounds.
//!
//! ```sh
//! cargo bench --bench native
//! # other sizes
//! KILN_BENCH_PACKAGES=10 KILN_BENCH_PACKAGE_MIB=2 cargo bench --bench native
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then the packages are 16 KiB each, a
//! smoke test of every step that takes a few seconds.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{bench_base as base, bench_channel as channel, kiln_app};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use channel::{CHANNEL_NAME, Channel, Package};
use flate2::Compression;
use flate2::write::GzEncoder;
use kiln::build::native::NativeBuilder;
use kiln::config::Config;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::{Request, RequestInput};
use kiln::store::{SqliteStore, Store};
use kiln_app::{Build, Kiln};

const BASE_REPOSITORY: &str = "bench/base";
const BASE_TAG: &str = "1";
/// Packages only the warm request has.
const EXTRA_PACKAGES: usize = 2;
/// HEADs timed for the repeated request.
const HEADS: usize = 20;
/// The gzip level of kiln's layers.
const GZIP_LEVEL: u32 = 6;
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> Result<()> {
    let sizes = Sizes::from_env()?;
    let started = Instant::now();
    let channel = Channel::generate(&sizes.names(), sizes.package_bytes)?;
    eprintln!(
        "generated {} packages in {:.1} s",
        channel.packages.len(),
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let builds = runtime.block_on(measure_kiln(&sizes, &channel))?;
    drop(runtime);
    let cold_packages: Vec<&Package> = sizes
        .cold_names()
        .iter()
        .map(|name| channel.package(name))
        .collect::<Result<_>>()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let lower_serial = lower_bound(&cold_packages, 1)?;
    let lower_parallel = lower_bound(&cold_packages, cpus)?;
    print_report(&Report {
        sizes,
        cpus,
        cold_packages: &cold_packages,
        builds,
        lower_serial,
        lower_parallel,
    });
    Ok(())
}

/// How much work the benchmark does; overridable through the environment.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Packages in the cold request.
    packages: usize,
    /// Payload bytes per package.
    package_bytes: usize,
}

impl Sizes {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    /// as a smoke test that keeps the benchmark working, so then the packages are tiny.
    fn from_env() -> Result<Self> {
        let full = std::env::args().any(|arg| arg == "--bench");
        let package_bytes = match std::env::var("KILN_BENCH_PACKAGE_MIB") {
            Ok(v) => {
                v.parse::<usize>()
                    .with_context(|| format!("KILN_BENCH_PACKAGE_MIB={v:?} is not a count"))?
                    << 20
            }
            Err(_) if full => 8 << 20,
            Err(_) => 16 << 10,
        };
        let packages = match std::env::var("KILN_BENCH_PACKAGES") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("KILN_BENCH_PACKAGES={v:?} is not a count"))?,
            Err(_) => 30,
        };
        ensure!(
            packages >= 2 && package_bytes > 0,
            "KILN_BENCH_PACKAGES must be 2 or more and KILN_BENCH_PACKAGE_MIB 1 or more"
        );
        Ok(Sizes {
            packages,
            package_bytes,
        })
    }

    /// Every package of the channel: the cold request's, then the extras.
    fn names(&self) -> Vec<String> {
        let extras = (1..=EXTRA_PACKAGES).map(|i| format!("bench-extra-{i:02}"));
        self.cold_names().into_iter().chain(extras).collect()
    }

    /// The cold request: `bench-pkg-01` … `bench-pkg-NN`.
    fn cold_names(&self) -> Vec<String> {
        (1..=self.packages)
            .map(|i| format!("bench-pkg-{i:02}"))
            .collect()
    }

    /// The warm request: all but the last cold package, and the extras.
    fn warm_names(&self) -> Vec<String> {
        let names = self.names();
        let mut warm = names[..self.packages - 1].to_vec();
        warm.extend_from_slice(&names[self.packages..]);
        warm
    }
}

/// What was measured against kiln itself.
#[derive(Debug)]
struct KilnTimes {
    cold: Build,
    warm: Build,
    /// The median HEAD of the cold image's tag.
    repeated: Duration,
    /// The first HEAD, from a new client.
    repeated_first: Duration,
}

/// Starts the channel server and kiln, pushes the base, then times the three requests.
async fn measure_kiln(sizes: &Sizes, channel: &Channel) -> Result<KilnTimes> {
    let channel_url = channel::serve(channel.dir.clone()).await?;
    let kiln = Kiln::start().await?;
    base::push_base(&kiln.pusher()?, BASE_REPOSITORY, BASE_TAG).await?;
    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path().join("kiln.db")).await?);
    let builder = native_builder(&kiln, &channel_url, data.path(), store.clone())?;

    let cold = timed_build(&builder, &store, &kiln, &sizes.cold_names()).await?;
    let warm = timed_build(&builder, &store, &kiln, &sizes.warm_names()).await?;
    let (repeated_first, repeated) = time_cache_hit(&kiln, &cold).await?;
    Ok(KilnTimes {
        cold,
        warm,
        repeated,
        repeated_first,
    })
}

/// A native builder with its caches under `data`, as `kiln serve` lays them out, pushing to
/// `kiln` with the builder credential, recording package layers in `store`.
fn native_builder(
    kiln: &Kiln,
    channel_url: &str,
    data: &Path,
    store: Arc<dyn Store>,
) -> Result<NativeBuilder> {
    let config = Config {
        registry: kiln.address.to_string().parse()?,
        data_dir: data.to_owned(),
        channel_mirrors: BTreeMap::from([(CHANNEL_NAME.to_owned(), channel_url.to_owned())]),
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
    NativeBuilder::from_config(&config, kiln.pusher()?, store).map_err(anyhow::Error::msg)
}

/// Builds `entries` from the bench channel for linux/amd64 as a queue worker would, timing
/// `Backend::run`; fails, with the build log, unless the build succeeded.
async fn timed_build(
    builder: &NativeBuilder,
    store: &Arc<dyn Store>,
    kiln: &Kiln,
    entries: &[String],
) -> Result<Build> {
    let request = Request::try_from(RequestInput {
        entries: entries.to_vec(),
        channels: vec![CHANNEL_NAME.to_owned()],
        ..RequestInput::default()
    })?;
    let (build, _log) = kiln_app::timed_build(builder, store, kiln, &request).await?;
    Ok(build)
}

/// Times the cache-hit check a repeated request costs: a HEAD of the image's tag, from a new
/// anonymous client. Returns the first HEAD and the median of [`HEADS`].
async fn time_cache_hit(kiln: &Kiln, build: &Build) -> Result<(Duration, Duration)> {
    let (repository, tag) = build
        .image
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .with_context(|| format!("{} is not host/repository:tag", build.image))?;
    let client = RegistryClient::new(&kiln.address.to_string(), Auth::Anonymous, &[])?;
    let mut times = Vec::with_capacity(HEADS);
    for _ in 0..HEADS {
        let started = Instant::now();
        let digest = client.tag_digest(repository, tag).await?;
        times.push(started.elapsed());
        ensure!(
            digest.as_deref() == Some(build.digest.as_str()),
            "{} points at {digest:?}, not the built {}",
            build.image,
            build.digest
        );
    }
    let first = times[0];
    times.sort_unstable();
    Ok((first, times[HEADS / 2]))
}

/// The least the cold build must do: extract each archive (into a temporary directory) and
/// gzip its payload files, on `threads` threads, each archive on one thread. The compressed
/// bytes go nowhere. Archives are read from the channel directory, as a downloaded copy would
/// be read from the package cache.
fn lower_bound(packages: &[&Package], threads: usize) -> Result<Duration> {
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    channel::on_threads(threads, packages.len(), |i| {
        let package = packages[i];
        let unpacked = scratch.path().join(&package.name);
        rattler_package_streaming::fs::extract(&package.archive, &unpacked)
            .with_context(|| format!("extracting {}", package.archive.display()))?;
        gzip_payload(&unpacked)
    })?;
    Ok(started.elapsed())
}

/// Gzips every payload file under `unpacked` (all but `info/`) into one stream; returns the
/// bytes read.
fn gzip_payload(unpacked: &Path) -> Result<u64> {
    let mut encoder = GzEncoder::new(std::io::sink(), Compression::new(GZIP_LEVEL));
    let mut total = 0;
    for file in payload_files(unpacked)? {
        let bytes = std::fs::read(&file)?;
        encoder.write_all(&bytes)?;
        total += bytes.len() as u64;
    }
    encoder.finish()?;
    Ok(total)
}

/// The regular files under `dir`, except `dir/info`, sorted.
fn payload_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() && entry.path() != dir.join("info") {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Everything the report shows.
#[derive(Debug)]
struct Report<'a> {
    sizes: Sizes,
    cpus: usize,
    cold_packages: &'a [&'a Package],
    builds: KilnTimes,
    lower_serial: Duration,
    lower_parallel: Duration,
}

fn print_report(report: &Report<'_>) {
    let sizes = &report.sizes;
    let payload: u64 = report.cold_packages.iter().map(|p| p.payload_bytes).sum();
    let archives: u64 = report.cold_packages.iter().map(|p| p.archive_bytes).sum();
    let cold_what = format!(
        "{} packages: {:.1} MiB payload, {:.1} MiB .conda archives; image {:.1} MiB gzip",
        sizes.packages,
        payload as f64 / MIB,
        archives as f64 / MIB,
        report.builds.cold.image_bytes as f64 / MIB
    );
    let warm_what = format!(
        "{} cached + {EXTRA_PACKAGES} new packages, a new key; image {:.1} MiB gzip",
        sizes.packages - 1,
        report.builds.warm.image_bytes as f64 / MIB
    );
    let repeated_what = format!(
        "HEAD of the tag, median of {HEADS} (first, new client: {})",
        time(report.builds.repeated_first)
    );
    let parallel_case = format!("lower bound, {} threads", report.cpus);
    let lower_what = "extract the cold archives + gzip -6 their payload, nothing else";
    let rows = [
        (
            "kiln cold (empty caches)",
            report.builds.cold.elapsed,
            cold_what,
        ),
        (
            "kiln warm (new combination)",
            report.builds.warm.elapsed,
            warm_what,
        ),
        (
            "kiln repeated (cache hit)",
            report.builds.repeated,
            repeated_what,
        ),
        (
            "lower bound, 1 thread",
            report.lower_serial,
            lower_what.to_owned(),
        ),
        (
            parallel_case.as_str(),
            report.lower_parallel,
            format!("{lower_what}; one archive per thread"),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nnative build benchmark: {} + {EXTRA_PACKAGES} packages of {:.2} MiB \
         (half random, half text) from a local channel on 127.0.0.1",
        sizes.packages,
        sizes.package_bytes as f64 / MIB
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs (nproc); data under the temp directory",
        report.cpus
    );
    let _ = writeln!(out, "image: {}\n", report.builds.cold.image);
    let _ = writeln!(out, "| {:<28} | {:>10} | notes", "case", "wall time");
    let _ = writeln!(out, "|{:-<30}|{:->12}|{:-<7}", "", ":", "");
    for (case, elapsed, notes) in rows {
        let _ = writeln!(out, "| {case:<28} | {:>10} | {notes}", time(elapsed));
    }
    let cold = report.builds.cold.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "\nkiln cold / lower bound: {:.2}x (1 thread), {:.2}x ({} threads)",
        cold / report.lower_serial.as_secs_f64(),
        cold / report.lower_parallel.as_secs_f64(),
        report.cpus
    );
    print!("{out}");
}

/// A duration as seconds, or milliseconds below one second.
fn time(elapsed: Duration) -> String {
    if elapsed < Duration::from_secs(1) {
        format!("{:.2} ms", elapsed.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", elapsed.as_secs_f64())
    }
}
