//! Base images kiln makes itself, and what the native builder needs to know about any base.
//!
//! [`bootstrap`] builds a minimal Debian root file system per platform with `mmdebstrap` (a
//! child process, plus `mmtarfilter`; arm64 runs under qemu-user-static through binfmt_misc),
//! reads the glibc and Python versions from the target's dpkg database on the host (no target
//! binary is run), packs it as one reproducible gzip layer and pushes layer, config, manifests
//! and an OCI index through the [`RegistryClient`], so a fresh install needs nothing but a
//! Debian mirror. [`inspect`] reads a base back from a registry, whichever way it was made.
//!
//! Depends on `assemble` (the OCI documents), `registry::client` (pushes and pulls) and `spec`
//! (platforms).

pub mod copy;
pub mod debian;
pub mod dpkg;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use bytes::Bytes;
use flate2::{Compression, GzBuilder};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::assemble::{
    self, AssembleError, BaseConfig, Blob, Descriptor, HashWriter, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST,
};
use crate::registry::client::{ClientError, RegistryClient};
use crate::spec::Platform;

/// Debian's mirror network, the default package source.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian suite kiln's own bases are made from by default.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Where kiln keeps its own conda base, tagged by suite.
pub const CONDA_BASE_REPOSITORY: &str = "kiln/base/debian";

/// Where kiln keeps its own Python base (the conda base plus python3), tagged by suite.
pub const PYTHON_BASE_REPOSITORY: &str = "kiln/base/debian-python";

/// Label: the image's human-readable name.
pub const LABEL_TITLE: &str = "org.opencontainers.image.title";
/// Label: the Debian suite the base was bootstrapped from.
pub const LABEL_SUITE: &str = "io.kiln.base.suite";
/// Label: the glibc version (`major.minor`), which decides which conda packages can run.
pub const LABEL_GLIBC: &str = "io.kiln.base.glibc";
/// Label: the python3 version (`major.minor`), present when the base has python3.
pub const LABEL_PYTHON: &str = "io.kiln.base.python";
/// Label: the interpreter of python3, which installed scripts name in their shebang.
pub const LABEL_PYTHON_INTERPRETER: &str = "io.kiln.base.python.interpreter";
/// Label: the directory pip installs distributions into on this base.
pub const LABEL_PYTHON_SITE_PACKAGES: &str = "io.kiln.base.python.site-packages";

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

/// The gzip level of base layers; fixed, since the blob digest depends on it.
const GZIP_LEVEL: u32 = 6;

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
    /// Debian mirror URL, [`DEFAULT_MIRROR`] unless the site has its own.
    pub mirror: String,
}

/// A base image pushed by [`bootstrap`], with the facts the resolver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// `host/repository:tag`.
    pub reference: String,
    /// Digest of the index pushed under the tag.
    pub digest: String,
    /// glibc `major.minor`; the lowest over the platforms.
    pub glibc: String,
    /// python3 `major.minor`, when the base has python3.
    pub python: Option<String>,
}

/// One platform of a base image in a registry: what the native builder stacks its layers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseManifest {
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// The base's layers, as the manifest lists them.
    pub layers: Vec<Descriptor>,
    /// The base's runtime settings and diff_ids.
    pub config: BaseConfig,
    /// The config's labels (empty when it has none).
    pub labels: BTreeMap<String, String>,
    /// [`LABEL_GLIBC`], when the base carries it.
    pub glibc: Option<String>,
    /// [`LABEL_PYTHON`], when the base carries it.
    pub python: Option<String>,
}

