//! One typed configuration, read from the environment (and `.env`), validated at startup.
//!
//! Every invalid value is reported as a single line naming the variable and what was expected,
//! so a misconfigured server stops with something a person can act on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use watchpost_media::{MediaLimits, MediaMode};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

#[derive(Clone, PartialEq)]
pub enum DatabaseTarget {
    /// Path of the SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A `postgres://` connection URL.
    Postgres(String),
}

impl DatabaseTarget {
    /// For logs: the database's kind and where it is, never its credentials. A Postgres
    /// URL is cut down to its host and database name: the user information ends at the
    /// *last* `@` (a password may hold `@`, `/` or `:`), and the query may hold a password.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Sqlite(path) => format!("sqlite {}", path.display()),
            DatabaseTarget::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.split(['?', '#']).next().unwrap_or_default();
                let location = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("postgres {location}")
            }
        }
    }
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub port: Option<u16>,
    pub use_ssl: bool,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: String,
}

#[derive(Debug, Clone)]
pub struct AdminCredentials {
    pub username: String,
    pub password: String,
}

crate::text_enum! {
    /// When a camera's live streams are recorded (`RECORDING_MODE`, or per camera).
    pub enum RecordingMode {
        Off = "off",
        Always = "always",
        Motion = "motion",
    }
}

#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// `RECORDING_MODE` (default `always`): cameras without their own mode use it.
    pub mode: RecordingMode,
    /// `RECORDING_SEGMENT_SECONDS` (default 10).
    pub segment_secs: u64,
    /// `RECORDING_MAX_LOCAL_BYTES` (default 5 GiB): segments waiting for upload on disk.
    pub max_local_bytes: u64,
    /// `RECORDING_PRE_ROLL_SECS`: unset means 0 when no stream was live, else one segment.
    pub pre_roll_secs: Option<u64>,
    /// `RECORDING_POST_ROLL_SECS` (default 10).
    pub post_roll_secs: u64,
    /// `RECORDING_RETENTION_DAYS` (default 30; 0 keeps recordings forever).
    pub retention_days: u64,
    /// `RECORDING_SHUTDOWN_GRACE_SECS` (default 5): how long a shutdown waits for the last
    /// segments to close and upload (what is left is uploaded at the next start).
    pub shutdown_grace_secs: u64,
}

fn recording_config(v: &Vars<'_>) -> Result<RecordingConfig, ConfigError> {
    let mode = match v.get("RECORDING_MODE") {
        None => RecordingMode::Always,
        Some(m) => RecordingMode::parse(&m.to_ascii_lowercase())
            .ok_or_else(|| err("RECORDING_MODE", m, "off, always or motion"))?,
    };
    let segment_secs = v.parse(
        "RECORDING_SEGMENT_SECONDS",
        10u64,
        "a number of seconds 1-3600",
    )?;
    if !(1..=3600).contains(&segment_secs) {
        return Err(err(
            "RECORDING_SEGMENT_SECONDS",
            &segment_secs.to_string(),
            "a number of seconds 1-3600",
        ));
    }
    let max_local_bytes = v.parse("RECORDING_MAX_LOCAL_BYTES", 5u64 << 30, "a number of bytes")?;
    let pre_roll_secs = match v.get("RECORDING_PRE_ROLL_SECS") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .ok()
                .filter(|n| *n <= 3600)
                .ok_or_else(|| err("RECORDING_PRE_ROLL_SECS", s, "a number of seconds 0-3600"))?,
        ),
    };
    let post_roll_secs = v.parse("RECORDING_POST_ROLL_SECS", 10u64, "a number of seconds")?;
    if post_roll_secs > 3600 {
        return Err(err(
            "RECORDING_POST_ROLL_SECS",
            &post_roll_secs.to_string(),
            "a number of seconds 0-3600",
        ));
    }
    let retention_days = v.parse(
        "RECORDING_RETENTION_DAYS",
        30u64,
        "a number of days (0 = forever)",
    )?;
    let shutdown_grace_secs =
        v.parse("RECORDING_SHUTDOWN_GRACE_SECS", 5u64, "a number of seconds")?;
    Ok(RecordingConfig {
        mode,
        segment_secs,
        max_local_bytes,
        pre_roll_secs,
        post_roll_secs,
        retention_days,
        shutdown_grace_secs,
    })
}

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
    /// coturn `static-auth-secret`: when set, clients get ephemeral credentials instead of
    /// the static username/credential (TURN REST API convention).
    pub secret: Option<String>,
    pub credential_ttl_secs: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Attempts allowed per window on sign-in/sign-up, per client and path.
    pub max: u32,
    pub window_secs: u64,
    /// Google sign-ins started per minute per client (each stores a state for 10 minutes).
    pub oauth_per_minute: u32,
}

/// Who may drive a Watch Together room with `sync` (`WT_SYNC_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Any joined participant (the default; any value but `host_only`).
    Collaborative,
    HostOnly,
}

/// Watch Together (StreamVault rooms): limits and timings. Timings default to the
/// reference backend's; tests shorten them.
#[derive(Debug, Clone)]
pub struct WatchTogetherConfig {
    pub sync_mode: SyncMode,
    pub require_auth: bool,
    pub max_message_bytes: usize,
    pub max_messages_per_sec: u32,
    pub max_participants: usize,
    pub max_rooms_per_address: usize,
    pub max_nickname_chars: usize,
    pub state_update_ms: u64,
    pub ping_ms: u64,
    pub reconnect_grace_ms: u64,
    pub room_idle_ms: u64,
    pub expiry_sweep_ms: u64,
    /// WebSocket ping frames; a socket silent for two intervals is closed.
    pub ws_ping_ms: u64,
}

