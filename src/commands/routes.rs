//! `/commands`.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::commands::model::Command;
use crate::commands::service::{self, ListFilter};
use crate::devices::extract::{Caller, DeviceCaller};
use crate::devices::service::find_for_user;
use crate::devices::service::require_camera;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Path, Query, bearer};
use crate::http::json::Json;
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_command, list_commands))
        .routes(routes!(ack_command))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCommandBody {
    pub target_device_id: String,
    /// `start_stream`, `stop_stream`, `take_snapshot`, `set_setting`, or any app-defined name.
    #[serde(rename = "type")]
    #[schema(
        pattern = r"^[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F]{1,64}$"
    )]
    pub command_type: String,
    /// Any JSON object (at most 16 KiB); absent or `null` is stored as `null`.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Required when a user session (not a device token) sends the command: the client
    /// device it is sent on behalf of.
    pub source_device_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckBody {
    /// Ignored when present: the path names the command.
    pub command_id: Option<String>,
    /// `acknowledged` or `rejected`.
    #[schema(value_type = crate::openapi::names::AckStatusName)]
    pub status: String,
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CommandsQuery {
    /// Commands sent by or to this device.
    pub device_id: Option<String>,
    #[param(value_type = Option<crate::openapi::names::CommandStatusName>)]
    pub status: Option<String>,
    /// Items per page (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(
    post, path = "/commands", tag = "commands",
    request_body = CreateCommandBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Command, description = "Queued (and dispatched if the camera is online)"),
        (status = 403, body = ErrorBody, description = "CLIENT_ONLY or DEVICES_NOT_LINKED"),
        (status = 409, body = ErrorBody, description = "DEVICE_DISABLED: the target camera, or the client sent on behalf of, is disabled"),
        (status = 404, body = ErrorBody, description = "Unknown device"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn create_command(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<(StatusCode, axum::Json<Command>)> {
    // The body is read before the caller is resolved so that a client's command can be
    // authenticated, authorised and stored in one statement (the hot path of the API).
    // Every other outcome resolves the caller first, so errors keep their usual order:
    // bad credentials (401) before a bad body (4xx).
    let (mut parts, body) = request.into_parts();
    let parsed =
        Json::<CreateCommandBody>::from_request(Request::from_parts(parts.clone(), body), &state)
            .await;
    if let (Some(token), Ok(Json(body))) = (bearer(&parts.headers), &parsed)
        && let Some(command) = service::create_with_device_token(
            &state,
            token,
            &body.target_device_id,
            &body.command_type,
            body.payload.as_ref().unwrap_or(&Value::Null),
        )
        .await?
    {
        return Ok((StatusCode::CREATED, axum::Json(command)));
    }
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    let Json(body) = parsed?;
    let source = match caller {
        Caller::Device(device) => device,
        Caller::User(current) => {
            let id = body.source_device_id.as_deref().ok_or_else(|| {
                ApiError::validation("sourceDeviceId is required when a user sends a command")
            })?;
            find_for_user(&state.db, &current.user.id, id).await?
        }
    };
    let command = service::authorise_and_create(
        &state,
        &source,
        &body.target_device_id,
        body.command_type,
        body.payload.unwrap_or(Value::Null),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(command)))
}

#[utoipa::path(
    get, path = "/commands", tag = "commands",
    params(CommandsQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Command>, description = "The caller's commands, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn list_commands(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<CommandsQuery>,
) -> ApiResult<axum::Json<Page<Command>>> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = ListFilter {
        device_id: q.device_id,
        status: q.status,
    };
    Ok(axum::Json(
        service::list(&state.db, &current.user.id, &filter, &page).await?,
    ))
}

#[utoipa::path(
    post, path = "/commands/{commandId}/ack", tag = "commands",
    params(("commandId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = AckBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Command, description = "Answered"),
        (status = 404, body = ErrorBody, description = "Not a command for this camera"),
        (status = 409, body = ErrorBody, description = "COMMAND_EXPIRED or COMMAND_ALREADY_FINAL"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 403, body = ErrorBody, description = "CAMERA_ONLY: the token is not a camera's"),
    )
)]
pub async fn ack_command(
    State(state): State<AppState>,
    DeviceCaller(camera): DeviceCaller,
    Path(command_id): Path<String>,
    Json(body): Json<AckBody>,
) -> ApiResult<axum::Json<Command>> {
    require_camera(&camera)?;
    let command =
        service::acknowledge(&state, &camera, &command_id, &body.status, body.reason).await?;
    Ok(axum::Json(command))
}
