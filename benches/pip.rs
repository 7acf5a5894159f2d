//! pip benchmark: how long kiln's native builder takes to turn a pip-only request into an
//! image, with wheels from real PyPI, and how that compares with `buildah bud` of the
//! Dockerfile kiln generates for the same request.
//!
//! It starts kiln (app and embedded registry) in-process on 127.0.0.1, puts kiln's Debian
//! bookworm base with python3 and pip into that registry (bootstrapped once per `target/`
//! with mmdebstrap, which takes minutes, and replayed in seconds after), and then measures,
//! for linux/amd64, with a `NativeBuilder` run as the queue runs it (`Backend::run`, the time
//! of the whole build: resolve with uv, download wheels, install, write layers, push):
//!
//! 1. **kiln cold**: `pip:numpy==2.1.3 pip:pandas pip:requests==2.32.3` from an empty data
//!    directory (no uv cache, no wheel cache, no layer cache);
//! 2. **kiln warm**: the same request again, same data directory: a real rebuild (a new
//!    attempt of the same build), everything cached;
//! 3. **kiln new combination**: `pip:numpy==2.1.3 pip:pandas`, same data directory: every
//!    wheel cached, a new image;
//! 4. **buildah**: `buildah bud --isolation=chroot` (as kiln runs it: no layer cache) of the
//!    generated pip-only Dockerfile for the request of 1, and for that of 3, on the same base
//!    (copied into buildah's local storage beforehand, under the name its `FROM` uses). Its
//!    `pip install --no-cache-dir` downloads everything every time, so buildah has no warm
//!    path: its one time per request is compared with kiln's cold, warm and new-combination
//!    builds.
//!
//! It prints the wall times, the ratios buildah / kiln, the image sizes (compressed, base
//! included; buildah's as `buildah push` to an OCI layout compresses it, base layers
//! recompressed) and kiln's steps from its build logs. pip in the buildah build also compiles
//! `.pyc` files, which kiln's installer does not write: part of the difference in time and size.
//! The built buildah images, and the base's copy in local storage, are removed afterwards.
//!
//! ```sh
//! cargo bench --bench pip
//! ```
//!
//! It needs network access to PyPI, `uv` on PATH, and buildah and skopeo. On a machine behind
//! a TLS-intercepting proxy the bundle `/etc/ssl/certs/ca-certificates.crt` is mounted into the
//! buildah build for pip.
//!
//! `cargo test --all-targets` runs it without `--bench`: then the request is `pip:six==1.16.0`
//! and the new combination `pip:idna==3.10 pip:six==1.16.0`, a smoke test of every step
//! (buildah included) that takes well under a minute once the base is saved.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{debian_base, kiln_app, pip_builder};

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kiln::build::buildah::Buildah;
use kiln::build::native::NativeBuilder;
use kiln::config::{BuildSettings, Config};
use kiln::plan::ImagePlan;
use kiln::spec::{Request, RequestInput};
use kiln::store::{SqliteStore, Store};
use kiln_app::{Build, Kiln};
use pip_builder::native_builder;
use tokio::process::Command;

/// The repository of the Debian base in kiln's registry.
const BASE_REPOSITORY: &str = "kiln/base/debian";
/// The CA bundle mounted for pip in the buildah build (this machine's proxy re-signs TLS).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> Result<()> {
    let requests = Requests::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let times = runtime.block_on(measure(&requests))?;
    drop(runtime);
    print_report(&requests, &times);
    Ok(())
}

/// The two requests measured.
#[derive(Debug)]
struct Requests {
    /// Run by `cargo bench` (`--bench`), not as the smoke test of `cargo test`.
    full: bool,
    /// The cold and warm request.
    request: Vec<&'static str>,
    /// The new combination of cached wheels.
    combination: Vec<&'static str>,
}

impl Requests {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    /// as a smoke test that keeps the benchmark working, so then the requests are tiny.
    fn from_args() -> Self {
        let full = std::env::args().any(|arg| arg == "--bench");
        if full {
            Requests {
                full,
                request: vec!["pip:numpy==2.1.3", "pip:requests==2.32.3", "pip:pandas"],
                combination: vec!["pip:numpy==2.1.3", "pip:pandas"],
            }
        } else {
            Requests {
                full,
                request: vec!["pip:six==1.16.0"],
                combination: vec!["pip:six==1.16.0", "pip:idna==3.10"],
            }
        }
    }
}

/// Everything measured.
#[derive(Debug)]
struct Times {
    cold: KilnBuild,
    warm: KilnBuild,
    combination: KilnBuild,
    buildah: BuildahBuild,
    buildah_combination: BuildahBuild,
}

/// One timed kiln build and the timed steps of its log.
#[derive(Debug)]
struct KilnBuild {
    build: Build,
    steps: Vec<String>,
}

/// One timed `buildah bud`.
#[derive(Debug)]
struct BuildahBuild {
    elapsed: Duration,
    /// Compressed size of the image, base included, as `buildah push` writes it.
    image_bytes: u64,
}

