//! The pages people read: the request form, build and container pages, their SBOM downloads.
//! Errors answer as HTML pages.

pub(crate) mod csrf;
mod sbom;
mod ui;
pub(crate) mod views;

use axum::Router;

use crate::api::AppState;

/// The form, the pages and their static files.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(views::routes())
        .merge(sbom::routes())
        .merge(ui::routes())
}
