//! Errors as HTTP answers: a status that fits and Wave's shape, `{"message": "…"}`, whose text
//! names the field or thing at fault.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 400, 404, 429, 500…
    pub status: StatusCode,
    /// What went wrong, for the user.
    pub message: String,
    /// Seconds after which trying again may work, sent as `Retry-After` (503, 429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400: the request is wrong; `message` says which field and why.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 404: `what` (e.g. "build bd-…_1") does not exist.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} not found"),
            retry_after: None,
        }
    }

    /// An answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503: kiln is too busy for this now; trying again after `seconds` may work.
    pub fn busy(message: impl Into<String>, seconds: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: Some(seconds),
        }
    }

    /// 500: kiln failed; the message carries the cause chain.
    pub fn internal(err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %crate::error_chain(err), "request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: crate::error_chain(err),
            retry_after: None,
        }
    }
}

impl<E: std::error::Error> From<E> for ApiError {
    fn from(err: E) -> Self {
        ApiError::internal(&err)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
