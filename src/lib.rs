//! kiln turns package lists into container images on demand.
//!
//! Data flows one way: `api` → `build` → `recipe`/`spec`, with `store` beside. See DESIGN.md.

pub mod api;
pub mod assemble;
pub mod base;
pub mod build;
pub mod child;
pub mod config;
pub mod credentials;
pub mod install;
pub mod listen;
pub mod metrics;
pub mod plan;
pub mod recipe;
pub mod registry;
pub mod resolve;
pub mod search;
pub mod server;
pub mod signing;
pub mod spec;
pub mod store;

/// An error with all its causes, for messages shown to users: HTTP and I/O errors keep the
/// useful part ("connection refused", "hash mismatch") in their sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
