use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::model::User;
use crate::devices::model::Device;
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use crate::http::body::DeleteResponse;
use crate::http::extract::{ClientIp, Query};
use crate::http::json::Json;
use crate::http::rate_limit::RetryAfter;
use crate::recordings::model::Recording;
use crate::state::AppState;
use crate::storage::ObjectInfo;
use crate::streams::model::StreamSession;
use crate::{auth, devices, recordings, streams, videos};

const ADMIN_PAGE: &str = include_str!("../../static/admin.html");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_page))
        .routes(routes!(admin_upload_url))
        .routes(routes!(admin_list_objects))
        .routes(routes!(admin_delete_object))
        .routes(routes!(admin_list_users, admin_create_user))
        .routes(routes!(admin_list_devices))
        .routes(routes!(admin_list_streams))
        .routes(routes!(admin_list_recordings))
}

fn equal(a: &str, b: &str) -> bool {
    // Hash first so the comparison takes the same time whatever the lengths.
    use sha2::Digest;
    let ha = sha2::Sha256::digest(a.as_bytes());
    let hb = sha2::Sha256::digest(b.as_bytes());
    ha.ct_eq(&hb).into()
}

/// The rate-limit bucket of failed `/admin` sign-ins.
const ADMIN_BUCKET: &str = "/admin";

fn too_many_attempts(retry: RetryAfter) -> Response {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        codes::TOO_MANY_REQUESTS,
        "Too many failed admin sign-ins. Please try again later.",
    )
    .with_header(RETRY_AFTER, HeaderValue::from(retry.0))
    .into_response()
}

/// Guards every `/admin` route. A client that fails too often (`ADMIN_MAX_FAILURES` per 15
/// minutes) is refused, right password or not, until its window ends: guessing the
/// password must not be a matter of patience.
pub async fn basic_auth(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path != "/admin" && !path.starts_with("/admin/") {
        return next.run(request).await;
    }
    let Some(admin) = &state.config.admin else {
        return ApiError::not_found("No such route").into_response();
    };
    if let Err(retry) = state.auth.admin_failures.peek(ip, ADMIN_BUCKET) {
        return too_many_attempts(retry);
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let authorised = presented
        .as_deref()
        .and_then(|p| p.split_once(':'))
        .is_some_and(|(user, pass)| {
            // Evaluate both so timing does not reveal which one was wrong.
            let u = equal(user, &admin.username);
            let p = equal(pass, &admin.password);
            u & p
        });
    if !authorised {
        // A browser's first, credential-less request is the normal challenge, not a guess.
        if presented.is_some()
            && let Err(retry) = state.auth.admin_failures.check(ip, ADMIN_BUCKET)
        {
            return too_many_attempts(retry);
        }
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "Admin credentials required",
        )
        .with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Watchpost admin\", charset=\"UTF-8\""),
        )
        .into_response();
    }
    next.run(request).await
}

