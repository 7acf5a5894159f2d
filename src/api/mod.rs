//! HTTP: the axum router and the state its handlers share.
//!
//! Handlers are thin: they extract, call one function, and answer. Slow work never runs inside
//! a request. Depends on `store`, `registry`, `config` and `spec`; nothing depends on it but
//! `main`.

pub mod accounts;
mod auth;
mod base_hosts;
mod blob_links;
pub mod edge;
pub mod error;
pub mod image_cache;
pub mod limit;
pub(crate) mod log_follow;
pub mod ops;
pub mod redact;
pub mod rest;
pub mod submit;
pub(crate) mod sylabs;
pub mod wave;
mod web;

use std::sync::Arc;

use axum::Router;

use crate::build::queue::Queue;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{self, RegistryState};
use crate::store::{BuildRecord, Store, StoreError};

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
    /// Where the API reads and publishes images; it never reads a registry's files itself.
    pub image_store: registry::Images,
    /// Where builds are submitted (its workers may run here or in another process).
    pub queue: Queue,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Package names for the search API, loaded on first use.
    pub search: crate::search::PackageIndex,
    /// The tokens tying form posts to kiln's pages.
    pub(crate) forms: web::csrf::FormTokens,
    /// Build context uploads announced by remote-build clients.
    pub contexts: sylabs::remote_build::ContextUploads,
    /// Images checked before, answered from memory.
    pub images: image_cache::ImageCache,
    /// Wave request records on their way to the store.
    pub requests: wave::request_records::RequestRecords,
    /// What `/health` and `/metrics` look at.
    pub ops: Arc<ops::Ops>,
}

impl App {
    /// A running kiln around its store, registry, queue and package search: empty caches and
    /// Wave request records on their way to `store` (allowances are charged in the store).
    /// `kiln serve` and the tests of the pages assemble kiln through this alone.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        registry: RegistryState,
        queue: Queue,
        search: crate::search::PackageIndex,
        metrics: Arc<Metrics>,
    ) -> App {
        App {
            contexts: sylabs::remote_build::ContextUploads::new(&config.signing_key()),
            forms: web::csrf::FormTokens::new(&config.signing_key()),
            images: Default::default(),
            requests: wave::request_records::RequestRecords::new(store.clone()),
            ops: Arc::new(ops::Ops::new(
                config.clone(),
                store.clone(),
                metrics.clone(),
            )),
            search,
            config,
            store,
            image_store: registry::Images::embedded(registry.clone()),
            registry,
            queue,
            metrics,
        }
    }
}

impl App {
    /// This kiln reading and publishing images through `images` rather than the embedded
    /// registry's storage: an external registry's, when one is configured.
    pub fn with_image_store(mut self, images: registry::Images) -> App {
        self.image_store = images;
        self
    }
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

    /// Build `id` as the public build APIs and pages show it, by id alone. A remote build (a
    /// user's definition file, whose text and log may hold what that user alone should see) is
    /// not among them: only its user's `/v1/build` calls show it.
    pub async fn public_build(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let build = self.store.build(id).await?;
        Ok(build.filter(|build| build.job.kind() != crate::spec::BuildKind::Definition))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// A text file sent as base64 (Wave's `containerFile`, Sylabs' `definitionRaw`): at most `max`
/// bytes of UTF-8. The error, for a 400, names the field as `what`.
fn base64_text(encoded: &str, what: &str, max: usize) -> Result<String, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| format!("{what} is not base64: {err}"))?;
    if bytes.len() > max {
        return Err(format!(
            "{what} is {} bytes; kiln takes up to {max}",
            bytes.len()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8 text"))
}

/// Every route kiln serves: the Wave-compatible API, kiln's own API and its OpenAPI document,
/// the human pages, operations endpoints, and the embedded registry under `/v2/`. Every answer
/// carries a request id ([`edge`]); kiln's own routes take bodies up to `http.max_body_bytes`
/// and refuse larger ones in kiln's JSON shape (the registry answers in its own).
pub fn router(state: AppState) -> Router {
    let max_body = state.config.http.max_body_bytes;
    // With an external registry kiln serves no `/v2/` (nor its token endpoint): clients pull
    // from that registry; SIF download links are served here, read through it.
    let registry = match state.config.external_registry {
        Some(_) => blob_links::routes().with_state(state.clone()),
        None => registry::router(state.registry.clone()),
    };
    Router::new()
        .merge(ops::routes(state.ops.clone()))
        .merge(wave::routes())
        .merge(rest::routes())
        .merge(sylabs::routes())
        .merge(accounts::routes())
        .merge(web::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            edge::body_too_large,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
        .merge(registry)
        .layer(axum::middleware::from_fn(edge::request_id))
}

/// Counts every answered request by route template and status, for `/metrics`.
async fn count(
    axum::extract::State(state): axum::extract::State<AppState>,
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = matched.map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_request(&route, response.status().as_u16());
    response
}
