//! Making a base image from Debian's binary packages: resolve the package set against the
//! signed index, fetch and verify the `.deb`s, unpack them into one layer, push.
//!
//! Nothing of the target architecture runs, so arm64 is made exactly like amd64: no qemu, no
//! root, no mmdebstrap.

use std::path::Path;
use std::time::Instant;

use super::deb::data_tar;
use super::mirror::Mirror;
use super::packages::Stanza;
use super::release::Release;
use super::rootfs::{PackageControl, Rootfs};
use crate::assemble;
use crate::base::push::{Compressed, Facts, push_index, push_platform, upstream_major_minor};
use crate::base::{BaseError, BaseImage, io_error};
use crate::registry::client::RegistryClient;
use crate::spec::Platform;

/// What every kiln-made base holds: a shell and `/bin/sh`, accounts, the C library, the core
/// utilities with grep, sed, awk, find and gzip (scripts and Nextflow's task wrapper use them),
/// `ps`/`kill`, TLS roots and time zones. Essential packages are named because packages never
/// declare a dependency on them, and `usr-is-merged` because kiln lays out merged `/usr` itself.
pub const ESSENTIAL_PACKAGES: [&str; 15] = [
    "base-files",
    "base-passwd",
    "bash",
    "ca-certificates",
    "coreutils",
    "dash",
    "findutils",
    "grep",
    "gzip",
    "libc6",
    "mawk",
    "procps",
    "sed",
    "tzdata",
    "usr-is-merged",
];

/// A base to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianBase {
    /// Repository in kiln's registry, e.g. `kiln/base/debian`.
    pub repository: String,
    /// Tag of the index, e.g. `bookworm`.
    pub tag: String,
    /// Packages on top of [`ESSENTIAL_PACKAGES`], e.g. `python3`.
    pub packages: Vec<String>,
    /// Platforms; the index has one image per platform.
    pub platforms: Vec<Platform>,
}

