//! The state every handler, socket and background job shares. It sits at the bottom of the
//! module graph: its fields come from infrastructure modules only, so anything above may
//! take an `AppState` without creating a cycle.

use std::sync::Arc;
use std::time::Duration;

use watchpost_media::MediaEngine;

use crate::config::Config;
use crate::db::Db;
use crate::http::cookies::CookieSettings;
use crate::http::metrics::Metrics;
use crate::http::rate_limit::RateLimiter;
use crate::realtime::Realtime;
use crate::recording_runtime::RecordingRuntime;
use crate::storage::ObjectStore;
use crate::upstream::oauth::OAuthProvider;
use crate::upstream::tmdb::TmdbUpstream;
use crate::watchtogether::service::WatchTogether;

/// The longest callback URL a sign-in accepts.
pub const MAX_CALLBACK_URL: usize = 2048;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub auth: Arc<AuthSettings>,
    pub metrics: Arc<Metrics>,
    pub media: MediaEngine,
    pub storage: ObjectStore,
    /// Recordings in progress, the upload backlog and its figures.
    pub recordings: RecordingRuntime,
    pub realtime: Realtime,
    pub watchtogether: WatchTogether,
    /// StreamVault's TMDB proxy: credential pool, cache, client rate limit.
    pub tmdb: Arc<TmdbUpstream>,
    /// The OAuth provider (client id, secret, endpoints) for desktop and web sign-in.
    pub oauth: Arc<OAuthProvider>,
    /// The last storage check `/healthz` ran.
    pub storage_probe: Arc<StorageProbe>,
}

/// When `/healthz` last checked the object store and what it found. Checking writes a probe
/// object, and `/healthz` is unauthenticated: the result is reused for a few seconds so
/// callers cannot make the server write on every request.
#[derive(Default)]
pub struct StorageProbe(pub std::sync::Mutex<Option<(std::time::Instant, bool)>>);

impl AppState {
    pub fn presign_ttl(&self) -> Duration {
        Duration::from_secs(self.config.presign_ttl_secs)
    }
}

/// Everything request handling needs to know about authentication.
pub struct AuthSettings {
    pub secret: Vec<u8>,
    /// Public origin of this server, e.g. `https://cams.example.net`.
    pub base_url: String,
    /// The base URL's origin plus `BETTER_AUTH_TRUSTED_ORIGINS`.
    pub trusted_origins: Vec<String>,
    pub cookies: CookieSettings,
    pub rate_limiter: RateLimiter,
    /// Google sign-ins started per client: each one stores a state row until it is used or
    /// expires, so an unbounded caller would grow the table.
    pub oauth_starts: RateLimiter,
    /// Failed `/admin` Basic-auth attempts per client.
    pub admin_failures: RateLimiter,
}

impl AuthSettings {
    /// A callback URL stays on this server or a trusted origin (no open redirects).
    pub fn is_safe_callback_url(&self, url: &str) -> bool {
        // Browsers drop tabs/newlines from URLs ("/\t/evil" becomes "//evil"), so any
        // whitespace or control character disqualifies a URL; it would not make a
        // `Location` header either. A URL longer than any browser keeps is refused too (it
        // is stored with the sign-in's state).
        let clean = url.len() <= MAX_CALLBACK_URL
            && !url.chars().any(|c| c.is_control() || c.is_whitespace());
        let relative = url.starts_with('/') && !url.starts_with("//") && !url.contains('\\');
        clean
            && (relative
                || self
                    .origin_of(url)
                    .is_some_and(|o| self.is_trusted_origin(&o)))
    }

    /// `scheme://host[:port]` of an absolute URL.
    pub fn origin_of(&self, url: &str) -> Option<String> {
        origin_of(url)
    }

    pub fn is_trusted_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.trusted_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}