/// An address block such as `10.0.0.0/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn parse(text: &str) -> Option<IpBlock> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr.parse::<IpAddr>().ok()?, Some(prefix.parse().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(width);
        (prefix <= width).then(|| IpBlock {
            network: mask(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// `ip` with all but its first `prefix` bits cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database: DatabaseTarget,
    /// `None` means: use (or create) `<data_dir>/secret`.
    pub auth_secret: Option<String>,
    /// `None` means: derived from the bound address once the listener is up.
    pub base_url: Option<String>,
    pub trusted_origins: Vec<String>,
    pub trust_proxy_headers: bool,
    /// `TRUSTED_PROXIES`: proxy hops skipped from the right of `X-Forwarded-For` (the hop
    /// before the first untrusted one is the client).
    pub trusted_proxies: Vec<IpBlock>,
    /// `BETTER_AUTH_DISABLE_SIGNUP`: nobody signs themselves up; an admin creates accounts.
    pub disable_signup: bool,
    pub rate_limit: RateLimitConfig,
    pub media_mode: MediaMode,
    pub media_provider: String,
    pub media_limits: MediaLimits,
    pub media_recordings_dir: PathBuf,
    pub recording: RecordingConfig,
    /// UDP port of the SFU (one socket for every peer); 0 picks a free port.
    pub media_udp_port: u16,
    /// Addresses advertised to peers as media host candidates (1:1 NAT / cloud hosts).
    pub media_public_ips: Vec<IpAddr>,
    /// Media loops (rooms are spread across them); defaults to the number of cores.
    pub media_shards: usize,
    /// How long viewers wait for a publisher whose transport was lost to reconnect.
    pub media_reconnect_grace_ms: u64,
    pub turn: TurnConfig,
    /// Bucket name for both the S3 store and the embedded store.
    pub bucket: String,
    pub s3: Option<S3Config>,
    pub presign_ttl_secs: u64,
    /// `STORAGE_QUOTA_BYTES_PER_USER`: bytes of uploads one account may store (0: no quota).
    pub storage_quota_bytes_per_user: u64,
    pub admin: Option<AdminCredentials>,
    /// `ADMIN_MAX_FAILURES`: failed `/admin` sign-ins per client per 15 minutes.
    pub admin_max_failures: u32,
    /// `METRICS_TOKEN`: when set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// How long a command waits for the camera's answer.
    pub command_ttl_secs: u64,
    /// `SOCKET_PING_INTERVAL_MS` / `SOCKET_PING_TIMEOUT_MS`: Engine.IO heartbeat. A client
    /// whose network vanished without a close is dropped (and shown offline) at most
    /// interval + timeout after its last pong.
    pub socket_ping_interval_ms: u64,
    pub socket_ping_timeout_ms: u64,
    /// How long a stream request waits for the camera to accept.
    pub stream_request_ttl_secs: u64,
    /// Motion events left open longer than this are closed automatically.
    pub motion_max_duration_secs: u64,
    pub watch_together: WatchTogetherConfig,
    /// `CORS_ALLOWED_ORIGINS`: origins allowed on the StreamVault routes (empty: any).
    pub streamvault_cors_origins: Vec<String>,
    /// StreamVault desktop OAuth and Better Auth social sign-in (Google or any OIDC provider).
    pub oauth: OAuthConfig,
    /// StreamVault's TMDB proxy.
    pub tmdb: TmdbConfig,
}

/// Reads the process environment after loading `.env` (existing variables win).
pub fn load() -> Result<Config, ConfigError> {
    // A missing .env is normal; a malformed one is reported but does not stop the server.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("warning: ignoring .env: {e}");
    }
    Config::from_vars(&std::env::vars().collect())
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    /// A variable set to an empty string counts as unset, as in most .env tooling.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| err(name, v, expected)),
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(err(name, &v, "true or false")),
            },
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn err(var: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn validate_origin(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_string())
        }
        _ => Err(err(
            var,
            value,
            "an absolute http:// or https:// URL such as http://localhost:3000",
        )),
    }
}

