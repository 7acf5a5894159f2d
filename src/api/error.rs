//! Errors as HTTP answers: a status that fits and Wave's shape, `{"message": "…"}`, whose text
//! names the field or thing at fault.
//!
//! kiln's own failures are logged with the request's id and answered with that id alone, never
//! their causes (which name files and hosts); a full data disk is said so, as 507.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a client is told when the data disk is full, wherever that surfaced.
pub const NO_SPACE: &str =
    "no space left on the data disk: kiln cannot store anything until its operator frees space";

tokio::task_local! {
    /// The id of the request the current task serves, set by [`super::edge`].
    pub(super) static REQUEST_ID: String;
}

/// The id of the request being served, or a fresh one outside a request (a spawned task), so
/// that a logged failure and its answer always share an id.
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

/// A new request id: 16 hex digits.
pub(super) fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

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

    /// kiln failed: 507 with [`NO_SPACE`] when the data disk is full, otherwise 500 with the
    /// request id under which the cause chain is logged.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let (status, message) = failure(err);
        ApiError {
            status,
            message,
            retry_after: None,
        }
    }
}

/// Logs `err` and says what a client may be told of it: the status and the message.
pub fn failure(err: &(dyn std::error::Error + 'static)) -> (StatusCode, String) {
    let id = request_id();
    let chain = crate::error_chain(err);
    if is_storage_full(err) {
        tracing::error!(request_id = %id, error = %chain, "the data disk is full");
        return (StatusCode::INSUFFICIENT_STORAGE, NO_SPACE.to_owned());
    }
    tracing::error!(request_id = %id, error = %chain, "request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error; request id {id}"),
    )
}

/// Whether `err` or one of its causes is a full disk: `ENOSPC`/`EDQUOT` from a file operation,
/// or SQLite's `SQLITE_FULL`.
pub fn is_storage_full(err: &(dyn std::error::Error + 'static)) -> bool {
    /// SQLite's primary result code for "database or disk is full".
    const SQLITE_FULL: i64 = 13;
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error()))
        {
            return true;
        }
        if let Some(sqlx::Error::Database(db)) = err.downcast_ref::<sqlx::Error>()
            && db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .is_some_and(|code| code & 0xff == SQLITE_FULL)
        {
            return true;
        }
        next = err.source();
    }
    false
}

impl<E: std::error::Error + 'static> From<E> for ApiError {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("kiln could not record the build")]
    struct Wrapping(#[source] std::io::Error);

    #[tokio::test]
    async fn internal_errors_carry_the_request_id_not_their_cause() {
        let cause = std::io::Error::other("/srv/kiln-data/kiln.db: permission denied");
        let err = REQUEST_ID
            .scope("0123456789abcdef".to_owned(), async {
                ApiError::internal(&Wrapping(cause))
            })
            .await;
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message, "internal error; request id 0123456789abcdef");
    }

    #[test]
    fn a_full_disk_is_said_so() {
        let full = std::io::Error::from_raw_os_error(28);
        let err = ApiError::internal(&Wrapping(full));
        assert_eq!(err.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(err.message, NO_SPACE);
        let other = ApiError::internal(&Wrapping(std::io::Error::other("x")));
        assert!(other.message.starts_with("internal error; request id "));
    }
}
