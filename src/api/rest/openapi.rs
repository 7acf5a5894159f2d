//! `/openapi.json`: the OpenAPI document of kiln's own API, generated from the handlers'
//! annotations so it cannot drift from the code.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use crate::api::AppState;
use crate::api::rest::images;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "On-demand container images from conda and pip packages. The \
                       Wave-compatible API (/v1alpha2/container and friends) is described in \
                       kiln's README."
    ),
    paths(
        images::request_image,
        images::build,
        images::log_stream,
        images::cancel
    ),
    components(schemas(images::ImageRequest, images::ImageAnswer, images::BuildSummary))
)]
struct KilnApi;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(KilnApi::openapi())
}