impl Config {
    pub fn from_vars(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let v = Vars(map);

        let host = v.parse("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address")?;
        let port = v.parse("PORT", 3000u16, "a TCP port number 0-65535")?;
        let data_dir = PathBuf::from(v.get("WATCHPOST_DATA_DIR").unwrap_or("./data"));

        let database = match v.get("DATABASE_URL") {
            None => DatabaseTarget::Sqlite(data_dir.join("watchpost.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseTarget::Postgres(url.to_string())
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    return Err(err(
                        "DATABASE_URL",
                        url,
                        "sqlite://<path to a file> (in-memory databases lose data)",
                    ));
                }
                DatabaseTarget::Sqlite(PathBuf::from(path))
            }
            Some(url) => {
                // Only the scheme is shown back: the rest may hold a password.
                let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
                return Err(err(
                    "DATABASE_URL",
                    &format!("{scheme}:<redacted>"),
                    "a postgres://user:pass@host/db or sqlite://path URL",
                ));
            }
        };

        let auth_secret = match v.get("BETTER_AUTH_SECRET") {
            None => None,
            Some(s) if s.len() < 16 => {
                return Err(err(
                    "BETTER_AUTH_SECRET",
                    "<redacted>",
                    "at least 16 characters (32+ recommended)",
                ));
            }
            Some(s) => Some(s.to_string()),
        };

        let base_url = match v
            .get("BETTER_AUTH_BASE_URL")
            .map(|u| ("BETTER_AUTH_BASE_URL", u))
            .or_else(|| v.get("BETTER_AUTH_URL").map(|u| ("BETTER_AUTH_URL", u)))
        {
            None => None,
            Some((var, url)) => Some(validate_origin(var, url)?),
        };

        let trusted_origins = v
            .list("BETTER_AUTH_TRUSTED_ORIGINS")
            .iter()
            .map(|o| validate_origin("BETTER_AUTH_TRUSTED_ORIGINS", o))
            .collect::<Result<Vec<_>, _>>()?;

        let rate_limit = RateLimitConfig {
            max: v.parse("AUTH_RATE_LIMIT_MAX", 3u32, "a whole number of attempts")?,
            window_secs: v.parse("AUTH_RATE_LIMIT_WINDOW_SECS", 10u64, "a number of seconds")?,
            oauth_per_minute: v.parse(
                "OAUTH_RATE_LIMIT_MAX",
                30u32,
                "a whole number of sign-ins per minute",
            )?,
        };
        if rate_limit.oauth_per_minute == 0 {
            return Err(err(
                "OAUTH_RATE_LIMIT_MAX",
                "0",
                "at least 1 sign-in a minute",
            ));
        }
        if rate_limit.window_secs == 0 {
            return Err(err("AUTH_RATE_LIMIT_WINDOW_SECS", "0", "at least 1 second"));
        }

        let media_mode = match v.get("MEDIA_MODE").unwrap_or("single_server_sfu") {
            "single_server_sfu" => MediaMode::SingleServerSfu,
            "legacy" => MediaMode::Legacy,
            other => {
                return Err(err("MEDIA_MODE", other, "single_server_sfu or legacy"));
            }
        };
        let media_provider = match v.get("MEDIA_PROVIDER").unwrap_or("embedded") {
            // `mock` was the old backend's default; it maps to the real in-process engine.
            "embedded" | "mock" => "embedded".to_string(),
            other => return Err(err("MEDIA_PROVIDER", other, "embedded")),
        };
        let positive = "a whole number greater than 0";
        let media_limits = MediaLimits {
            max_publishers: v.parse("MEDIA_MAX_PUBLISHERS", 16u32, positive)?,
            max_subscribers_per_room: v.parse("MEDIA_MAX_SUBSCRIBERS_PER_ROOM", 32u32, positive)?,
            // Fair shares: by default one account gets half the server's cameras, so
            // another can always go live.
            max_publishers_per_account: v.parse("MEDIA_MAX_PUBLISHERS_PER_USER", 8u32, positive)?,
            max_subscribers_per_account: v.parse(
                "MEDIA_MAX_SUBSCRIBERS_PER_USER",
                32u32,
                positive,
            )?,
        };
        for (var, value) in [
            ("MEDIA_MAX_PUBLISHERS", media_limits.max_publishers),
            (
                "MEDIA_MAX_SUBSCRIBERS_PER_ROOM",
                media_limits.max_subscribers_per_room,
            ),
            (
                "MEDIA_MAX_PUBLISHERS_PER_USER",
                media_limits.max_publishers_per_account,
            ),
            (
                "MEDIA_MAX_SUBSCRIBERS_PER_USER",
                media_limits.max_subscribers_per_account,
            ),
        ] {
            if value == 0 {
                return Err(err(var, "0", positive));
            }
        }
        let media_recordings_dir =
            PathBuf::from(v.get("MEDIA_RECORDINGS_DIR").unwrap_or("./recordings"));

        let recording = recording_config(&v)?;

        let media_udp_port = v.parse("MEDIA_UDP_PORT", 8189u16, "a UDP port number 0-65535")?;
        let media_public_ips = v
            .list("MEDIA_PUBLIC_IP")
            .iter()
            .map(|ip| {
                ip.parse::<IpAddr>().map_err(|_| {
                    err(
                        "MEDIA_PUBLIC_IP",
                        ip,
                        "IP addresses such as 203.0.113.7, comma-separated",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_proxies = match v.get("TRUSTED_PROXIES") {
            None => vec![
                IpBlock::parse("127.0.0.0/8").expect("valid block"),
                IpBlock::parse("::1").expect("valid block"),
            ],
            Some(_) => v
                .list("TRUSTED_PROXIES")
                .iter()
                .map(|block| {
                    IpBlock::parse(block).ok_or_else(|| {
                        err(
                            "TRUSTED_PROXIES",
                            block,
                            "addresses or blocks such as 10.0.0.0/8 or fd00::/8, comma-separated",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let media_shards = v.parse("MEDIA_SHARDS", cores, "a number of media loops, 1-64")?;
        if !(1..=64).contains(&media_shards) {
            return Err(err(
                "MEDIA_SHARDS",
                &media_shards.to_string(),
                "a number of media loops, 1-64",
            ));
        }
        let media_reconnect_grace_ms = v.parse(
            "MEDIA_RECONNECT_GRACE_MS",
            5000u64,
            "milliseconds (0 ends a stream as soon as its publisher is lost)",
        )?;

        let turn = TurnConfig {
            urls: v.list("TURN_URLS"),
            username: v.get("TURN_USERNAME").map(str::to_string),
            credential: v.get("TURN_CREDENTIAL").map(str::to_string),
            secret: v.get("TURN_SECRET").map(str::to_string),
            credential_ttl_secs: v.parse(
                "TURN_CREDENTIAL_TTL_SECS",
                86_400u64,
                "a number of seconds",
            )?,
        };
        if turn.secret.is_some() && turn.urls.is_empty() {
            return Err(err("TURN_URLS", "", "turn: URLs when TURN_SECRET is set"));
        }
        if turn.credential_ttl_secs == 0 || turn.credential_ttl_secs > 31_536_000 {
            return Err(err(
                "TURN_CREDENTIAL_TTL_SECS",
                &turn.credential_ttl_secs.to_string(),
                "a number of seconds between 1 and 31536000",
            ));
        }
        for url in &turn.urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:") || url.starts_with("stun:"))
            {
                return Err(err(
                    "TURN_URLS",
                    url,
                    "comma-separated turn:, turns: or stun: URLs",
                ));
            }
        }

        let bucket = v.get("MINIO_BUCKET").unwrap_or("watchpost").to_string();
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(err(
                "MINIO_BUCKET",
                &bucket,
                "a bucket name of 3-63 lowercase letters, digits, '-' or '.'",
            ));
        }

        let s3 = match v.get("MINIO_ENDPOINT") {
            None => None,
            Some(endpoint) => {
                let access_key = v.get("MINIO_ACCESS_KEY").ok_or_else(|| {
                    err(
                        "MINIO_ACCESS_KEY",
                        "",
                        "an access key when MINIO_ENDPOINT is set",
                    )
                })?;
                let secret_key = v.get("MINIO_SECRET_KEY").ok_or_else(|| {
                    err(
                        "MINIO_SECRET_KEY",
                        "",
                        "a secret key when MINIO_ENDPOINT is set",
                    )
                })?;
                let port = match v.get("MINIO_PORT") {
                    None => None,
                    Some(p) => Some(
                        p.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| err("MINIO_PORT", p, "a TCP port number 1-65535"))?,
                    ),
                };
                Some(S3Config {
                    endpoint: endpoint.to_string(),
                    port,
                    use_ssl: v.bool("MINIO_USE_SSL", false)?,
                    access_key: access_key.to_string(),
                    secret_key: secret_key.to_string(),
                    bucket: bucket.clone(),
                    region: v.get("MINIO_REGION").unwrap_or("us-east-1").to_string(),
                })
            }
        };
        let presign_ttl_secs = v.parse(
            "PRESIGN_TTL_SECS",
            900u64,
            "a number of seconds between 1 and 604800",
        )?;
        if !(1..=604_800).contains(&presign_ttl_secs) {
            return Err(err(
                "PRESIGN_TTL_SECS",
                &presign_ttl_secs.to_string(),
                "a number of seconds between 1 and 604800",
            ));
        }

        let storage_quota_bytes_per_user = v.parse(
            "STORAGE_QUOTA_BYTES_PER_USER",
            10u64 << 30,
            "a number of bytes (0 for no quota)",
        )?;

        let admin = match (v.get("ADMIN_USERNAME"), v.get("ADMIN_PASSWORD")) {
            (None, None) => None,
            (Some(u), Some(p)) => Some(AdminCredentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            (Some(_), None) => {
                return Err(err(
                    "ADMIN_PASSWORD",
                    "",
                    "a password when ADMIN_USERNAME is set",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "ADMIN_USERNAME",
                    "",
                    "a username when ADMIN_PASSWORD is set",
                ));
            }
        };

        let admin_max_failures = v.parse(
            "ADMIN_MAX_FAILURES",
            10u32,
            "a number of failed admin sign-ins, 1 or more",
        )?;
        if admin_max_failures == 0 {
            return Err(err(
                "ADMIN_MAX_FAILURES",
                "0",
                "a number of failed admin sign-ins, 1 or more",
            ));
        }
        let metrics_token = match v.get("METRICS_TOKEN") {
            None => None,
            Some(t) if t.len() >= 16 && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(t.to_string())
            }
            Some(_) => {
                return Err(err(
                    "METRICS_TOKEN",
                    "<redacted>",
                    "at least 16 printable characters without spaces",
                ));
            }
        };

        let seconds = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            let expected = "a number of seconds between 1 and 31536000 (one year)";
            let value = v.parse(name, default, expected)?;
            if !(1..=31_536_000).contains(&value) {
                return Err(err(name, &value.to_string(), expected));
            }
            Ok(value)
        };
        let command_ttl_secs = seconds("COMMAND_TTL_SECS", 60)?;
        let stream_request_ttl_secs = seconds("STREAM_REQUEST_TTL_SECS", 30)?;
        let motion_max_duration_secs = seconds("MOTION_MAX_DURATION_SECS", 600)?;

        let millis = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            let expected = "a number of milliseconds between 100 and 300000";
            let value = v.parse(name, default, expected)?;
            if !(100..=300_000).contains(&value) {
                return Err(err(name, &value.to_string(), expected));
            }
            Ok(value)
        };
        let socket_ping_interval_ms = millis("SOCKET_PING_INTERVAL_MS", 25_000)?;
        let socket_ping_timeout_ms = millis("SOCKET_PING_TIMEOUT_MS", 20_000)?;

        let watch_together = watch_together_config(&v)?;

        Ok(Config {
            host,
            port,
            data_dir,
            database,
            auth_secret,
            base_url,
            trusted_origins,
            trust_proxy_headers: v.bool("TRUST_PROXY_HEADERS", false)?,
            trusted_proxies,
            disable_signup: v.bool("BETTER_AUTH_DISABLE_SIGNUP", false)?,
            rate_limit,
            media_mode,
            media_provider,
            media_limits,
            media_recordings_dir,
            recording,
            media_udp_port,
            media_public_ips,
            media_shards,
            media_reconnect_grace_ms,
            turn,
            bucket,
            s3,
            presign_ttl_secs,
            storage_quota_bytes_per_user,
            admin,
            admin_max_failures,
            metrics_token,
            command_ttl_secs,
            socket_ping_interval_ms,
            socket_ping_timeout_ms,
            stream_request_ttl_secs,
            motion_max_duration_secs,
            watch_together,
            streamvault_cors_origins: v
                .get("CORS_ALLOWED_ORIGINS")
                .map(crate::http::streamvault::parse_origins)
                .unwrap_or_default(),
            oauth: oauth_config(&v)?,
            tmdb: tmdb_config(&v)?,
        })
    }
}

fn watch_together_config(v: &Vars) -> Result<WatchTogetherConfig, ConfigError> {
    let at_least_one = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        let expected = "a whole number greater than 0";
        let value = v.parse(name, default, expected)?;
        if value == 0 {
            return Err(err(name, "0", expected));
        }
        Ok(value)
    };
    // Exactly `host_only`, as the reference reads it: anything else is collaborative.
    let sync_mode = match v.get("WT_SYNC_MODE") {
        Some("host_only") => SyncMode::HostOnly,
        _ => SyncMode::Collaborative,
    };
    Ok(WatchTogetherConfig {
        sync_mode,
        require_auth: v.bool("WATCH_TOGETHER_REQUIRE_AUTH", false)?,
        max_message_bytes: at_least_one("WT_MAX_MESSAGE_BYTES", 65_536)? as usize,
        max_messages_per_sec: at_least_one("WT_MAX_MESSAGES_PER_SEC", 50)? as u32,
        max_participants: at_least_one("WT_MAX_PARTICIPANTS", 50)? as usize,
        max_rooms_per_address: at_least_one("WT_MAX_ROOMS_PER_ADDRESS", 20)? as usize,
        max_nickname_chars: at_least_one("WT_MAX_NICKNAME_CHARS", 64)? as usize,
        state_update_ms: at_least_one("WT_STATE_UPDATE_MS", 500)?,
        ping_ms: at_least_one("WT_PING_MS", 2000)?,
        reconnect_grace_ms: at_least_one("WT_RECONNECT_GRACE_MS", 20_000)?,
        room_idle_ms: at_least_one("WT_ROOM_IDLE_MS", 3_600_000)?,
        expiry_sweep_ms: at_least_one("WT_EXPIRY_SWEEP_MS", 300_000)?,
        ws_ping_ms: at_least_one("WT_WS_PING_MS", 15_000)?,
    })
}

/// A value that must never be printed: its `Debug` output is `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

pub const GOOGLE_AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_USERINFO_URL: &str = "https://openidconnect.googleapis.com/v1/userinfo";
pub const DESKTOP_CALLBACK_URL: &str = "http://localhost:8085/callback";
pub const TMDB_API_BASE: &str = "https://api.themoviedb.org/3";

/// Google (or any OpenID Connect provider) for the StreamVault desktop flow and Better Auth
/// social sign-in. The client secret is a [`Secret`], so printing the config never shows it.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// `None`: `<proto>://<host>/auth/callback`, built per request.
    pub redirect_uri: Option<String>,
    pub authorize_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    /// Where the desktop app listens for the result; loopback only.
    pub desktop_callback_url: String,
    /// Limit on each call to the provider.
    pub timeout_ms: u64,
}

impl OAuthConfig {
    /// `GOOGLE_CLIENT_ID` and `GOOGLE_CLIENT_SECRET` are both set (`GET /health`).
    pub fn configured(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }
}

fn http_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(value.to_string())
        }
        _ => Err(err(var, value, "an absolute http:// or https:// URL")),
    }
}

/// The desktop callback must be this machine: the tokens travel in its query string.
fn loopback_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let expected = "an http:// URL on a loopback host (localhost, 127.0.0.1 or [::1]), \
                    such as http://localhost:8085/callback";
    let url = reqwest::Url::parse(value).map_err(|_| err(var, value, expected))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() != "http" || !loopback || url.fragment().is_some() || !url.username().is_empty()
    {
        return Err(err(var, value, expected));
    }
    Ok(value.to_string())
}

