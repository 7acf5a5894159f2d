//! kiln turns package lists into container images on demand.
//!
//! Data flows one way: `api` → `build` → `recipe`/`spec`, with `store` beside. See DESIGN.md.

pub mod api;
pub mod assemble;
pub mod build;
pub mod config;
pub mod install;
pub mod plan;
pub mod recipe;
pub mod registry;
pub mod resolve;
pub mod spec;
pub mod store;
