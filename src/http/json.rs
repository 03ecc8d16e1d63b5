//! A JSON body extractor whose rejections use the API's error shape instead of axum's
//! plain-text ones.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Expected a request body with content-type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "INVALID_JSON",
            format!("Malformed JSON body: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => {
            ApiError::validation(clean_serde_message(&e.body_text()))
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "Request body is too large",
                )
            } else {
                ApiError::bad_request("INVALID_BODY", e.body_text())
            }
        }
        other => ApiError::bad_request("INVALID_BODY", other.body_text()),
    }
}

/// axum prefixes serde's message with "Failed to deserialize the JSON body into the target
/// type: "; keep just the useful part (e.g. "missing field `email` at line 1 column 2").
fn clean_serde_message(text: &str) -> String {
    text.rsplit_once("target type: ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| text.to_string())
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
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "Request body is too large",
                    )
                } else {
                    ApiError::bad_request("INVALID_BODY", e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Ok(OptionalJson(Some(v))),
            Err(e) => {
                let inner = e.inner();
                if inner.is_data() {
                    Err(ApiError::validation(format!("{}: {}", e.path(), inner)))
                } else {
                    Err(ApiError::bad_request(
                        "INVALID_JSON",
                        format!("Malformed JSON body: {inner}"),
                    ))
                }
            }
        }
    }
}
