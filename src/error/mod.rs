//! The one error type every handler returns. It always renders as
//! `{"message": "...", "code": "UPPER_SNAKE"}` with the matching status, which is the shape
//! Better Auth clients already parse.

pub mod codes;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::storage::StorageError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub message: String,
    pub code: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Rendered as `{"error": message}`: the StreamVault wire shape.
    plain: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            plain: false,
        }
    }

    /// An error in the StreamVault wire shape, `{"error": "<message>"}`.
    pub fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            plain: true,
            ..Self::new(status, "ERROR", message)
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::bad_request(codes::VALIDATION_ERROR, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "Unauthorized",
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Logs the cause and hides it from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL_SERVER_ERROR,
            "Internal server error",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SERVICE_UNAVAILABLE,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.plain {
            let mut response = (
                self.status,
                axum::Json(serde_json::json!({"error": self.message})),
            )
                .into_response();
            for (name, value) in self.headers {
                response.headers_mut().insert(name, value);
            }
            return response;
        }
        let body = ErrorBody {
            message: self.message,
            code: self.code.to_string(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// What a domain service fails with, free of HTTP: a kind, a stable code and a message.
/// [`From<DomainError> for ApiError`](ApiError#impl-From<DomainError>-for-ApiError) is the
/// one place where kinds become status codes.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a rule (400).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The credentials do not identify anyone (401).
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// The caller is known but may not do this (403).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Nothing of the caller's by that id (404).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The current state does not allow it (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed but refused (422, as Better Auth answers for a taken email).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// More bytes than the caller may store (413).
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self::invalid(codes::VALIDATION_ERROR, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { code, message } => ApiError::bad_request(code, message),
            DomainError::Unauthenticated { code, message } => {
                ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            }
            DomainError::Forbidden { code, message } => ApiError::forbidden(code, message),
            DomainError::NotFound { code, message } => {
                ApiError::new(StatusCode::NOT_FOUND, code, message)
            }
            DomainError::Conflict { code, message } => ApiError::conflict(code, message),
            DomainError::Unprocessable { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            DomainError::TooLarge { code, message } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
            }
            DomainError::Database(e) if is_database_unreachable(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::DATABASE_UNAVAILABLE,
                    "The database is unavailable; try again shortly",
                )
                .with_header(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("5"),
                )
            }
            DomainError::Database(e) => ApiError::internal(e),
            DomainError::Storage(StorageError::NotFound) => ApiError::not_found("Object not found"),
            DomainError::Storage(StorageError::InvalidKey) => {
                ApiError::bad_request(codes::INVALID_OBJECT_KEY, "Invalid object key")
            }
            DomainError::Storage(StorageError::Io(e)) => ApiError::internal(e),
            DomainError::Storage(StorageError::Service(e)) => {
                tracing::warn!(error = %e, "object storage request failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::STORAGE_UNAVAILABLE,
                    "Object storage is unavailable; try again shortly",
                )
                .with_header(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("5"),
                )
            }
        }
    }
}

/// Storage routes and the admin dashboard talk to the object store directly.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        DomainError::from(e).into()
    }
}

/// True when `e` says the database could not be reached or answered (down, restarting,
/// network gone, pool exhausted): the request may succeed later, so it is a 503, not a
/// server bug.
pub fn is_database_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
        // PostgreSQL: admin shutdown, crash shutdown, cannot connect now, and the
        // connection-exception class.
        matches!(c.as_ref(), "57P01" | "57P02" | "57P03") || c.starts_with("08")
    }))
}

/// True when `e` is a unique-constraint violation (both SQLite and PostgreSQL report it).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Fallback for unknown routes, so even a 404 has the JSON shape.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("No such route")
}

/// Fallback for a known route called with a method it does not serve (axum keeps the
/// `Allow` header), so a 405 has the JSON shape too.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "Method not allowed on this route",
    )
}
