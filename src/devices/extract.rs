//! The request principals a device token (or a user session) authenticates.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::auth::extract::CurrentUser;
use crate::devices::model::{DEVICE_TOKEN_PREFIX, Device};
use crate::devices::service::device_by_token;
use crate::error::{ApiError, codes};
use crate::http::extract::bearer;
use crate::state::AppState;

fn invalid_device_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        codes::INVALID_DEVICE_TOKEN,
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
