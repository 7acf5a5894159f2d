//! Debian bases made with `mmdebstrap`.
//!
//! `mmdebstrap` (a child process, plus `mmtarfilter`; arm64 runs under qemu-user-static
//! through binfmt_misc) builds the root file system; the glibc and Python versions are read
//! from the target's dpkg database on the host (no target binary is run); the tar is packed as
//! one reproducible gzip layer and pushed with [`super::push`].

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::push::{Compressed, Facts, push_index, push_platform, upstream_major_minor};
use super::{BaseError, BaseImage, io_error};
use crate::assemble::{Blob, HashWriter, reproducible_gzip};
use crate::registry::client::RegistryClient;
use crate::spec::Platform;

/// Packages every base gets: TLS roots for pip/conda downloads at run time, and `ps`/`kill`,
/// which Nextflow needs inside task containers.
const ALWAYS_INCLUDED: [&str; 2] = ["ca-certificates", "procps"];

/// The merged-usr hook: without it apt pulls in `usrmerge` and perl.
const MERGED_USR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

/// Empties the files container runtimes bind-mount over, so runtimes that add placeholders
/// (buildah) don't find host-specific content in the base.
const HOOK_EMPTY_ETC: &str =
    r#"for f in resolv.conf hostname hosts; do : > "$1/etc/$f"; chmod 644 "$1/etc/$f"; done"#;

/// Reads the libc6 and python3 versions from the target's dpkg database with the host's
/// `dpkg-query`, so no target binary runs (which for arm64 would mean qemu). The output
/// directory comes from the environment: the hook string holds no paths, only constants.
const HOOK_FACTS: &str = concat!(
    r#"dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Version}' libc6 > "$KILN_BASE_FACTS/glibc""#,
    r#" && { dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${db:Status-Status} ${Version}' python3"#,
    r#" 2>/dev/null || true; } > "$KILN_BASE_FACTS/python3""#,
);

/// How many lines of a failing child's stderr an error carries.
const STDERR_TAIL_LINES: usize = 20;

/// What to bootstrap and where to push it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Repository in the registry, e.g. `kiln/base/debian`.
    pub repository: String,
    /// Tag the index is pushed under, e.g. `bookworm`.
    pub tag: String,
    /// Debian suite (codename), e.g. `bookworm`.
    pub suite: String,
    /// Extra Debian packages, e.g. `python3`.
    pub include: Vec<String>,
    /// Platforms to build; the index has one manifest per platform.
    pub platforms: Vec<Platform>,
    /// Debian mirror URL, [`super::DEFAULT_MIRROR`] unless the site has its own.
    pub mirror: String,
}

/// Bootstraps a Debian base for each platform in `options`, pushes it with `client` as an OCI
/// index under `options.tag` (an index even for one platform, so all bases have one shape), and
/// returns its reference, digest and facts. `work_dir` holds the root file system tars while
/// they are built (one directory per architecture); `log` gets one line per step with timings.
pub async fn bootstrap(
    options: &BootstrapOptions,
    client: &RegistryClient,
    work_dir: &Path,
    mut log: impl FnMut(&str),
) -> Result<BaseImage, BaseError> {
    validate(options)?;
    let started = Instant::now();
    let mut manifests = Vec::new();
    let mut facts: Vec<Facts> = Vec::new();
    let mut platforms = options.platforms.clone();
    platforms.sort();
    platforms.dedup();
    for platform in platforms {
        let (manifest, platform_facts) =
            bootstrap_platform(options, platform, client, work_dir, &mut log).await?;
        manifests.push((platform, manifest));
        facts.push(platform_facts);
    }
    let image = push_index(
        client,
        &options.repository,
        &options.tag,
        &manifests,
        &facts,
    )
    .await?;
    log(&format!(
        "pushed {} ({}) in {:.1}s",
        image.reference,
        image.digest,
        started.elapsed().as_secs_f64()
    ));
    Ok(image)
}

