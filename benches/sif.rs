//! SIF benchmark: how long kiln's native builder takes to turn a pip request of a few hundred
//! MB into a Singularity SIF, step by step, and how that compares with `mksquashfs` alone on
//! the same root file system, the one step no SIF build can skip.
//!
//! It starts kiln (app and embedded registry) in-process on 127.0.0.1, puts kiln's Debian
//! bookworm base with python3 and pip into that registry (bootstrapped once per `target/` with
//! mmdebstrap, which takes minutes, and replayed in seconds after), and then, for
//! `pip:numpy==2.1.3 pip:pandas pip:scipy` on linux/amd64 (base ~150 MB plus ~250 MB of
//! installed wheels), with a `NativeBuilder` run as the queue runs it (`Backend::run`):
//!
//! 1. **docker warm-up**: the docker image of the same request, from an empty data directory,
//!    so that the wheel downloads, the uv cache and the layer cache are warm (timed and shown,
//!    not the subject);
//! 2. **SIF after docker**: the SIF of the request, same data directory: resolve, install and
//!    layers hit the caches; the base's layer blobs are downloaded from kiln's registry for the
//!    first time (inside the flatten step);
//! 3. **SIF rebuild**: the same SIF again (a new attempt of the same build), everything cached:
//!    the headline numbers;
//!
//! then downloads the SIF from kiln's registry as a client would (the ORAS manifest at the
//! image's tag, whose one layer is the SIF), takes its squashfs partition out (from the SIF
//! descriptor table, read here), `unsquashfs`es it into a tree and times
//! `kiln::assemble::squashfs::mksquashfs` (kiln's own flags) on that tree alone, three times.
//!
//! It prints each build's wall time and its steps as its log times them (resolve, fetch and
//! install, write layers, flatten, mksquashfs, write the SIF, push), what the log does not
//! account for (for the SIF builds split, from when each log line appeared while the log was
//! read every 20 ms, into before the first step, between steps and after the last one, where
//! the builder removes its work directory), and the ratios of the whole SIF build, and of its
//! SIF-only steps (flatten + mksquashfs + write + push), to mksquashfs alone. Both mksquashfs
//! runs read a tree that was just written (page cache, not disk); the machine's load average
//! is printed too, since other work competes for the CPUs mksquashfs compresses on.
//!
//! ```sh
//! cargo bench --bench sif
//! ```
//!
//! It needs network access to PyPI, `uv` on PATH and squashfs-tools (`mksquashfs`,
//! `unsquashfs`, 4.5 or later).
//!
//! `cargo test --all-targets` runs it without `--bench`: then the request is `pip:six==1.16.0`
//! and mksquashfs alone runs once, a smoke test of every step that takes well under a minute
//! once the base is saved.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{debian_base, kiln_app, pip_builder};

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kiln::assemble::squashfs::mksquashfs;
use kiln::assemble::{HashWriter, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_SIF_LAYER};
use kiln::build::native::NativeBuilder;
use kiln::build::{Backend, BuildLog};
use kiln::config::Config;
use kiln::plan::ImagePlan;
use kiln::spec::{Request, RequestInput};
use kiln::store::{SqliteStore, Store};
use kiln_app::{Build, Kiln};
use pip_builder::native_builder;

/// The repository of the Debian base in kiln's registry.
const BASE_REPOSITORY: &str = "kiln/base/debian";
/// The one platform built.
const PLATFORM: &str = "linux/amd64";
const MB: f64 = 1e6;
/// How often a SIF build's log is read while it runs, to see when each line appears.
const LOG_POLL: Duration = Duration::from_millis(20);

fn main() -> Result<()> {
    let workload = Workload::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let times = runtime.block_on(measure(&workload))?;
    drop(runtime);
    print_report(&workload, &times);
    Ok(())
}

/// What is built and how often mksquashfs alone runs.
#[derive(Debug)]
struct Workload {
    /// Run by `cargo bench` (`--bench`), not as the smoke test of `cargo test`.
    full: bool,
    /// The request's entries.
    entries: Vec<&'static str>,
    /// Runs of mksquashfs alone; the median is compared.
    alone_runs: usize,
}

