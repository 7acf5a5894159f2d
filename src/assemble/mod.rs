//! The native builder's assembly step: turn an installed file tree into reproducible OCI layers,
//! image configs, manifests and indexes.
//!
//! Everything here is pure and synchronous (file I/O only, no network), so the same inputs give
//! the same bytes and digests on any machine. It depends on nothing in kiln but `spec`.
//!
//! - [`write_fragment`], [`compose`]: a package's own byte-reproducible layer, and layers of
//!   several packages put together from theirs without compressing again.
//! - [`group_packages`]: which packages share a layer, within a layer budget.
//! - [`image_config`], [`image_manifest`], [`image_index`]: the OCI JSON documents, as exact
//!   bytes with their digests; [`sif_artifact`]: the ORAS manifest of a SIF.
//! - [`flatten`], [`singularity`], [`squashfs`], [`sif`]: a SIF from the same layers — one
//!   root file system, Singularity's metadata, a reproducible squashfs, the SIF container.

#![warn(missing_docs)]

mod files;
pub mod flatten;
mod fragment;
mod group;
mod image;
mod layer;
pub mod sbom;
pub mod sif;
pub mod singularity;
pub mod squashfs;

use std::path::PathBuf;

pub use files::HashWriter;
pub use fragment::{END_MEMBER, LayerBlob, compose, write_fragment};
pub use group::{ALONE_MIN_BYTES, BUCKETS, PackageSize, bucket_of, group_packages};
pub use image::{
    BaseConfig, Blob, Descriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST, MEDIA_TYPE_SIF_CONFIG, MEDIA_TYPE_SIF_LAYER, image_config, image_index,
    image_manifest, sif_artifact,
};
pub use layer::{LAYER_MTIME, reproducible_gzip};

/// The timestamp written wherever OCI wants one, so that images do not depend on build time.
pub const CREATED: &str = "1970-01-01T00:00:00Z";

/// A failure while assembling layers or image documents. Messages name the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("read", "create", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer path is absolute, empty, or leaves the root with `..`.
    #[error("{} is not a relative path inside the layer root", path.display())]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
    },
    /// A path is a device, FIFO or socket, which image layers must not carry.
    #[error("{} is a {kind}; layers hold only regular files, directories and symlinks", path.display())]
    Unsupported {
        /// The path concerned.
        path: PathBuf,
        /// What it is ("character device", "FIFO", ...).
        kind: &'static str,
    },
    /// A path has layer entries beneath it but is not a directory on disk (e.g. a symlink).
    #[error("{} has entries beneath it in the layer but is not a directory", path.display())]
    NotADirectory {
        /// The path concerned.
        path: PathBuf,
    },
    /// A file's size changed while it was being archived.
    #[error("{} changed while it was being archived", path.display())]
    Changed {
        /// The path concerned.
        path: PathBuf,
    },
    /// The base image's config blob could not be parsed.
    #[error("the base image config is not a valid OCI image config")]
    BaseConfig {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = AssembleError> = std::result::Result<T, E>;

/// `sha256:<hex>` of some bytes: the digest format OCI uses everywhere.
fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
