//! First-run benchmark: how long a fresh kiln takes from an empty data directory to its first
//! conda image, for amd64 and for arm64, making its Debian base from Debian's packages on the
//! way (downloads included), against `mmdebstrap` making the same package set for each
//! architecture (arm64 under qemu-user, as `kiln base bootstrap` would).
//!
//! For each platform it starts kiln (app and embedded registry) in-process with default base
//! settings and a fresh data directory, serves a local conda channel (kiln's test channel),
//! and times one build of `kiln-hello=2.0` as the queue runs it. Then it times
//! `mmdebstrap --variant=essential --include=<kiln's base packages>` per architecture.
//!
//! ```sh
//! cargo bench --bench base
//! ```
//!
//! `cargo test --all-targets` runs it without `--bench`: then only the amd64 image is made,
//! with `.deb`s from the test cache under `target/tmp`, and mmdebstrap is not timed.

#[path = "../tests/support/mod.rs"]
pub mod support;

use support::{conda_channel, kiln_app};

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use conda_channel::{CHANNEL_NAME, CondaChannel};
use kiln::base::debian::ESSENTIAL_PACKAGES;
use kiln::build::native::NativeBuilder;
use kiln::config::Config;
use kiln::spec::{Platform, Request, RequestInput};
use kiln::store::{SqliteStore, Store};
use kiln_app::{Kiln, timed_build};

fn main() -> Result<()> {
    let full = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let channel = CondaChannel::build();
    let server = channel.serve();
    let platforms: &[Platform] = if full {
        &Platform::ALL
    } else {
        &[Platform::LinuxAmd64]
    };
    let mut rows = Vec::new();
    for &platform in platforms {
        let elapsed = runtime.block_on(first_image(&server.url, platform, full))?;
        rows.push((
            format!("kiln: empty data dir → first conda image, {platform}"),
            elapsed,
        ));
    }
    if full {
        for platform in Platform::ALL {
            let elapsed = mmdebstrap(platform)?;
            rows.push((
                format!("mmdebstrap of the same packages, {platform}"),
                elapsed,
            ));
        }
    }
    println!("\nfirst run (base included)");
    for (what, elapsed) in &rows {
        println!("  {what:<58} {:>7.1} s", elapsed.as_secs_f64());
    }
    if full {
        let arm64 = |prefix: &str| {
            rows.iter()
                .find(|(what, _)| what.starts_with(prefix) && what.ends_with("linux/arm64"))
                .map(|(_, elapsed)| elapsed.as_secs_f64())
        };
        if let (Some(kiln), Some(mmdebstrap)) = (arm64("kiln"), arm64("mmdebstrap")) {
            println!(
                "  arm64: mmdebstrap takes {:.1}× kiln's whole first image",
                mmdebstrap / kiln
            );
        }
    }
    Ok(())
}

/// One build of `kiln-hello=2.0` for `platform` on a fresh kiln whose bases do not exist yet.
async fn first_image(channel_url: &str, platform: Platform, full: bool) -> Result<Duration> {
    let kiln = Kiln::start().await?;
    let data = tempfile::tempdir()?;
    let mut config = Config {
        registry: kiln.address.to_string().parse()?,
        data_dir: data.path().to_owned(),
        channel_mirrors: BTreeMap::from([(CHANNEL_NAME.to_owned(), channel_url.to_owned())]),
        ..Config::default()
    };
    if !full {
        // A smoke run shares the tests' download cache instead of fetching again.
        let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian-cache");
        std::fs::create_dir_all(data.path().join("cache"))?;
        std::os::unix::fs::symlink(&cache, data.path().join("cache/debian"))
            .or_else(|_| std::fs::create_dir_all(&cache))?;
        config.data_dir = data.path().to_owned();
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.path().join("bench.db")).await?);
    let builder = NativeBuilder::from_config(&config, kiln.pusher()?, store.clone())
        .map_err(anyhow::Error::msg)?;
    let request = Request::try_from(RequestInput {
        entries: vec!["kiln-hello=2.0".into()],
        channels: vec![CHANNEL_NAME.into()],
        platforms: vec![platform.to_string()],
        format: None,
        base: None,
    })?;
    let (build, log) = timed_build(&builder, &store, &kiln, &request).await?;
    ensure!(
        log.contains("made kiln's base"),
        "the base was not made by this build:\n{log}"
    );
    eprintln!(
        "{} ({}, {:.1} MiB with its base)",
        build.image,
        build.digest,
        build.image_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(build.elapsed)
}

/// `mmdebstrap` of kiln's base package set for `platform`, into a tar that is thrown away.
fn mmdebstrap(platform: Platform) -> Result<Duration> {
    let out = tempfile::tempdir()?;
    let started = Instant::now();
    let status = Command::new("mmdebstrap")
        .arg("--quiet")
        .arg(format!("--arch={}", platform.architecture()))
        .arg("--variant=essential")
        .arg(format!("--include={}", ESSENTIAL_PACKAGES.join(",")))
        .arg("bookworm")
        .arg(out.path().join("rootfs.tar"))
        .arg(kiln::base::DEFAULT_MIRROR)
        .stdout(Stdio::null())
        .status()
        .context("running mmdebstrap (apt-get install mmdebstrap)")?;
    ensure!(
        status.success(),
        "mmdebstrap for {platform} failed: {status}"
    );
    Ok(started.elapsed())
}
