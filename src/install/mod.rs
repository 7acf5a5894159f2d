//! Installing a solution into a staging prefix, as it will be at `/opt/conda` in the image.
//!
//! rattler links each package on its own (so it can be a layer of its own) from a package
//! cache shared by all builds (downloads are checked against the lock's sha256 there), patches
//! prefix placeholders for `/opt/conda` instead of the staging path, and never runs link
//! scripts. Everything that would tie the result to this host is removed, so the same lock
//! gives the same bytes on any machine.
//! Packages are named by their canonical URLs (what `conda-meta` records); a channel's
//! mirror is only where the bytes come from, swapped in per request by rattler's mirror
//! middleware. Depends on `resolve`.

pub mod fetch;
pub mod wheel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rattler::install::{InstallOptions, PythonInfo, link_package_sync};
use rattler::package_cache::PackageCache;
use rattler_conda_types::prefix::Prefix;
use rattler_conda_types::prefix_record::Link;
use rattler_conda_types::{PrefixRecord, RepoDataRecord, Subdir};
use rattler_networking::retry_policies::default_retry_policy;
use url::Url;

use crate::resolve::Solution;
use crate::spec::Platform;

/// Where environments live in kiln's images.
pub const CONDA_PREFIX: &str = "/opt/conda";

/// Why an installation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("installing the packages failed: {0}")]
    Install(String),
    #[error(
        "{} {} post-link scripts, which kiln does not run when it builds natively: {}",
        if .0.len() == 1 { "package" } else { "packages" },
        if .0.len() == 1 { "has" } else { "have" },
        .0.join(", ")
    )]
    LinkScripts(Vec<String>),
    #[error("cleaning the installed prefix at {path} failed")]
    Clean {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Installs conda solutions; cheap to clone.
#[derive(Clone)]
pub struct CondaInstaller {
    cache: PackageCache,
    download: reqwest_middleware::ClientWithMiddleware,
}

impl std::fmt::Debug for CondaInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CondaInstaller").finish_non_exhaustive()
    }
}

impl CondaInstaller {
    /// An installer whose package cache lives in `cache_dir`, shared by all builds, that
    /// downloads every package URL under a key of `mirrors` (a canonical channel URL) from the
    /// mirror it maps to ([`crate::resolve::CondaResolver::mirror_map`]).
    pub fn new(cache_dir: PathBuf, http: reqwest::Client, mirrors: BTreeMap<Url, Url>) -> Self {
        let download = reqwest_middleware::ClientBuilder::new(http)
            .with(crate::resolve::repodata::mirror_middleware(mirrors))
            .build();
        CondaInstaller {
            cache: PackageCache::new(cache_dir),
            download,
        }
    }

    /// Installs `solution` for `platform` into `staging`, which stands for [`CONDA_PREFIX`]:
    /// each package fetched, then linked as [`link_package`] links it for its own layer, so
    /// the environment is the union of the packages' layers. Links run on the blocking pool.
    pub async fn install(
        &self,
        solution: &Solution,
        platform: Platform,
        staging: &Path,
    ) -> Result<(), InstallError> {
        let package_dirs = futures_util::future::try_join_all(
            solution.records.iter().map(|record| self.fetch(record)),
        )
        .await?;
        let records = solution.records.clone();
        let staging = staging.to_owned();
        tokio::task::spawn_blocking(move || {
            let python = records
                .iter()
                .find(|record| record.package_record.name.as_normalized() == "python");
            for (record, package_dir) in records.iter().zip(&package_dirs) {
                link_package(package_dir, record, platform, python, &staging)?;
            }
            scrub(&staging)
        })
        .await
        .map_err(|err| InstallError::Install(format!("installing crashed: {err}")))?
    }

    /// Puts `record`'s package into the package cache (downloaded from its channel's mirror
    /// and checked against its sha256, unless it is there already) and returns where it is
    /// extracted, for [`link_package`].
    pub async fn fetch(&self, record: &RepoDataRecord) -> Result<PathBuf, InstallError> {
        let fetched = if record.url.scheme() == "file" {
            let path = record.url.to_file_path().map_err(|()| {
                InstallError::Install(format!("{} is not a file path", record.url))
            })?;
            self.cache
                .get_or_fetch_from_path(&path, Some(&record.package_record), None)
                .await
        } else {
            self.cache
                .get_or_fetch_from_url_with_retry(
                    &record.package_record,
                    record.url.clone(),
                    self.download.clone().into(),
                    default_retry_policy(),
                    None,
                    None,
                )
                .await
        };
        let fetched = fetched.map_err(|err| {
            InstallError::Install(format!(
                "{}: {}",
                record.identifier,
                crate::error_chain(&err)
            ))
        })?;
        tracing::debug!(package = %record.identifier, "fetched a conda package");
        Ok(fetched.path().to_owned())
    }
}

