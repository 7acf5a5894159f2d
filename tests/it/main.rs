//! kiln's integration tests, one binary with a module per area: every dependency is linked
//! once instead of once per area, which saves CI its link time and gigabytes of `target/`.
//! `cargo test --test it native::` runs one area.
//!
//! Everything here shares one process: a test must not change process-wide state (environment,
//! umask, working directory) and must not count host-wide things (processes, containers, jails)
//! that another area's builds may make at the same moment, only its own.

#[path = "../support/mod.rs"]
pub mod support;

mod base;
mod cli;
mod containerfile;
mod debian;
mod deploy;
mod external_registry;
mod first_run;
mod http;
mod library;
mod limits;
mod native;
mod pip;
mod postgres;
mod registry;
mod registry_clients;
mod remote_build;
mod repodata;
mod reproducible;
mod roles;
mod sandbox;
mod sbom;
mod scale_out;
mod search;
mod serve;
mod sif;
mod sif_format;
mod submit;
mod ui;
mod wave;