impl Workload {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    /// as a smoke test that keeps the benchmark working, so then the request is tiny.
    fn from_args() -> Self {
        let full = std::env::args().any(|arg| arg == "--bench");
        if full {
            Workload {
                full,
                entries: vec!["pip:numpy==2.1.3", "pip:pandas", "pip:scipy"],
                alone_runs: 3,
            }
        } else {
            Workload {
                full,
                entries: vec!["pip:six==1.16.0"],
                alone_runs: 1,
            }
        }
    }

    /// The request in `format` (`docker` or `sif`) for [`PLATFORM`].
    fn request(&self, format: &str) -> Result<Request> {
        Ok(Request::try_from(RequestInput {
            entries: self.entries.iter().map(|entry| entry.to_string()).collect(),
            platforms: vec![PLATFORM.to_owned()],
            format: Some(format.to_owned()),
            ..RequestInput::default()
        })?)
    }
}

/// Everything measured.
#[derive(Debug)]
struct Times {
    docker: KilnBuild,
    sif_first: KilnBuild,
    sif: KilnBuild,
    /// The SIF as downloaded, and its squashfs partition.
    sif_bytes: u64,
    partition_bytes: u64,
    tree: TreeStats,
    unsquashfs: Duration,
    /// mksquashfs alone on the unsquashed tree: each run's time.
    alone: Vec<Duration>,
    alone_bytes: u64,
    /// mksquashfs alone wrote byte for byte the SIF's partition.
    alone_identical: bool,
    /// The one-minute load average before the first build and after the last mksquashfs.
    load: (String, String),
}

/// One timed kiln build and the timed steps of its log.
#[derive(Debug)]
struct KilnBuild {
    build: Build,
    steps: Vec<(Step, f64)>,
    /// Timed log lines that are none of [`Step`].
    other: Vec<String>,
    /// Where the time the log does not account for went (SIF builds, whose log is watched).
    gaps: Option<Gaps>,
}

/// The wall time between a build's timed steps, from when each log line appeared: a line
/// `… in d s` that appeared at `t` covers `t - d .. t`.
#[derive(Debug, Clone, Default)]
struct Gaps {
    /// From the start of `Backend::run` to the start of the first step.
    before: f64,
    /// Between the end of one step and the start of the next, summed.
    between: f64,
    /// From the last line to the end of `Backend::run` (cleanup).
    after: f64,
    /// The largest gap between steps, and the line after it.
    largest: (f64, String),
}

impl Gaps {
    /// The gaps of a build that took `elapsed` seconds, from its log lines and the seconds
    /// since its start at which each appeared.
    fn of(lines: &[(f64, String)], elapsed: f64) -> Gaps {
        let mut gaps = Gaps::default();
        let mut previous = None;
        for (at, line) in lines {
            let start = at - logged_seconds(line).unwrap_or(0.0);
            match previous {
                None => gaps.before = start,
                Some(end) => {
                    let gap = start - end;
                    gaps.between += gap;
                    if gap > gaps.largest.0 {
                        gaps.largest = (gap, line.clone());
                    }
                }
            }
            previous = Some(*at);
        }
        gaps.after = elapsed - previous.unwrap_or(0.0);
        gaps
    }
}

impl KilnBuild {
    /// The seconds of `step` in the log, if it has that step.
    fn step(&self, step: Step) -> Option<f64> {
        self.steps
            .iter()
            .filter(|(s, _)| *s == step)
            .map(|(_, seconds)| seconds)
            .copied()
            .reduce(|a, b| a + b)
    }

    /// The seconds of `steps`, all of which the log must have.
    fn steps_sum(&self, steps: &[Step]) -> f64 {
        steps.iter().filter_map(|step| self.step(*step)).sum()
    }

