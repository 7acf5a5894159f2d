//! Package search for the web UI's autocomplete: `GET /api/v1/search?q=<text>`.
//!
//! The answer is always 200: conda hits from kiln's in-memory package index and the pip
//! project named exactly like the query. What cannot be reached is left out rather than
//! failing the request, since an autocomplete error helps nobody.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;

use crate::api::AppState;
use crate::search::SearchResults;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/search", get(search))
}

/// The query string.
#[derive(Debug, Deserialize)]
struct SearchParams {
    /// What the user typed: a name, or a whole entry (`samtools=1.21`, `pip:requests==2.32.3`).
    #[serde(default)]
    q: String,
}

/// Conda packages whose name starts with or contains the query, and the pip project of that
/// name. An empty query answers empty lists.
async fn search(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Json<SearchResults> {
    Json(state.search.search(&params.q).await)
}