fn oauth_config(v: &Vars) -> Result<OAuthConfig, ConfigError> {
    let url = |name: &'static str, default: &str| match v.get(name) {
        None => Ok(default.to_string()),
        Some(u) => http_url(name, u),
    };
    let timeout_ms = v.parse("OAUTH_TIMEOUT_MS", 10_000u64, "milliseconds, 1-120000")?;
    if !(1..=120_000).contains(&timeout_ms) {
        return Err(err(
            "OAUTH_TIMEOUT_MS",
            &timeout_ms.to_string(),
            "milliseconds, 1-120000",
        ));
    }
    Ok(OAuthConfig {
        client_id: v.get("GOOGLE_CLIENT_ID").map(str::to_string),
        client_secret: v.get("GOOGLE_CLIENT_SECRET").map(Secret::new),
        redirect_uri: match v.get("REDIRECT_URI") {
            None => None,
            Some(u) => Some(http_url("REDIRECT_URI", u)?),
        },
        authorize_url: url("GOOGLE_AUTHORIZE_URL", GOOGLE_AUTHORIZE_URL)?,
        token_url: url("GOOGLE_TOKEN_URL", GOOGLE_TOKEN_URL)?,
        userinfo_url: url("GOOGLE_USERINFO_URL", GOOGLE_USERINFO_URL)?,
        desktop_callback_url: match v.get("OAUTH_DESKTOP_CALLBACK_URL") {
            None => DESKTOP_CALLBACK_URL.to_string(),
            Some(u) => loopback_url("OAUTH_DESKTOP_CALLBACK_URL", u)?,
        },
        timeout_ms,
    })
}