    /// The wall time not covered by a timed log line.
    fn unaccounted(&self) -> f64 {
        let logged: f64 = self.steps.iter().map(|(_, seconds)| seconds).sum();
        self.build.elapsed.as_secs_f64() - logged
    }
}

/// A timed step of a native build's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolve,
    Install,
    Layers,
    Flatten,
    Mksquashfs,
    WriteSif,
    Push,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Resolve,
        Step::Install,
        Step::Layers,
        Step::Flatten,
        Step::Mksquashfs,
        Step::WriteSif,
        Step::Push,
    ];
    /// The steps only a SIF build has, and its push.
    const SIF_ONLY: [Step; 4] = [Step::Flatten, Step::Mksquashfs, Step::WriteSif, Step::Push];

    /// Which step a timed log line (platform prefix removed) reports.
    fn of(line: &str) -> Option<Step> {
        let step = if line.starts_with("resolved ") {
            Step::Resolve
        } else if line.contains(" installed and compressed into their layers") {
            Step::Install
        } else if line.starts_with("wrote the SIF") {
            Step::WriteSif
        } else if line.contains(" bytes compressed) from ") {
            Step::Layers
        } else if line.starts_with("flattened ") {
            Step::Flatten
        } else if line.starts_with("mksquashfs wrote ") {
            Step::Mksquashfs
        } else if line.starts_with("pushed ") {
            Step::Push
        } else {
            return None;
        };
        Some(step)
    }

    fn label(self) -> &'static str {
        match self {
            Step::Resolve => "resolve (uv)",
            Step::Install => "fetch + install + compress wheels",
            Step::Layers => "put layers together",
            Step::Flatten => "flatten (+ base blobs)",
            Step::Mksquashfs => "mksquashfs",
            Step::WriteSif => "write the SIF",
            Step::Push => "push",
        }
    }
}

/// What the unsquashed root file system holds.
#[derive(Debug, Default, Clone, Copy)]
struct TreeStats {
    files: u64,
    directories: u64,
    symlinks: u64,
    /// Apparent size of the regular files (hard links counted each time).
    bytes: u64,
}

/// Starts kiln, puts the base in its registry, builds the docker image and the SIF twice, then
/// times mksquashfs alone on the SIF's tree.
async fn measure(workload: &Workload) -> Result<Times> {
    let load_before = load_average();
    let kiln = Kiln::start().await?;
    let started = Instant::now();
    let client = kiln.pusher()?;
    debian_base::push_debian_python_base(&client, BASE_REPOSITORY).await;
    eprintln!(
        "the Debian base is in kiln's registry after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let base = format!(
        "{}/{BASE_REPOSITORY}:{}",
        kiln.address,
        debian_base::DEBIAN_TAG
    );

    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path().join("kiln.db")).await?);
    let builder = native_builder(&kiln, &base, data.path(), store.clone())?;
    let docker = docker_build(&builder, &store, &kiln, &workload.request("docker")?).await?;
    let plan = sif_plan(&kiln, &workload.request("sif")?)?;
    let sif_first = sif_build(&builder, &store, &plan).await?;
    let sif = sif_build(&builder, &store, &plan).await?;

    let work = tempfile::tempdir()?;
    let sif_path = work.path().join("image.sif");
    let sif_bytes = download_sif(&kiln, &plan, &sif_path).await?;
    ensure!(
        sif_bytes == sif.build.image_bytes,
        "the downloaded SIF has {sif_bytes} bytes, the build reported {}",
        sif.build.image_bytes
    );
    let partition = work.path().join("partition.squashfs");
    let partition_bytes = extract_partition(&sif_path, &partition)?;
    let tree = work.path().join("tree");
    let started = Instant::now();
    run(std::process::Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-d"])
        .arg(&tree)
        .arg(&partition))?;
    let unsquashfs = started.elapsed();
    let tree_stats = tree_stats(&tree)?;

    let out = work.path().join("alone.squashfs");
    let mut alone = Vec::new();
    let mut alone_bytes = 0;
    for attempt in 1..=workload.alone_runs {
        let stats = mksquashfs(&tree, &out)
            .await
            .map_err(|err| anyhow::Error::new(err).context("mksquashfs alone failed"))?;
        eprintln!(
            "mksquashfs alone, run {attempt}: {} bytes in {:.2} s",
            stats.size,
            stats.duration.as_secs_f64()
        );
        alone.push(stats.duration);
        alone_bytes = stats.size;
    }
    let alone_identical = sha256_file(&out)? == sha256_file(&partition)?;
    Ok(Times {
        docker,
        sif_first,
        sif,
        sif_bytes,
        partition_bytes,
        tree: tree_stats,
        unsquashfs,
        alone,
        alone_bytes,
        alone_identical,
        load: (load_before, load_average()),
    })
}

