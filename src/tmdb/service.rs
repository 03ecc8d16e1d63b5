//! The TMDB proxy's rules: which paths are accepted, what is forwarded, how each upstream
//! outcome moves to the next credential, and what is cached.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;

use crate::upstream::tmdb::{CachedResponse, Outcome, TmdbUpstream};

/// Longest time a response is cached, whatever TMDB allows.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmdbError {
    MissingPath,
    InvalidPath,
    SignInRequired,
    RateLimited {
        retry_after_secs: u64,
    },
    NotConfigured,
    /// Every credential failed; the last failure's status and message.
    Upstream {
        status: u16,
        message: String,
    },
}

impl TmdbError {
    /// The status and `error` text the reference answers with.
    pub fn status_and_message(&self) -> (u16, String) {
        match self {
            TmdbError::MissingPath => (400, "Missing TMDB API path".into()),
            TmdbError::InvalidPath => (400, "Invalid TMDB path".into()),
            TmdbError::SignInRequired => (401, "Sign in to use the TMDB proxy".into()),
            TmdbError::RateLimited { retry_after_secs } => (
                429,
                format!("Too many TMDB requests; try again in {retry_after_secs} s"),
            ),
            TmdbError::NotConfigured => (
                503,
                "TMDB credentials are not configured on the backend".into(),
            ),
            TmdbError::Upstream { status, message } => (*status, message.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

pub struct TmdbResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub body: Bytes,
    pub cache: CacheStatus,
}

/// The part of the request path after `/api/tmdb/`, as the reference reads it: segments
/// percent-decoded and rejoined, trimmed, leading `/` removed; refused if empty or if it
/// contains `..` or `\` or is an absolute http(s) URL.
pub fn normalize_path(raw: &str) -> Result<String, TmdbError> {
    let decoded: Vec<String> = raw
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| TmdbError::InvalidPath)
        })
        .collect::<Result<_, _>>()?;
    let joined = decoded.join("/");
    let path = joined.trim().trim_start_matches('/');
    let lower = path.to_ascii_lowercase();
    if path.is_empty()
        || path.contains("..")
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || lower.starts_with("http://")
        || lower.starts_with("https://")
    {
        return Err(TmdbError::InvalidPath);
    }
    Ok(path.to_string())
}

/// The client's query parameters in order, repeated keys kept, every `api_key` removed.
pub fn forwarded_query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != "api_key")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `Retry-After` as the reference reads it: seconds (at least one second), or an HTTP date
/// still in the future; otherwise `None`.
pub fn retry_after(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| {
            Duration::from_millis(((secs * 1000.0) as u64).max(1000)).min(MAX_RETRY_AFTER)
        });
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at =
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
    at.duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())
        .map(|d| d.min(MAX_RETRY_AFTER))
}

/// The longest a credential rests on TMDB's word: a `Retry-After` of centuries (or one
/// past what a clock can add) would otherwise bench it for good.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long a response may be cached: `s-maxage`, else `max-age`, unless `no-store`,
/// `no-cache` or `private` is present.
pub fn cache_ttl(cache_control: Option<&str>) -> Option<Duration> {
    let mut max_age = None;
    let mut shared_max_age = None;
    for directive in cache_control?.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (
                n.trim().to_string(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (directive.clone(), None),
        };
        match (name.as_str(), value) {
            ("no-store" | "no-cache" | "private", _) => return None,
            ("max-age", Some(v)) => max_age = v.parse::<u64>().ok(),
            ("s-maxage", Some(v)) => shared_max_age = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    shared_max_age
        .or(max_age)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s).min(MAX_CACHE_TTL))
}

/// Sign-in requirement and the per-client rate limit, checked before anything else.
pub fn admit(upstream: &TmdbUpstream, client: IpAddr, signed_in: bool) -> Result<(), TmdbError> {
    if upstream.require_auth && !signed_in {
        return Err(TmdbError::SignInRequired);
    }
    upstream
        .check_rate(client)
        .map_err(|r| TmdbError::RateLimited {
            retry_after_secs: r.0,
        })
}

