//! Request extractors for the signed-in user (session cookie or bearer token).

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::auth::model::{Session, User};
use crate::auth::service;
use crate::crypto;
use crate::devices::model::DEVICE_TOKEN_PREFIX;
use crate::error::ApiError;
use crate::http::cookies;
use crate::http::extract::bearer;
use crate::state::AppState;

/// A signed-in user (session cookie or `Authorization: Bearer`). Rejects with 401.
pub struct CurrentUser {
    pub user: User,
    pub session: Session,
}

/// Like [`CurrentUser`] but never rejects.
pub struct MaybeUser(pub Option<CurrentUser>);

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
            crypto::verify_signed(secret, &decoded)
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
