//! Garbage collection of the registry's storage: blobs no manifest references, links of
//! repositories to blobs none of their manifests use, expired upload sessions, and remote-build
//! results past their retention.
//!
//! Mark, then sweep. Marking walks every repository without stopping pushes: a manifest keeps
//! what it references, and anything written or linked within the grace period is kept, since a
//! push uploads its blobs before the manifest that references them. Sweeping deletes under the
//! storage's exclusive guard, skipping every digest a push touched since marking began (a blob
//! re-linked or mounted for a manifest being pushed right now).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::error::{RegistryError, Result};
use super::path::{Digest, Reference};
use super::storage::Storage;

/// The collection `singularity build --remote` results land in when no library reference is
/// given: `library/<user>/remote-builds/rb-…`.
pub const REMOTE_BUILDS_COLLECTION: &str = "remote-builds";

/// Deletions done per hold of the exclusive guard, so pushes wait only briefly.
const SWEEP_BATCH: usize = 256;

/// What a collection may remove.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Blobs and links younger than this are kept even when unreferenced.
    pub grace: Duration,
    /// Upload sessions older than this are removed.
    pub upload_ttl: Duration,
    /// Remote-build results whose last push is older than this are removed; `None` keeps them.
    pub remote_build_retention: Option<Duration>,
}

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted, and their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Links from repositories to blobs none of their manifests reference.
    pub links: usize,
    /// Expired upload sessions, and their bytes.
    pub uploads: usize,
    pub upload_bytes: u64,
    /// Remote-build result repositories past their retention.
    pub remote_builds: usize,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} blobs ({} bytes), {} unused blob links, {} expired upload sessions \
             ({} bytes), {} expired remote-build results",
            self.blobs,
            self.blob_bytes,
            self.links,
            self.uploads,
            self.upload_bytes,
            self.remote_builds
        )
    }
}

/// What marking found removable.
#[derive(Debug, Default)]
struct Marked {
    /// Link files, with the digest they link.
    links: Vec<(PathBuf, Digest)>,
    /// Blob files, with their digest and size.
    blobs: Vec<(PathBuf, Digest, u64)>,
}

/// Every repository directory under `repositories` (those holding `_links`, `_manifests` or
/// `_tags`), found by walking the nested names.
pub(super) fn repositories(repositories: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![repositories.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut is_repository = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('_') {
                is_repository |= matches!(name, "_links" | "_manifests" | "_tags");
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        if is_repository {
            found.push(dir);
        }
    }
    found
}

/// The entries of `dir` named by a digest's hex, with their modification times.
fn digest_entries(dir: &Path) -> Vec<(PathBuf, Digest, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let digest = Digest::from_hex(entry.file_name().to_str()?)?;
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((entry.path(), digest, modified))
        })
        .collect()
}

fn older_than(modified: SystemTime, grace: Duration, now: SystemTime) -> bool {
    now.duration_since(modified).is_ok_and(|age| age >= grace)
}

/// Finds the links and blobs nothing keeps (blocking: walks the whole store).
fn mark(root: &Path, grace: Duration) -> Marked {
    let now = SystemTime::now();
    let blob_path = |d: &Digest| root.join("blobs/sha256").join(&d.hex()[..2]).join(d.hex());
    let mut live: HashSet<Digest> = HashSet::new();
    let mut marked = Marked::default();
    for repo in repositories(&root.join("repositories")) {
        let mut referenced: HashSet<Digest> = HashSet::new();
        for (_, manifest, _) in digest_entries(&repo.join("_manifests")) {
            let document = std::fs::read(blob_path(&manifest))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok());
            if let Some(document) = document {
                referenced.extend(super::manifest::referenced(&document).unwrap_or_default());
            }
            live.insert(manifest);
        }
        for (path, digest, modified) in digest_entries(&repo.join("_links")) {
            if referenced.contains(&digest) || !older_than(modified, grace, now) {
                live.insert(digest);
            } else {
                marked.links.push((path, digest));
            }
        }
        live.extend(referenced);
    }
    let Ok(prefixes) = std::fs::read_dir(root.join("blobs/sha256")) else {
        return marked;
    };
    for prefix in prefixes.flatten() {
        for (path, digest, modified) in digest_entries(&prefix.path()) {
            if !live.contains(&digest) && older_than(modified, grace, now) {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                marked.blobs.push((path, digest, size));
            }
        }
    }
    marked
}

