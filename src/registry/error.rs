//! The distribution-spec error codes and their JSON rendering
//! (`{"errors":[{"code":..,"message":..,"detail":..}]}`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Error codes defined by the OCI distribution spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    /// The usual HTTP status for this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BlobUnknown
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown
            | Self::NameUnknown => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Every failure a registry operation can produce.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An error the client is told about, with a spec code.
    #[error("{}: {message}", code.as_str())]
    Api {
        code: ErrorCode,
        status: StatusCode,
        message: String,
        detail: Option<Value>,
    },
    /// An internal I/O failure: logged, answered 500 without details.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Api {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
        }
    }

    /// Replaces the HTTP status (e.g. 413 for SIZE_INVALID, 416 for ranges).
    pub fn with_status(mut self, new: StatusCode) -> Self {
        if let Self::Api { status, .. } = &mut self {
            *status = new;
        }
        self
    }

    /// Attaches a `detail` value.
    pub fn with_detail(mut self, value: Value) -> Self {
        if let Self::Api { detail, .. } = &mut self {
            *detail = Some(value);
        }
        self
    }

    /// The spec code, if this is a client-facing error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Shorthand for results in this module.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        match self {
            Self::Api {
                code,
                status,
                message,
                detail,
            } => {
                let mut entry = json!({ "code": code.as_str(), "message": message });
                if let Some(d) = detail {
                    entry["detail"] = d;
                }
                (status, Json(json!({ "errors": [entry] }))).into_response()
            }
            other => {
                tracing::error!(error = %other, "registry internal error");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
