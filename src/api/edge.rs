//! What every request and answer passes through: a request id (in the logs of the request, in
//! its `X-Request-Id` header and in the message of an internal error), the security headers of
//! pages, and kiln's JSON shape for bodies over the size limit.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::{ApiError, REQUEST_ID, new_request_id};

/// What pages may load and who may frame them: kiln's own scripts, styles, images and API
/// only, no inline script or style, no framing, forms posting to kiln alone.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Gives the request an id, serves it inside a log span and a task-local that carry the id, and
/// sends the id back as `X-Request-Id`. Pages get their security headers; every answer gets
/// `X-Content-Type-Options: nosniff`.
pub(super) async fn request_id(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
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
