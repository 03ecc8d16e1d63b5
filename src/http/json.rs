//! A JSON body extractor whose rejections use the API's error shape instead of axum's
//! plain-text ones.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, codes};

pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse(&bytes).map(Json)
    }
}

/// `Content-Type: application/json` (or a `+json` type), parameters aside.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::UNSUPPORTED_MEDIA_TYPE,
        "Expected a request body with content-type: application/json",
    )
}

/// A body that could not be read, as an API error (413 when over the route's limit).
pub fn bytes_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            "Request body is too large",
        )
    } else {
        ApiError::bad_request(codes::INVALID_BODY, e.body_text())
    }
}

/// NUL cannot be stored in PostgreSQL text or JSONB, and no legitimate field needs it.
fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && (w[1] | 0x20) == b'u' && &w[2..] == b"0000")
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if contains_nul_escape(bytes) {
        return Err(ApiError::validation("Text must not contain NUL characters"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_data() {
            let path = e.path().to_string();
            if path == "." {
                ApiError::validation(inner.to_string())
            } else {
                ApiError::validation(format!("{path}: {inner}"))
            }
        } else {
            ApiError::bad_request(codes::INVALID_JSON, format!("Malformed JSON body: {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(codes::INVALID_JSON, format!("Malformed JSON body: {e}"))
    })?;
    Ok(value)
}

/// A JSON body that may be absent: an empty body yields `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        // A body there is must say it is JSON, as on every other route.
        if !is_json {
            return Err(unsupported_media_type());
        }
        parse(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// For `Option<Option<T>>` fields with `#[serde(default)]`: absent stays `None`, `null`
/// becomes `Some(None)`, so a PATCH can tell "leave it" from "clear it".
pub fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
