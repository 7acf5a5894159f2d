//! What a killed kiln (or a killed buildah) leaves behind, removed when kiln starts again:
//! working containers and images of interrupted builds in kiln's buildah storage, and work
//! directories (`<data>/work/<build id>`) of builds no worker will run again.
//!
//! A build that is still queued or running in the store keeps its work directory: a worker
//! elsewhere may be running it, and a claimed build empties its directory itself before it
//! starts ([`super::fresh_work_dir`]). Everything else kiln made there is garbage: builds
//! finished (a later attempt gets a new id) or unknown to the store. Depends on `store` and
//! [`super::buildah`].

use std::path::Path;

use super::buildah::{Buildah, Swept};
use crate::store::{BuildStatus, Store};

/// What the start-up sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// From kiln's buildah storage.
    pub storage: Swept,
    /// Work directories, by build id.
    pub work_dirs: Vec<String>,
}

/// Removes the leftovers of interrupted builds from `buildah`'s storage and from `work_dir`,
/// logging each. Run it once at start, before workers claim builds. A step that fails is
/// logged and the rest goes on: leftovers cost disk, never correctness.
pub async fn sweep(buildah: &Buildah, store: &dyn Store, work_dir: &Path) -> Leftovers {
    let storage = match buildah.sweep_storage().await {
        Ok(swept) => swept,
        Err(err) => {
            tracing::warn!(error = %crate::error_chain(&err),
                "sweeping kiln's buildah storage failed");
            Swept::default()
        }
    };
    for container in &storage.containers {
        tracing::info!(%container, "removed a buildah container an interrupted build left");
    }
    for image in &storage.images {
        tracing::info!(%image, "removed a buildah image an interrupted build left");
    }
    let work_dirs = sweep_work_dirs(store, work_dir).await;
    Leftovers { storage, work_dirs }
}

/// Removes the directories in `work_dir` named like a build id whose build is neither queued
/// nor running; returns their names.
async fn sweep_work_dirs(store: &dyn Store, work_dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let mut entries = match tokio::fs::read_dir(work_dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return removed,
        Err(err) => {
            tracing::warn!(path = %work_dir.display(), error = %err, "cannot list the work directories");
            return removed;
        }
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_build_id(&name) || !entry.file_type().await.is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let live = match store.build(&name).await {
            Ok(build) => build.is_some_and(|build| build.status != BuildStatus::Done),
            Err(err) => {
                tracing::warn!(build = %name, error = %crate::error_chain(&err),
                    "cannot tell whether a work directory's build runs; kept");
                true
            }
        };
        if live {
            continue;
        }
        match tokio::fs::remove_dir_all(entry.path()).await {
            Ok(()) => {
                tracing::info!(build = %name, "removed the work directory of a build no worker runs");
                removed.push(name);
            }
            Err(err) => {
                tracing::warn!(path = %entry.path().display(), error = %err,
                    "removing an abandoned work directory failed");
            }
        }
    }
    removed
}

/// Whether `name` has the form of a build id (`bd-<16 hex>_<attempt>`), so the sweep leaves
/// anything else in the work directory (`kiln base bootstrap`'s, an operator's) alone.
fn is_build_id(name: &str) -> bool {
    let Some((key, attempt)) = name
        .strip_prefix("bd-")
        .and_then(|rest| rest.split_once('_'))
    else {
        return false;
    };
    key.len() == 16
        && key.bytes().all(|b| b.is_ascii_hexdigit())
        && !attempt.is_empty()
        && attempt.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_ids_are_swept() {
        assert!(is_build_id("bd-0123456789abcdef_1"));
        assert!(is_build_id("bd-0123456789abcdef_12"));
        for other in [
            "base-4242",
            "bd-0123456789abcdef",
            "bd-0123456789abcde_1",
            "bd-0123456789abcdeg_1",
            "bd-0123456789abcdef_",
            "bd-0123456789abcdef_1x",
            "kiln.lock",
        ] {
            assert!(!is_build_id(other), "{other}");
        }
    }
}