/// Builds, packs and pushes one platform's image; returns its manifest (pushed by digest).
async fn bootstrap_platform(
    options: &BootstrapOptions,
    platform: Platform,
    client: &RegistryClient,
    work_dir: &Path,
    log: &mut impl FnMut(&str),
) -> Result<(Blob, Facts), BaseError> {
    let arch = platform.architecture();
    let dir = work_dir.join(arch);
    let facts_dir = dir.join("facts");
    tokio::fs::create_dir_all(&facts_dir)
        .await
        .map_err(io_error(format!("creating {}", facts_dir.display())))?;
    let tar_path = dir.join("rootfs.tar");
    let gz_path = dir.join("layer.tar.gz");

    let step = Instant::now();
    log(&format!(
        "{platform}: mmdebstrap {} from {} …",
        options.suite, options.mirror
    ));
    run_mmdebstrap(options, platform, &facts_dir, &tar_path).await?;
    let facts = read_facts(platform, &facts_dir).await?;
    log(&format!(
        "{platform}: root file system done in {:.1}s (glibc {}, python {})",
        step.elapsed().as_secs_f64(),
        facts.glibc,
        facts.python.as_deref().unwrap_or("none")
    ));

    let step = Instant::now();
    let (tar, gz) = (tar_path.clone(), gz_path.clone());
    let layer = tokio::task::spawn_blocking(move || compress(&tar, &gz))
        .await
        .map_err(|e| BaseError::Io {
            step: format!("compressing {}", tar_path.display()),
            source: io::Error::other(e),
        })?
        .map_err(io_error(format!("compressing {}", tar_path.display())))?;
    // The uncompressed tar is only an intermediate; the gzip blob is what gets pushed.
    tokio::fs::remove_file(&tar_path)
        .await
        .map_err(io_error(format!("removing {}", tar_path.display())))?;
    log(&format!(
        "{platform}: layer {} ({:.1} MiB) compressed in {:.1}s",
        layer.digest,
        layer.size as f64 / (1024.0 * 1024.0),
        step.elapsed().as_secs_f64()
    ));

    let step = Instant::now();
    let title = format!("{}:{}", options.repository, options.tag);
    let manifest = push_platform(
        client,
        &options.repository,
        &title,
        &options.suite,
        platform,
        &facts,
        &layer,
        &gz_path,
    )
    .await?;
    log(&format!(
        "{platform}: pushed manifest {} in {:.1}s",
        manifest.digest,
        step.elapsed().as_secs_f64()
    ));
    Ok((manifest, facts))
}

/// Refuses values that would not be single, literal mmdebstrap arguments (separators, option
/// look-alikes), since they come from configuration and the command line.
fn validate(options: &BootstrapOptions) -> Result<(), BaseError> {
    if options.platforms.is_empty() {
        return Err(BaseError::NoPlatforms);
    }
    let invalid = |what, value: &str, why| BaseError::InvalidOption {
        what,
        value: value.to_owned(),
        why,
    };
    let suite_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['-', '.'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if !suite_ok(&options.suite) {
        return Err(invalid(
            "suite",
            &options.suite,
            "use a Debian codename or suite such as bookworm",
        ));
    }
    for package in &options.include {
        let ok = !package.is_empty()
            && package
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && package.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | ':')
            });
        if !ok {
            return Err(invalid(
                "package",
                package,
                "Debian package names are lowercase letters, digits and + - . (optionally :arch)",
            ));
        }
    }
    let mirror = &options.mirror;
    if mirror.is_empty() || mirror.starts_with('-') || mirror.contains(char::is_whitespace) {
        return Err(invalid(
            "mirror",
            mirror,
            "give a URL such as http://deb.debian.org/debian",
        ));
    }
    Ok(())
}

/// Runs `mmdebstrap … - | mmtarfilter --path-exclude=/dev/* > tar_path`.
async fn run_mmdebstrap(
    options: &BootstrapOptions,
    platform: Platform,
    facts_dir: &Path,
    tar_path: &Path,
) -> Result<(), BaseError> {
    let mut include: Vec<&str> = ALWAYS_INCLUDED.to_vec();
    include.extend(options.include.iter().map(String::as_str));
    include.sort_unstable();
    include.dedup();

    let mut mmdebstrap = crate::child::command("mmdebstrap");
    mmdebstrap
        .arg("--quiet")
        .arg(format!("--arch={}", platform.architecture()))
        .arg("--variant=minbase")
        .arg(format!("--include={}", include.join(",")))
        .arg(format!("--hook-dir={MERGED_USR_HOOKS}"))
        .args([
            "--aptopt=Acquire::Languages \"none\"",
            "--dpkgopt=force-unsafe-io",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ])
        .arg(format!("--customize-hook={HOOK_EMPTY_ETC}"))
        .arg(format!("--customize-hook={HOOK_FACTS}"))
        .arg(&options.suite)
        .arg("-")
        .arg(&options.mirror)
        .env("SOURCE_DATE_EPOCH", "0")
        .env("KILN_BASE_FACTS", facts_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut bootstrap = mmdebstrap
        .spawn()
        .map_err(spawn_error("mmdebstrap", "mmdebstrap"))?;
    let pipe: Stdio = bootstrap
        .stdout
        .take()
        .ok_or_else(|| BaseError::Io {
            step: "connecting mmdebstrap to mmtarfilter".to_owned(),
            source: io::Error::other("mmdebstrap has no stdout"),
        })?
        .try_into()
        .map_err(io_error("connecting mmdebstrap to mmtarfilter".to_owned()))?;
    let out =
        File::create(tar_path).map_err(io_error(format!("creating {}", tar_path.display())))?;
    let filter = crate::child::command("mmtarfilter")
        .arg("--path-exclude=/dev/*")
        .stdin(pipe)
        .stdout(out)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error("mmtarfilter", "mmdebstrap"))?;
    let (bootstrapped, filtered) =
        tokio::join!(bootstrap.wait_with_output(), filter.wait_with_output());
    let bootstrapped = bootstrapped.map_err(io_error("waiting for mmdebstrap".to_owned()))?;
    let filtered = filtered.map_err(io_error("waiting for mmtarfilter".to_owned()))?;
    if !bootstrapped.status.success() {
        return Err(BaseError::Child {
            step: format!("mmdebstrap {} for {platform}", options.suite),
            status: bootstrapped.status,
            stderr: tail(&bootstrapped.stderr),
        });
    }
    if !filtered.status.success() {
        return Err(BaseError::Child {
            step: format!("mmtarfilter for {platform}"),
            status: filtered.status,
            stderr: tail(&filtered.stderr),
        });
    }
    Ok(())
}

