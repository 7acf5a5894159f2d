//! Operations endpoints: health for load balancers and orchestrators, metrics for Prometheus.
//! Every role answers them alike on its listen address; a worker answers nothing else
//! ([`worker_router`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// How long the database may take to take `/health`'s write before kiln counts as unhealthy
/// (a database locked by another process makes writes wait for SQLite's busy timeout).
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The file `/health` writes and removes in the data directory.
const PROBE_FILE: &str = ".health-probe";

/// How long the registry may take to answer `/health`'s check.
const REGISTRY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/health` and `/metrics` look at: the same parts on an API node and a worker.
pub struct Ops {
    config: Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    checks: HealthChecks,
    registry: Option<RegistryProbe>,
}

/// A registry kiln keeps its images in, as `/health` checks it: its `/v2/` answers 200 to
/// kiln's credentials. A worker that cannot push there builds nothing anyone can pull.
#[derive(Debug, Clone)]
pub struct RegistryProbe {
    /// `<url>/v2/`.
    base_check: String,
    credentials: Option<crate::credentials::Credentials>,
    http: reqwest::Client,
}

impl RegistryProbe {
    /// The registry at `url` (`https://registry.example.org`, `http://127.0.0.1:5000`), called
    /// with `credentials` when given.
    pub fn new(
        url: &str,
        credentials: Option<crate::credentials::Credentials>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .timeout(REGISTRY_PROBE_TIMEOUT)
            .build()?;
        Ok(RegistryProbe {
            base_check: format!("{}/v2/", url.trim_end_matches('/')),
            credentials,
            http,
        })
    }

    /// Why the registry cannot take kiln's pushes, if it cannot.
    async fn problem(&self) -> Option<String> {
        let mut request = self.http.get(&self.base_check);
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.user, Some(credentials.password.expose()));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => None,
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => Some(format!(
                "the registry at {} refuses kiln's credentials (401): check \
                 external_registry's user and password",
                self.base_check
            )),
            Ok(response) => Some(format!(
                "the registry at {} answers {}",
                self.base_check,
                response.status()
            )),
            Err(err) => Some(format!(
                "the registry at {} cannot be reached: {}",
                self.base_check,
                crate::error_chain(&err)
            )),
        }
    }
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// The operations endpoints' view of a kiln: its settings (data directory, free-space
    /// threshold), store and counters.
    pub fn new(config: Config, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Ops {
        Ops {
            config,
            store,
            metrics,
            checks: HealthChecks::default(),
            registry: None,
        }
    }

    /// Has `/health` also check the registry kiln keeps its images in.
    pub fn with_registry(mut self, probe: RegistryProbe) -> Ops {
        self.registry = Some(probe);
        self
    }
}

/// `/health` and `/metrics`, to merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>(ops: Arc<Ops>) -> Router<S> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// All a worker serves: `/health` and `/metrics` (counted in `/metrics` like the API's
/// requests); anything else is answered 404 with a word on where the API is.
pub fn worker_router(ops: Arc<Ops>) -> Router {
    let counters = ops.metrics.clone();
    routes(ops)
        .fallback(|| async {
            crate::api::error::ApiError::new(
                StatusCode::NOT_FOUND,
                "this kiln process is a build worker (role worker): it serves only /health \
                 and /metrics; send API requests to a node of role api or all",
            )
        })
        .layer(axum::middleware::from_fn(
            move |matched: Option<axum::extract::MatchedPath>,
                  request: axum::extract::Request,
                  next: axum::middleware::Next| {
                let counters = counters.clone();
                async move {
                    let route =
                        matched.map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
                    let response = next.run(request).await;
                    counters.http_request(&route, response.status().as_u16());
                    response
                }
            },
        ))
        .layer(axum::middleware::from_fn(crate::api::edge::request_id))
}

/// Prometheus text: requests, cache hits and misses, builds by outcome and their durations.
async fn metrics(State(ops): State<Arc<Ops>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        ops.metrics.render(),
    )
}

