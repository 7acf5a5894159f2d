//! Building images: the queue and its workers, and the backends that turn a build into an
//! image in the registry.
//!
//! A backend gets a build record (request, recipes, image name) and a log to write to, and
//! answers with the image's digests or a reason. The queue owns everything around it: one
//! build per key, claiming, status and logs in the store. Depends on `store`, `spec`,
//! `resolve`, `install`, `assemble` and `registry`.

pub mod buildah;
pub mod containerfile;
pub mod definition;
pub mod native;
pub mod python;
pub mod queue;
pub mod sandbox;
mod sif;

use async_trait::async_trait;

use crate::store::{BuildOutcome, BuildRecord, Store};

/// Where a running build writes its log: the store, line by line, so clients can follow it.
#[derive(Clone)]
pub struct BuildLog {
    store: std::sync::Arc<dyn Store>,
    id: String,
}

impl std::fmt::Debug for BuildLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl BuildLog {
    /// The log of build `id`.
    pub fn new(store: std::sync::Arc<dyn Store>, id: impl Into<String>) -> Self {
        BuildLog {
            store,
            id: id.into(),
        }
    }

    /// Appends one line. A log that cannot be written is reported, never fatal to the build.
    pub async fn line(&self, text: impl AsRef<str>) {
        let mut line = text.as_ref().to_owned();
        line.push('\n');
        if let Err(err) = self.store.append_log(&self.id, &line).await {
            tracing::warn!(build = %self.id, error = %err, "writing the build log failed");
        }
    }
}

/// Something that can build an image from a build record.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Builds `build`, writing progress to `log`. The outcome is recorded by the caller.
    async fn run(&self, build: &BuildRecord, log: &BuildLog) -> BuildOutcome;
}

/// Deletes a build's work directory in the background: a SIF build leaves a gigabyte of staged
/// files, and deleting them took seconds the client would wait for.
pub(crate) fn remove_work_dir_later(work: std::path::PathBuf) {
    tokio::spawn(async move { remove_work_dir(&work).await });
}

/// Deletes a build's work directory now; one that is gone already is fine.
pub(crate) async fn remove_work_dir(work: &std::path::Path) {
    if let Err(err) = tokio::fs::remove_dir_all(work).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %work.display(), error = %err, "removing a build's work directory failed");
    }
}
