//! Resolution: a request's package entries become a lock, the exact artifacts (URL, sha256,
//! size) to install for each target platform.
//!
//! conda packages are solved with rattler (resolvo) against the request's channels, for the
//! target platform, with the virtual packages the base profile declares; nothing runs on, or
//! depends on, the build host's platform. Depends on `spec` and `config`.

pub mod conda;
pub mod lock;

pub use conda::{CondaResolver, ResolveError, Solution, Target};
pub use lock::{Lock, LockedPackage};
