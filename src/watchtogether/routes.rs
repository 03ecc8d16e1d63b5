//! `WS /ws/watchtogether[/<code>]` and `/api/watchtogether/rooms[/{code}]`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::resolve_user;
use crate::devices::model::DEVICE_TOKEN_PREFIX;
use crate::devices::service::device_by_token;
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{ClientIp, bearer};
use crate::state::AppState;
use crate::watchtogether::model::{CreatedRoom, RoomSummary, code_from_path};
use crate::watchtogether::room::ConnMeta;
use crate::watchtogether::service::{CloseOutcome, CreateError};
use crate::watchtogether::socket;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room))
        .routes(routes!(get_room, delete_room))
        .route("/ws/watchtogether", get(upgrade))
        // `/ws/watchtogether/` too: the reference accepts it, with no room code.
        .route("/ws/watchtogether/", get(upgrade))
        .route("/ws/watchtogether/{*rest}", get(upgrade))
}

/// The reference backend's error shape: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// With `WATCH_TOGETHER_REQUIRE_AUTH` the REST routes are closed to anonymous callers as
/// the WebSocket is: otherwise anyone could still create rooms or close any room by its
/// code. `Ok` lets the call on, with the caller's account id when accounts are required
/// (rooms then belong to accounts: see [`crate::watchtogether::room::Room::may_close`]).
async fn required_account(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    if !state.watchtogether.config().require_auth {
        return Ok(None);
    }
    match account(state, headers, None).await {
        Ok(Some((id, _))) => Ok(Some(id)),
        Ok(None) | Err(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "Watch Together requires a signed-in account",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CreateRoomBody {
    // The reference takes any JSON here: values are kept as sent, or read loosely as text;
    // "required" means present and truthy.
    #[schema(value_type = serde_json::Value)]
    media_id: Value,
    #[schema(value_type = serde_json::Value)]
    media_title: String,
    #[schema(value_type = serde_json::Value)]
    host_nickname: String,
    #[schema(value_type = Option<serde_json::Value>)]
    media_match_key: Option<String>,
}

/// A flat `application/x-www-form-urlencoded` body as a JSON object of strings.
fn form_to_json(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body).replace('+', " ");
    let fields = text
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), Value::String(decode(v)))
        })
        .collect();
    Value::Object(fields)
}

#[utoipa::path(
    post, path = "/api/watchtogether/rooms", tag = "watchtogether",
    request_body = CreateRoomBody,
    responses(
        (status = 200, body = CreatedRoom, description = "Created; the host takes the slot by joining with client_id = host_id"),
        (status = 400, description = "`{\"error\":\"media_id, media_title, and host_nickname required\"}`"),
        (status = 401, description = "`{\"error\":\"Watch Together requires a signed-in account\"}` (only with `WATCH_TOGETHER_REQUIRE_AUTH`)"),
        (status = 429, description = "Too many rooms from this address"),
        (status = 500, description = "`{\"error\":\"Failed to create room\"}` (storage failure)"),
    )
)]
pub async fn create_room(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let account = match required_account(&state, &headers).await {
        Ok(account) => account,
        Err(refused) => return refused,
    };
    // A body over the limit (or cut short) gets the reference's error shape, not text.
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
        }
        Err(e) => return error(e.status(), "Invalid request body"),
    };
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if body.is_empty() {
        Value::Null
    } else if is_form {
        form_to_json(&body)
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return error(StatusCode::BAD_REQUEST, "Invalid JSON body"),
        }
    };
    if !body.is_object() {
        // The reference throws here (500); a missing body is the client's mistake.
        return error(
            StatusCode::BAD_REQUEST,
            "media_id, media_title, and host_nickname required",
        );
    }
    match state.watchtogether.create_rest(ip, account, &body) {
        Ok(room) => axum::Json(room).into_response(),
        Err(e @ CreateError::Invalid(_)) => error(StatusCode::BAD_REQUEST, &e.text()),
        Err(e @ CreateError::TooManyRooms(_)) => error(StatusCode::TOO_MANY_REQUESTS, &e.text()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "Failed to create room"),
    }
}

#[utoipa::path(
    get, path = "/api/watchtogether/rooms/{code}", tag = "watchtogether",
    params(("code" = String, Path, description = "Room code (case-insensitive)")),
    responses(
        (status = 200, body = RoomSummary, description = "The room"),
        (status = 401, description = "`{\"error\":\"Watch Together requires a signed-in account\"}` (only with `WATCH_TOGETHER_REQUIRE_AUTH`)"),
        (status = 404, description = "`{\"error\":\"Room not found\"}`"),
    )
)]
pub async fn get_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    code: Result<axum::extract::Path<String>, PathRejection>,
) -> Response {
    if let Err(refused) = required_account(&state, &headers).await {
        return refused;
    }
    // A code that does not decode (`%FF`) names no room.
    let Ok(axum::extract::Path(code)) = code else {
        return error(StatusCode::NOT_FOUND, "Room not found");
    };
    match state.watchtogether.summary(&code.to_uppercase()).await {
        Some(room) => axum::Json(room).into_response(),
        None => error(StatusCode::NOT_FOUND, "Room not found"),
    }
}

