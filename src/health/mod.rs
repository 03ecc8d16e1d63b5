//! `/healthz`, `/metrics`, and `/health` (the StreamVault backend's liveness check).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(health))
}

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
    /// ISO-8601 UTC with milliseconds.
    pub timestamp: String,
    /// Google sign-in is configured (`GOOGLE_CLIENT_ID` and `GOOGLE_CLIENT_SECRET`).
    pub configured: bool,
}

/// StreamVault clients poll this before connecting; it checks nothing but the process.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses((status = 200, body = Liveness, description = "The server is up"))
)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(Liveness {
        status: "ok".into(),
        timestamp: crate::time::iso(&crate::time::now()),
        configured: state.config.oauth.configured(),
    })
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

/// How long a storage check's result stands for `/healthz`.
const STORAGE_PROBE_TTL: Duration = Duration::from_secs(10);

/// The object store's health. Details of a failure go to the server log, not to whoever
/// asks: `/healthz` is unauthenticated, and backend errors name paths, hosts and buckets.
async fn storage_health(state: &AppState) -> ComponentHealth {
    let backend = state.storage.backend().to_string();
    let recent = *state
        .storage_probe
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let ok = match recent {
        Some((at, ok)) if at.elapsed() < STORAGE_PROBE_TTL => ok,
        _ => {
            let ok = match tokio::time::timeout(Duration::from_secs(5), state.storage.check()).await
            {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(%backend, error = %e, "storage health check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(%backend, "storage health check timed out after 5 s");
                    false
                }
            };
            *state
                .storage_probe
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), ok));
            ok
        }
    };
    ComponentHealth {
        ok,
        backend,
        error: (!ok).then(|| "the object store is not usable; see the server log".to_string()),
    }
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
        Err(e) => {
            tracing::warn!(error = %e, "database health check failed");
            ComponentHealth {
                ok: false,
                backend: state.db.kind().to_string(),
                error: Some("the database is not reachable; see the server log".to_string()),
            }
        }
    };
    let storage = storage_health(&state).await;
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
    responses(
        (status = 200, content_type = "text/plain", body = String, description = "Prometheus text exposition"),
        (status = 401, body = crate::error::ErrorBody, description = "METRICS_TOKEN is set and the request does not carry it as a bearer token"),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, crate::error::ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(expected) = &state.config.metrics_token {
        use subtle::ConstantTimeEq;
        let given = crate::http::extract::bearer(&headers).unwrap_or_default();
        let ok: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
        if !ok {
            return Err(crate::error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                crate::error::codes::UNAUTHORIZED,
                "This server's metrics need Authorization: Bearer <METRICS_TOKEN>",
            ));
        }
    }
    let mut out = String::with_capacity(4096);
    state.metrics.render_http(&mut out);
    let media = state.media.status();
    let mut gauges = vec![
        (
            "watchpost_media_rooms",
            "Live media rooms.",
            media.rooms as u64,
        ),
        (
            "watchpost_media_publishers",
            "Live publishers.",
            media.publishers as u64,
        ),
        (
            "watchpost_media_subscribers",
            "Live subscribers.",
            media.subscribers as u64,
        ),
    ];
    let mut counters = Vec::new();
    if let Some(sfu) = state.media.sfu() {
        let c = &sfu.counters;
        counters.extend([
            (
                "watchpost_media_packets_in_total",
                "Datagrams received by the SFU.",
                &c.packets_in,
            ),
            (
                "watchpost_media_bytes_in_total",
                "Bytes received by the SFU.",
                &c.bytes_in,
            ),
            (
                "watchpost_media_packets_out_total",
                "Datagrams sent by the SFU.",
                &c.packets_out,
            ),
            (
                "watchpost_media_bytes_out_total",
                "Bytes sent by the SFU.",
                &c.bytes_out,
            ),
            (
                "watchpost_media_send_messages_total",
                "UDP messages the SFU handed to the kernel (a GSO run of datagrams is one).",
                &c.send_messages,
            ),
            (
                "watchpost_media_frames_forwarded_total",
                "Media frames written to subscribers.",
                &c.frames_forwarded,
            ),
            (
                "watchpost_media_keyframe_requests_total",
                "PLIs sent to publishers.",
                &c.keyframe_requests,
            ),
            (
                "watchpost_media_nacks_received_total",
                "NACKs from subscribers, answered from the send cache.",
                &c.nacks_received,
            ),
            (
                "watchpost_media_nacks_sent_total",
                "NACKs sent to publishers for lost packets.",
                &c.nacks_sent,
            ),
        ]);
        gauges.extend([
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
            (
                "watchpost_media_egress_estimated_bitrate_bps",
                "Sum of the viewers' bandwidth estimates (TWCC/REMB).",
                c.egress_estimate_bps.load(Relaxed),
            ),
        ]);
    }
    // Resource gauges: a leak (memory, descriptors, tasks, pooled connections, sockets)
    // shows as a curve that keeps rising under steady load; the soak benchmark reads these.
    let (db_open, db_idle) = state.db.pool_connections();
    let process = ProcessStats::read();
    gauges.extend([
        (
            "watchpost_db_connections",
            "Open database connections in the pool.",
            u64::from(db_open),
        ),
        (
            "watchpost_db_connections_idle",
            "Idle database connections in the pool.",
            db_idle as u64,
        ),
        (
            "watchpost_runtime_alive_tasks",
            "Tasks alive on the server's async runtime.",
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
        ),
        (
            "watchpost_realtime_connected_devices",
            "Devices with at least one open Socket.IO connection.",
            state.realtime.connected_devices() as u64,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
            process.resident_bytes,
        ),
        (
            "process_open_fds",
            "Open file descriptors of the server process.",
            process.open_fds,
        ),
        (
            "process_threads",
            "Threads of the server process.",
            process.threads,
        ),
    ]);
    let rec = &state.recordings;
    gauges.extend([
        (
            "watchpost_recordings_active",
            "Recordings in progress.",
            rec.active_count() as u64,
        ),
        (
            "watchpost_recording_backlog_bytes",
            "Bytes of closed segments on local disk waiting for upload.",
            rec.backlog_bytes(),
        ),
    ]);
    let rc = rec.counters();
    counters.extend([
        (
            "watchpost_recording_segments_written_total",
            "Segments the recorders closed on disk.",
            &rc.segments_written,
        ),
        (
            "watchpost_recording_segments_uploaded_total",
            "Segments stored in the object store (and removed locally).",
            &rc.segments_uploaded,
        ),
        (
            "watchpost_recording_upload_failures_total",
            "Failed segment upload attempts (each is retried).",
            &rc.upload_failures,
        ),
        (
            "watchpost_recording_segments_refused_total",
            "Segments or recordings refused because the local backlog was full.",
            &rc.segments_refused,
        ),
        (
            "watchpost_recordings_failed_total",
            "Recordings whose pipeline failed.",
            &rc.recordings_failed,
        ),
    ]);
    for (name, help, value) in gauges {
        write_metric(&mut out, name, help, "gauge", value);
    }
    write_metric(
        &mut out,
        "watchpost_recording_frames_dropped_total",
        "Frames the recorders dropped because they fell behind (live viewers unaffected).",
        "counter",
        rec.frames_dropped(),
    );
    for (name, help, value) in counters {
        write_metric(&mut out, name, help, "counter", value.load(Relaxed));
    }
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    ))
}

/// The process's own resource use, from `/proc/self` (zeros where there is no procfs).
#[derive(Default)]
struct ProcessStats {
    resident_bytes: u64,
    open_fds: u64,
    threads: u64,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        let mut stats = ProcessStats::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let mut parts = line.split_whitespace();
                let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let value: u64 = value.parse().unwrap_or(0);
                match key {
                    "VmRSS:" => stats.resident_bytes = value * 1024,
                    "Threads:" => stats.threads = value,
                    _ => {}
                }
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle used to list it is one of the entries.
            stats.open_fds = (fds.count() as u64).saturating_sub(1);
        }
        stats
    }
}

fn write_metric(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}