/// Starts kiln, puts the base in its registry, then times the kiln builds and the buildah
/// builds.
async fn measure(requests: &Requests) -> Result<Times> {
    let kiln = Kiln::start().await?;
    let started = Instant::now();
    debian_base::push_debian_python_base(&kiln.pusher()?, BASE_REPOSITORY).await;
    eprintln!(
        "the Debian base is in kiln's registry after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let base = format!(
        "{}/{BASE_REPOSITORY}:{}",
        kiln.address,
        debian_base::DEBIAN_TAG
    );
    let request = pip_request(&requests.request)?;
    let combination = pip_request(&requests.combination)?;

    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path().join("kiln.db")).await?);
    let builder = native_builder(&kiln, &base, data.path(), store.clone())?;
    let cold = kiln_build(&builder, &store, &kiln, &request).await?;
    let warm = kiln_build(&builder, &store, &kiln, &request).await?;
    let combination_build = kiln_build(&builder, &store, &kiln, &combination).await?;

    copy_base_to_local_storage(&base).await?;
    let buildah = buildah_build(&kiln, &base, &request).await;
    let buildah_combination = match &buildah {
        Ok(_) => buildah_build(&kiln, &base, &combination).await,
        Err(_) => Err(anyhow::anyhow!("not run")),
    };
    let removed = Buildah::new(&BuildSettings::default())
        .remove_image(&base)
        .await;
    if let Err(err) = removed {
        eprintln!("removing {base} from local storage failed: {err}");
    }
    Ok(Times {
        cold,
        warm,
        combination: combination_build,
        buildah: buildah?,
        buildah_combination: buildah_combination?,
    })
}

/// A pip-only request for linux/amd64.
fn pip_request(entries: &[&str]) -> Result<Request> {
    Ok(Request::try_from(RequestInput {
        entries: entries.iter().map(|entry| entry.to_string()).collect(),
        ..RequestInput::default()
    })?)
}

/// One timed build of `request`, with the lines of its log that time a step.
async fn kiln_build(
    builder: &NativeBuilder,
    store: &Arc<dyn Store>,
    kiln: &Kiln,
    request: &Request,
) -> Result<KilnBuild> {
    let (build, log) = kiln_app::timed_build(builder, store, kiln, request).await?;
    let steps = log
        .lines()
        .filter_map(|line| line.strip_prefix("linux/amd64: "))
        .filter(|line| line.ends_with(" s"))
        .map(str::to_owned)
        .collect();
    Ok(KilnBuild { build, steps })
}

