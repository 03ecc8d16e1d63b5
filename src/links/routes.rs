//! `/device-links` (user session).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::http::body::OkBody;
use crate::http::extract::{Path, Query};
use crate::http::json::Json;
use crate::links::model::Link;
use crate::links::service;
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::streams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_link, list_links))
        .routes(routes!(delete_link))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkBody {
    pub camera_device_id: String,
    pub client_device_id: String,
}

#[utoipa::path(
    post, path = "/device-links", tag = "links",
    request_body = LinkBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, body = Link, description = "Linked"),
        (status = 400, body = ErrorBody, description = "Roles do not match"),
        (status = 404, body = ErrorBody, description = "A device is not the caller's"),
        (status = 409, body = ErrorBody, description = "LINK_EXISTS"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn create_link(
    State(state): State<AppState>,
    current: CurrentUser,
    Json(body): Json<LinkBody>,
) -> ApiResult<(StatusCode, axum::Json<Link>)> {
    let link = service::create(
        &state.db,
        &current.user.id,
        &body.camera_device_id,
        &body.client_device_id,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(link)))
}

#[utoipa::path(
    get, path = "/device-links", tag = "links",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Items per page (1-200, default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` from the previous page"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = Page<Link>, description = "The caller's links, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter (INVALID_CURSOR for a bad cursor)"),
    )
)]
pub async fn list_links(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Link>>> {
    Ok(axum::Json(
        service::list(&state.db, &current.user.id, &page).await?,
    ))
}

#[utoipa::path(
    delete, path = "/device-links/{linkId}", tag = "links",
    params(("linkId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, body = OkBody, description = "Unlinked; the client's live viewing of the camera is closed"),
        (status = 404, body = ErrorBody, description = "Not the caller's link"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 403, body = ErrorBody, description = "MISSING_OR_NULL_ORIGIN or INVALID_ORIGIN: a cookie-authenticated request without a trusted Origin"),
    )
)]
pub async fn delete_link(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(link_id): Path<String>,
) -> ApiResult<axum::Json<OkBody>> {
    let link = service::delete(&state.db, &current.user.id, &link_id).await?;
    // The link was what let the client watch: its live viewing stops with it.
    streams::service::revoke_viewer_media(&state, &link.camera_device_id, &link.client_device_id)
        .await?;
    Ok(axum::Json(OkBody { ok: true }))
}
