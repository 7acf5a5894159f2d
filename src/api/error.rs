//! Errors as JSON answers: a status that fits and a text that names the field or thing at
//! fault, in Wave's shape, `{"message": "…"}`, or, on the Sylabs routes, the shape the
//! Singularity client reads, `{"error": {"code", "message"}}` ([`sylabs_shape`]). Pages answer
//! their errors as HTML (`views::error_page`); these are the only two.
//!
//! kiln's own failures are logged with their whole cause chain and the request's id, and
//! answered with that id alone, never their causes (which name files and hosts); a full data
//! disk is said so, as 507. There is no blanket conversion from any error: a `?` reaches an
//! `ApiError` only from errors that say here how they answer ([`crate::store::StoreError`]), so
//! a stray one does not turn into a 500 unnoticed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a client is told when the data disk is full, wherever that surfaced.
pub const NO_SPACE: &str =
    "no space left on the data disk: kiln cannot store anything until its operator frees space";

tokio::task_local! {
    /// The id of the request the current task serves, set by [`crate::api::edge`].
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

    /// 404 in the Sylabs library's words: "`what` does not exist".
    pub fn does_not_exist(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} does not exist"))
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

/// The store failing is kiln failing: a 500 (507 for a full disk) whose cause is logged.
impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        ApiError::internal(&err)
    }
}

/// Wave's and kiln's own body.
#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
}

/// The Sylabs library's body, `{"error": {"code": 404, "message": "…"}}`.
#[derive(Serialize)]
struct SylabsBody<'a> {
    error: SylabsDetail<'a>,
}

#[derive(Serialize)]
struct SylabsDetail<'a> {
    code: u16,
    message: &'a str,
}

impl ApiError {
    /// The answer with `body` as its JSON, the status and `Retry-After`; the error itself rides
    /// along in the answer's extensions so that [`sylabs_shape`] can answer it again.
    fn answer(self, body: impl Serialize) -> Response {
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.message.clone();
        self.answer(Body { message: &message })
    }
}

/// Answers an [`ApiError`] in the Sylabs shape, the one the Singularity client reads: a layer
/// over the library, push and remote-build routes, so their handlers return plain `ApiError`s
/// and none can answer in the wrong shape. Only the body changes; other answers pass unchanged.
pub(super) async fn sylabs_shape(response: Response) -> Response {
    let Some(err) = response.extensions().get::<ApiError>() else {
        return response;
    };
    let body = Json(SylabsBody {
        error: SylabsDetail {
            code: err.status.as_u16(),
            message: &err.message,
        },
    })
    .into_response()
    .into_body();
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, body)
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

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("the body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn errors_answer_in_wave_shape_and_on_sylabs_routes_in_theirs() {
        let err = ApiError::busy("kiln is busy", 7);
        let wave = err.clone().into_response();
        assert_eq!(
            body_of(wave).await,
            serde_json::json!({"message": "kiln is busy"})
        );

        let sylabs = sylabs_shape(err.into_response()).await;
        assert_eq!(sylabs.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            sylabs.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from(7))
        );
        assert_eq!(
            body_of(sylabs).await,
            serde_json::json!({"error": {"code": 503, "message": "kiln is busy"}})
        );

        let missing = sylabs_shape(ApiError::does_not_exist("image 0a1b").into_response()).await;
        assert_eq!(
            body_of(missing).await,
            serde_json::json!({"error": {"code": 404, "message": "image 0a1b does not exist"}})
        );
    }

    #[tokio::test]
    async fn sylabs_shape_leaves_other_answers_alone() {
        let success = Json(serde_json::json!({"data": {}})).into_response();
        let passed = sylabs_shape(success).await;
        assert_eq!(passed.status(), StatusCode::OK);
        assert_eq!(body_of(passed).await, serde_json::json!({"data": {}}));
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
