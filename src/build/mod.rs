//! Building images: the queue and its workers, and the backends that turn a build into an
//! image in the registry.
//!
//! A backend gets a build record (its typed job, recipe, image name) and a log to write to, and
//! answers with the image's digests or a reason; [`Dispatch`] picks the backend by the job's
//! kind. The queue owns everything around it: one
//! build per key, claiming, status and logs in the store. Depends on `store`, `spec`,
//! `resolve`, `install`, `assemble` and `registry`.

pub mod buildah;
mod buildah_build;
pub mod containerfile;
pub mod contexts;
pub mod definition;
pub mod error;
mod layers;
pub mod leftovers;
pub mod log;
pub mod native;
pub mod python;
pub mod queue;
pub mod sandbox;
mod sbom;
mod sif;

use std::sync::Arc;

use async_trait::async_trait;

pub use error::BuildError;
pub use log::{BuildLog, LogLimits};

use crate::spec::BuildJob;
use crate::store::{BuildOutcome, BuildRecord};

/// Something that can build an image from a build record.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Builds `build`, writing progress to `log`: the image's outcome, or the step that failed
    /// and why. The queue logs the failure and renders its reason where it is stored.
    async fn try_run(
        &self,
        build: &BuildRecord,
        log: &BuildLog,
    ) -> Result<BuildOutcome, BuildError>;

    /// [`try_run`](Self::try_run) with a failure rendered as the queue records it, for callers
    /// that run a backend without a queue (tests, benchmarks).
    async fn run(&self, build: &BuildRecord, log: &BuildLog) -> BuildOutcome {
        self.try_run(build, log)
            .await
            .unwrap_or_else(|err| BuildOutcome::Failed {
                reason: err.reason(),
            })
    }
}

/// Sends each build to the backend of its job's kind: package requests to the native builder,
/// Dockerfiles to the containerfile builder, definition files to the definition builder.
#[derive(Clone)]
pub struct Dispatch {
    native: Arc<dyn Backend>,
    containerfile: Arc<dyn Backend>,
    definition: Arc<dyn Backend>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl Dispatch {
    /// Routes to `native`, `containerfile` or `definition` (remote builds of Singularity
    /// definition files).
    pub fn new(
        native: Arc<dyn Backend>,
        containerfile: Arc<dyn Backend>,
        definition: Arc<dyn Backend>,
    ) -> Self {
        Dispatch {
            native,
            containerfile,
            definition,
        }
    }
}

#[async_trait]
impl Backend for Dispatch {
    async fn try_run(
        &self,
        build: &BuildRecord,
        log: &BuildLog,
    ) -> Result<BuildOutcome, BuildError> {
        let backend = match build.job {
            BuildJob::Native(_) => &self.native,
            BuildJob::Dockerfile(_) => &self.containerfile,
            BuildJob::Definition(_) => &self.definition,
        };
        backend.try_run(build, log).await
    }
}

/// Gives a build an empty work directory: whatever an earlier attempt of the same build left
/// there (kiln was killed mid-build, a lease ran out) is removed, never trusted; a staging
/// prefix with packages already in it once made a retried build install nothing.
pub(crate) async fn fresh_work_dir(work: &std::path::Path) -> Result<(), BuildError> {
    remove_work_dir(work).await;
    tokio::fs::create_dir_all(work)
        .await
        .map_err(BuildError::io(format!(
            "cannot create the work directory {}",
            work.display()
        )))
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
