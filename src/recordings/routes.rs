//! `/recordings`: the owner's recordings (a linked client device may read them).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::devices::extract::Caller;
use crate::devices::service::require_client;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::body::DeleteResponse;
use crate::http::extract::{Path, Query};
use crate::pagination::{Page, PageQuery};
use crate::recordings::model::{Recording, RecordingDetail};
use crate::recordings::service::{self, Reader, RecordingFilter};
use crate::state::AppState;
use crate::time::Timestamp;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_recordings))
        .routes(routes!(get_recording, delete_recording))
        .routes(routes!(segment_download_url))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RecordingsQuery {
    pub camera_device_id: Option<String>,
    /// Recordings that started at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Recordings that started before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    /// `recording`, `complete` or `failed`.
    #[param(value_type = Option<crate::openapi::names::RecordingStatusName>)]
    pub status: Option<String>,
    /// Items per page (1-200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentUrlResponse {
    pub download_url: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: Timestamp,
}

/// The reader a caller is: the signed-in owner, or a client device (cameras may not read).
fn reader(caller: &Caller) -> ApiResult<Reader<'_>> {
    Ok(match caller {
        Caller::User(current) => Reader::User(&current.user.id),
        Caller::Device(device) => {
            require_client(device)?;
            Reader::Client(device)
        }
    })
}

#[utoipa::path(
    get, path = "/recordings", tag = "recordings",
    params(RecordingsQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Recording>, description = "Recordings, newest first (a browser asking for text/html gets the web app)"),
        (status = 400, body = ErrorBody, description = "Bad filter or cursor"),
        (status = 403, body = ErrorBody, description = "CLIENT_ONLY: a camera token"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn list_recordings(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    Query(q): Query<RecordingsQuery>,
) -> ApiResult<Response> {
    // A browser opening /recordings gets the web app (on its recordings view), which then
    // uses this same route as JSON with the user's session cookie.
    if crate::pages::wants_html(&headers) {
        return Ok(crate::pages::app_page(&state));
    }
    let caller = caller?;
    let reader = reader(&caller)?;
    let filter = RecordingFilter {
        camera_device_id: q.camera_device_id,
        from: q.from,
        to: q.to,
        status: q.status,
    };
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(axum::Json(service::list(&state.db, &reader, &filter, &page).await?).into_response())
}

#[utoipa::path(
    get, path = "/recordings/{recordingId}", tag = "recordings",
    params(("recordingId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = RecordingDetail, description = "The recording, its segments and overlapping motion events"),
        (status = 403, body = ErrorBody, description = "CLIENT_ONLY: a camera token"),
        (status = 404, body = ErrorBody, description = "No such recording of the caller's"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
    )
)]
pub async fn get_recording(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RecordingDetail>> {
    let reader = reader(&caller)?;
    Ok(axum::Json(service::detail(&state.db, &reader, &id).await?))
}

#[utoipa::path(
    get, path = "/recordings/{recordingId}/segments/{seq}/download-url", tag = "recordings",
    params(("recordingId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("seq" = i64, Path)),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = SegmentUrlResponse, description = "Presigned GET URL of the segment"),
        (status = 400, body = ErrorBody, description = "seq is not a number"),
        (status = 403, body = ErrorBody, description = "CLIENT_ONLY: a camera token"),
        (status = 404, body = ErrorBody, description = "No such recording or segment"),
        (status = 409, body = ErrorBody, description = "SEGMENT_NOT_UPLOADED: still waiting for upload"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn segment_download_url(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, seq)): Path<(String, i64)>,
) -> ApiResult<axum::Json<SegmentUrlResponse>> {
    let reader = reader(&caller)?;
    let presigned = service::download_url(&state, &reader, &id, seq).await?;
    Ok(axum::Json(SegmentUrlResponse {
        download_url: presigned.url,
        expires_at: presigned.expires_at,
    }))
}

#[utoipa::path(
    delete, path = "/recordings/{recordingId}", tag = "recordings",
    params(("recordingId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = DeleteResponse, description = "Deleted, with its stored segments"),
        (status = 404, body = ErrorBody, description = "No such recording of the caller's"),
        (status = 409, body = ErrorBody, description = "RECORDING_IN_PROGRESS"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
    )
)]
pub async fn delete_recording(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeleteResponse>> {
    service::delete(&state, &current.user.id, &id).await?;
    Ok(axum::Json(DeleteResponse { deleted: true }))
}