/// Reads what the facts hook wrote.
async fn read_facts(platform: Platform, facts_dir: &Path) -> Result<Facts, BaseError> {
    let read = |name: &'static str| {
        let path = facts_dir.join(name);
        async move {
            tokio::fs::read_to_string(&path)
                .await
                .map_err(io_error(format!("reading {}", path.display())))
        }
    };
    let libc6 = read("glibc").await?;
    let glibc = upstream_major_minor(libc6.trim()).ok_or_else(|| BaseError::Facts {
        platform,
        package: "libc6",
        got: libc6.clone(),
    })?;
    let python3 = read("python3").await?;
    let python =
        match python3.trim().split_once(' ') {
            Some(("installed", version)) => Some(upstream_major_minor(version).ok_or_else(
                || BaseError::Facts {
                    platform,
                    package: "python3",
                    got: python3.clone(),
                },
            )?),
            _ => None,
        };
    Ok(Facts { glibc, python })
}

/// The last lines of a child's stderr, for error messages.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

/// Gzips `tar` into `gz` (with [`reproducible_gzip`]: the blob is a pure function of the tar)
/// and returns the tar's sha256 (diff_id) and the blob's sha256 and size.
fn compress(tar: &Path, gz: &Path) -> io::Result<Compressed> {
    let mut input = File::open(tar)?;
    let out = HashWriter::new(BufWriter::new(File::create(gz)?));
    let mut encoder = reproducible_gzip(out);
    let mut uncompressed = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        uncompressed.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
    }
    let (mut file, digest_hex, size) = encoder.finish()?.finish();
    file.flush()?;
    file.get_ref().sync_all()?;
    Ok(Compressed {
        diff_id: format!("sha256:{}", hex::encode(uncompressed.finalize())),
        digest: format!("sha256:{digest_hex}"),
        size,
    })
}

fn spawn_error(
    program: &'static str,
    package: &'static str,
) -> impl FnOnce(io::Error) -> BaseError {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            BaseError::MissingProgram { program, package }
        } else {
            BaseError::Io {
                step: format!("starting {program}"),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::DEFAULT_MIRROR;

    fn options() -> BootstrapOptions {
        BootstrapOptions {
            repository: "kiln/base/debian".into(),
            tag: "bookworm".into(),
            suite: "bookworm".into(),
            include: vec!["python3".into(), "libstdc++6".into()],
            platforms: vec![Platform::LinuxAmd64],
            mirror: DEFAULT_MIRROR.into(),
        }
    }

    #[test]
    fn refuses_options_that_are_not_single_arguments() {
        assert!(validate(&options()).is_ok());
        for bad in ["python3,perl", "--foo", "Python3", "a b", ""] {
            let mut o = options();
            o.include = vec![bad.into()];
            assert!(validate(&o).is_err(), "{bad:?} accepted");
        }
        let mut o = options();
        o.suite = "--help".into();
        assert!(validate(&o).is_err());
        let mut o = options();
        o.mirror = "http://a b".into();
        assert!(validate(&o).is_err());
        let mut o = options();
        o.platforms.clear();
        assert!(matches!(validate(&o), Err(BaseError::NoPlatforms)));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = tail(text.as_bytes());
        assert!(tail.starts_with("line 10\n") && tail.ends_with("line 29"));
    }
}
