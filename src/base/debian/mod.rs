//! Debian bases made from Debian's binary packages, with nothing of the target run.
//!
//! The repository side reads a suite the way apt does, trusting only what Debian signed:
//! [`release`] verifies `InRelease` against a [`keyring`] (Debian's archive keys, embedded),
//! [`packages`] parses a `Packages` index whose sha256 the signed `Release` vouches for,
//! [`closure`] picks the packages a base needs, and [`mirror`] downloads and caches the index
//! and every `.deb` (each checked against the signed index) over any HTTP mirror.
//!
//! Depends on nothing else in kiln but `error_chain`; `reqwest` clients come from the caller.

pub mod closure;
mod deb822;
pub mod error;
pub mod keyring;
pub mod mirror;
pub mod packages;
pub mod release;
pub mod version;