/// The one-minute load average, from `/proc/loadavg`: other work on the machine competes for
/// the CPUs mksquashfs uses.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The docker warm-up build, with the timed steps of its log.
async fn docker_build(
    builder: &NativeBuilder,
    store: &Arc<dyn Store>,
    kiln: &Kiln,
    request: &Request,
) -> Result<KilnBuild> {
    let (build, log) = kiln_app::timed_build(builder, store, kiln, request).await?;
    let (steps, other) = parse_steps(&log);
    Ok(KilnBuild {
        build,
        steps,
        other,
        gaps: None,
    })
}

/// The plan of a one-platform sif request.
fn sif_plan(kiln: &Kiln, request: &Request) -> Result<ImagePlan> {
    let config = Config {
        registry: kiln.address.to_string().parse()?,
        ..Config::default()
    };
    let mut plans = ImagePlan::for_request(request, &config.recipe_images(), &config.registry)?;
    ensure!(
        plans.len() == 1,
        "a one-platform sif request has one plan, not {}",
        plans.len()
    );
    Ok(plans.remove(0))
}

/// Builds the SIF of `plan` as a queue worker would (a record from the store with the plan's
/// own request and Singularity definition, a log into it, the outcome recorded), timing
/// `Backend::run`; fails, with the build log, unless the build succeeded and its log times
/// every SIF step. The same plan again is a new attempt: it rebuilds.
async fn sif_build(
    builder: &NativeBuilder,
    store: &Arc<dyn Store>,
    plan: &ImagePlan,
) -> Result<KilnBuild> {
    let image = plan.image.to_string();
    let submitted = store.submit(plan.new_build()).await?;
    let record = kiln_app::claim(store.as_ref(), &submitted.build.id).await?;
    let log = BuildLog::new(store.clone(), record.id.clone());
    eprintln!(
        "building {image} ({} packages)",
        plan.request.entries().len()
    );
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_log(
        store.clone(),
        record.id.clone(),
        started,
        done.clone(),
    ));
    let outcome = builder.run(&record, &log).await;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    let stamped = watcher.await??;
    let (build, text) =
        kiln_app::finished_build(store, &record.id, image, outcome, elapsed).await?;
    let (steps, other) = parse_steps(&text);
    let build = KilnBuild {
        build,
        steps,
        other,
        gaps: Some(Gaps::of(&stamped, elapsed.as_secs_f64())),
    };
    let missing: Vec<&str> = Step::ALL
        .iter()
        .filter(|step| build.step(**step).is_none())
        .map(|step| step.label())
        .collect();
    ensure!(
        missing.is_empty(),
        "the SIF build's log times no {missing:?}:\n{text}"
    );
    Ok(build)
}

/// The timed lines of a build log (`linux/amd64: … in 1.2 s`): the known steps with their
/// seconds, and the other lines as they are.
fn parse_steps(log: &str) -> (Vec<(Step, f64)>, Vec<String>) {
    let mut steps = Vec::new();
    let mut other = Vec::new();
    for line in log.lines() {
        let Some(line) = line.strip_prefix(&format!("{PLATFORM}: ")) else {
            continue;
        };
        match (Step::of(line), logged_seconds(line)) {
            (Some(step), Some(seconds)) => steps.push((step, seconds)),
            (None, Some(_)) => other.push(line.to_owned()),
            (_, None) => {}
        }
    }
    (steps, other)
}