/// StreamVault's TMDB proxy. Credentials are redacted from `Debug`.
#[derive(Clone)]
pub struct TmdbConfig {
    /// At most five access tokens (`eyJ…`, sent as bearer) or API keys, in pool order.
    pub credentials: Vec<Secret>,
    pub api_base: String,
    pub rate_limit_cooldown_ms: u64,
    pub auth_failure_cooldown_ms: u64,
    pub server_failure_cooldown_ms: u64,
    /// Preference only (0 = unlimited): never queues or rejects.
    pub max_inflight_per_key: u32,
    /// Limit on each upstream attempt.
    pub timeout_ms: u64,
    /// Response cache size; 0 turns the cache off.
    pub cache_max_bytes: u64,
    /// Requests per client address per window; 0 turns the limit off.
    pub client_rate_limit_max: u32,
    pub client_rate_limit_window_secs: u64,
    pub require_auth: bool,
}

impl std::fmt::Debug for TmdbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TmdbConfig")
            .field(
                "credentials",
                &format_args!("<{} redacted>", self.credentials.len()),
            )
            .field("api_base", &self.api_base)
            .field("max_inflight_per_key", &self.max_inflight_per_key)
            .field("timeout_ms", &self.timeout_ms)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("client_rate_limit_max", &self.client_rate_limit_max)
            .field("require_auth", &self.require_auth)
            .finish_non_exhaustive()
    }
}

