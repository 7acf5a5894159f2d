//! kiln's own JSON API under `/api/v1`: requesting images, following builds, package search,
//! and its OpenAPI description.

pub(crate) mod images;
mod openapi;
mod search;

use axum::Router;

use crate::api::AppState;

/// `/api/v1/…` and `/openapi.json`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(images::routes())
        .merge(search::routes())
        .merge(openapi::routes())
}
