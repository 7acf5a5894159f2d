//! Why a build failed, as it travels up from the step that failed: each step's own error,
//! kept typed, so the queue can log the whole chain and render the reason users read in one
//! place ([`BuildError::reason`]), where it is stored.

use tokio::task::JoinError;

use crate::assemble::AssembleError;
use crate::assemble::flatten::FlattenError;
use crate::assemble::sif::SifError;
use crate::assemble::singularity::MetadataError;
use crate::assemble::squashfs::SquashfsError;
use crate::base::BaseError;
use crate::install::InstallError;
use crate::install::fetch::FetchError;
use crate::install::wheel::WheelError;
use crate::registry::client::ClientError;
use crate::resolve::{PipResolveError, ResolveError};

use super::buildah::BuildahError;
use super::sandbox::SandboxError;

/// A build step that failed. The wrapped errors read as themselves; the reason is their
/// message followed by their causes.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Solving the conda packages.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Resolving the pip packages.
    #[error(transparent)]
    PipResolve(#[from] PipResolveError),
    /// Downloading or linking conda packages.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// Downloading a package file.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Unpacking a wheel.
    #[error(transparent)]
    Wheel(#[from] WheelError),
    /// Talking to the registry the image goes to (or its base comes from).
    #[error(transparent)]
    Registry(#[from] ClientError),
    /// Reading or making the base image.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// Writing layers and image documents.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// Flattening layers into one root file system.
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    /// Writing a SIF.
    #[error(transparent)]
    Sif(#[from] SifError),
    /// Writing a SIF's Singularity metadata.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Making or reading a squashfs image.
    #[error(transparent)]
    Squashfs(#[from] SquashfsError),
    /// Rendering the recipe stored with an image.
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// The store, where layers are recorded.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A buildah step.
    #[error(transparent)]
    Buildah(#[from] BuildahError),
    /// The sandbox a step runs in.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A file operation; `what` says which ("cannot create /…/work").
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document that cannot be read or written; `what` says which.
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A step run on a blocking thread that panicked or was cancelled.
    #[error("{what} crashed")]
    Crashed {
        what: &'static str,
        #[source]
        source: JoinError,
    },
    /// A step that failed for a cause kiln can name: `what` says which step and what it means
    /// ("the image … cannot be read back"), the cause follows it in the reason.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Box<BuildError>,
    },
    /// A reason kiln words itself: a request that cannot be built as asked, a base without
    /// the label kiln needs, a step whose output says what went wrong.
    #[error("{0}")]
    Refused(String),
}

impl BuildError {
    /// A reason kiln words itself (no error underneath).
    pub fn refused(reason: impl Into<String>) -> BuildError {
        BuildError::Refused(reason.into())
    }

    /// A failed file operation on `what` ("cannot create /…/work").
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let what = what.into();
        move |source| BuildError::Io { what, source }
    }

    /// A JSON document (`what`) that cannot be read or written.
    pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> BuildError {
        let what = what.into();
        move |source| BuildError::Json { what, source }
    }

    /// A step on a blocking thread (`what`, "flattening") that did not return.
    pub fn crashed(what: &'static str) -> impl FnOnce(JoinError) -> BuildError {
        move |source| BuildError::Crashed { what, source }
    }

    /// `cause` as the failure of the step `what`.
    pub fn step(what: impl Into<String>, cause: impl Into<BuildError>) -> BuildError {
        BuildError::Step {
            what: what.into(),
            source: Box::new(cause.into()),
        }
    }

    /// The reason stored with the failed build and shown to its user: the message and each
    /// cause after it. The queue renders it, once.
    pub fn reason(&self) -> String {
        crate::error_chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_message_then_its_causes_once() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = BuildError::io("cannot create /work/bd-1")(missing);
        assert_eq!(err.reason(), "cannot create /work/bd-1: no such file");

        let json = serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        let err = BuildError::json("the stored request cannot be read")(json);
        assert!(
            err.reason()
                .starts_with("the stored request cannot be read: EOF while parsing"),
            "{}",
            err.reason()
        );

        let refused = BuildError::Refused("the conda environment has no python".into());
        assert_eq!(refused.reason(), "the conda environment has no python");
    }

    #[test]
    fn wrapped_errors_read_as_themselves_with_their_causes() {
        let cause = std::io::Error::other("disk on fire");
        let install = InstallError::Clean {
            path: "/prefix".into(),
            source: cause,
        };
        let direct = crate::error_chain(&install);
        assert_eq!(BuildError::from(install).reason(), direct);
        assert!(direct.ends_with(": disk on fire"), "{direct}");
    }
}
