//! Each package's own layer, made once and reused by every image that has the package.
//!
//! A conda package is linked alone into an empty staging prefix (as the whole-environment
//! install would link it: `/opt/conda` placeholders patched, the environment's Python for
//! noarch Python packages, no link scripts) with its scrubbed `conda-meta` record; a wheel is
//! installed alone into an empty root. Its files become a fragment ([`assemble::write_fragment`])
//! in the layer cache, recorded in the store under a key of everything that determines its bytes
//! ([`conda_key`], [`wheel_key`]). A later build finds it there and installs and compresses
//! nothing; the layers of an image are put together from these blobs
//! ([`assemble::compose`]) in groups that do not depend on the rest of the request
//! ([`assemble::group_packages`]).
//!
//! Whole-environment installs also wrote `CACHEDIR.TAG` and `conda-meta/history`, which kiln
//! removed, and nothing else outside the packages' own files: there is no environment-specific
//! layer to write.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use rattler_conda_types::RepoDataRecord;
use sha2::{Digest as _, Sha256};

use super::BuildLog;
use super::native::{Failure, LAYER_BUDGET, NativeBuilder};
use super::python::ImagePython;
use crate::assemble::{self, LayerBlob, PackageSize};
use crate::install::fetch::FetchedWheel;
use crate::install::wheel::install_wheel;
use crate::install::{CONDA_PREFIX, link_package};
use crate::resolve::Solution;
use crate::spec::Platform;
use crate::store::PackageLayer;

/// Changes whenever the way a package layer is written changes, so old records are not
/// taken for new layers.
const FORMAT: &str = "kiln package layer 1";

/// A package with its own layer, ready to be grouped.
#[derive(Debug, Clone)]
pub(super) struct Packaged {
    /// Unique within an image, orders the layers: `name-version-build` for conda packages,
    /// `pip:name-version` for wheels.
    pub(super) id: String,
    /// Chooses the package's bucket: the conda package's name, or `pip:` and the wheel's.
    pub(super) name: String,
    /// Its layer blob.
    pub(super) blob: LayerBlob,
    /// What the store records about it.
    pub(super) record: PackageLayer,
}

/// The key of conda package `record`'s layer for `platform`: the archive's sha256 and its
/// `conda-meta` record (which the channel's repodata gives), the prefix, and for noarch Python
/// packages the environment's Python (`python`), which decides where their files go.
pub(super) fn conda_key(
    record: &RepoDataRecord,
    platform: Platform,
    python: Option<&RepoDataRecord>,
) -> Result<String, Failure> {
    let text = |record: &RepoDataRecord| {
        serde_json::to_value(record)
            .and_then(|value| serde_json::to_string(&value))
            .map_err(Failure::json(format!(
                "{} cannot be written as JSON",
                record.identifier
            )))
    };
    let sha256 = record
        .package_record
        .sha256
        .map(hex::encode)
        .ok_or_else(|| {
            Failure::refused(format!(
                "{} has no sha256 in its channel's repodata, so kiln cannot tell its archive \
                 from another build's; ask the channel to publish sha256 hashes",
                record.identifier
            ))
        })?;
    let python = match python {
        Some(python) if record.package_record.noarch.is_python() => text(python)?,
        _ => String::new(),
    };
    Ok(key(&[
        FORMAT,
        "conda",
        &sha256,
        &text(record)?,
        CONDA_PREFIX,
        &platform.to_string(),
        &python,
    ]))
}

/// The key of a wheel's layer: its sha256 and where it is installed (the target Python's
/// version and layout, which its scripts' shebangs name).
pub(super) fn wheel_key(sha256: &str, python: &ImagePython) -> String {
    let layout = &python.layout;
    let paths = [
        &layout.interpreter,
        &layout.site_packages,
        &layout.scripts,
        &layout.data,
        &layout.headers,
    ]
    .map(|path| path.to_string_lossy().into_owned());
    let mut parts = vec![FORMAT, "wheel", sha256, &python.version];
    parts.extend(paths.iter().map(String::as_str));
    key(&parts)
}