/// The seconds a log line (`… in 1.2 s`) times, if it times something.
fn logged_seconds(line: &str) -> Option<f64> {
    line.strip_suffix(" s")
        .and_then(|rest| rest.rsplit_once(" in "))
        .and_then(|(_, seconds)| seconds.parse().ok())
}

/// Reads the log of build `id` while it runs, every [`LOG_POLL`], until `done` is set; returns
/// its lines with the seconds since `started` at which each was first seen.
async fn watch_log(
    store: Arc<dyn Store>,
    id: String,
    started: Instant,
    done: Arc<AtomicBool>,
) -> Result<Vec<(f64, String)>> {
    let mut offset = 0;
    let mut pending = String::new();
    let mut lines = Vec::new();
    loop {
        let finished = done.load(Ordering::Acquire);
        let slice = store.read_log(&id, offset).await?;
        let at = started.elapsed().as_secs_f64();
        offset = slice.next_offset;
        pending.push_str(&slice.text);
        while let Some(end) = pending.find('\n') {
            lines.push((at, pending[..end].to_owned()));
            pending.drain(..=end);
        }
        if finished {
            return Ok(lines);
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}

/// Downloads the SIF of `plan` as a client would: the ORAS manifest at the image's tag, then
/// its one layer, the SIF, into `out`. Returns its size.
async fn download_sif(kiln: &Kiln, plan: &ImagePlan, out: &Path) -> Result<u64> {
    let client = kiln.pusher()?;
    let repository = plan.image.repository();
    let (manifest, _) = client
        .pull_manifest(repository, plan.image.tag(), &[MEDIA_TYPE_MANIFEST])
        .await?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the ORAS manifest has no layers")?;
    let [layer] = layers.as_slice() else {
        bail!("the ORAS manifest has {} layers, not one", layers.len());
    };
    ensure!(
        layer["mediaType"] == MEDIA_TYPE_SIF_LAYER,
        "the ORAS manifest's layer is not a SIF: {layer}"
    );
    let digest = layer["digest"]
        .as_str()
        .context("the SIF layer has no digest")?;
    let file = tokio::fs::File::create(out).await?;
    client.pull_blob(repository, digest, file).await?;
    Ok(std::fs::metadata(out)?.len())
}

/// Copies the primary system partition (squashfs) of the SIF at `sif` into `out`, located from
/// the SIF's descriptor table (sylabs/sif v2 layout: a packed 128-byte little-endian global
/// header, then 585-byte descriptors); returns its size.
fn extract_partition(sif: &Path, out: &Path) -> Result<u64> {
    /// `DataPartition`, the partition's data type.
    const DATA_PARTITION: i32 = 0x4004;
    /// File system type squashfs, partition type primary system.
    const FS_SQUASH: i32 = 1;
    const PART_PRIM_SYS: i32 = 2;
    const DESCRIPTOR_LEN: usize = 585;

    let mut file = std::fs::File::open(sif)?;
    let mut header = [0u8; 128];
    file.read_exact(&mut header)?;
    ensure!(
        &header[32..42] == b"SIF_MAGIC\0",
        "{} is no SIF",
        sif.display()
    );
    let field = |bytes: &[u8], at: usize| -> Result<i64> {
        Ok(i64::from_le_bytes(bytes[at..at + 8].try_into()?))
    };
    let total = usize::try_from(field(&header, 88)?)?;
    let table_offset = u64::try_from(field(&header, 96)?)?;
    let mut table = vec![0u8; total * DESCRIPTOR_LEN];
    file.seek(SeekFrom::Start(table_offset))?;
    file.read_exact(&mut table)?;
    let int32 = |bytes: &[u8], at: usize| -> Result<i32> {
        Ok(i32::from_le_bytes(bytes[at..at + 4].try_into()?))
    };
    let mut partitions = Vec::new();
    for descriptor in table.chunks_exact(DESCRIPTOR_LEN) {
        // DataType i32, Used bool, ID, GroupID, LinkedID u32, Offset, Size … i64, Name
        // [128]u8, Extra [384]u8 (for a partition: Fstype i32, Parttype i32, Arch [3]u8).
        let used = descriptor[4] == 1;
        if used
            && int32(descriptor, 0)? == DATA_PARTITION
            && int32(descriptor, 201)? == FS_SQUASH
            && int32(descriptor, 205)? == PART_PRIM_SYS
        {
            partitions.push((field(descriptor, 17)?, field(descriptor, 25)?));
        }
    }
    let [(offset, size)] = partitions.as_slice() else {
        bail!(
            "{} has {} squashfs system partitions, not one",
            sif.display(),
            partitions.len()
        );
    };
    let size = u64::try_from(*size)?;
    file.seek(SeekFrom::Start(u64::try_from(*offset)?))?;
    let mut partition = std::fs::File::create(out)?;
    let copied = std::io::copy(&mut (&mut file).take(size), &mut partition)?;
    ensure!(copied == size, "the SIF ends inside its partition");
    let mut magic = [0u8; 4];
    std::fs::File::open(out)?.read_exact(&mut magic)?;
    ensure!(&magic == b"hsqs", "the partition is no squashfs");
    Ok(size)
}

/// Counts what the tree at `root` holds.
fn tree_stats(root: &Path) -> Result<TreeStats> {
    let mut stats = TreeStats::default();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        stats.directories += 1;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.path().symlink_metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_symlink() {
                stats.symlinks += 1;
            } else {
                stats.files += 1;
                stats.bytes += metadata.len();
            }
        }
    }
    Ok(stats)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = HashWriter::new(std::io::sink());
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finish().1)
}