fn join_error(err: tokio::task::JoinError) -> RegistryError {
    RegistryError::Internal(format!("a garbage collection task failed: {err}"))
}

impl Storage {
    /// Removes what `policy` allows: expired remote-build results and upload sessions, then
    /// links and blobs nothing references. Safe while pushes run.
    pub async fn collect_garbage(&self, policy: &GcPolicy) -> Result<GcReport> {
        let mut report = GcReport {
            remote_builds: match policy.remote_build_retention {
                Some(retention) => self.expire_remote_builds(retention).await?,
                None => 0,
            },
            ..GcReport::default()
        };
        (report.uploads, report.upload_bytes) =
            self.cleanup_expired_uploads(policy.upload_ttl).await?;

        self.watch_touches(true);
        let swept = self.sweep(policy.grace, &mut report).await;
        self.watch_touches(false);
        swept?;
        Ok(report)
    }

    async fn sweep(&self, grace: Duration, report: &mut GcReport) -> Result<()> {
        let root = self.root().to_owned();
        let marked = tokio::task::spawn_blocking(move || mark(&root, grace))
            .await
            .map_err(join_error)?;
        let mut links = marked.links;
        while !links.is_empty() {
            let batch: Vec<_> = links.drain(..links.len().min(SWEEP_BATCH)).collect();
            let _exclusive = self.guard().write().await;
            let touched = self.touched();
            let removed = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .filter(|(path, digest)| {
                        !touched.contains(digest) && std::fs::remove_file(path).is_ok()
                    })
                    .count()
            })
            .await
            .map_err(join_error)?;
            report.links += removed;
        }
        let mut blobs = marked.blobs;
        while !blobs.is_empty() {
            let batch: Vec<_> = blobs.drain(..blobs.len().min(SWEEP_BATCH)).collect();
            let _exclusive = self.guard().write().await;
            let touched = self.touched();
            let (count, bytes) = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .filter(|(path, digest, _)| {
                        !touched.contains(digest) && std::fs::remove_file(path).is_ok()
                    })
                    .fold((0, 0), |(count, bytes), (_, _, size)| {
                        (count + 1, bytes + size)
                    })
            })
            .await
            .map_err(join_error)?;
            report.blobs += count;
            report.blob_bytes += bytes;
        }
        Ok(())
    }

    /// Deletes every manifest of remote-build result repositories
    /// (`library/<user>/remote-builds/<name>`) pushed to last longer than `retention` ago;
    /// their blobs go in the sweep that follows. Returns how many repositories expired.
    async fn expire_remote_builds(&self, retention: Duration) -> Result<usize> {
        let walked = self.root().join("repositories");
        let expired = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            repositories(&walked)
                .into_iter()
                .filter_map(|repo| {
                    let name = repo.strip_prefix(&walked).ok()?.to_str()?.to_owned();
                    let parts: Vec<&str> = name.split('/').collect();
                    let is_result = parts.len() == 4
                        && parts[0] == super::LIBRARY_OPERATOR
                        && parts[2] == REMOTE_BUILDS_COLLECTION;
                    if !is_result {
                        return None;
                    }
                    let manifests = digest_entries(&repo.join("_manifests"));
                    let newest = manifests.iter().map(|(_, _, modified)| *modified).max()?;
                    older_than(newest, retention, now).then(|| {
                        let digests = manifests.into_iter().map(|(_, d, _)| d).collect();
                        (name, digests)
                    })
                })
                .collect::<Vec<(String, Vec<Digest>)>>()
        })
        .await
        .map_err(join_error)?;
        let count = expired.len();
        for (name, digests) in expired {
            for digest in digests {
                match self
                    .delete_manifest(&name, &Reference::Digest(digest))
                    .await
                {
                    Ok(()) => {}
                    // Deleted meanwhile.
                    Err(err) if err.code().is_some() => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(count)
    }
}
