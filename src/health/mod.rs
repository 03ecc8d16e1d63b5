//! `/healthz` and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    pub ok: bool,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when every component is healthy, otherwise `degraded`.
    pub status: String,
    pub database: ComponentHealth,
    pub storage: ComponentHealth,
    #[schema(value_type = Object)]
    pub media: watchpost_media::MediaStatus,
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, body = Health, description = "Everything is healthy"),
        (status = 503, body = Health, description = "A component is failing"),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.db.ping().await {
        Ok(()) => ComponentHealth {
            ok: true,
            backend: state.db.kind().to_string(),
            error: None,
        },
        Err(e) => ComponentHealth {
            ok: false,
            backend: state.db.kind().to_string(),
            error: Some(e.to_string()),
        },
    };
    let storage = state.storage_health().await;
    let healthy = database.ok && storage.ok;
    let body = Health {
        status: if healthy { "ok" } else { "degraded" }.to_string(),
        database,
        storage,
        media: state.media.status(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text exposition"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    state.metrics.render_http(&mut out);
    let media = state.media.status();
    for (name, help, value) in [
        ("watchpost_media_rooms", "Live media rooms.", media.rooms),
        (
            "watchpost_media_publishers",
            "Live publishers.",
            media.publishers,
        ),
        (
            "watchpost_media_subscribers",
            "Live subscribers.",
            media.subscribers,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    if let Some(sfu) = state.media.sfu() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &sfu.counters;
        for (name, help, value) in [
            (
                "watchpost_media_packets_in_total",
                "Datagrams received by the SFU.",
                c.packets_in.load(Relaxed),
            ),
            (
                "watchpost_media_bytes_in_total",
                "Bytes received by the SFU.",
                c.bytes_in.load(Relaxed),
            ),
            (
                "watchpost_media_packets_out_total",
                "Datagrams sent by the SFU.",
                c.packets_out.load(Relaxed),
            ),
            (
                "watchpost_media_bytes_out_total",
                "Bytes sent by the SFU.",
                c.bytes_out.load(Relaxed),
            ),
            (
                "watchpost_media_frames_forwarded_total",
                "Media frames written to subscribers.",
                c.frames_forwarded.load(Relaxed),
            ),
            (
                "watchpost_media_keyframe_requests_total",
                "PLIs sent to publishers.",
                c.keyframe_requests.load(Relaxed),
            ),
            (
                "watchpost_media_nacks_received_total",
                "NACKs from subscribers, answered from the send cache.",
                c.nacks_received.load(Relaxed),
            ),
            (
                "watchpost_media_nacks_sent_total",
                "NACKs sent to publishers for lost packets.",
                c.nacks_sent.load(Relaxed),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        for (name, help, value) in [
            (
                "watchpost_media_ingress_bitrate_bps",
                "Bitrate received from publishers (last second).",
                c.ingress_bps.load(Relaxed),
            ),
            (
                "watchpost_media_egress_bitrate_bps",
                "Bitrate sent to subscribers (last second).",
                c.egress_bps.load(Relaxed),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}