/// A failure while making or reading a base image. Messages name the step and, for child
/// processes, end with the last lines they wrote to stderr.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// An option would not make a valid mmdebstrap argument.
    #[error("invalid {what} `{value}`: {why}")]
    InvalidOption {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
    /// A required program is not installed.
    #[error("`{program}` was not found; install it (Debian/Ubuntu: apt-get install {package})")]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A child process failed.
    #[error("{step} failed ({status}):\n{stderr}")]
    Child {
        /// What was being done.
        step: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// A local I/O operation failed.
    #[error("{step} failed")]
    Io {
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A fact could not be read from the target's dpkg database.
    #[error(
        "{platform}: could not read the {package} version from the dpkg database (got `{got}`)"
    )]
    Facts {
        /// The platform being built.
        platform: Platform,
        /// The package asked about.
        package: &'static str,
        /// What dpkg-query wrote.
        got: String,
    },
    /// A registry operation failed.
    #[error("{step} failed")]
    Registry {
        /// What was being done.
        step: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Reading Debian's archive failed (unreachable, bad signature, missing package, …).
    #[error(transparent)]
    Debian(#[from] debian::error::DebianError),
    /// The bootstrap has nothing to build.
    #[error("no platforms to bootstrap")]
    NoPlatforms,
    /// The base has no image for the platform.
    #[error("{reference} has no {platform} image")]
    NoPlatform {
        /// The base reference.
        reference: String,
        /// The platform asked for.
        platform: Platform,
    },
    /// A manifest or config in the registry is not what an image should be.
    #[error("{reference}: {why}")]
    Invalid {
        /// The object concerned.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// The base's config could not be parsed.
    #[error("{reference}: unreadable image config")]
    Config {
        /// The object concerned.
        reference: String,
        /// The parse error.
        #[source]
        source: AssembleError,
    },
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

/// Pushes the index of a base's platform `manifests` under `repository:tag` and returns the
/// base with the facts every platform satisfies (the lowest glibc and python).
async fn push_index(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    manifests: &[(Platform, Blob)],
    facts: &[Facts],
) -> Result<BaseImage, BaseError> {
    let index = assemble::image_index(manifests);
    let reference = format!("{}/{repository}:{tag}", client.registry());
    let digest = client
        .push_manifest(repository, tag, Bytes::from(index.bytes), MEDIA_TYPE_INDEX)
        .await
        .map_err(registry(format!("pushing the index {reference}")))?;
    let glibc = lowest(facts.iter().map(|f| f.glibc.as_str())).ok_or(BaseError::NoPlatforms)?;
    let python = lowest(facts.iter().filter_map(|f| f.python.as_deref()));
    Ok(BaseImage {
        reference,
        digest,
        glibc,
        python,
    })
}

/// Facts read from one platform's dpkg database.
#[derive(Debug)]
struct Facts {
    glibc: String,
    python: Option<String>,
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

/// Pushes one platform's base image: its single gzip `layer` (the file `gz_path`), a config
/// with kiln's base labels and `facts`, and the manifest, by digest.
#[expect(clippy::too_many_arguments, reason = "each is one part of the image")]
async fn push_platform(
    client: &RegistryClient,
    repository: &str,
    title: &str,
    suite: &str,
    platform: Platform,
    facts: &Facts,
    layer: &Compressed,
    gz_path: &Path,
) -> Result<Blob, BaseError> {
    client
        .push_blob_file(repository, &layer.digest, gz_path, None)
        .await
        .map_err(registry(format!("{platform}: pushing the layer")))?;
    let mut labels = BTreeMap::from([
        (LABEL_TITLE.to_owned(), title.to_owned()),
        (LABEL_SUITE.to_owned(), suite.to_owned()),
        (LABEL_GLIBC.to_owned(), facts.glibc.clone()),
    ]);
    if let Some(python) = &facts.python {
        // Debian's layout: its python3 is /usr/bin/python3, and pip (like kiln) installs into
        // /usr/local, leaving /usr/lib/python3/dist-packages to dpkg.
        labels.insert(LABEL_PYTHON.to_owned(), python.clone());
        labels.insert(
            LABEL_PYTHON_INTERPRETER.to_owned(),
            "/usr/bin/python3".to_owned(),
        );
        labels.insert(
            LABEL_PYTHON_SITE_PACKAGES.to_owned(),
            format!("/usr/local/lib/python{python}/dist-packages"),
        );
    }
    let base = BaseConfig {
        cmd: Some(vec!["/bin/bash".to_owned()]),
        ..BaseConfig::default()
    };
    let env = [
        (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    let config = assemble::image_config(
        platform,
        &base,
        std::slice::from_ref(&layer.diff_id),
        &env,
        &labels,
    );
    client
        .push_blob_bytes(repository, Bytes::from(config.bytes.clone()), None)
        .await
        .map_err(registry(format!("{platform}: pushing the config")))?;
    let descriptor = Descriptor {
        media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
        digest: layer.digest.clone(),
        size: layer.size,
        annotations: None,
    };
    let manifest = assemble::image_manifest(&config, &[descriptor], &BTreeMap::new());
    client
        .push_manifest(
            repository,
            &manifest.digest,
            Bytes::from(manifest.bytes.clone()),
            MEDIA_TYPE_MANIFEST,
        )
        .await
        .map_err(registry(format!("{platform}: pushing the manifest")))?;
    Ok(manifest)
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

/// `major.minor` of a Debian version's upstream part: `2.36-9+deb12u13` → `2.36`,
/// `3.11.2-1+b1` → `3.11`, `1:2.3.4-1` → `2.3`.
fn upstream_major_minor(version: &str) -> Option<String> {
    let without_epoch = version.split_once(':').map_or(version, |(_, v)| v);
    let upstream = without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(u, _)| u);
    let mut parts = upstream.split(['.', '+', '~']);
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = parts.next().filter(|p| is_number(p))?;
    Some(format!("{major}.{minor}"))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The lowest `major.minor` version, numerically: the one every platform satisfies.
fn lowest<'a>(versions: impl Iterator<Item = &'a str>) -> Option<String> {
    let key = |v: &str| -> (u64, u64) {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
        (
            parts.next().unwrap_or(u64::MAX),
            parts.next().unwrap_or(u64::MAX),
        )
    };
    versions.min_by_key(|v| key(v)).map(str::to_owned)
}

/// The last lines of a child's stderr, for error messages.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

/// The gzip blob of a tar, with both digests.
#[derive(Debug)]
struct Compressed {
    diff_id: String,
    digest: String,
    size: u64,
}

/// Gzips `tar` into `gz` (mtime 0, no name, OS "unknown", fixed level: the blob is a pure
/// function of the tar) and returns the tar's sha256 (diff_id) and the blob's sha256 and size.
fn compress(tar: &Path, gz: &Path) -> io::Result<Compressed> {
    let mut input = File::open(tar)?;
    let out = HashWriter::new(BufWriter::new(File::create(gz)?));
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, Compression::new(GZIP_LEVEL));
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

fn io_error(step: String) -> impl FnOnce(io::Error) -> BaseError {
    move |source| BaseError::Io { step, source }
}

fn registry(step: String) -> impl FnOnce(ClientError) -> BaseError {
    move |source| BaseError::Registry { step, source }
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

const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest shape a base can have: OCI or Docker, index/list or single image.
const ACCEPTED: [&str; 4] = [
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// The fields kiln reads from an index, manifest list or image manifest.
#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Debug, Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The parts of a config kiln reads beyond [`BaseConfig`]: platform and labels.
#[derive(Debug, Deserialize)]
struct ConfigFacts {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ConfigLabels>,
}

#[derive(Debug, Deserialize)]
struct ConfigLabels {
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

/// Reads `platform`'s image of the base `repository:tag` from the registry: its manifest
/// digest, layers, config and labels. Accepts an OCI index or Docker manifest list (picking the
/// platform's entry) and a single-image manifest (checking its config's platform), so bases
/// pulled from elsewhere work like kiln's own.
pub async fn inspect(
    client: &RegistryClient,
    repository: &str,
    tag: &str,
    platform: Platform,
) -> Result<BaseManifest, BaseError> {
    let reference = format!("{}/{repository}:{tag}", client.registry());
    let (bytes, digest) = client
        .pull_manifest(repository, tag, &ACCEPTED)
        .await
        .map_err(registry(format!("pulling {reference}")))?;
    let mut manifest = parse_manifest(&reference, &bytes)?;
    let mut digest = digest;
    if let Some(entries) = &manifest.manifests {
        let entry = entries
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| matches(p, platform)))
            .ok_or_else(|| BaseError::NoPlatform {
                reference: reference.clone(),
                platform,
            })?;
        let child = format!("{}/{repository}@{}", client.registry(), entry.digest);
        let (bytes, child_digest) = client
            .pull_manifest(repository, &entry.digest, &ACCEPTED)
            .await
            .map_err(registry(format!("pulling {child}")))?;
        manifest = parse_manifest(&child, &bytes)?;
        digest = child_digest;
    }
    let image = format!("{}/{repository}@{digest}", client.registry());
    let (Some(config_descriptor), Some(layers)) = (manifest.config, manifest.layers) else {
        return Err(BaseError::Invalid {
            reference: image,
            why: "not an image manifest (no config or layers)".to_owned(),
        });
    };
    let mut config_bytes = Vec::new();
    client
        .pull_blob(repository, &config_descriptor.digest, &mut config_bytes)
        .await
        .map_err(registry(format!("pulling the config of {image}")))?;
    let config = BaseConfig::from_json(&config_bytes).map_err(|source| BaseError::Config {
        reference: image.clone(),
        source,
    })?;
    let facts: ConfigFacts =
        serde_json::from_slice(&config_bytes).map_err(|e| BaseError::Invalid {
            reference: image.clone(),
            why: format!("unreadable image config: {e}"),
        })?;
    let wanted = platform.as_str();
    let found = format!("{}/{}", facts.os, facts.architecture);
    if found != wanted {
        return Err(BaseError::NoPlatform {
            reference: format!("{reference} (a single {found} image)"),
            platform,
        });
    }
    if config.diff_ids.len() != layers.len() {
        return Err(BaseError::Invalid {
            reference: image,
            why: format!(
                "{} layers but {} diff_ids",
                layers.len(),
                config.diff_ids.len()
            ),
        });
    }
    let labels = facts.config.and_then(|c| c.labels).unwrap_or_default();
    Ok(BaseManifest {
        digest,
        layers,
        config,
        glibc: labels.get(LABEL_GLIBC).cloned(),
        python: labels.get(LABEL_PYTHON).cloned(),
        labels,
    })
}

fn parse_manifest(reference: &str, bytes: &[u8]) -> Result<AnyManifest, BaseError> {
    serde_json::from_slice(bytes).map_err(|e| BaseError::Invalid {
        reference: reference.to_owned(),
        why: format!("unreadable manifest: {e}"),
    })
}

/// Whether an index entry is for `platform`; arm64 entries may say `v8` or nothing.
fn matches(entry: &EntryPlatform, platform: Platform) -> bool {
    let os_arch = format!("{}/{}", entry.os, entry.architecture);
    os_arch == platform.as_str()
        && match platform {
            Platform::LinuxArm64 => entry.variant.as_deref().is_none_or(|v| v == "v8"),
            Platform::LinuxAmd64 => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_major_minor_of_the_upstream_version() {
        assert_eq!(
            upstream_major_minor("2.36-9+deb12u13").as_deref(),
            Some("2.36")
        );
        assert_eq!(upstream_major_minor("3.11.2-1+b1").as_deref(), Some("3.11"));
        assert_eq!(upstream_major_minor("1:2.3.4-1").as_deref(), Some("2.3"));
        assert_eq!(upstream_major_minor("2.41").as_deref(), Some("2.41"));
        assert_eq!(upstream_major_minor(""), None);
        assert_eq!(upstream_major_minor("3"), None);
    }

    #[test]
    fn picks_the_lowest_version_numerically() {
        assert_eq!(
            lowest(["2.36", "2.9", "2.40"].into_iter()).as_deref(),
            Some("2.9")
        );
        assert_eq!(lowest(std::iter::empty()), None);
    }

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
    fn index_entries_match_arm64_with_or_without_variant() {
        let entry = |arch: &str, variant: Option<&str>| EntryPlatform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        };
        assert!(matches(&entry("arm64", None), Platform::LinuxArm64));
        assert!(matches(&entry("arm64", Some("v8")), Platform::LinuxArm64));
        assert!(!matches(&entry("arm64", Some("v7")), Platform::LinuxArm64));
        assert!(!matches(&entry("amd64", None), Platform::LinuxArm64));
        assert!(matches(&entry("amd64", None), Platform::LinuxAmd64));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = tail(text.as_bytes());
        assert!(tail.starts_with("line 10\n") && tail.ends_with("line 29"));
    }
}
