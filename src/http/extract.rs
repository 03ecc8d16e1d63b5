//! `Query` and `Path` extractors whose rejections use the API's JSON error shape, the
//! client's address and the bearer credential.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{
    ConnectInfo, FromRequestParts, rejection::PathRejection, rejection::QueryRejection,
};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

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

/// The bearer credential, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the TCP peer, or the first `X-Forwarded-For` hop when the server
/// is configured to trust its reverse proxy.
pub struct ClientIp(pub IpAddr);

pub fn client_ip(parts_headers: &HeaderMap, peer: Option<SocketAddr>, trust_proxy: bool) -> IpAddr {
    if trust_proxy
        && let Some(ip) = parts_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.map(|p| p.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientIp(client_ip(
            &parts.headers,
            peer,
            state.config.trust_proxy_headers,
        )))
    }
}