/// Runs `command`; fails with its output unless it succeeds.
fn run(command: &mut std::process::Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn print_report(workload: &Workload, times: &Times) {
    let builds = [
        ("docker warm-up", &times.docker),
        ("SIF after docker", &times.sif_first),
        ("SIF rebuild", &times.sif),
    ];
    let alone = median(&times.alone);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nSIF build benchmark{}: {} for {PLATFORM} from PyPI, on kiln's Debian bookworm \
         base (python3 + pip)",
        if workload.full { "" } else { " (smoke)" },
        workload.entries.join(" ")
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs (nproc; mksquashfs -processors {0}), load average {} before, {} \
         after; data under the temp directory; network to PyPI through this machine's proxy",
        std::thread::available_parallelism().map_or(1, usize::from),
        times.load.0,
        times.load.1,
    );
    let _ = writeln!(
        out,
        "warm caches: the docker image of the same request is built first (same data \
         directory), then the SIF twice; the second SIF build is the headline"
    );
    let _ = writeln!(
        out,
        "image: {} ({}); SIF {:.1} MB, squashfs partition {:.1} MB; root file system {:.1} MB \
         in {} files, {} directories, {} symlinks",
        times.sif.build.image,
        times.sif.build.digest,
        times.sif_bytes as f64 / MB,
        times.partition_bytes as f64 / MB,
        times.tree.bytes as f64 / MB,
        times.tree.files,
        times.tree.directories,
        times.tree.symlinks,
    );
    let _ = writeln!(
        out,
        "the two SIF builds gave {}; docker image {:.1} MB gzip\n",
        if times.sif_first.build.digest == times.sif.build.digest {
            "the same digest"
        } else {
            "DIFFERENT digests"
        },
        times.docker.build.image_bytes as f64 / MB,
    );

    let _ = write!(out, "| {:<26} |", "step (from the build log)");
    for (name, _) in builds {
        let _ = write!(out, " {name:>16} |");
    }
    let _ = writeln!(out);
    let _ = write!(out, "|{:-<28}|", "");
    for _ in builds {
        let _ = write!(out, "{:->18}|", ":");
    }
    let _ = writeln!(out);
    // The log rounds to 0.1 s, so a gap can come out a few hundredths below zero: shown as 0.
    let cell = |seconds: Option<f64>| {
        seconds.map_or_else(
            || "-".to_owned(),
            |s| format!("{:.1} s", if s.abs() < 0.05 { 0.0 } else { s }),
        )
    };
    for step in Step::ALL {
        let _ = write!(out, "| {:<26} |", step.label());
        for (_, build) in builds {
            let _ = write!(out, " {:>16} |", cell(build.step(step)));
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| {:<26} |", "not in the log");
    for (_, build) in builds {
        let _ = write!(out, " {:>16} |", cell(Some(build.unaccounted())));
    }
    let _ = writeln!(out);
    let gap_rows = [
        (
            "  before the first step",
            builds.map(|(_, b)| b.gaps.as_ref().map(|g| g.before)),
        ),
        (
            "  between steps",
            builds.map(|(_, b)| b.gaps.as_ref().map(|g| g.between)),
        ),
        (
            "  after the last (cleanup)",
            builds.map(|(_, b)| b.gaps.as_ref().map(|g| g.after)),
        ),
    ];
    for (label, gaps) in gap_rows {
        let _ = write!(out, "| {label:<26} |");
        for gap in gaps {
            let _ = write!(out, " {:>16} |", cell(gap));
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| {:<26} |", "**whole build (wall)**");
    for (_, build) in builds {
        let _ = write!(out, " {:>16} |", seconds(build.build.elapsed));
    }
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "\nmksquashfs alone (kiln::assemble::squashfs::mksquashfs, kiln's flags) on the SIF's \
         tree (unsquashfs took {}): {} -> median {}; {:.1} MB, {} the SIF's partition",
        seconds(times.unsquashfs),
        times
            .alone
            .iter()
            .map(|d| seconds(*d))
            .collect::<Vec<_>>()
            .join(", "),
        seconds(alone),
        times.alone_bytes as f64 / MB,
        if times.alone_identical {
            "byte for byte"
        } else {
            "NOT byte for byte"
        },
    );
    let _ = writeln!(
        out,
        "\n| {:<45} | {:>16} | {:>11} |",
        "ratio to mksquashfs alone", "SIF after docker", "SIF rebuild"
    );
    let _ = writeln!(out, "|{:-<47}|{:->18}|{:->13}|", "", ":", ":");
    let alone = alone.as_secs_f64();
    let whole = |build: &KilnBuild| build.build.elapsed.as_secs_f64();
    let sif_only = |build: &KilnBuild| build.steps_sum(&Step::SIF_ONLY);
    let squash = |build: &KilnBuild| build.steps_sum(&[Step::Mksquashfs]);
    let rows = [
        (
            "whole build / alone",
            whole(&times.sif_first),
            whole(&times.sif),
        ),
        (
            "(flatten + mksquashfs + write + push) / alone",
            sif_only(&times.sif_first),
            sif_only(&times.sif),
        ),
        (
            "mksquashfs in the build / alone",
            squash(&times.sif_first),
            squash(&times.sif),
        ),
    ];
    for (label, first, rebuild) in rows {
        let _ = writeln!(
            out,
            "| {label:<45} | {:>15.2}x | {:>10.2}x |",
            first / alone,
            rebuild / alone,
        );
    }
    for (name, build) in builds {
        if let Some(gaps) = &build.gaps
            && gaps.largest.0 >= 0.5
        {
            let _ = writeln!(
                out,
                "{name}: the largest gap between steps, {:.1} s, ends at \"{}\"",
                gaps.largest.0, gaps.largest.1
            );
        }
    }
    let others: Vec<&String> = builds.iter().flat_map(|(_, build)| &build.other).collect();
    if !others.is_empty() {
        let _ = writeln!(out, "\nother timed log lines:");
        for line in others {
            let _ = writeln!(out, "  {line}");
        }
    }
    print!("{out}");
}

/// The median of `durations` (the lower middle one of an even count).
fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// A duration in seconds.
fn seconds(elapsed: Duration) -> String {
    format!("{:.2} s", elapsed.as_secs_f64())
}
