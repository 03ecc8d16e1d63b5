//! `/events`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::devices::extract::DeviceCaller;
use crate::devices::service::require_camera;
use crate::error::{ApiResult, ErrorBody};
use crate::events::model::MotionEvent;
use crate::events::service::{self, EventFilter};
use crate::http::extract::{Path, Query};
use crate::http::json::OptionalJson;
use crate::pagination::{Page, PageQuery};
use crate::recordings;
use crate::state::AppState;
use crate::time::Timestamp;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(motion_start))
        .routes(routes!(motion_end))
        .routes(routes!(list_events))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MotionStartBody {
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    pub score: Option<f64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    pub camera_device_id: Option<String>,
    /// Events that started at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Events that started before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    /// Items per page (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(
    post, path = "/events/motion/start", tag = "events",
    request_body(content = Option<MotionStartBody>, description = "All fields optional; no body, `{}` or `null` is fine"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = MotionEvent, description = "Started; linked clients got motion:detected"),
        (status = 403, body = ErrorBody, description = "CAMERA_ONLY"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn motion_start(
    State(state): State<AppState>,
    DeviceCaller(camera): DeviceCaller,
    // No body, `{}` and `null` all mean "no details".
    OptionalJson(body): OptionalJson<Option<MotionStartBody>>,
) -> ApiResult<(StatusCode, axum::Json<MotionEvent>)> {
    require_camera(&camera)?;
    let body = body.flatten().unwrap_or_default();
    let event = service::start(&state, &camera, body.started_at, body.score, body.metadata).await?;
    recordings::service::on_motion_start(&state, &camera, &event.id, event.started_at).await;
    Ok((StatusCode::CREATED, axum::Json(event)))
}

#[utoipa::path(
    post, path = "/events/{eventId}/motion/end", tag = "events",
    params(("eventId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = MotionEvent, description = "Ended; linked clients got motion:ended"),
        (status = 404, body = ErrorBody, description = "Not this camera's event"),
        (status = 409, body = ErrorBody, description = "EVENT_ALREADY_ENDED"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "CAMERA_ONLY: the token is not a camera's"),
    )
)]
pub async fn motion_end(
    State(state): State<AppState>,
    DeviceCaller(camera): DeviceCaller,
    Path(event_id): Path<String>,
) -> ApiResult<axum::Json<MotionEvent>> {
    require_camera(&camera)?;
    let event = service::end(&state, &camera, &event_id).await?;
    if let Some(ended_at) = event.ended_at {
        recordings::service::on_motion_end(&state, &camera, &event.id, ended_at);
    }
    Ok(axum::Json(event))
}

#[utoipa::path(
    get, path = "/events", tag = "events",
    params(EventsQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<MotionEvent>, description = "The caller's motion events, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<EventsQuery>,
) -> ApiResult<axum::Json<Page<MotionEvent>>> {
    let filter = EventFilter {
        camera_device_id: q.camera_device_id,
        from: q.from,
        to: q.to,
    };
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(axum::Json(
        service::list(&state.db, &current.user.id, &filter, &page).await?,
    ))
}
