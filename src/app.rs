//! Router assembly and the server lifecycle.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;
use watchpost_media::MediaEngine;
use watchpost_media::sfu::SfuConfig;

use crate::config::Config;
use crate::db::Db;
use crate::error::{ApiError, method_not_allowed_fallback, not_found_fallback};
use crate::http::cookies::CookieSettings;
use crate::http::rate_limit::RateLimiter;
use crate::http::{csrf, metrics::Metrics};
use crate::openapi::ApiDoc;
use crate::realtime::Realtime;
use crate::state::{AppState, AuthSettings, origin_of};
use crate::storage::{LocalStore, ObjectStore, S3Store};
use crate::upstream::oauth::OAuthProvider;
use crate::upstream::tmdb::TmdbUpstream;
use crate::{
    admin, auth, commands, devices, events, health, jobs, links, media_api, pages, realtime,
    recordings, storage, streams, videos, watchtogether,
};
use crate::{oauth, tmdb};

/// Largest JSON body any API route accepts. Uploads never pass through here.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database ({target}): {source}")]
    Database { target: String, source: sqlx::Error },
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot reach object storage at {endpoint}: {reason}")]
    Storage { endpoint: String, reason: String },
    #[error("cannot open the media UDP port {port}: {source}")]
    Media { port: u16, source: std::io::Error },
    #[error("cannot read or create the auth secret at {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
}

pub async fn connect_and_migrate(config: &Config) -> Result<Db, StartupError> {
    let db = Db::connect(&config.database)
        .await
        .map_err(|source| StartupError::Database {
            target: config.database.describe(),
            source,
        })?;
    db.migrate().await?;
    Ok(db)
}

/// The configured secret, or one generated once and kept in `<data_dir>/secret`.
/// The data directory holds the database, the objects and the secret: when this server
/// is the one to create it, only its own user may enter it (0700). A directory that exists
/// is left as its owner set it up.
fn prepare_data_dir(config: &Config) -> std::io::Result<()> {
    let used = config.auth_secret.is_none()
        || config.s3.is_none()
        || matches!(&config.database, crate::config::DatabaseTarget::Sqlite(p) if p.starts_with(&config.data_dir));
    if !used || config.data_dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&config.data_dir)
}

