//! TMDB: the credential pool (selection, in-flight counts, cooldowns), the response cache
//! and the HTTP call itself. The rules of the proxy (what is forwarded, which outcome
//! means what) are in `tmdb::service`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::config::{Secret, TmdbConfig};
use crate::http::rate_limit::{RateLimiter, RetryAfter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A v4 access token (`eyJ…`), sent as `Authorization: Bearer`.
    Bearer,
    /// A v3 API key, sent as the `api_key` query parameter.
    ApiKey,
}

/// One pool entry. `Debug` shows the id and kind only.
#[derive(Debug)]
pub struct Credential {
    /// 1-based, in pool order: the only way a credential is named in messages and logs.
    pub id: usize,
    pub kind: CredentialKind,
    value: Secret,
}

impl Credential {
    pub fn new(id: usize, value: Secret) -> Self {
        let kind = if value.expose().starts_with("eyJ") {
            CredentialKind::Bearer
        } else {
            CredentialKind::ApiKey
        };
        Self { id, kind, value }
    }
}

#[derive(Default, Clone, Copy)]
struct KeyState {
    cooldown_until: Option<Instant>,
    inflight: u32,
}

struct PoolState {
    cursor: usize,
    keys: Vec<KeyState>,
}

pub struct CredentialPool {
    credentials: Vec<Credential>,
    max_inflight: u32,
    state: Mutex<PoolState>,
}

/// What became of an attempt with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: any cooldown ends.
    Answered,
    /// Refused or failed: rest the credential this long.
    CoolDown(Duration),
}

/// A credential picked for one attempt; counts as in flight until finished or dropped.
pub struct Lease<'a> {
    pool: &'a CredentialPool,
    index: usize,
    finished: bool,
}

impl Lease<'_> {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn credential(&self) -> &Credential {
        &self.pool.credentials[self.index]
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.pool.release(self.index, Some(outcome), Instant::now());
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // The request was cancelled mid-flight: no verdict on the credential.
            self.pool.release(self.index, None, Instant::now());
        }
    }
}

impl CredentialPool {
    pub fn new(values: &[Secret], max_inflight: u32) -> Self {
        let credentials: Vec<Credential> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Credential::new(i + 1, v.clone()))
            .collect();
        let keys = vec![KeyState::default(); credentials.len()];
        Self {
            credentials,
            max_inflight,
            state: Mutex::new(PoolState { cursor: 0, keys }),
        }
    }

    pub fn len(&self) -> usize {
        self.credentials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// The next credential to try, skipping those with `tried[index]` set: scanning
    /// round-robin from the cursor, first a rested key under the in-flight cap (fewest in
    /// flight, then scan order), then any rested key, then the key whose cooldown ends first.
    pub fn acquire(&self, tried: &[bool]) -> Option<Lease<'_>> {
        self.acquire_at(tried, Instant::now())
    }

    fn acquire_at(&self, tried: &[bool], now: Instant) -> Option<Lease<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.credentials.len();
        let scan: Vec<usize> = (0..n)
            .map(|i| (state.cursor + i) % n)
            .filter(|&i| !tried.get(i).copied().unwrap_or(false))
            .collect();
        let rested = |i: &usize| state.keys[*i].cooldown_until.is_none_or(|t| t <= now);
        let under_cap =
            |i: &usize| self.max_inflight == 0 || state.keys[*i].inflight < self.max_inflight;
        // `min_by_key` keeps the first of equal keys, i.e. the earliest in scan order.
        let fewest_inflight = |candidates: Vec<usize>| {
            candidates
                .into_iter()
                .min_by_key(|&i| state.keys[i].inflight)
        };
        let chosen = fewest_inflight(
            scan.iter()
                .copied()
                .filter(|i| rested(i) && under_cap(i))
                .collect(),
        )
        .or_else(|| fewest_inflight(scan.iter().copied().filter(rested).collect()))
        .or_else(|| {
            scan.iter()
                .copied()
                .min_by_key(|&i| state.keys[i].cooldown_until)
        })?;
        state.cursor = (chosen + 1) % n;
        state.keys[chosen].inflight += 1;
        Some(Lease {
            pool: self,
            index: chosen,
            finished: false,
        })
    }

    fn release(&self, index: usize, outcome: Option<Outcome>, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = &mut state.keys[index];
        key.inflight = key.inflight.saturating_sub(1);
        match outcome {
            Some(Outcome::Answered) => key.cooldown_until = None,
            Some(Outcome::CoolDown(d)) => key.cooldown_until = now.checked_add(d),
            None => {}
        }
    }
}

/// A cached upstream answer.
pub struct CachedResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub body: Bytes,
    pub ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<String, Arc<CachedResponse>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Responses kept for as long as TMDB's `Cache-Control` allows, bounded in bytes.
pub struct ResponseCache {
    inner: Option<moka::sync::Cache<String, Arc<CachedResponse>>>,
}

impl ResponseCache {
    pub fn new(max_bytes: u64) -> Self {
        let inner = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Arc<CachedResponse>| {
                    u32::try_from(k.len() + v.body.len() + 256).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build()
        });
        Self { inner }
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedResponse>> {
        self.inner.as_ref()?.get(key)
    }

    pub fn insert(&self, key: String, value: CachedResponse) {
        if let Some(cache) = &self.inner {
            cache.insert(key, Arc::new(value));
        }
    }
}