#[derive(Debug, Serialize)]
struct Health {
    /// `ok`, or `unavailable`.
    status: &'static str,
    /// Why kiln is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    version: &'static str,
}

/// The last `/health` check, shared by the requests that come while one runs.
#[derive(Debug, Default)]
struct HealthChecks {
    /// When the last check started, and what it found.
    last: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl HealthChecks {
    /// What is wrong, if anything, by a check that started after `asked`: the one a request
    /// waited for, or a new one. So each answer is fresh, yet many requests at once make a
    /// check or two, not one each (every check writes and syncs a file, and writes the
    /// database).
    async fn problem(&self, ops: &Ops, asked: Instant) -> Option<String> {
        let mut last = self.last.lock().await;
        if let Some((started, problem)) = last.as_ref()
            && *started >= asked
        {
            return problem.clone();
        }
        let started = Instant::now();
        let mut problem = match data_disk_problem(&ops.config).await {
            Some(problem) => Some(problem),
            None => store_problem(ops.store.as_ref()).await,
        };
        if problem.is_none()
            && let Some(registry) = &ops.registry
        {
            problem = registry.problem().await;
        }
        *last = Some((started, problem.clone()));
        problem
    }
}

/// 200 when kiln can do its work: the database takes a write, the data disk has room (above
/// `http.health_min_free_mb`, and a small file can be written) and the registry, when one is
/// checked, takes kiln's credentials. 503 with the reason otherwise.
async fn health(State(ops): State<Arc<Ops>>) -> (StatusCode, Json<Health>) {
    let problem = ops.checks.problem(&ops, Instant::now()).await;
    let (code, status) = match problem {
        None => (StatusCode::OK, "ok"),
        Some(ref reason) => {
            tracing::warn!(%reason, "/health reports kiln unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    (
        code,
        Json(Health {
            status,
            reason: problem.map(|reason| crate::api::redact::public_text(&ops.config, &reason)),
            version: env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// Why the database cannot take a write, if it cannot.
async fn store_problem(store: &dyn Store) -> Option<String> {
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) if crate::api::error::is_storage_full(&err) => {
            Some(crate::api::error::NO_SPACE.to_owned())
        }
        Ok(Err(err)) => Some(format!(
            "the database cannot take a write: {}",
            crate::error_chain(&err)
        )),
        Err(_) => Some(format!(
            "the database did not take a write within {} s (is it locked by another process?)",
            STORE_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Why the data disk cannot take kiln's writes, if it cannot: too little free space, or a
/// small file cannot be written there.
async fn data_disk_problem(config: &Config) -> Option<String> {
    let data_dir = config.data_dir.clone();
    let min_free = config.http.health_min_free_mb;
    tokio::task::spawn_blocking(move || disk_problem(&data_dir, min_free))
        .await
        .unwrap_or_else(|err| Some(format!("checking the data disk failed: {err}")))
}

fn disk_problem(data_dir: &Path, min_free_mb: u64) -> Option<String> {
    match rustix::fs::statvfs(data_dir) {
        Ok(stats) => {
            let free_mb = stats.f_bavail.saturating_mul(stats.f_frsize) >> 20;
            if free_mb < min_free_mb {
                return Some(format!(
                    "no space left on the data disk: {free_mb} MiB free, less than the \
                     {min_free_mb} MiB http.health_min_free_mb asks for"
                ));
            }
        }
        Err(err) => return Some(format!("the data directory cannot be examined: {err}")),
    }
    let probe = data_dir.join(PROBE_FILE);
    let written = std::fs::write(&probe, [0u8; 4096]).and_then(|()| {
        std::fs::File::open(&probe)?.sync_all()?;
        std::fs::remove_file(&probe)
    });
    match written {
        Ok(()) => None,
        Err(err) if err.kind() == std::io::ErrorKind::StorageFull => {
            Some(crate::api::error::NO_SPACE.to_owned())
        }
        Err(err) => Some(format!("the data directory cannot be written: {err}")),
    }
}