#[utoipa::path(
    get, path = "/admin", tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The dashboard page"),
        (status = 401, body = ErrorBody, description = "Missing or wrong credentials"),
        (status = 404, body = ErrorBody, description = "Dashboard disabled"),
    )
)]
pub async fn admin_page() -> impl IntoResponse {
    (
        crate::http::page::standalone_headers("no-store"),
        ADMIN_PAGE,
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminUploadBody {
    /// Any name with a visible character (sanitised into the object key).
    #[schema(pattern = r"\S")]
    pub file_name: String,
    pub prefix: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminUploadResponse {
    pub upload_url: String,
    pub object_key: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: crate::time::Timestamp,
}

#[utoipa::path(
    post, path = "/admin/upload-url", tag = "admin",
    request_body = AdminUploadBody,
    security(("basic" = [])),
    responses(
        (status = 200, body = AdminUploadResponse, description = "Presigned PUT URL"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn admin_upload_url(
    State(state): State<AppState>,
    Json(body): Json<AdminUploadBody>,
) -> ApiResult<axum::Json<AdminUploadResponse>> {
    let (key, presigned) = videos::service::create_admin_upload(
        &state.storage,
        state.presign_ttl(),
        &body.file_name,
        body.prefix.as_deref(),
        body.content_type.as_deref(),
    )
    .await?;
    Ok(axum::Json(AdminUploadResponse {
        upload_url: presigned.url,
        object_key: key,
        expires_at: presigned.expires_at,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObjectsQuery {
    pub prefix: Option<String>,
    /// `nextCursor` from the previous page (a key: the listing goes on after it).
    pub cursor: Option<String>,
    /// Objects per page (1-1000, default 200).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectWithUrl {
    #[serde(flatten)]
    pub object: ObjectInfo,
    /// A short-lived download link.
    pub download_url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList {
    pub bucket: String,
    pub items: Vec<ObjectWithUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/admin/objects", tag = "admin",
    params(ObjectsQuery),
    security(("basic" = [])),
    responses(
        (status = 200, body = ObjectList, description = "Every object in the bucket"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: an invalid query parameter, or a limit outside 1-1000"),
    )
)]
pub async fn admin_list_objects(
    State(state): State<AppState>,
    Query(q): Query<ObjectsQuery>,
) -> ApiResult<axum::Json<ObjectList>> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 1000"));
    }
    let page = state
        .storage
        .list(q.prefix.as_deref(), q.cursor.as_deref(), limit)
        .await?;
    let mut items = Vec::with_capacity(page.objects.len());
    for object in page.objects {
        let url = state
            .storage
            .presign_get(&object.key, Duration::from_secs(600))
            .await;
        items.push(ObjectWithUrl {
            download_url: url.map(|p| p.url).unwrap_or_default(),
            object,
        });
    }
    Ok(axum::Json(ObjectList {
        bucket: state.storage.bucket().to_string(),
        items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminDeleteBody {
    #[schema(
        max_length = 1024,
        pattern = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    )]
    pub object_key: String,
}

#[utoipa::path(
    delete, path = "/admin/object", tag = "admin",
    request_body = AdminDeleteBody,
    security(("basic" = [])),
    responses(
        (status = 200, body = DeleteResponse, description = "Deleted"),
        (status = 409, body = ErrorBody, description = "RECORDING_SEGMENT: the object is a recording's segment; delete the recording"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn admin_delete_object(
    State(state): State<AppState>,
    Json(body): Json<AdminDeleteBody>,
) -> ApiResult<axum::Json<DeleteResponse>> {
    let deleted =
        match videos::service::delete_any_object(&state.db, &state.storage, &body.object_key).await
        {
            Err(e) if names_no_object(&e) => false,
            other => other?,
        };
    Ok(axum::Json(DeleteResponse { deleted }))
}

/// In the embedded store a key can name a folder of other objects (`users/<id>`), run
/// through an object (`<object>/x`) or have a segment longer than a file name can be;
/// the filesystem then says "is a directory", "not a directory" or "file name too long".
/// None of them is an object, so there was nothing to delete (not a 500).
fn names_no_object(e: &crate::error::DomainError) -> bool {
    matches!(
        e,
        crate::error::DomainError::Storage(crate::storage::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::InvalidFilename
            )
    )
}

#[utoipa::path(
    get, path = "/admin/users", tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 200, body = Vec<User>, description = "All accounts, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn admin_list_users(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<User>>> {
    Ok(axum::Json(auth::service::list_users(&state.db).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub name: String,
    pub email: String,
    pub password: String,
}

/// The operator creates an account (the way in when `BETTER_AUTH_DISABLE_SIGNUP` is set).
#[utoipa::path(
    post, path = "/admin/users", tag = "admin",
    security(("basic" = [])),
    request_body = NewUserBody,
    responses(
        (status = 201, body = User, description = "Created; the person signs in with these credentials"),
        (status = 400, body = ErrorBody, description = "Invalid email, name or password"),
        (status = 422, body = ErrorBody, description = "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn admin_create_user(
    State(state): State<AppState>,
    Json(body): Json<NewUserBody>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    let user = auth::service::sign_up(
        &state.db,
        auth::service::NewUser {
            name: body.name,
            email: body.email,
            password: body.password,
            image: None,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}

#[utoipa::path(
    get, path = "/admin/devices", tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 200, body = Vec<Device>, description = "All devices, newest first"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn admin_list_devices(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Vec<Device>>> {
    let devices = devices::service::list_all(&state.db).await?;
    Ok(axum::Json(
        devices
            .into_iter()
            .map(|d| devices::service::with_presence(d, &state.realtime))
            .collect(),
    ))
}

#[utoipa::path(
    get, path = "/admin/streams", tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 200, body = Vec<StreamSession>, description = "Live (requested or streaming) sessions"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn admin_list_streams(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Vec<StreamSession>>> {
    Ok(axum::Json(streams::service::list_live(&state.db).await?))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminRecordings {
    /// The latest 200 recordings of every user, newest first.
    pub items: Vec<Recording>,
    pub active: usize,
    pub backlog_bytes: u64,
}

#[utoipa::path(
    get, path = "/admin/recordings", tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 200, body = AdminRecordings, description = "Recent recordings and the upload backlog"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
    )
)]
pub async fn admin_list_recordings(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<AdminRecordings>> {
    Ok(axum::Json(AdminRecordings {
        items: recordings::service::list_all(&state.db).await?,
        active: state.recordings.active_count(),
        backlog_bytes: state.recordings.backlog_bytes(),
    }))
}
