//! What every request and answer passes through: a request id (in the logs of the request, in
//! its `X-Request-Id` header and in the message of an internal error), the security headers of
//! pages, and kiln's JSON shape for bodies over the size limit.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::api::error::{ApiError, REQUEST_ID, new_request_id};

/// What pages may load and who may frame them: kiln's own scripts, styles, images and API
/// only, no inline script or style, no framing, forms posting to kiln alone.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Gives the request an id, serves it inside a log span and a task-local that carry the id, and
/// sends the id back as `X-Request-Id`. Pages get their security headers; every answer gets
/// `X-Content-Type-Options: nosniff`.
///
/// The span names the route template, not the path: paths carry upload tickets and names.
pub(super) async fn request_id(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = %route,
        status = tracing::field::Empty,
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let status = response.status().as_u16();
    span.record("status", status);
    tracing::debug!(parent: &span, status, "request answered");
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// Answers a body over the limit in kiln's JSON shape, naming the limit, where axum's
/// extractors answer plain text. Answers that are already JSON (a route's own limit) pass.
pub(super) async fn body_too_large(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json {
        return response;
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than kiln takes ({limit} bytes, the setting \
             http.max_body_bytes)"
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    /// A failure whose cause names a server file, as a store or blob error does.
    #[derive(Debug, thiserror::Error)]
    #[error("kiln could not read the blob")]
    struct BlobUnreadable(#[source] std::io::Error);

    async fn failing() -> ApiError {
        let cause = std::io::Error::other("/srv/kiln-data/blobs/sha256/ab: permission denied");
        ApiError::internal(&BlobUnreadable(cause))
    }

    #[tokio::test]
    async fn an_internal_error_answers_its_request_id_and_nothing_of_its_cause() {
        let router = Router::new()
            .route("/fails", get(failing))
            .layer(axum::middleware::from_fn(request_id));
        let request = axum::http::Request::get("/fails")
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .expect("an x-request-id header")
            .to_owned();
        assert_eq!(id.len(), 16, "{id}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("the body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"message": format!("internal error; request id {id}")})
        );
    }

    #[tokio::test]
    async fn every_answer_gets_its_own_request_id() {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(request_id));
        let mut ids = Vec::new();
        for _ in 0..2 {
            let request = axum::http::Request::get("/")
                .body(Body::empty())
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("an answer");
            ids.push(response.headers().get("x-request-id").cloned());
        }
        assert!(ids[0].is_some() && ids[1].is_some());
        assert_ne!(ids[0], ids[1]);
    }
}
