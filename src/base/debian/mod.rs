//! kiln's own Debian bases, assembled from the archive's binary packages.

pub mod create;
pub mod deb;
pub mod maker;
pub mod rootfs;

pub use create::{DebianBase, ESSENTIAL_PACKAGES, create};
pub use maker::BaseMaker;
