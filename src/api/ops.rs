//! Operations endpoints: health for load balancers and orchestrators, metrics for Prometheus.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::api::AppState;

/// How long the database may take to take `/health`'s write before kiln counts as unhealthy
/// (a database locked by another process makes writes wait for SQLite's busy timeout).
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The file `/health` writes and removes in the data directory.
const PROBE_FILE: &str = ".health-probe";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// Prometheus text: requests, cache hits and misses, builds by outcome and their durations.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
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
pub struct HealthChecks {
    /// When the last check started, and what it found.
    last: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl HealthChecks {
    /// What is wrong, if anything, by a check that started after `asked`: the one a request
    /// waited for, or a new one. So each answer is fresh, yet many requests at once make a
    /// check or two, not one each (every check writes and syncs a file, and writes the
    /// database).
    async fn problem(&self, state: &AppState, asked: Instant) -> Option<String> {
        let mut last = self.last.lock().await;
        if let Some((started, problem)) = last.as_ref()
            && *started >= asked
        {
            return problem.clone();
        }
        let started = Instant::now();
        let problem = match data_disk_problem(state).await {
            Some(problem) => Some(problem),
            None => store_problem(state).await,
        };
        *last = Some((started, problem.clone()));
        problem
    }
}

/// 200 when kiln can do its work: the database takes a write and the data disk has room (above
/// `http.health_min_free_mb`, and a small file can be written). 503 with the reason otherwise.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let problem = state.health.problem(&state, Instant::now()).await;
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
            reason: problem.map(|reason| crate::api::redact::public_text(&state.config, &reason)),
            version: env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// Why the database cannot take a write, if it cannot.
async fn store_problem(state: &AppState) -> Option<String> {
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, state.store.ping()).await {
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
async fn data_disk_problem(state: &AppState) -> Option<String> {
    let data_dir = state.config.data_dir.clone();
    let min_free = state.config.http.health_min_free_mb;
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