#[utoipa::path(
    delete, path = "/api/watchtogether/rooms/{code}", tag = "watchtogether",
    params(("code" = String, Path, description = "Room code (case-insensitive)")),
    responses(
        (status = 200, description = "`{\"success\":true}`; every socket was closed with 1000 `Room closed`"),
        (status = 401, description = "`{\"error\":\"Watch Together requires a signed-in account\"}` (only with `WATCH_TOGETHER_REQUIRE_AUTH`)"),
        (status = 403, description = "`{\"error\":\"Only the room's creator or host can close it\"}` (only with `WATCH_TOGETHER_REQUIRE_AUTH`)"),
        (status = 404, description = "`{\"error\":\"Room not found\"}`"),
    )
)]
pub async fn delete_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    code: Result<axum::extract::Path<String>, PathRejection>,
) -> Response {
    let account = match required_account(&state, &headers).await {
        Ok(account) => account,
        Err(refused) => return refused,
    };
    // A code that does not decode (`%FF`) names no room.
    let Ok(axum::extract::Path(code)) = code else {
        return error(StatusCode::NOT_FOUND, "Room not found");
    };
    match state
        .watchtogether
        .close(&code.to_uppercase(), account)
        .await
    {
        CloseOutcome::Closed => axum::Json(json!({"success": true})).into_response(),
        CloseOutcome::NotFound => error(StatusCode::NOT_FOUND, "Room not found"),
        CloseOutcome::NotAllowed => error(
            StatusCode::FORBIDDEN,
            "Only the room's creator or host can close it",
        ),
    }
}

/// The account a connection's token (`?token=`, `Authorization` or the session cookie)
/// names: `(user id, name)`. A token that names nobody is a 401.
async fn account(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> ApiResult<Option<(String, String)>> {
    let token = query_token.or_else(|| bearer(headers));
    let user = match token {
        Some(t) if t.starts_with(DEVICE_TOKEN_PREFIX) => {
            let device = device_by_token(&state.db, t)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            crate::auth::service::find_user(&state.db, &device.user_id).await?
        }
        Some(t) => {
            let mut with_bearer = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| ApiError::unauthorized())?;
            with_bearer.insert(AUTHORIZATION, value);
            let found = resolve_user(state, &with_bearer).await?;
            Some(found.ok_or_else(ApiError::unauthorized)?.user)
        }
        None => resolve_user(state, headers).await?.map(|u| u.user),
    };
    Ok(user.map(|u| (u.id, u.name)))
}

/// The WebSocket upgrade for `/ws/watchtogether` and `/ws/watchtogether/<code>`.
pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let wt = state.watchtogether.clone();
    let cfg = wt.config();
    // The session cookie is an ambient credential: another site's page (a cross-site
    // WebSocket) does not sign in with it, as on the Socket.IO endpoint. (The REST routes
    // have the API's own origin check.)
    let foreign_page = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| !state.auth.is_trusted_origin(o));
    let mut credentials = headers.clone();
    if foreign_page {
        credentials.remove(COOKIE);
    }
    let account = match account(&state, &credentials, query.get("token").map(String::as_str)).await
    {
        Ok(a) => a,
        // Without WATCH_TOGETHER_REQUIRE_AUTH the socket needs no authentication (as the
        // reference's): a token that names no account here (a Google access token, say)
        // leaves it anonymous rather than refused.
        Err(e) if !cfg.require_auth && e.status == StatusCode::UNAUTHORIZED => None,
        Err(e) => return e.into_response(),
    };
    if cfg.require_auth && account.is_none() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Watch Together requires a signed-in account (session or device token)",
        )
        .into_response();
    }
    let (account_id, account_name) = account.unzip();
    let meta = ConnMeta {
        id: wt.next_conn_id(),
        ip,
        account_id,
        account_name,
    };
    let code = code_from_path(uri.path());
    // Frames past this close the socket (1009); smaller ones over the limit get an `error`.
    let transport_cap = (cfg.max_message_bytes * 4).max(1024 * 1024);
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    let ws = match offered {
        Some(p) => ws.protocols([p]),
        None => ws,
    };
    // tungstenite zero-fills its whole read buffer before every read: at the default
    // 128 KiB that memset was ~40% of the server's CPU with 5,000 sockets (and 640 MiB of
    // buffers). Sync messages are a few hundred bytes; larger ones grow the buffer.
    ws.read_buffer_size(4096)
        .max_message_size(transport_cap)
        .max_frame_size(transport_cap)
        .on_upgrade(move |socket| socket::serve(wt, socket, meta, code))
}