/// What an attempt brought back.
pub struct Fetched {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct Cooldowns {
    pub rate_limited: Duration,
    pub rejected: Duration,
    pub server_error: Duration,
}

/// Everything the proxy keeps between requests.
pub struct TmdbUpstream {
    client: reqwest::Client,
    base: String,
    pub pool: CredentialPool,
    pub cache: ResponseCache,
    pub cooldowns: Cooldowns,
    limiter: Option<RateLimiter>,
    pub require_auth: bool,
}

impl TmdbUpstream {
    pub fn new(config: &TmdbConfig) -> Self {
        Self {
            client: super::client(Duration::from_millis(config.timeout_ms), true),
            base: config.api_base.clone(),
            pool: CredentialPool::new(&config.credentials, config.max_inflight_per_key),
            cache: ResponseCache::new(config.cache_max_bytes),
            cooldowns: Cooldowns {
                rate_limited: Duration::from_millis(config.rate_limit_cooldown_ms),
                rejected: Duration::from_millis(config.auth_failure_cooldown_ms),
                server_error: Duration::from_millis(config.server_failure_cooldown_ms),
            },
            limiter: (config.client_rate_limit_max > 0).then(|| {
                RateLimiter::new(
                    config.client_rate_limit_max,
                    Duration::from_secs(config.client_rate_limit_window_secs),
                )
            }),
            require_auth: config.require_auth,
        }
    }

    /// Counts a request from `client` against its window.
    pub fn check_rate(&self, client: IpAddr) -> Result<(), RetryAfter> {
        match &self.limiter {
            Some(limiter) => limiter.check(client, "/api/tmdb"),
            None => Ok(()),
        }
    }

    /// One GET of `<base>/<path>?<query>` with `credential`. `path` is already validated;
    /// each segment is percent-encoded again so nothing in it can become query or fragment.
    pub async fn fetch(
        &self,
        path: &str,
        query: &[(String, String)],
        credential: &Credential,
    ) -> Result<Fetched, String> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|_| "TMDB_API_BASE cannot have a path".to_string())?
            .pop_if_empty()
            .extend(path.split('/'));
        {
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if credential.kind == CredentialKind::ApiKey {
                pairs.append_pair("api_key", credential.value.expose());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if credential.kind == CredentialKind::Bearer {
            request = request.bearer_auth(credential.value.expose());
        }
        let response = request.send().await.map_err(super::describe)?;
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let cache_control = header(reqwest::header::CACHE_CONTROL);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let body = response.bytes().await.map_err(super::describe)?;
        Ok(Fetched {
            status,
            content_type,
            cache_control,
            retry_after,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, cap: u32) -> CredentialPool {
        let values: Vec<Secret> = (0..n).map(|i| Secret::new(format!("key{i}"))).collect();
        CredentialPool::new(&values, cap)
    }

    #[test]
    fn kinds_follow_the_eyj_prefix() {
        assert_eq!(
            Credential::new(1, Secret::new("eyJhbGc")).kind,
            CredentialKind::Bearer
        );
        assert_eq!(
            Credential::new(1, Secret::new("abc123")).kind,
            CredentialKind::ApiKey
        );
        assert!(!format!("{:?}", Credential::new(1, Secret::new("abc123"))).contains("abc123"));
    }

    #[test]
    fn round_robin_then_fewest_in_flight() {
        let p = pool(3, 0);
        let now = Instant::now();
        let a = p.acquire_at(&[false; 3], now).unwrap();
        assert_eq!(a.index(), 0);
        // Cursor moved past 0; key 0 is busy anyway.
        let b = p.acquire_at(&[false; 3], now).unwrap();
        assert_eq!(b.index(), 1);
        a.finish(Outcome::Answered);
        b.finish(Outcome::Answered);
        assert_eq!(p.acquire_at(&[false; 3], now).unwrap().index(), 2);
        // The dropped lease released its slot; the cursor wrapped to 0.
        assert_eq!(p.acquire_at(&[false; 3], now).unwrap().index(), 0);
    }

    #[test]
    fn cooling_keys_are_a_last_resort_soonest_first() {
        let p = pool(3, 0);
        let now = Instant::now();
        let l = p.acquire_at(&[false; 3], now).unwrap();
        l.finish(Outcome::CoolDown(Duration::from_secs(60)));
        let l = p.acquire_at(&[false; 3], now).unwrap();
        assert_eq!(l.index(), 1);
        l.finish(Outcome::CoolDown(Duration::from_secs(5)));
        // Key 2 is rested.
        let l = p.acquire_at(&[false; 3], now).unwrap();
        assert_eq!(l.index(), 2);
        drop(l);
        // With 2 tried, the soonest-ending cooldown (key 1) is picked over key 0.
        let l = p.acquire_at(&[false, false, true], now).unwrap();
        assert_eq!(l.index(), 1);
        drop(l);
        assert!(p.acquire_at(&[true; 3], now).is_none());
        // Once the cooldown passes, key 0 is rested again.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            p.acquire_at(&[false, true, true], later).unwrap().index(),
            0
        );
    }

    #[test]
    fn in_flight_cap_only_sets_preference() {
        let p = pool(2, 1);
        let now = Instant::now();
        let a = p.acquire_at(&[false; 2], now).unwrap();
        let b = p.acquire_at(&[false; 2], now).unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        // Both at the cap: still answered (never queued), fewest in flight first.
        let c = p.acquire_at(&[false; 2], now).unwrap();
        assert_eq!(c.index(), 0);
        drop((a, b, c));
    }
}
