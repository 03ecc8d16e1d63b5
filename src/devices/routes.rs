//! `/devices`: registration and management (user session), heartbeat (device token).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::devices::extract::DeviceCaller;
use crate::devices::model::{Device, DeviceStatus};
use crate::devices::service::{self, DevicePatch, NewDevice, with_presence};
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use crate::http::body::OkBody;
use crate::http::extract::{Path, Query};
use crate::http::json::Json;
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::{recordings, streams};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_device))
        .routes(routes!(list_devices))
        .routes(routes!(update_device, delete_device))
        .routes(routes!(heartbeat))
        .routes(routes!(current_device))
}

/// What a device token belongs to: a phone or the simulator pairing with a token it was
/// handed (QR code or paste) learns its id, name and role here.
#[utoipa::path(
    get, path = "/devices/me", tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Device, description = "The device this token belongs to"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or disabled device token"),
    )
)]
pub async fn current_device(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
) -> axum::Json<Device> {
    axum::Json(with_presence(device, &state.realtime))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterBody {
    /// 1-100 characters without control characters, once trimmed.
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F]([^\x00-\x1F\x7F-\x9F]{0,98}[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
    /// `camera` or `client`.
    #[schema(value_type = crate::openapi::names::DeviceRoleName)]
    pub role: String,
    #[schema(pattern = r"^[^\x00-\x1F\x7F-\x9F]{0,50}$")]
    pub platform: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    pub device: Device,
    /// Shown once; send as `Authorization: Bearer <deviceToken>`.
    pub device_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBody {
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F]([^\x00-\x1F\x7F-\x9F]{0,98}[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: Option<String>,
    #[schema(value_type = Option<crate::openapi::names::DeviceRoleName>)]
    pub role: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `active` or `disabled`; disabling revokes the device token.
    #[schema(value_type = Option<crate::openapi::names::DeviceStatusName>)]
    pub status: Option<String>,
    /// A camera's recording mode: `off`, `always`, `motion`, or `null` for the server's
    /// default (`RECORDING_MODE`). Absent leaves it as it is.
    #[serde(default, deserialize_with = "crate::http::json::present")]
    #[schema(value_type = Option<crate::openapi::names::RecordingModeName>)]
    pub recording_mode: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub ok: bool,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub server_time: crate::time::Timestamp,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResponse {
    #[serde(flatten)]
    pub device: Device,
    /// Only when a disabled device was re-enabled: its new token (the old one stays revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

#[utoipa::path(
    post, path = "/devices/register", tag = "devices",
    request_body = RegisterBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = RegisterResponse, description = "Registered; the token is shown only here"),
        (status = 400, body = ErrorBody, description = "Invalid input"),
        (status = 401, body = ErrorBody, description = "Not signed in"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn register_device(
    State(state): State<AppState>,
    current: CurrentUser,
    Json(body): Json<RegisterBody>,
) -> ApiResult<(StatusCode, axum::Json<RegisterResponse>)> {
    let (device, token) = service::register(
        &state.db,
        &current.user.id,
        NewDevice {
            name: body.name,
            role: body.role,
            platform: body.platform,
            metadata: body.metadata,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RegisterResponse {
            device,
            device_token: token,
        }),
    ))
}

#[utoipa::path(
    get, path = "/devices", tag = "devices",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page (1-200, default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` from the previous page"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Device>, description = "The caller's devices, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn list_devices(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Device>>> {
    let mut page = service::list(&state.db, &current.user.id, &page).await?;
    page.items = page
        .items
        .into_iter()
        .map(|d| with_presence(d, &state.realtime))
        .collect();
    Ok(axum::Json(page))
}

#[utoipa::path(
    patch, path = "/devices/{deviceId}", tag = "devices",
    params(("deviceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = UpdateBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = UpdateResponse, description = "Updated; re-enabling returns a new deviceToken"),
        (status = 404, body = ErrorBody, description = "Not the caller's device"),
        (status = 409, body = ErrorBody, description = "DEVICE_HAS_LINKS: role change with links"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn update_device(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(device_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<UpdateResponse>> {
    let updated = service::update(
        &state.db,
        &current.user.id,
        &device_id,
        DevicePatch {
            name: body.name,
            role: body.role,
            metadata: body.metadata,
            status: body.status,
            recording_mode: body.recording_mode,
        },
    )
    .await?;
    let device = updated.device;
    if device.status == DeviceStatus::Disabled {
        // A revoked token must not keep a live connection, nor live media.
        state.realtime.disconnect_device(&device.id).await;
        streams::service::revoke_device_media(&state, &device.id, "device_disabled", false).await?;
    } else if updated.role_changed {
        // A socket's rights were fixed when it connected: it reconnects under the new role.
        // A camera's live streams end with its role.
        state.realtime.disconnect_device(&device.id).await;
        streams::service::revoke_device_media(&state, &device.id, "role_changed", false).await?;
    }
    Ok(axum::Json(UpdateResponse {
        device: with_presence(device, &state.realtime),
        device_token: updated.new_token,
    }))
}

#[utoipa::path(
    delete, path = "/devices/{deviceId}", tag = "devices",
    params(("deviceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = OkBody, description = "Deleted with its links, commands, events, sessions and recordings (objects included)"),
        (status = 404, body = ErrorBody, description = "Not the caller's device"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
    )
)]
pub async fn delete_device(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(device_id): Path<String>,
) -> ApiResult<axum::Json<OkBody>> {
    // Ownership first: only the caller's own device's media is revoked.
    service::find_for_user(&state.db, &current.user.id, &device_id).await?;
    // Before the delete takes its sessions with it, so they end announced.
    streams::service::revoke_device_media(&state, &device_id, "device_deleted", true).await?;
    recordings::service::remove_for_camera(&state, &device_id).await?;
    service::delete(&state.db, &current.user.id, &device_id).await?;
    state.realtime.disconnect_device(&device_id).await;
    Ok(axum::Json(OkBody { ok: true }))
}

#[utoipa::path(
    post, path = "/devices/{deviceId}/heartbeat", tag = "devices",
    params(("deviceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = HeartbeatResponse, description = "Presence recorded"),
        (status = 401, body = ErrorBody, description = "Missing or invalid device token"),
        (status = 403, body = ErrorBody, description = "Token of another device"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "Not found (or not the caller's)"),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(device_id): Path<String>,
) -> ApiResult<axum::Json<HeartbeatResponse>> {
    if device.id != device_id {
        return Err(ApiError::forbidden(
            codes::WRONG_DEVICE,
            "A device may only send its own heartbeat",
        ));
    }
    let now = service::heartbeat(&state.db, &device.id).await?;
    Ok(axum::Json(HeartbeatResponse {
        ok: true,
        server_time: now,
    }))
}