/// sha256 of `parts`, each ended by a newline (none contains one that matters: JSON text has
/// its newlines escaped).
fn key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// The `.dist-info` and `.egg-info` paths among `files` (relative to a prefix) that sit
/// directly in a `site-packages` directory: what pip sees as installed.
pub(super) fn python_metadata(files: &[PathBuf]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for file in files {
        let mut prefix = PathBuf::new();
        let mut parent_is_site = false;
        for component in file.components() {
            let Component::Normal(part) = component else {
                break;
            };
            prefix.push(part);
            let name = part.to_string_lossy();
            if parent_is_site && (name.ends_with(".dist-info") || name.ends_with(".egg-info")) {
                found.insert(prefix.to_string_lossy().into_owned());
                break;
            }
            parent_is_site = name == "site-packages";
        }
    }
    found.into_iter().collect()
}

/// One package layer to make on the blocking pool.
struct Job {
    index: usize,
    key: String,
    /// An empty directory that stands for the image's `/`.
    root: PathBuf,
    kind: JobKind,
}

enum JobKind {
    Conda {
        record: Box<RepoDataRecord>,
        package_dir: PathBuf,
        python: Option<Box<RepoDataRecord>>,
        platform: Platform,
    },
    Wheel {
        wheel: PathBuf,
        python: ImagePython,
    },
}

/// Makes `job`'s layer in `layer_dir`: installs the one package under `job.root` and writes its
/// fragment. The staging files stay until the build's work directory is removed, as a whole
/// environment's did: a build killed midway leaves them for the restart's sweep, and the retry
/// starts from an empty work directory.
fn make_layer(job: &Job, layer_dir: &Path) -> Result<(LayerBlob, PackageLayer), Failure> {
    let (files, metadata, license) = match &job.kind {
        JobKind::Conda {
            record,
            package_dir,
            python,
            platform,
        } => {
            let relative = Path::new(CONDA_PREFIX.trim_start_matches('/'));
            let files = link_package(
                package_dir,
                record,
                *platform,
                python.as_deref(),
                &job.root.join(relative),
            )?;
            let metadata = python_metadata(&files);
            let files = files.iter().map(|file| relative.join(file)).collect();
            (files, metadata, None)
        }
        JobKind::Wheel { wheel, python } => {
            std::fs::create_dir_all(&job.root)
                .map_err(Failure::io(format!("cannot create {}", job.root.display())))?;
            let installed = install_wheel(wheel, &python.layout, &job.root)?;
            (installed.files, Vec::new(), installed.license)
        }
    };
    let blob = assemble::write_fragment(&job.root, &files, layer_dir)?;
    let record = PackageLayer {
        key: job.key.clone(),
        digest: blob.digest.clone(),
        diff_id: blob.diff_id.clone(),
        size: blob.size,
        uncompressed_size: blob.uncompressed_size,
        python_metadata: metadata,
        license,
    };
    Ok((blob, record))
}

/// `f` of every item, on as many threads as there are cores, in the items' order: installing
/// and compressing packages is most of a cold build's time, and packages are independent.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, Failure> + Sync,
) -> Result<Vec<R>, Failure> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<R, Failure>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(index) else {
                        break;
                    };
                    let result = f(item);
                    *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(Failure::refused("a package layer was not made")))
        })
        .collect()
}

impl NativeBuilder {
    /// The layer recorded under `key`, if its blob is still in the layer cache.
    async fn cached_layer(&self, key: &str) -> Result<Option<(LayerBlob, PackageLayer)>, Failure> {
        let record = self.store.package_layer(key).await?;
        Ok(record.and_then(|record| {
            let blob = LayerBlob::find(
                &self.layer_dir,
                &record.digest,
                &record.diff_id,
                record.size,
                record.uncompressed_size,
            )?;
            Some((blob, record))
        }))
    }

