//! Device tokens and the request principals: a signed-in user or a device.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::auth::extract::{DEVICE_TOKEN_PREFIX, bearer};
use crate::db::Db;
use crate::db_fetch_optional;
use crate::devices::model::Device;
use crate::error::ApiError;

/// `wpd_` + 40 random alphanumerics. Shown once; only its SHA-256 is stored.
pub fn generate_device_token() -> String {
    let body: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{DEVICE_TOKEN_PREFIX}{body}")
}

/// Tokens carry 238 bits of entropy, so a fast unsalted hash is enough (nothing to brute force).
pub fn hash_device_token(token: &str) -> String {
    crate::auth::tokens::hex(&Sha256::digest(token.as_bytes()))
}

pub async fn device_by_token(db: &Db, token: &str) -> Result<Option<Device>, ApiError> {
    if !token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(db_fetch_optional!(
        db,
        Device,
        "SELECT id, user_id, name, role, platform, metadata, status, last_seen_at, last_heartbeat_at, created_at, updated_at
         FROM devices WHERE token_hash = $1 AND status = 'active'",
        [hash_device_token(token)]
    )?)
}

fn invalid_device_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_DEVICE_TOKEN",
        "A valid device token is required (Authorization: Bearer wpd_…)",
    )
}

/// A request authenticated with a device token. The device acts for its owner.
pub struct DeviceCaller(pub Device);

impl FromRequestParts<AppState> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(invalid_device_token)?;
        device_by_token(&state.db, token)
            .await?
            .map(DeviceCaller)
            .ok_or_else(invalid_device_token)
    }
}

/// Either principal; routes that accept both decide what each may do.
pub enum Caller {
    User(CurrentUser),
    Device(Device),
}

impl Caller {
    pub fn user_id(&self) -> &str {
        match self {
            Caller::User(u) => &u.user.id,
            Caller::Device(d) => &d.user_id,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers)
            && token.starts_with(DEVICE_TOKEN_PREFIX)
        {
            return device_by_token(&state.db, token)
                .await?
                .map(Caller::Device)
                .ok_or_else(invalid_device_token);
        }
        Ok(Caller::User(
            CurrentUser::from_request_parts(parts, state).await?,
        ))
    }
}

/// Requires the camera role.
pub fn require_camera(device: &Device) -> Result<(), ApiError> {
    if device.is_camera() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "CAMERA_ONLY",
            "Only a camera device can do this",
        ))
    }
}

/// Requires the client role.
pub fn require_client(device: &Device) -> Result<(), ApiError> {
    if device.is_client() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "CLIENT_ONLY",
            "Only a client device can do this",
        ))
    }
}
