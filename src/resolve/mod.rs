//! Resolution: a request's package entries become a lock, the exact artifacts (URL, sha256,
//! size) to install for each target platform.
//!
//! conda packages are solved with rattler (resolvo) against the request's channels, for the
//! target platform, with the virtual packages the base profile declares; nothing runs on, or
//! depends on, the build host's platform. pip entries are resolved with uv into wheels for the
//! target interpreter and platform tags. Depends on `spec` and `config`.

pub mod conda;
pub mod lock;
pub mod pip;
pub mod repodata;
pub mod wheel_tags;

pub use conda::{CondaResolver, ResolveError, Solution, Target};
pub use lock::{Lock, LockedPackage, LockedWheel};
pub use pip::{PipResolveError, PipResolver, Provided, ResolvedWheel};
pub use repodata::Repodata;
pub use wheel_tags::{Libc, WheelTarget};