    /// Makes the layers of `jobs` on the blocking pool and records them in the store.
    async fn make_layers(
        &self,
        jobs: Vec<Job>,
    ) -> Result<Vec<(usize, LayerBlob, PackageLayer)>, Failure> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let layer_dir = self.layer_dir.clone();
        let made = tokio::task::spawn_blocking(move || {
            let made = parallel_map(&jobs, |job| make_layer(job, &layer_dir))?;
            Ok::<_, Failure>(
                jobs.iter()
                    .zip(made)
                    .map(|(job, (blob, record))| (job.index, blob, record))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(Failure::crashed("making package layers"))??;
        for (_, _, record) in &made {
            self.store.add_package_layer(record).await?;
        }
        Ok(made)
    }

    /// The layers of `solution`'s conda packages for `platform`: those in the layer cache as
    /// they are, the others fetched, linked alone under `work` and written. In the solution's
    /// order.
    pub(super) async fn conda_layers(
        &self,
        solution: &Solution,
        platform: Platform,
        work: &Path,
        log: &BuildLog,
    ) -> Result<Vec<Packaged>, Failure> {
        let started = Instant::now();
        let python = solution
            .records
            .iter()
            .find(|record| record.package_record.name.as_normalized() == "python");
        let mut layers: Vec<Option<(LayerBlob, PackageLayer)>> = Vec::new();
        let mut missing = Vec::new();
        for (index, record) in solution.records.iter().enumerate() {
            let key = conda_key(record, platform, python)?;
            let cached = self.cached_layer(&key).await?;
            if cached.is_none() {
                missing.push((index, key));
            }
            layers.push(cached);
        }
        let package_dirs = futures_util::future::try_join_all(
            missing
                .iter()
                .map(|(index, _)| self.installer.fetch(&solution.records[*index])),
        )
        .await?;
        let jobs: Vec<Job> = missing
            .into_iter()
            .zip(package_dirs)
            .map(|((index, key), package_dir)| Job {
                index,
                key,
                root: work.join(format!("package-{index}")),
                kind: JobKind::Conda {
                    record: Box::new(solution.records[index].clone()),
                    package_dir,
                    python: python.cloned().map(Box::new),
                    platform,
                },
            })
            .collect();
        let made = jobs.len();
        for (index, blob, record) in self.make_layers(jobs).await? {
            layers[index] = Some((blob, record));
        }
        log.line(format!(
            "{platform}: {made} of {} conda packages installed and compressed into their \
             layers, {} reused from the layer cache, in {:.1} s",
            solution.records.len(),
            solution.records.len() - made,
            started.elapsed().as_secs_f64()
        ))
        .await;
        solution
            .records
            .iter()
            .zip(layers)
            .map(|(record, layer)| {
                let (blob, record_layer) = layer.ok_or_else(|| {
                    Failure::refused(format!("{} has no layer", record.identifier))
                })?;
                let package = &record.package_record;
                Ok(Packaged {
                    id: format!(
                        "{}-{}-{}",
                        package.name.as_normalized(),
                        package.version,
                        package.build
                    ),
                    name: package.name.as_normalized().to_owned(),
                    blob,
                    record: record_layer,
                })
            })
            .collect()
    }

    /// The layers of `wheels` installed for `python`: those in the layer cache as they are,
    /// the others installed alone under `work` and written. In the wheels' order.
    pub(super) async fn wheel_layers(
        &self,
        wheels: &[FetchedWheel],
        python: &ImagePython,
        platform: Platform,
        work: &Path,
        log: &BuildLog,
    ) -> Result<Vec<Packaged>, Failure> {
        let started = Instant::now();
        let mut layers: Vec<Option<(LayerBlob, PackageLayer)>> = Vec::new();
        let mut jobs = Vec::new();
        for (index, wheel) in wheels.iter().enumerate() {
            let key = wheel_key(&wheel.locked.sha256, python);
            let cached = self.cached_layer(&key).await?;
            if cached.is_none() {
                jobs.push(Job {
                    index,
                    key,
                    root: work.join(format!("wheel-{index}")),
                    kind: JobKind::Wheel {
                        wheel: wheel.path.clone(),
                        python: python.clone(),
                    },
                });
            }
            layers.push(cached);
        }
        let made = jobs.len();
        for (index, blob, record) in self.make_layers(jobs).await? {
            layers[index] = Some((blob, record));
        }
        log.line(format!(
            "{platform}: {made} of {} wheels installed and compressed into their layers, {} \
             reused from the layer cache, in {:.1} s",
            wheels.len(),
            wheels.len() - made,
            started.elapsed().as_secs_f64()
        ))
        .await;
        wheels
            .iter()
            .zip(layers)
            .map(|(wheel, layer)| {
                let (blob, record) = layer.ok_or_else(|| {
                    Failure::refused(format!("{} has no layer", wheel.locked.file_name))
                })?;
                Ok(Packaged {
                    id: format!("pip:{}-{}", wheel.locked.name, wheel.locked.version),
                    name: format!("pip:{}", wheel.locked.name),
                    blob,
                    record,
                })
            })
            .collect()
    }

    /// The image's layers: `packages` grouped within [`LAYER_BUDGET`], each group's blobs put
    /// together (copied, not compressed again; a group of one is its package's own blob).
    pub(super) async fn compose_layers(
        &self,
        packages: &[Packaged],
        platform: Platform,
        log: &BuildLog,
    ) -> Result<Vec<LayerBlob>, Failure> {
        let started = Instant::now();
        let sizes: Vec<PackageSize> = packages
            .iter()
            .map(|package| PackageSize {
                id: package.id.clone(),
                name: package.name.clone(),
                size: package.blob.size,
            })
            .collect();
        let groups: Vec<Vec<LayerBlob>> = assemble::group_packages(&sizes, LAYER_BUDGET)
            .into_iter()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| packages.iter().find(|package| &package.id == id))
                    .map(|package| package.blob.clone())
                    .collect()
            })
            .collect();
        let layer_dir = self.layer_dir.clone();
        // The blocking thread logs in the build's span too.
        let span = tracing::Span::current();
        let layers = tokio::task::spawn_blocking(move || {
            let _build = span.enter();
            let mut layers = Vec::new();
            for parts in &groups {
                layers.extend(assemble::compose(parts, &layer_dir)?);
            }
            Ok::<_, Failure>(layers)
        })
        .await
        .map_err(Failure::crashed("putting layers together"))??;
        let bytes: u64 = layers.iter().map(|layer| layer.size).sum();
        tracing::info!(%platform, layers = layers.len(), bytes, packages = packages.len(), "assembled the layers");
        log.line(format!(
            "{platform}: {} layers ({bytes} bytes compressed) from {} packages in {:.1} s",
            layers.len(),
            packages.len(),
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_metadata_is_what_sits_in_site_packages() {
        let files: Vec<PathBuf> = [
            "lib/python3.12/site-packages/numpy-2.1.3.dist-info/RECORD",
            "lib/python3.12/site-packages/numpy-2.1.3.dist-info/METADATA",
            "lib/python3.12/site-packages/numpy/__init__.py",
            "lib/python3.12/site-packages/PyYAML-6.0.1-py3.12.egg-info",
            "share/doc/other.dist-info/README",
            "conda-meta/numpy-2.1.3-py312_0.json",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            python_metadata(&files),
            [
                "lib/python3.12/site-packages/PyYAML-6.0.1-py3.12.egg-info",
                "lib/python3.12/site-packages/numpy-2.1.3.dist-info",
            ]
        );
    }

    #[test]
    fn wheel_keys_change_with_the_target_python() {
        let a = ImagePython::conda("3.12.7").expect("python");
        let b = ImagePython::conda("3.11.9").expect("python");
        assert_ne!(wheel_key("ab", &a), wheel_key("ab", &b));
        assert_ne!(wheel_key("ab", &a), wheel_key("cd", &a));
        assert_eq!(wheel_key("ab", &a), wheel_key("ab", &a.clone()));
    }
}
