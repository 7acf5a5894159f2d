//! The Sylabs protocols SingularityCE's client speaks: the container library (pull, push,
//! tags) and the remote builder. Errors answer in the Sylabs shape the client reads.

pub(crate) mod library;
mod library_files;
mod library_push;
pub(crate) mod remote_build;

use axum::Router;

use crate::api::AppState;

/// The library, push and remote-build routes: their errors answer in the shape the
/// Singularity client reads.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(library::routes())
        .merge(library_push::routes())
        .merge(library_files::routes())
        .merge(remote_build::routes())
        .route_layer(axum::middleware::map_response(
            crate::api::error::sylabs_shape,
        ))
}
