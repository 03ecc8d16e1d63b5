//! `GET /api/tmdb/*`: the StreamVault TMDB proxy, wire-compatible with the reference.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::resolve_user;
use crate::error::ApiError;
use crate::http::extract::ClientIp;
use crate::http::streamvault;
use crate::state::AppState;
use crate::tmdb::service::{self, CacheStatus, TmdbError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tmdb_root))
        // Paths contain `/`, which needs axum's `{*path}` wildcard; documented via `ApiDoc`.
        .route("/api/tmdb/{*path}", axum::routing::get(tmdb_proxy))
        // `{*path}` never matches an empty rest.
        .route("/api/tmdb/", axum::routing::get(tmdb_root))
}

impl From<TmdbError> for ApiError {
    fn from(e: TmdbError) -> Self {
        let (status, message) = e.status_and_message();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let error = ApiError::plain(status, message);
        match e {
            TmdbError::RateLimited { retry_after_secs } => error.with_header(
                RETRY_AFTER,
                HeaderValue::from_str(&retry_after_secs.to_string()).expect("digits"),
            ),
            _ => error,
        }
    }
}

#[utoipa::path(
    get, path = "/api/tmdb", tag = "streamvault",
    responses((status = 400, description = r#"`{"error":"Missing TMDB API path"}`"#))
)]
pub async fn tmdb_root() -> ApiError {
    TmdbError::MissingPath.into()
}

#[utoipa::path(
    get, path = "/api/tmdb/{path}", tag = "streamvault",
    params(("path" = String, Path, description = "TMDB v3 path, e.g. `movie/550` (may contain '/'); the query string is forwarded without `api_key`", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_/-]*$")),
    responses(
        (status = 200, description = "TMDB's answer, passed through (also its 404, 422, …); `X-Cache: HIT` when served from the cache"),
        (status = 304, description = "`If-None-Match` matched the weak ETag"),
        (status = 400, description = r#"`{"error":"Invalid TMDB path"}`"#),
        (status = 401, description = "TMDB_PROXY_REQUIRE_AUTH is on and the request is not signed in; or the last credential was rejected"),
        (status = 429, description = "The client's rate limit, or every credential rate-limited upstream"),
        (status = 502, description = "Every credential failed (`TMDB request failed: …`)"),
        (status = 503, description = r#"`{"error":"TMDB credentials are not configured on the backend"}`"#),
    )
)]
pub async fn tmdb_proxy(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let signed_in = state.tmdb.require_auth && resolve_user(&state, &headers).await?.is_some();
    service::admit(&state.tmdb, ip.0, signed_in)?;
    let raw_path = uri
        .path()
        .strip_prefix("/api/tmdb/")
        .filter(|p| !p.is_empty());
    let answer = service::proxy(&state.tmdb, raw_path, uri.query()).await?;

    let etag = streamvault::weak_etag(&answer.body);
    let success = (200..300).contains(&answer.status);
    let mut response = if success && streamvault::not_modified(&headers, &etag) {
        (StatusCode::NOT_MODIFIED, Body::empty()).into_response()
    } else {
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        (status, Body::from(answer.body)).into_response()
    };
    let h = response.headers_mut();
    if let Some(v) = answer
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(CONTENT_TYPE, v);
    }
    if let Some(v) = answer
        .cache_control
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(CACHE_CONTROL, v);
    }
    streamvault::set_etag(h, &etag);
    h.insert(
        HeaderName::from_static("x-cache"),
        HeaderValue::from_static(match answer.cache {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
        }),
    );
    Ok(response)
}
