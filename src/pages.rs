//! Browser pages shipped inside the binary (no build step, no files needed at run time).

use axum::extract::State;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::page::standalone_headers;
use crate::state::AppState;

const MOBILE_SIM: &str = include_str!("../static/mobile-sim.html");
const WATCH: &str = include_str!("../static/watch.html");
/// The household web app: one page, its module and style sheet, and a QR encoder.
const APP_PAGE: &str = include_str!("../static/app/index.html");
const APP_SCRIPT: &str = include_str!("../static/app/app.js");
const APP_STYLE: &str = include_str!("../static/app/app.css");
/// qrcode-generator (MIT, Kazuhiko Arase), vendored for the pairing QR code.
const QR_ENCODER: &str = include_str!("../static/vendor/qrcode.js");
/// socket.io-client 4.8.4 (MIT), vendored so the pages work offline.
const SOCKET_IO_CLIENT: &str = include_str!("../static/vendor/socket.io.min.js");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mobile_sim))
        .routes(routes!(socket_io_client))
        .routes(routes!(watch_page))
        .routes(routes!(root))
        .routes(routes!(app_script))
        .routes(routes!(app_style))
        .routes(routes!(qr_encoder))
}

#[derive(Serialize, ToSchema)]
pub struct ServiceBanner {
    pub service: String,
    pub version: String,
}

/// A browser navigation asks for HTML first; API clients ask for JSON or anything.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| first.trim().starts_with("text/html"))
}

/// The root: the household web app for a browser, and for everything else the banner
/// StreamVault clients read to recognise their backend.
#[utoipa::path(
    get, path = "/", tag = "pages",
    responses(
        (status = 200, body = ServiceBanner, description = "The StreamVault service banner (a browser asking for text/html gets the web app)"),
    )
)]
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = if wants_html(&headers) {
        app_page(&state)
    } else {
        axum::Json(ServiceBanner {
            service: "StreamVault Auth Server".into(),
            version: "1.2.0".into(),
        })
        .into_response()
    };
    // The body depends on Accept: a cache must not hand the banner to a browser.
    response
        .headers_mut()
        .append(axum::http::header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// The web app's page with its Content-Security-Policy: scripts and styles only from this
/// server, media and fetches from it and from the object store that presigned URLs point
/// at, no framing.
pub fn app_page(state: &AppState) -> Response {
    let storage = storage_origin(state).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob: {storage}; connect-src 'self' {storage}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    );
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (CACHE_CONTROL, "no-cache".to_string()),
            (axum::http::header::CONTENT_SECURITY_POLICY, csp),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (axum::http::header::REFERRER_POLICY, "no-referrer".into()),
            (axum::http::header::X_FRAME_OPTIONS, "DENY".into()),
        ],
        APP_PAGE,
    )
        .into_response()
}

/// The origin presigned download URLs point at: the S3/MinIO endpoint, or for the
/// embedded store this server's public base URL (which a browser may reach under another
/// name than the page's, e.g. `localhost` and `127.0.0.1`).
fn storage_origin(state: &AppState) -> Option<String> {
    let Some(s3) = state.config.s3.as_ref() else {
        return crate::state::origin_of(&state.auth.base_url);
    };
    let scheme = if s3.use_ssl { "https" } else { "http" };
    Some(match s3.port {
        Some(port) => format!("{scheme}://{}:{port}", s3.endpoint),
        None => format!("{scheme}://{}", s3.endpoint),
    })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            // Compiled into the binary: a new binary may change them, so revalidate.
            (CACHE_CONTROL, "no-cache"),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[utoipa::path(
    get, path = "/app/app.js", tag = "pages",
    responses((status = 200, content_type = "text/javascript", body = String, description = "The web app's script"))
)]
pub async fn app_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_SCRIPT)
}

#[utoipa::path(
    get, path = "/app/app.css", tag = "pages",
    responses((status = 200, content_type = "text/css", body = String, description = "The web app's style sheet"))
)]
pub async fn app_style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_STYLE)
}

#[utoipa::path(
    get, path = "/app/qrcode.js", tag = "pages",
    responses((status = 200, content_type = "text/javascript", body = String, description = "The QR encoder the pairing screen uses"))
)]
pub async fn qr_encoder() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", QR_ENCODER)
}

#[utoipa::path(
    get, path = "/watch/{streamSessionId}", tag = "pages",
    params(
        ("streamSessionId" = String, Path),
        ("token" = Option<String>, Query, description = "Deprecated: pass the playback token in the URL fragment instead (`#token=…`), which never reaches the server or its logs"),
    ),
    responses((status = 200, content_type = "text/html", body = String, description = "A standalone WHEP viewer"))
)]
pub async fn watch_page() -> impl IntoResponse {
    (standalone_headers("no-cache"), WATCH)
}

#[utoipa::path(
    get, path = "/sim/mobile-sim.html", tag = "pages",
    responses((status = 200, content_type = "text/html", body = String, description = "The web mobile simulator"))
)]
pub async fn mobile_sim() -> impl IntoResponse {
    (standalone_headers("no-cache"), MOBILE_SIM)
}

#[utoipa::path(
    get, path = "/sim/socket.io.min.js", tag = "pages",
    responses((status = 200, content_type = "text/javascript", body = String, description = "The Socket.IO browser client"))
)]
pub async fn socket_io_client() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        SOCKET_IO_CLIENT,
    )
}