/// Makes `base` from `mirror`'s packages and pushes it with `client` as an OCI index under
/// its tag. `work_dir` holds each platform's layer while it is pushed; `log` gets one line per
/// step with its time.
pub async fn create(
    base: &DebianBase,
    mirror: &Mirror,
    client: &RegistryClient,
    work_dir: &Path,
    mut log: impl FnMut(&str) + Send,
) -> Result<BaseImage, BaseError> {
    let started = Instant::now();
    let mut platforms = base.platforms.clone();
    platforms.sort();
    platforms.dedup();
    if platforms.is_empty() {
        return Err(BaseError::NoPlatforms);
    }
    let mut roots: Vec<&str> = ESSENTIAL_PACKAGES.to_vec();
    roots.extend(base.packages.iter().map(String::as_str));
    roots.sort_unstable();
    roots.dedup();

    // Platforms are made side by side: downloads overlap, and each unpacks on its own core.
    let shared_log = std::sync::Mutex::new(&mut log);
    let say = |line: &str| {
        if let Ok(mut log) = shared_log.lock() {
            (*log)(line);
        }
    };
    // A loop, not an iterator closure: the futures must be `Send` for any lifetime, which
    // rustc cannot prove through a closure's borrows.
    // One signed Release for all platforms, so they come from the same snapshot of the suite.
    let release = mirror.release().await?;
    let mut making = Vec::new();
    for &platform in &platforms {
        making.push(create_platform(
            base, &release, &roots, platform, mirror, client, work_dir, &say,
        ));
    }
    let made = futures_util::future::try_join_all(making).await?;
    let (manifests, facts): (Vec<_>, Vec<_>) = platforms
        .iter()
        .zip(made)
        .map(|(&platform, (manifest, facts))| ((platform, manifest), facts))
        .unzip();
    let image = push_index(client, &base.repository, &base.tag, &manifests, &facts).await?;
    log(&format!(
        "made {} ({}) from Debian {} in {:.1} s",
        image.reference,
        image.digest,
        mirror.suite(),
        started.elapsed().as_secs_f64()
    ));
    Ok(image)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the platform's share of `create`'s inputs"
)]
async fn create_platform(
    base: &DebianBase,
    release: &Release,
    roots: &[&str],
    platform: Platform,
    mirror: &Mirror,
    client: &RegistryClient,
    work_dir: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(assemble::Blob, Facts), BaseError> {
    let arch = platform.architecture();
    let step = Instant::now();
    let index = mirror.packages_in(release, arch).await?;
    let stanzas = super::closure::closure(&index, roots)?;
    let facts = facts(platform, &stanzas)?;
    let debs = mirror.debs(&stanzas).await?;
    let download_bytes: u64 = stanzas.iter().map(|s| s.size).sum();
    log(&format!(
        "{platform}: {} packages ({:.1} MiB) resolved, fetched and verified in {:.1} s",
        stanzas.len(),
        download_bytes as f64 / (1024.0 * 1024.0),
        step.elapsed().as_secs_f64()
    ));

    let step = Instant::now();
    let dir = work_dir.join(arch);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io_error(format!("creating {}", dir.display())))?;
    let gz_path = dir.join("layer.tar.gz");
    let out = gz_path.clone();
    let arch_name = arch.to_owned();
    let written = tokio::task::spawn_blocking(move || -> Result<_, BaseError> {
        let mut rootfs = Rootfs::new(&arch_name);
        for (stanza, deb) in stanzas.iter().zip(&debs) {
            let step = format!(
                "unpacking {} {} ({})",
                stanza.package,
                stanza.version,
                deb.display()
            );
            let mut data = data_tar(deb).map_err(io_error(step.clone()))?;
            let control = PackageControl {
                name: &stanza.package,
                architecture: &stanza.architecture,
                multi_arch_same: stanza.multi_arch.as_deref() == Some("same"),
                stanza: &stanza.text,
            };
            rootfs
                .add_package(control, &mut data)
                .map_err(io_error(step))?;
        }
        rootfs.finish();
        let entries = rootfs.len();
        let layer = rootfs
            .write_layer(&out)
            .map_err(io_error(format!("writing {}", out.display())))?;
        Ok((layer, entries))
    })
    .await
    .map_err(|err| BaseError::Io {
        step: format!("{platform}: assembling the root file system"),
        source: std::io::Error::other(err),
    })??;
    let (layer, entries) = written;
    log(&format!(
        "{platform}: {entries} files in one layer {} ({:.1} MiB) in {:.1} s",
        layer.digest,
        layer.size as f64 / (1024.0 * 1024.0),
        step.elapsed().as_secs_f64()
    ));

    let title = format!("{}:{}", base.repository, base.tag);
    let compressed = Compressed {
        diff_id: layer.diff_id,
        digest: layer.digest,
        size: layer.size,
    };
    let manifest = push_platform(
        client,
        &base.repository,
        &title,
        mirror.suite(),
        platform,
        &facts,
        &compressed,
        &gz_path,
    )
    .await?;
    // The blob is in the registry now; the local copy only took disk.
    let _ = tokio::fs::remove_file(&gz_path).await;
    Ok((manifest, facts))
}

/// The glibc and python3 versions, from the resolved package set.
fn facts(platform: Platform, stanzas: &[Stanza]) -> Result<Facts, BaseError> {
    let version_of = |name: &'static str| {
        stanzas
            .iter()
            .find(|s| s.package == name)
            .map(|s| (name, s.version.as_str()))
    };
    let major_minor = |(name, version): (&'static str, &str)| {
        upstream_major_minor(version).ok_or_else(|| BaseError::Facts {
            platform,
            package: name,
            got: version.to_owned(),
        })
    };
    let libc6 = version_of("libc6").ok_or_else(|| BaseError::Facts {
        platform,
        package: "libc6",
        got: "not in the package set".to_owned(),
    })?;
    Ok(Facts {
        glibc: major_minor(libc6)?,
        python: version_of("python3").map(major_minor).transpose()?,
    })
}
