//! `Query` and `Path` extractors whose rejections use the API's JSON error shape.

use axum::extract::{FromRequestParts, rejection::PathRejection, rejection::QueryRejection};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts
            .uri
            .query()
            .is_some_and(|q| percent_encoding::percent_decode_str(q).any(|b| b == 0))
        {
            return Err(ApiError::validation(
                "Query must not contain NUL characters",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::validation(format!(
                    "Invalid query string: {}",
                    e.body_text()
                        .rsplit_once(": ")
                        .map(|(_, m)| m)
                        .unwrap_or_default()
                )))
            }
            Err(e) => Err(ApiError::validation(e.body_text())),
        }
    }
}

pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL rejects NUL in text; no identifier contains control characters.
        if percent_encoding::percent_decode_str(parts.uri.path()).any(|b| b < 0x20 || b == 0x7f) {
            return Err(ApiError::validation(
                "Path must not contain control characters",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::validation(
                format!("Invalid path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::validation(e.body_text())),
        }
    }
}