/// Proxies one GET: from the cache if fresh, else through the credential pool, each
/// credential tried at most once.
pub async fn proxy(
    upstream: &TmdbUpstream,
    raw_path: Option<&str>,
    raw_query: Option<&str>,
) -> Result<TmdbResponse, TmdbError> {
    let raw_path = raw_path.ok_or(TmdbError::MissingPath)?;
    let path = normalize_path(raw_path)?;
    if upstream.pool.is_empty() {
        return Err(TmdbError::NotConfigured);
    }
    let query = forwarded_query(raw_query);
    let cache_key = {
        let mut key = path.clone();
        key.push('?');
        key.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query.iter())
                .finish(),
        );
        key
    };
    if let Some(hit) = upstream.cache.get(&cache_key) {
        return Ok(TmdbResponse {
            status: hit.status,
            content_type: hit.content_type.clone(),
            cache_control: hit.cache_control.clone(),
            body: hit.body.clone(),
            cache: CacheStatus::Hit,
        });
    }

    let mut tried = vec![false; upstream.pool.len()];
    let mut last: Option<(u16, String)> = None;
    while let Some(lease) = upstream.pool.acquire(&tried) {
        tried[lease.index()] = true;
        let id = lease.credential().id;
        let cooldowns = upstream.cooldowns;
        match upstream.fetch(&path, &query, lease.credential()).await {
            Err(error) => {
                tracing::warn!(credential = id, %error, "TMDB request failed");
                lease.finish(Outcome::CoolDown(cooldowns.server_error));
                last = Some((502, format!("TMDB request failed: {error}")));
            }
            Ok(fetched) => {
                let status = fetched.status;
                let failure = match status {
                    429 => Some((
                        retry_after(fetched.retry_after.as_deref(), SystemTime::now())
                            .unwrap_or(cooldowns.rate_limited),
                        format!("TMDB rate limit hit on credential #{id}"),
                    )),
                    401 | 403 => Some((
                        cooldowns.rejected,
                        format!("TMDB credential #{id} was rejected"),
                    )),
                    s if s >= 500 => {
                        Some((cooldowns.server_error, format!("TMDB upstream error {s}")))
                    }
                    _ => None,
                };
                if let Some((cooldown, message)) = failure {
                    tracing::warn!(
                        credential = id,
                        status,
                        cooldown_ms = cooldown.as_millis() as u64,
                        "TMDB credential failed; trying the next"
                    );
                    lease.finish(Outcome::CoolDown(cooldown));
                    last = Some((status, message));
                    continue;
                }
                lease.finish(Outcome::Answered);
                if status == 200
                    && let Some(ttl) = cache_ttl(fetched.cache_control.as_deref())
                {
                    upstream.cache.insert(
                        cache_key,
                        CachedResponse {
                            status,
                            content_type: fetched.content_type.clone(),
                            cache_control: fetched.cache_control.clone(),
                            body: fetched.body.clone(),
                            ttl,
                        },
                    );
                }
                return Ok(TmdbResponse {
                    status,
                    content_type: fetched.content_type,
                    cache_control: fetched.cache_control,
                    body: fetched.body,
                    cache: CacheStatus::Miss,
                });
            }
        }
    }
    let (status, message) = last.unwrap_or((
        502,
        "TMDB request failed for all configured credentials".to_string(),
    ));
    Err(TmdbError::Upstream { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_checked() {
        assert_eq!(normalize_path("movie/550").unwrap(), "movie/550");
        assert_eq!(
            normalize_path("%2Fsearch%2Fmovie ").unwrap(),
            "search/movie"
        );
        assert_eq!(
            normalize_path("search/multi%20x").unwrap(),
            "search/multi x"
        );
        for bad in [
            "",
            "%20",
            "movie/../x",
            "movie/%2e%2e/x",
            "a%5Cb",
            "http://evil",
            "HTTPS%3A%2F%2Fevil",
            "/",
        ] {
            assert_eq!(normalize_path(bad), Err(TmdbError::InvalidPath), "{bad}");
        }
    }

    #[test]
    fn client_api_key_is_dropped_and_order_kept() {
        assert_eq!(
            forwarded_query(Some("query=a+b&api_key=x&page=2&api_key=y&with=1&with=2")),
            vec![
                ("query".to_string(), "a b".to_string()),
                ("page".to_string(), "2".to_string()),
                ("with".to_string(), "1".to_string()),
                ("with".to_string(), "2".to_string()),
            ]
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(Some("7"), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("0"), now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(Some("junk"), now), None);
        assert_eq!(retry_after(Some("1e300"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after(Some("Fri, 31 Dec 9999 23:59:59 GMT"), now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(None, now), None);
        // 1_700_000_030 = Tue, 14 Nov 2023 22:13:50 GMT
        assert_eq!(
            retry_after(Some("Tue, 14 Nov 2023 22:13:50 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(Some("Tue, 14 Nov 2023 22:13:00 GMT"), now),
            None
        );
    }

    #[test]
    fn cache_control_rules() {
        assert_eq!(
            cache_ttl(Some("public, max-age=60")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            cache_ttl(Some("max-age=60, s-maxage=10")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(cache_ttl(Some("max-age=60, no-store")), None);
        assert_eq!(cache_ttl(Some("private, max-age=60")), None);
        assert_eq!(cache_ttl(Some("max-age=0")), None);
        assert_eq!(cache_ttl(None), None);
    }
}
