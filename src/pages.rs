//! Browser pages shipped inside the binary (no build step, no files needed at run time).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const MOBILE_SIM: &str = include_str!("../static/mobile-sim.html");
const WATCH: &str = include_str!("../static/watch.html");
/// socket.io-client 4.8.4 (MIT), vendored so the pages work offline.
const SOCKET_IO_CLIENT: &str = include_str!("../static/vendor/socket.io.min.js");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mobile_sim))
        .routes(routes!(socket_io_client))
        .routes(routes!(watch_page))
}

#[utoipa::path(
    get, path = "/watch/{streamSessionId}", tag = "pages",
    params(
        ("streamSessionId" = String, Path),
        ("token" = String, Query, description = "A playback token from GET /streams/{id}/playback-token"),
    ),
    responses((status = 200, content_type = "text/html", body = String, description = "A standalone WHEP viewer"))
)]
pub async fn watch_page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        WATCH,
    )
}

#[utoipa::path(
    get, path = "/sim/mobile-sim.html", tag = "pages",
    responses((status = 200, content_type = "text/html", body = String, description = "The web mobile simulator"))
)]
pub async fn mobile_sim() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        MOBILE_SIM,
    )
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
