//! Request extractors: who is calling (user session) and from where (client IP).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::model::{Session, User};
use crate::auth::{cookies, service, tokens};
use crate::error::ApiError;

/// Prefix of device tokens; such bearer tokens are never user sessions.
pub const DEVICE_TOKEN_PREFIX: &str = "wpd_";

/// A signed-in user (session cookie or `Authorization: Bearer`). Rejects with 401.
pub struct CurrentUser {
    pub user: User,
    pub session: Session,
}

/// Like [`CurrentUser`] but never rejects.
pub struct MaybeUser(pub Option<CurrentUser>);

/// The bearer credential, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The session token a request presents: a bearer token (signed or raw) wins over the
/// cookie; a bearer with a bad signature means no session at all.
pub fn session_token(headers: &HeaderMap, secret: &[u8], secure: bool) -> Option<String> {
    if let Some(token) = bearer(headers)
        && !token.starts_with(DEVICE_TOKEN_PREFIX)
    {
        let decoded = percent_encoding::percent_decode_str(token)
            .decode_utf8()
            .ok()
            .filter(|t| !t.chars().any(char::is_control))?;
        return if decoded.contains('.') {
            tokens::verify_signed(secret, &decoded)
        } else {
            Some(decoded.into_owned())
        };
    }
    cookies::session_token_from_cookie(headers, secret, secure)
}

pub async fn resolve_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<CurrentUser>, ApiError> {
    let Some(token) = session_token(headers, &state.auth.secret, state.auth.cookies.secure) else {
        return Ok(None);
    };
    Ok(service::find_session(&state.db, &token)
        .await?
        .map(|(session, user)| CurrentUser { user, session }))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        resolve_user(state, &parts.headers)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(resolve_user(state, &parts.headers).await?))
    }
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