/// The subdir of packages built for `platform`.
fn subdir(platform: Platform) -> Subdir {
    match platform {
        Platform::LinuxAmd64 => Subdir::Linux64,
        Platform::LinuxArm64 => Subdir::LinuxAarch64,
    }
}

/// Links the one package `record`, extracted at `package_dir`, into `staging` (empty; it
/// stands for [`CONDA_PREFIX`]) as the whole-environment install would, and writes its
/// `conda-meta` record as kiln keeps it. `python` is the environment's Python, needed by
/// noarch Python packages. Returns the package's files relative to `staging`, its record last.
/// Blocking: call it on the blocking pool.
pub fn link_package(
    package_dir: &Path,
    record: &RepoDataRecord,
    platform: Platform,
    python: Option<&RepoDataRecord>,
    staging: &Path,
) -> Result<Vec<PathBuf>, InstallError> {
    let failed = |detail: String| InstallError::Install(format!("{}: {detail}", record.identifier));
    let python_info = python
        .map(|python| PythonInfo::from_python_record(&python.package_record, subdir(platform)))
        .transpose()
        .map_err(|err| failed(crate::error_chain(&err)))?;
    let prefix = Prefix::create(staging).map_err(|source| InstallError::Clean {
        path: staging.to_owned(),
        source,
    })?;
    let options = InstallOptions {
        target_prefix: Some(PathBuf::from(CONDA_PREFIX)),
        platform: Some(subdir(platform)),
        python_info,
        // As in `install`: copies, the package's own symlinks kept.
        allow_hard_links: Some(false),
        allow_ref_links: Some(false),
        allow_symbolic_links: Some(true),
        ..InstallOptions::default()
    };
    // A registry of its own: one package alone clobbers nothing.
    let (paths, link_type) = link_package_sync(package_dir, &prefix, Default::default(), options)
        .map_err(|err| failed(crate::error_chain(&err)))?;
    let scripts = link_scripts(staging);
    if !scripts.is_empty() {
        return Err(InstallError::LinkScripts(scripts));
    }
    let record = PrefixRecord {
        link: Some(Link {
            source: package_dir.to_owned(),
            link_type: Some(link_type),
        }),
        ..PrefixRecord::from_repodata_record(record.clone(), paths)
    };
    let mut files: Vec<PathBuf> = record.files.clone();
    let meta = Path::new("conda-meta").join(record.file_name());
    let mut value = serde_json::to_value(&record).map_err(|err| failed(err.to_string()))?;
    scrub_record(&mut value);
    let text = serde_json::to_string_pretty(&value).map_err(|err| failed(err.to_string()))?;
    std::fs::write(staging.join(&meta), text).map_err(|source| InstallError::Clean {
        path: staging.join(&meta),
        source,
    })?;
    files.push(meta);
    Ok(files)
}

/// Packages that installed a post-link script (`bin/.<name>-post-link.sh`), sorted.
fn link_scripts(staging: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(staging.join("bin")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            file.strip_prefix('.')?
                .strip_suffix("-post-link.sh")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Removes from a `conda-meta` record the host paths of the package cache, and the request
/// that installed it (which would make a package's layer differ between requests).
fn scrub_record(record: &mut serde_json::Value) {
    if let Some(object) = record.as_object_mut() {
        object.remove("extracted_package_dir");
        object.remove("package_tarball_full_path");
        object.remove("requested_spec");
        object.remove("requested_specs");
        if let Some(link) = object.get_mut("link").and_then(|l| l.as_object_mut()) {
            link.remove("source");
        }
    }
}

/// Removes what ties an installed prefix to this host and this moment, beside the records
/// [`link_package`] scrubs: the files rattler creates in every prefix.
fn scrub(staging: &Path) -> Result<(), InstallError> {
    for name in ["CACHEDIR.TAG", "conda-meta/history"] {
        match std::fs::remove_file(staging.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(InstallError::Clean {
                    path: staging.join(name),
                    source: err,
                });
            }
            _ => {}
        }
    }
    Ok(())
}
