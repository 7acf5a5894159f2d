//! kiln turns package lists into container images on demand.
//!
//! Data flows one way: `api` → `build` → `recipe`/`spec`, with `store` beside. See DESIGN.md.

pub mod spec;
pub mod recipe;
pub mod store;
pub mod plan;
pub mod config;
pub mod api;
pub mod build;