/// Copies the base from kiln's registry into buildah's local storage under the same name, so
/// the Dockerfile's `FROM` needs no pull.
async fn copy_base_to_local_storage(base: &str) -> Result<()> {
    let copied = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{base}"))
        .arg(format!("containers-storage:{base}"))
        .output()
        .await
        .context("cannot run skopeo")?;
    ensure!(
        copied.status.success(),
        "skopeo copy of {base}: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    Ok(())
}

/// Builds kiln's pip-only Dockerfile for `request` on `base` with buildah, timing the
/// `buildah bud`; measures the image and removes it.
async fn buildah_build(kiln: &Kiln, base: &str, request: &Request) -> Result<BuildahBuild> {
    let mut config = Config {
        registry: kiln.address.to_string().parse()?,
        ..Config::default()
    };
    config.base.python.image = Some(base.parse()?);
    config.build = BuildSettings {
        ca_bundle: Some(CA_BUNDLE.into()),
        ..BuildSettings::default()
    };
    let plan = ImagePlan::for_request(request, &config.recipe_images(), &config.registry)?
        .into_iter()
        .next()
        .context("a docker request has one image")?;
    let dockerfile_text = &plan.recipes.dockerfile;
    ensure!(
        dockerfile_text.contains(&format!("FROM {base}\n")),
        "the Dockerfile does not start from {base}:\n{dockerfile_text}"
    );
    let context = tempfile::tempdir()?;
    let dockerfile = context.path().join("Dockerfile");
    std::fs::write(&dockerfile, dockerfile_text)?;
    let buildah = Buildah::new(&config.build);
    let tag = format!(
        "localhost/kiln-bench/pip:{}-{}",
        plan.key.short(),
        std::process::id()
    );
    eprintln!("buildah bud {tag}:\n{dockerfile_text}");
    let started = Instant::now();
    let (built, log) = support::run_image::bud(&buildah, context.path(), &dockerfile, &tag).await;
    let elapsed = started.elapsed();
    eprint!("{log}");
    if let Err(err) = built {
        let _ = buildah.remove_image(&tag).await;
        bail!("buildah bud of {tag} failed: {err}\n{log}");
    }
    let image_bytes = pushed_size(&tag).await;
    buildah.remove_image(&tag).await?;
    Ok(BuildahBuild {
        elapsed,
        image_bytes: image_bytes?,
    })
}

/// The compressed size of `image` in local storage (its config and layers, as in a registry):
/// `buildah push` (which gzips layers) into an OCI layout, then the manifest's sizes.
async fn pushed_size(image: &str) -> Result<u64> {
    let layout = tempfile::tempdir()?;
    let pushed = Command::new("buildah")
        .args(["push", "--quiet", image])
        .arg(format!("oci:{}", layout.path().display()))
        .output()
        .await
        .context("cannot run buildah")?;
    ensure!(
        pushed.status.success(),
        "buildah push of {image}: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let read = |path: &Path| -> Result<serde_json::Value> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let index = read(&layout.path().join("index.json"))?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .context("the OCI layout has no manifest")?;
    let blob = |digest: &str| layout.path().join("blobs").join(digest.replace(':', "/"));
    let manifest = read(&blob(digest))?;
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?;
    ensure!(
        layers.iter().all(|layer| layer["mediaType"]
            .as_str()
            .is_some_and(|media_type| media_type.ends_with("+gzip"))),
        "buildah push did not compress the layers: {manifest}"
    );
    let sizes = std::iter::once(&manifest["config"]).chain(layers);
    sizes
        .map(|descriptor| {
            descriptor["size"]
                .as_u64()
                .context("a descriptor has no size")
        })
        .sum()
}

fn print_report(requests: &Requests, times: &Times) {
    let gzip = |bytes: u64| format!("{:.1} MiB gzip", bytes as f64 / MIB);
    let request = requests.request.join(" ");
    let combination = requests.combination.join(" ");
    let same = if times.warm.build.digest == times.cold.build.digest {
        "the same digest as cold"
    } else {
        "a DIFFERENT digest from cold"
    };
    let rows = [
        (
            "kiln cold (empty caches)",
            times.cold.build.elapsed,
            Some(times.buildah.elapsed),
            format!("image {}", gzip(times.cold.build.image_bytes)),
        ),
        (
            "kiln warm (same request)",
            times.warm.build.elapsed,
            Some(times.buildah.elapsed),
            format!(
                "a rebuild, everything cached; image {}, {same}",
                gzip(times.warm.build.image_bytes)
            ),
        ),
        (
            "kiln new combination",
            times.combination.build.elapsed,
            Some(times.buildah_combination.elapsed),
            format!(
                "{combination}: all wheels cached, a new image; image {}",
                gzip(times.combination.build.image_bytes)
            ),
        ),
        (
            "buildah bud (request)",
            times.buildah.elapsed,
            None,
            format!(
                "pip install --no-cache-dir, chroot; .pyc compiled (kiln writes none); image {}",
                gzip(times.buildah.image_bytes)
            ),
        ),
        (
            "buildah bud (combination)",
            times.buildah_combination.elapsed,
            None,
            format!(
                "{combination}; image {}",
                gzip(times.buildah_combination.image_bytes)
            ),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\npip build benchmark{}: {request} for linux/amd64 from PyPI, on kiln's Debian \
         bookworm base (python3 + pip)",
        if requests.full { "" } else { " (smoke)" }
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs (nproc); data under the temp directory; network to PyPI through \
         this machine's proxy",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let _ = writeln!(
        out,
        "images: {} ({}), {}\n",
        times.cold.build.image, times.cold.build.digest, times.combination.build.image
    );
    let _ = writeln!(
        out,
        "| {:<27} | {:>9} | {:>14} | notes",
        "case", "wall time", "buildah / kiln"
    );
    let _ = writeln!(out, "|{:-<29}|{:->11}|{:->16}|{:-<7}", "", ":", ":", "");
    for (case, elapsed, buildah, notes) in rows {
        let ratio = buildah.map_or_else(
            || "-".to_owned(),
            |buildah| format!("{:.2}x", ratio(buildah, elapsed)),
        );
        let _ = writeln!(
            out,
            "| {case:<27} | {:>9} | {ratio:>14} | {notes}",
            seconds(elapsed)
        );
    }
    let _ = writeln!(
        out,
        "\nbuildah / kiln: {:.2}x cold, {:.2}x warm, {:.2}x new combination \
         (buildah has no warm path: no layer cache, pip --no-cache-dir)",
        ratio(times.buildah.elapsed, times.cold.build.elapsed),
        ratio(times.buildah.elapsed, times.warm.build.elapsed),
        ratio(
            times.buildah_combination.elapsed,
            times.combination.build.elapsed
        ),
    );
    let _ = writeln!(
        out,
        "image size kiln / buildah: {:.2} (request), {:.2} (combination)",
        ratio_bytes(times.cold.build.image_bytes, times.buildah.image_bytes),
        ratio_bytes(
            times.combination.build.image_bytes,
            times.buildah_combination.image_bytes
        ),
    );
    let _ = writeln!(out, "\nkiln's steps (from its build logs):");
    for (case, build) in [
        ("cold", &times.cold),
        ("warm", &times.warm),
        ("new combination", &times.combination),
    ] {
        let _ = writeln!(out, "  {case}:");
        for step in &build.steps {
            let _ = writeln!(out, "    {step}");
        }
    }
    print!("{out}");
}

/// `numerator / denominator` in seconds.
fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64()
}

fn ratio_bytes(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator as f64
}

/// A duration in seconds.
fn seconds(elapsed: Duration) -> String {
    format!("{:.2} s", elapsed.as_secs_f64())
}