pub const TMDB_MAX_CREDENTIALS: usize = 5;

/// The credential pool in the reference's order: the list variables, then every
/// `TMDB_ACCESS_TOKEN*` / `TMDB_API_KEY*` (suffix of `_` and digits) sorted by name; values
/// split on `,`, `;` and newlines, trimmed, deduplicated, at most five.
fn tmdb_credentials(v: &Vars) -> Vec<Secret> {
    let mut names: Vec<String> = [
        "TMDB_ACCESS_TOKENS",
        "TMDB_API_KEYS",
        "TMDB_KEYS",
        "TMDB_ACCESS_TOKEN",
        "TMDB_API_KEY",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut numbered: Vec<&String> =
        v.0.keys()
            .filter(|name| {
                let upper = name.to_ascii_uppercase();
                ["TMDB_ACCESS_TOKEN", "TMDB_API_KEY"].iter().any(|p| {
                    upper
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.chars().all(|c| c == '_' || c.is_ascii_digit()))
                })
            })
            .collect();
    numbered.sort();
    names.extend(numbered.into_iter().cloned());
    let mut out: Vec<String> = Vec::new();
    for name in &names {
        let Some(raw) = v.0.get(name) else { continue };
        for value in raw.split([',', ';', '\n', '\r']).map(str::trim) {
            if !value.is_empty() && !out.iter().any(|o| o == value) {
                out.push(value.to_string());
            }
        }
    }
    out.truncate(TMDB_MAX_CREDENTIALS);
    out.into_iter().map(Secret::new).collect()
}

