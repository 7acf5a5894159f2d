//! kiln's own Debian bases, assembled from the archive's binary packages.

pub mod create;
pub mod deb;
pub mod maker;
pub mod rootfs;

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
