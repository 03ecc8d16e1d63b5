//! `/videos`: the signed-in user's video objects.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::devices;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::http::body::DeleteResponse;
use crate::http::extract::{Path, Query};
use crate::http::json::Json;
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::videos::model::Video;
use crate::videos::service::{self, UploadRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_upload_url))
        .routes(routes!(download_url))
        .routes(routes!(list_videos, delete_video))
        .routes(routes!(complete_upload))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadUrlBody {
    /// Any name with a visible character (sanitised into the object key).
    #[schema(pattern = r"\S")]
    pub file_name: String,
    /// The device the video belongs to (one of the caller's devices).
    pub device_id: String,
    /// Optional folder inside the caller's namespace, e.g. `clips/2026`.
    pub prefix: Option<String>,
    pub content_type: Option<String>,
    /// The number of bytes you will upload. The URL then accepts exactly that many (S3
    /// checks a signed `Content-Length`); it also reserves them against your storage
    /// quota until the URL expires.
    #[schema(minimum = 0, maximum = 5_368_709_120u64)]
    pub size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrlResponse {
    /// PUT the bytes here (send the same Content-Type if one was given).
    pub upload_url: String,
    pub object_key: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: crate::time::Timestamp,
    pub video: Video,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    #[param(
        max_length = 1024,
        pattern = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    )]
    pub object_key: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadUrlResponse {
    pub download_url: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: crate::time::Timestamp,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteBody {
    #[schema(
        max_length = 1024,
        pattern = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    )]
    pub object_key: String,
}

#[utoipa::path(
    post, path = "/videos/upload-url", tag = "videos",
    request_body = UploadUrlBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = UploadUrlResponse, description = "Presigned PUT URL and the pending video"),
        (status = 400, body = ErrorBody, description = "Invalid input"),
        (status = 401, body = ErrorBody, description = "Not signed in"),
        (status = 404, body = ErrorBody, description = "Unknown device"),
        (status = 413, body = ErrorBody, description = "STORAGE_QUOTA_EXCEEDED: the upload does not fit in what is left of the account's quota"),
        (status = 409, body = ErrorBody, description = "TOO_MANY_OPEN_UPLOADS: 256 uploads are open (issued, not completed or deleted)"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn create_upload_url(
    State(state): State<AppState>,
    current: CurrentUser,
    Json(body): Json<UploadUrlBody>,
) -> ApiResult<axum::Json<UploadUrlResponse>> {
    // The video must belong to one of the caller's devices (404 otherwise).
    devices::service::find_for_user(&state.db, &current.user.id, &body.device_id).await?;
    let (video, presigned) = service::create_upload(
        &state.db,
        &state.storage,
        state.presign_ttl(),
        state.config.storage_quota_bytes_per_user,
        UploadRequest {
            user_id: current.user.id,
            device_id: body.device_id,
            file_name: body.file_name,
            prefix: body.prefix,
            content_type: body.content_type,
            size: body.size,
        },
    )
    .await?;
    Ok(axum::Json(UploadUrlResponse {
        upload_url: presigned.url,
        object_key: video.object_key.clone(),
        expires_at: presigned.expires_at,
        video,
    }))
}

#[utoipa::path(
    get, path = "/videos/download-url", tag = "videos",
    params(DownloadQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = DownloadUrlResponse, description = "Presigned GET URL"),
        (status = 404, body = ErrorBody, description = "No such video of the caller's"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter"),
    )
)]
pub async fn download_url(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<axum::Json<DownloadUrlResponse>> {
    let video = service::find_by_key(&state.db, &current.user.id, &q.object_key)
        .await?
        .ok_or_else(|| ApiError::not_found("Video not found"))?;
    let presigned = state
        .storage
        .presign_get(&video.object_key, state.presign_ttl())
        .await?;
    Ok(axum::Json(DownloadUrlResponse {
        download_url: presigned.url,
        expires_at: presigned.expires_at,
    }))
}

#[utoipa::path(
    get, path = "/videos", tag = "videos",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page (1-200, default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` from the previous page"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Video>, description = "The caller's videos, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn list_videos(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Video>>> {
    Ok(axum::Json(
        service::list(&state.db, &current.user.id, &page).await?,
    ))
}

#[utoipa::path(
    delete, path = "/videos", tag = "videos",
    request_body = DeleteBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = DeleteResponse, description = "Deleted (or already gone)"),
        (status = 404, body = ErrorBody, description = "Not the caller's object"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn delete_video(
    State(state): State<AppState>,
    current: CurrentUser,
    Json(body): Json<DeleteBody>,
) -> ApiResult<axum::Json<DeleteResponse>> {
    let deleted = service::delete(
        &state.db,
        &state.storage,
        &current.user.id,
        &body.object_key,
    )
    .await?;
    Ok(axum::Json(DeleteResponse { deleted }))
}

#[utoipa::path(
    post, path = "/videos/{id}/complete", tag = "videos",
    params(("id" = String, Path, description = "Video id", pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Video, description = "Marked uploaded, with its size"),
        (status = 404, body = ErrorBody, description = "No such video of the caller's"),
        (status = 409, body = ErrorBody, description = "UPLOAD_NOT_FOUND: nothing was uploaded yet"),
        (status = 413, body = ErrorBody, description = "STORAGE_QUOTA_EXCEEDED: the object would take the account over its quota; it was deleted"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
    )
)]
pub async fn complete_upload(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Video>> {
    Ok(axum::Json(
        service::complete(
            &state.db,
            &state.storage,
            state.config.storage_quota_bytes_per_user,
            state.presign_ttl(),
            &current.user.id,
            &id,
        )
        .await?,
    ))
}
