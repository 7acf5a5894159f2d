//! Debian bases made from Debian's binary packages, with nothing of the target run.
//!
//! The repository side reads a suite the way apt does, trusting only what Debian signed:
//! [`release`] verifies `InRelease` against a [`keyring`] (Debian's archive keys, embedded),
//! [`packages`] parses a `Packages` index whose sha256 the signed `Release` vouches for,
//! [`closure`] picks the packages a base needs, and [`mirror`] downloads and caches the index
//! and every `.deb` (each checked against the signed index) over any HTTP mirror.
//!
//! The image side: [`deb`] opens a `.deb`'s data member, [`rootfs`] unpacks packages into a
//! merged-usr tree with what their skipped maintainer scripts would have written and packs it
//! as one reproducible layer, [`create`] makes and pushes a base for every platform, and
//! [`maker`] makes kiln's default bases the first time a build needs them.

pub mod closure;
pub mod create;
pub mod deb;
mod deb822;
pub mod error;
pub mod keyring;
pub mod maker;
pub mod mirror;
pub mod packages;
pub mod release;
pub mod rootfs;
pub mod version;

pub use create::{DebianBase, ESSENTIAL_PACKAGES, create};
pub use maker::BaseMaker;

/// The HTTP client kiln reads Debian mirrors with: the system's trust store (for an HTTPS
/// mirror behind a site's TLS proxy), a connect timeout, and kiln's user agent.
pub fn http_client() -> Result<reqwest::Client, crate::base::BaseError> {
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|err| crate::base::BaseError::Io {
            step: "setting up the HTTP client for the Debian mirror".to_owned(),
            source: std::io::Error::other(err),
        })
}
