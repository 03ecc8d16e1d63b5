//! `/streams`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::devices::extract::{Caller, DeviceCaller};
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use crate::http::extract::{Path, Query};
use crate::http::json::Json;
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::streams::media_token::MediaRole;
use crate::streams::model::{MediaCredentials, StreamSession};
use crate::streams::service::{self, PLAYBACK_TOKEN_TTL_SECS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_stream))
        .routes(routes!(accept_stream))
        .routes(routes!(publish_credentials))
        .routes(routes!(subscribe_credentials))
        .routes(routes!(playback_token))
        .routes(routes!(end_stream))
        .routes(routes!(my_streams))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamRequestBody {
    pub camera_device_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackToken {
    pub stream_session_id: String,
    pub token: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: crate::time::Timestamp,
}

#[utoipa::path(
    post, path = "/streams/request", tag = "streams",
    request_body = StreamRequestBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = StreamSession, description = "Requested. A client device's request sends the camera a start_stream command; a signed-in user's request (the web app) is announced to the camera as stream:requested with no requesterDeviceId"),
        (status = 200, body = StreamSession, description = "A signed-in user's request joins the camera's session that is already requested or streaming"),
        (status = 403, body = ErrorBody, description = "CLIENT_ONLY or DEVICES_NOT_LINKED"),
        (status = 404, body = ErrorBody, description = "Unknown camera"),
        (status = 409, body = ErrorBody, description = "DEVICE_DISABLED, or CAMERA_OFFLINE (a signed-in user's request to a camera without a live socket)"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn request_stream(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<StreamRequestBody>,
) -> ApiResult<(StatusCode, axum::Json<StreamSession>)> {
    let (session, created) = match caller {
        Caller::Device(client) => (
            service::request(&state, &client, &body.camera_device_id).await?,
            true,
        ),
        Caller::User(user) => {
            service::request_by_user(&state, &user.user.id, &body.camera_device_id).await?
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(session)))
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/accept", tag = "streams",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = StreamSession, description = "Streaming; viewers got stream:started"),
        (status = 404, body = ErrorBody, description = "Not this camera's session"),
        (status = 409, body = ErrorBody, description = "Not in the requested state"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "CAMERA_ONLY: the token is not a camera's"),
    )
)]
pub async fn accept_stream(
    State(state): State<AppState>,
    DeviceCaller(camera): DeviceCaller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<StreamSession>> {
    Ok(axum::Json(service::accept(&state, &camera, &id).await?))
}

#[utoipa::path(
    get, path = "/streams/{streamSessionId}/publish-credentials", tag = "streams",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = MediaCredentials, description = "Publish token, its WHIP URL (whipUrl) and ICE servers for the camera"),
        (status = 403, body = ErrorBody, description = "Not this session's camera"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
    )
)]
pub async fn publish_credentials(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MediaCredentials>> {
    Ok(axum::Json(
        service::credentials(&state, &device, &id, MediaRole::Publish).await?,
    ))
}

#[utoipa::path(
    get, path = "/streams/{streamSessionId}/subscribe-credentials", tag = "streams",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = MediaCredentials, description = "Subscribe token, its WHEP URL (whepUrl) and ICE servers for a viewer: a linked client device, or the signed-in owner"),
        (status = 403, body = ErrorBody, description = "Neither the requester nor a linked client"),
        (status = 404, body = ErrorBody, description = "Not one of the caller's sessions"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
    )
)]
pub async fn subscribe_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MediaCredentials>> {
    let credentials = match caller {
        Caller::Device(device) => {
            service::credentials(&state, &device, &id, MediaRole::Subscribe).await?
        }
        Caller::User(user) => service::credentials_for_user(&state, &user.user.id, &id).await?,
    };
    Ok(axum::Json(credentials))
}

#[utoipa::path(
    get, path = "/streams/{streamSessionId}/playback-token", tag = "streams",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = PlaybackToken, description = "A short-lived token for a viewer page"),
        (status = 403, body = ErrorBody, description = "Not allowed to watch"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
    )
)]
pub async fn playback_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PlaybackToken>> {
    let session = service::find_for_user(&state.db, caller.user_id(), &id).await?;
    let device_id = match &caller {
        Caller::User(_) => None,
        Caller::Device(device) => {
            if !service::may_view(&state.db, device, &session).await? {
                return Err(ApiError::forbidden(
                    codes::NOT_A_PARTICIPANT,
                    "This device may not watch this stream",
                ));
            }
            Some(device.id.as_str())
        }
    };
    service::require_session_active(&session)?;
    let (token, expires_at) = service::issue_token(
        &state,
        &session.id,
        MediaRole::Playback,
        device_id,
        PLAYBACK_TOKEN_TTL_SECS,
    )
    .await?;
    Ok(axum::Json(PlaybackToken {
        stream_session_id: session.id,
        token,
        expires_at,
    }))
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/end", tag = "streams",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = StreamSession, description = "Ended; everyone got stream:ended"),
        (status = 404, body = ErrorBody, description = "Neither the requester, the camera nor the signed-in owner"),
        (status = 409, body = ErrorBody, description = "STREAM_ALREADY_ENDED"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
    )
)]
pub async fn end_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<StreamSession>> {
    let session = match caller {
        Caller::Device(device) => service::end_by_device(&state, &device, &id).await?,
        Caller::User(user) => service::end_by_user(&state, &user.user.id, &id).await?,
    };
    Ok(axum::Json(session))
}

#[utoipa::path(
    get, path = "/streams/me/list", tag = "streams",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page (1-200, default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` from the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Page<StreamSession>, description = "This device's sessions, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn my_streams(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Query(page): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<StreamSession>>> {
    Ok(axum::Json(
        service::list_for_device(&state.db, &device, &page).await?,
    ))
}
