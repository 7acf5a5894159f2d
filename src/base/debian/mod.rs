//! kiln's own Debian bases, assembled from the archive's binary packages.

pub mod deb;
pub mod rootfs;