fn load_or_create_secret(config: &Config) -> Result<String, StartupError> {
    if let Some(secret) = &config.auth_secret {
        return Ok(secret.clone());
    }
    let path = config.data_dir.join("secret");
    let wrap = |source| StartupError::Secret {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => {
            tracing::warn!(path = %path.display(), "BETTER_AUTH_SECRET is not set; using the generated secret");
            // A copy or a restore may have widened it: the secret signs every session.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_err(wrap)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(wrap)?;
                    tracing::warn!(path = %path.display(), "the secret file was readable by others; made it 0600");
                }
            }
            return Ok(s.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(wrap(e)),
    }
    std::fs::create_dir_all(&config.data_dir).map_err(wrap)?;
    let secret = format!(
        "{}{}",
        auth::tokens::generate_id(),
        auth::tokens::generate_id()
    );
    write_private(&path, secret.as_bytes()).map_err(wrap)?;
    tracing::warn!(path = %path.display(), "BETTER_AUTH_SECRET is not set; generated a random secret and saved it");
    Ok(secret)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// Everything that serves: origins are known only once the listener is bound (the port may
/// be ephemeral), so state is built here.
pub struct Server {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// Tells background jobs to finish their round and return.
    stop: CancellationToken,
    media_events: JoinHandle<()>,
}

impl Server {
    pub async fn build(config: Config) -> Result<Server, StartupError> {
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        prepare_data_dir(&config).map_err(|source| StartupError::Secret {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let secret = load_or_create_secret(&config)?;
        let db = connect_and_migrate(&config).await?;

        let (base_url, mut trusted) = match &config.base_url {
            Some(url) => {
                let origin = origin_of(url).unwrap_or_else(|| url.clone());
                (url.clone(), vec![origin])
            }
            None => {
                let port = bound.port();
                (
                    format!("http://localhost:{port}"),
                    vec![
                        format!("http://localhost:{port}"),
                        format!("http://127.0.0.1:{port}"),
                        format!("http://[::1]:{port}"),
                    ],
                )
            }
        };
        trusted.extend(config.trusted_origins.iter().cloned());
        let auth = AuthSettings {
            secret: secret.into_bytes(),
            cookies: CookieSettings {
                secure: base_url.starts_with("https://"),
            },
            base_url,
            trusted_origins: trusted,
            rate_limiter: RateLimiter::new(
                config.rate_limit.max,
                Duration::from_secs(config.rate_limit.window_secs),
            ),
            oauth_starts: RateLimiter::new(
                config.rate_limit.oauth_per_minute,
                Duration::from_secs(60),
            ),
            admin_failures: RateLimiter::new(
                config.admin_max_failures,
                Duration::from_secs(15 * 60),
            ),
        };
        let storage = open_storage(&config, &auth).await?;
        let media_ips = if config.media_public_ips.is_empty() {
            vec![guess_local_ip(config.host)]
        } else {
            config.media_public_ips.clone()
        };
        let media = MediaEngine::start(
            config.media_mode,
            config.media_limits,
            SfuConfig {
                bind: SocketAddr::new(config.host, config.media_udp_port),
                public_ips: media_ips,
                shards: config.media_shards,
                reconnect_grace: Duration::from_millis(config.media_reconnect_grace_ms),
            },
        )
        .await
        .map_err(|source| StartupError::Media {
            port: config.media_udp_port,
            source,
        })?;
        if let Some(sfu) = media.sfu() {
            tracing::info!(addr = %sfu.local_addr(), "SFU media socket ready");
        }
        let (socket_layer, io) = SocketIo::builder()
            .ping_interval(Duration::from_millis(config.socket_ping_interval_ms))
            .ping_timeout(Duration::from_millis(config.socket_ping_timeout_ms))
            .build_layer();
        let realtime = Realtime::new(io.clone());
        let watchtogether =
            watchtogether::service::WatchTogether::start(db.clone(), config.watch_together.clone())
                .await
                .map_err(|source| StartupError::Database {
                    target: config.database.describe(),
                    source,
                })?;
        let config_tmdb = config.tmdb.clone();
        let recordings_dir = config.media_recordings_dir.clone();
        let config_oauth = config.oauth.clone();
        let state = AppState {
            config: Arc::new(config),
            db,
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            media,
            storage,
            recordings: crate::recording_runtime::RecordingRuntime::new(recordings_dir),
            realtime,
            watchtogether,
            tmdb: Arc::new(TmdbUpstream::new(&config_tmdb)),
            oauth: Arc::new(OAuthProvider::new(&config_oauth)),
            storage_probe: Arc::default(),
        };
        if !watchpost_media::recorder::AVAILABLE {
            tracing::warn!(
                "recording is unavailable: this build has no `recording` feature (GStreamer)"
            );
        }
        // What a crash or an earlier stop left on disk is uploaded before anything new.
        if let Err(e) = recordings::service::recover(&state).await {
            tracing::warn!(error = %e, "recovering local recordings failed");
        }
        realtime::socket::register(&io, state.clone());
        let stop = CancellationToken::new();
        let media_events = jobs::spawn_media_event_listener(state.clone(), stop.clone());
        let router = router(state.clone()).layer(socket_layer);
        Ok(Server {
            listener,
            router,
            state,
            stop,
            media_events,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops in order (as tokio's mini-redis does):
    /// Socket.IO clients are told the server is going away, the listener stops accepting
    /// and in-flight requests finish, the media plane hangs up its peers (their sessions
    /// are ended in the database), background jobs finish their current round, and the
    /// database pool closes. Each step is bounded so the whole takes well under 10 s.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Server {
            listener,
            router,
            state,
            stop,
            media_events,
        } = self;
        let janitor = jobs::spawn_janitor(state.clone(), stop.clone());
        let sweeper = jobs::spawn_sweeper(state.clone(), stop.clone());
        // Stopped last, so its final round sees every other job's writes.
        let checkpoint_stop = CancellationToken::new();
        let checkpointer = jobs::spawn_checkpointer(state.db.clone(), checkpoint_stop.clone());
        tracing::info!(
            addr = %listener.local_addr()?,
            base_url = %state.auth.base_url,
            database = state.db.kind(),
            "watchpost listening"
        );
        let signalled = CancellationToken::new();
        tokio::spawn({
            let signalled = signalled.clone();
            async move {
                shutdown.await;
                signalled.cancel();
            }
        });
        // Sockets are closed while HTTP drains: their disconnect handlers still reach the
        // database, and long-polling transports would otherwise hold the drain open.
        let sockets_closed = tokio::spawn({
            let signalled = signalled.clone();
            let realtime = state.realtime.clone();
            async move {
                signalled.cancelled().await;
                realtime.close().await;
            }
        });
        // Before routing, so rewritten StreamVault paths reach their routes.
        let front = axum::middleware::from_fn_with_state(
            Arc::new(state.config.streamvault_cors_origins.clone()),
            crate::http::streamvault::front,
        );
        let app = tower::Layer::layer(&front, router);
        // Outermost: an oversized request is refused before anything reads it.
        let limits = axum::middleware::from_fn(crate::http::serve::request_limits);
        let app = tower::Layer::layer(&limits, app);
        let serve = crate::http::serve::serve(listener, app, signalled.clone());
        let result: std::io::Result<()> = tokio::select! {
            () = serve => Ok(()),
            // A client that never finishes its request must not hold the process.
            () = async {
                signalled.cancelled().await;
                tokio::time::sleep(HTTP_DRAIN_LIMIT).await;
            } => {
                tracing::warn!("in-flight requests did not finish in time; closing them");
                Ok(())
            }
        };
        bounded("socket.io close", sockets_closed).await;
        // Rooms write their last state so a restart resumes them.
        if tokio::time::timeout(Duration::from_secs(3), state.watchtogether.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("watch together rooms did not stop in time");
        }
        state.media.shutdown().await;
        // The recorders closed their open segments as the rooms ended; their uploads get a
        // bounded wait (what is left is uploaded at the next start).
        state.recordings.tasks().close();
        let grace = Duration::from_secs(state.config.recording.shutdown_grace_secs);
        if tokio::time::timeout(grace, state.recordings.tasks().wait())
            .await
            .is_err()
        {
            tracing::warn!(
                backlog_bytes = state.recordings.backlog_bytes(),
                "recording uploads did not finish before shutdown; they resume at the next start"
            );
        }
        stop.cancel();
        bounded("media event listener", media_events).await;
        bounded("sweeper", sweeper).await;
        bounded("janitor", janitor).await;
        checkpoint_stop.cancel();
        bounded("checkpointer", checkpointer).await;
        state.db.close().await;
        result
    }
}

/// How long in-flight HTTP requests get to finish after a shutdown signal.
const HTTP_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Waits for a stopping task, but not forever: shutdown has a 10 s budget in all.
async fn bounded(what: &str, task: JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .is_err()
    {
        tracing::warn!(task = what, "did not stop in time; aborted");
        abort.abort();
    }
}

/// The address peers should send media to when `MEDIA_PUBLIC_IP` is unset: the bind
/// address if specific, else the address of the interface holding the default route (a UDP
/// `connect` only consults the routing table; nothing is sent), else loopback.
fn guess_local_ip(host: std::net::IpAddr) -> std::net::IpAddr {
    if !host.is_unspecified() {
        return host;
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

/// The configured object store; S3 must be reachable (and its bucket present) to boot.
async fn open_storage(config: &Config, auth: &AuthSettings) -> Result<ObjectStore, StartupError> {
    match &config.s3 {
        Some(s3) => {
            let store = S3Store::new(s3);
            let unreachable = |reason: String| StartupError::Storage {
                endpoint: store.endpoint().to_string(),
                reason,
            };
            match tokio::time::timeout(Duration::from_secs(20), store.ensure_bucket()).await {
                Ok(Ok(())) => Ok(ObjectStore::S3(store.clone())),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(unreachable("no answer within 20 s".to_string())),
            }
        }
        None => {
            let store = LocalStore::new(
                config.data_dir.join("objects"),
                config.bucket.clone(),
                auth.base_url.clone(),
                &auth.secret,
            );
            store.check().await.map_err(|e| StartupError::Storage {
                endpoint: config.data_dir.join("objects").display().to_string(),
                reason: e.to_string(),
            })?;
            Ok(ObjectStore::Local(store))
        }
    }
}

pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes::router())
        .merge(health::router())
        .merge(videos::routes::router())
        .merge(recordings::routes::router())
        .merge(admin::routes::router())
        .merge(devices::routes::router())
        .merge(links::routes::router())
        .merge(commands::routes::router())
        .merge(events::routes::router())
        .merge(streams::routes::router())
        .merge(pages::router())
        .merge(media_api::router())
        .merge(watchtogether::routes::router())
        .merge(tmdb::routes::router())
        .merge(oauth::routes::router())
}

fn cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state
        .auth
        .trusted_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            header::IF_MATCH,
            HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers([
            HeaderName::from_static("set-auth-token"),
            header::LOCATION,
            header::ETAG,
            header::LINK,
        ])
        .max_age(Duration::from_secs(600))
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_router().split_for_parts();
    let openapi_json = openapi.clone();
    api.route(
        "/openapi.json",
        axum::routing::get(move || async move { axum::Json(openapi_json) }),
    )
    .merge(storage::routes::router())
    .merge(SwaggerUi::new("/docs").url("/docs/openapi.json", openapi))
    .fallback(not_found_fallback)
    .method_not_allowed_fallback(method_not_allowed_fallback)
    .layer(middleware::from_fn_with_state(
        state.clone(),
        admin::routes::basic_auth,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        csrf::auth_rate_limit,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        csrf::origin_check,
    ))
    .layer(middleware::from_fn_with_state(
        state.metrics.clone(),
        crate::http::metrics::track,
    ))
    .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
    .layer(CatchPanicLayer::custom(|_| {
        use axum::response::IntoResponse;
        ApiError::internal("handler panicked").into_response()
    }))
    .layer(TraceLayer::new_for_http())
    .layer(cors(&state))
    .with_state(state.clone())
    .merge(media_api::whip_router(state))
}