fn tmdb_config(v: &Vars) -> Result<TmdbConfig, ConfigError> {
    // As the reference: a cooldown that is not a positive number falls back to its default.
    let cooldown = |name: &str, default: u64| {
        v.get(name)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n > 0.0)
            .map_or(default, |n| n.ceil() as u64)
    };
    let api_base = match v.get("TMDB_API_BASE") {
        None => TMDB_API_BASE.to_string(),
        Some(u) => http_url("TMDB_API_BASE", u)?,
    };
    let timeout_ms = v.parse("TMDB_PROXY_TIMEOUT_MS", 10_000u64, "milliseconds, 1-120000")?;
    if !(1..=120_000).contains(&timeout_ms) {
        return Err(err(
            "TMDB_PROXY_TIMEOUT_MS",
            &timeout_ms.to_string(),
            "milliseconds, 1-120000",
        ));
    }
    let client_rate_limit_window_secs = v.parse(
        "TMDB_PROXY_RATE_LIMIT_WINDOW_SECS",
        10u64,
        "a number of seconds",
    )?;
    if client_rate_limit_window_secs == 0 {
        return Err(err(
            "TMDB_PROXY_RATE_LIMIT_WINDOW_SECS",
            "0",
            "at least 1 second",
        ));
    }
    Ok(TmdbConfig {
        credentials: tmdb_credentials(v),
        api_base: api_base.trim_end_matches('/').to_string(),
        rate_limit_cooldown_ms: cooldown("TMDB_RATE_LIMIT_COOLDOWN_MS", 15_000),
        auth_failure_cooldown_ms: cooldown("TMDB_AUTH_FAILURE_COOLDOWN_MS", 60_000),
        server_failure_cooldown_ms: cooldown("TMDB_SERVER_FAILURE_COOLDOWN_MS", 3_000),
        max_inflight_per_key: v
            .get("TMDB_MAX_INFLIGHT_PER_KEY")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        timeout_ms,
        cache_max_bytes: v.parse(
            "TMDB_PROXY_CACHE_MAX_BYTES",
            32u64 * 1024 * 1024,
            "a number of bytes (0 turns the cache off)",
        )?,
        client_rate_limit_max: v.parse(
            "TMDB_PROXY_RATE_LIMIT_MAX",
            200u32,
            "a whole number of requests (0 turns the limit off)",
        )?,
        client_rate_limit_window_secs,
        require_auth: v.bool("TMDB_PROXY_REQUIRE_AUTH", false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn zero_config_uses_embedded_defaults() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(
            c.database,
            DatabaseTarget::Sqlite(PathBuf::from("./data/watchpost.db"))
        );
        assert!(c.auth_secret.is_none());
        assert!(c.s3.is_none());
        assert!(c.admin.is_none());
        assert_eq!(c.media_mode, MediaMode::SingleServerSfu);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = Config::from_vars(&vars(&[("PORT", "abc")])).unwrap_err();
        assert_eq!(e.var, "PORT");
        assert!(e.to_string().starts_with("invalid PORT=\"abc\": expected"));
        let e = Config::from_vars(&vars(&[("MEDIA_MODE", "p2p")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_MODE");
        let e = Config::from_vars(&vars(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        let e = Config::from_vars(&vars(&[("BETTER_AUTH_TRUSTED_ORIGINS", "a.com")])).unwrap_err();
        assert_eq!(e.var, "BETTER_AUTH_TRUSTED_ORIGINS");
        let e = Config::from_vars(&vars(&[("ADMIN_USERNAME", "root")])).unwrap_err();
        assert_eq!(e.var, "ADMIN_PASSWORD");
        let e = Config::from_vars(&vars(&[("MEDIA_MAX_PUBLISHERS", "0")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_MAX_PUBLISHERS");
        let e = Config::from_vars(&vars(&[("MEDIA_MAX_SUBSCRIBERS_PER_USER", "0")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_MAX_SUBSCRIBERS_PER_USER");
        let e = Config::from_vars(&vars(&[("MINIO_ENDPOINT", "localhost")])).unwrap_err();
        assert_eq!(e.var, "MINIO_ACCESS_KEY");
        let e = Config::from_vars(&vars(&[("MEDIA_SHARDS", "0")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_SHARDS");
        let e =
            Config::from_vars(&vars(&[("MEDIA_PUBLIC_IP", "10.0.0.1,cam.example")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_PUBLIC_IP");
        let e = Config::from_vars(&vars(&[("MEDIA_RECONNECT_GRACE_MS", "-1")])).unwrap_err();
        assert_eq!(e.var, "MEDIA_RECONNECT_GRACE_MS");
    }

    #[test]
    fn database_credentials_never_reach_a_log_line() {
        for (url, shown) in [
            (
                "postgres://user:p@ss@db.internal:5432/cams",
                "postgres db.internal:5432/cams",
            ),
            (
                "postgresql://user:pa/ss:x@db/cams?sslmode=require",
                "postgres db/cams",
            ),
            (
                "postgres://db/cams?user=u&password=hunter2",
                "postgres db/cams",
            ),
            ("postgres://user:@@@db/cams", "postgres db/cams"),
        ] {
            let c = Config::from_vars(&vars(&[("DATABASE_URL", url)])).unwrap();
            assert_eq!(c.database.describe(), shown);
            for text in [format!("{:?}", c.database), format!("{c:?}")] {
                for secret in ["p@ss", "ss@", "pa/ss", "hunter2", "//user", "user:p"] {
                    assert!(!text.contains(secret), "{secret} in {text}");
                }
            }
        }
        let e =
            Config::from_vars(&vars(&[("DATABASE_URL", "mysql://u:hunter2@db/x")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("mysql"), "{e}");
    }

    #[test]
    fn trusted_proxies_parse_as_blocks() {
        let c = Config::from_vars(&vars(&[]));
        let c = c.unwrap();
        assert!(
            c.trusted_proxies
                .iter()
                .any(|b| b.contains("127.0.0.1".parse().unwrap()))
        );
        assert!(
            c.trusted_proxies
                .iter()
                .any(|b| b.contains("::1".parse().unwrap()))
        );
        assert!(
            !c.trusted_proxies
                .iter()
                .any(|b| b.contains("10.0.0.1".parse().unwrap()))
        );
        let c = Config::from_vars(&vars(&[(
            "TRUSTED_PROXIES",
            "10.0.0.0/8, fd00::/8,192.0.2.7",
        )]))
        .unwrap();
        let trusted = |ip: &str| {
            c.trusted_proxies
                .iter()
                .any(|b| b.contains(ip.parse().unwrap()))
        };
        assert!(trusted("10.200.3.4"));
        assert!(trusted("::ffff:10.1.1.1"));
        assert!(trusted("fd12::1"));
        assert!(trusted("192.0.2.7"));
        assert!(!trusted("192.0.2.8"));
        assert!(!trusted("127.0.0.1"));
        assert!(!trusted("fe80::1"));
        for bad in ["10.0.0.0/33", "proxy.local", "::/129", "10.0.0.0/x"] {
            let e = Config::from_vars(&vars(&[("TRUSTED_PROXIES", bad)])).unwrap_err();
            assert_eq!(e.var, "TRUSTED_PROXIES");
        }
        assert_eq!(
            IpBlock::parse("0.0.0.0/0").map(|b| b.contains("8.8.8.8".parse().unwrap())),
            Some(true)
        );
    }

    #[test]
    fn media_settings_parse() {
        let c = Config::from_vars(&vars(&[
            ("MEDIA_PUBLIC_IP", "203.0.113.7, 2001:db8::7"),
            ("MEDIA_SHARDS", "3"),
            ("MEDIA_RECONNECT_GRACE_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(
            c.media_public_ips,
            vec![
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(c.media_shards, 3);
        assert_eq!(c.media_reconnect_grace_ms, 0);
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert!(c.media_public_ips.is_empty());
        assert!(c.media_shards >= 1);
        assert_eq!(c.media_reconnect_grace_ms, 5000);
    }

    #[test]
    fn base_url_falls_back_to_legacy_name() {
        let c = Config::from_vars(&vars(&[("BETTER_AUTH_URL", "https://cam.example/")])).unwrap();
        assert_eq!(c.base_url.as_deref(), Some("https://cam.example"));
        let c = Config::from_vars(&vars(&[
            ("BETTER_AUTH_URL", "https://old.example"),
            ("BETTER_AUTH_BASE_URL", "https://new.example"),
        ]))
        .unwrap();
        assert_eq!(c.base_url.as_deref(), Some("https://new.example"));
    }

    #[test]
    fn watch_together_defaults_follow_the_reference() {
        let c = Config::from_vars(&vars(&[])).unwrap().watch_together;
        assert_eq!(c.sync_mode, SyncMode::Collaborative);
        assert!(!c.require_auth);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.max_participants, 50);
        assert_eq!((c.state_update_ms, c.ping_ms), (500, 2000));
        assert_eq!(c.reconnect_grace_ms, 20_000);
        assert_eq!((c.room_idle_ms, c.expiry_sweep_ms), (3_600_000, 300_000));
        let c = Config::from_vars(&vars(&[
            ("WT_SYNC_MODE", "host_only"),
            ("WATCH_TOGETHER_REQUIRE_AUTH", "true"),
        ]))
        .unwrap()
        .watch_together;
        assert_eq!(c.sync_mode, SyncMode::HostOnly);
        assert!(c.require_auth);
        // Any other value, another letter case included, is collaborative.
        let c = Config::from_vars(&vars(&[("WT_SYNC_MODE", "HOST_ONLY")])).unwrap();
        assert_eq!(c.watch_together.sync_mode, SyncMode::Collaborative);
        let c = Config::from_vars(&vars(&[("WT_SYNC_MODE", "anything")])).unwrap();
        assert_eq!(c.watch_together.sync_mode, SyncMode::Collaborative);
        let e = Config::from_vars(&vars(&[("WT_MAX_PARTICIPANTS", "0")])).unwrap_err();
        assert_eq!(e.var, "WT_MAX_PARTICIPANTS");
    }

    #[test]
    fn google_sign_in_starts_are_limited_per_minute() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.rate_limit.oauth_per_minute, 30);
        let c = Config::from_vars(&vars(&[("OAUTH_RATE_LIMIT_MAX", "5")])).unwrap();
        assert_eq!(c.rate_limit.oauth_per_minute, 5);
        // 0 would refuse every sign-in: a mistake, said at start-up.
        let e = Config::from_vars(&vars(&[("OAUTH_RATE_LIMIT_MAX", "0")])).unwrap_err();
        assert_eq!(e.var, "OAUTH_RATE_LIMIT_MAX");
    }

    #[test]
    fn postgres_url_selects_postgres() {
        let c =
            Config::from_vars(&vars(&[("DATABASE_URL", "postgres://u:p@127.0.0.1/db")])).unwrap();
        assert!(matches!(c.database, DatabaseTarget::Postgres(_)));
    }
    #[test]
    fn tmdb_pool_order_split_dedupe_and_cap() {
        let c = Config::from_vars(&vars(&[
            ("TMDB_API_KEY_2", "k2"),
            ("TMDB_ACCESS_TOKENS", "eyJa; eyJb\nk1"),
            ("tmdb_api_key_1", "k1, k0"),
            ("TMDB_API_KEY", "kx"),
            ("TMDB_API_KEYSX", "ignored"),
        ]))
        .unwrap();
        let values: Vec<&str> = c.tmdb.credentials.iter().map(Secret::expose).collect();
        assert_eq!(values, ["eyJa", "eyJb", "k1", "kx", "k2"]);
        assert!(!format!("{:?}", c.tmdb).contains("eyJa"));
        let c = Config::from_vars(&vars(&[("TMDB_RATE_LIMIT_COOLDOWN_MS", "-5")])).unwrap();
        assert_eq!(c.tmdb.rate_limit_cooldown_ms, 15_000);
        assert_eq!(c.tmdb.api_base, TMDB_API_BASE);
    }

    #[test]
    fn oauth_secret_is_redacted_and_callback_must_be_loopback() {
        let c = Config::from_vars(&vars(&[
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "very-secret-value"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("very-secret-value"));
        assert_eq!(c.oauth.desktop_callback_url, DESKTOP_CALLBACK_URL);
        for ok in [
            "http://127.0.0.1:9999/cb",
            "http://[::1]:1/x",
            "http://LOCALHOST:8085/callback",
        ] {
            assert!(
                Config::from_vars(&vars(&[("OAUTH_DESKTOP_CALLBACK_URL", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://example.com/callback",
            "https://localhost:8085/callback",
            "http://10.0.0.1:8085/cb",
            "http://localhost.example.com/cb",
            "localhost:8085",
        ] {
            let e = Config::from_vars(&vars(&[("OAUTH_DESKTOP_CALLBACK_URL", bad)])).unwrap_err();
            assert_eq!(e.var, "OAUTH_DESKTOP_CALLBACK_URL", "{bad}");
            assert!(e.to_string().contains("loopback"));
        }
    }
}
