//! HTTP: the axum router and the state its handlers share.
//!
//! Handlers are thin: they extract, call one function, and answer. Slow work never runs inside
//! a request. Depends on `store`, `registry`, `config` and `spec`; nothing depends on it but
//! `main`.

mod ops;

use std::sync::Arc;

use axum::Router;

use crate::config::Config;
use crate::registry::{self, RegistryState};
use crate::store::Store;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<App>);

/// The long-lived parts of a running kiln.
pub struct App {
    /// Settings.
    pub config: Config,
    /// Builds and logs.
    pub store: Arc<dyn Store>,
    /// The embedded registry.
    pub registry: RegistryState,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl AppState {
    /// Wraps the parts of a running kiln.
    pub fn new(app: App) -> Self {
        AppState(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// Every route kiln serves: its own API and the embedded registry under `/v2/`.
pub fn router(state: AppState) -> Router {
    let registry = registry::router(state.registry.clone());
    Router::new()
        .merge(ops::routes())
        .with_state(state)
        .merge(registry)
}
