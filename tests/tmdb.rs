//! The StreamVault TMDB proxy against a fake TMDB upstream on loopback: credentials (bearer
//! vs api key), what is forwarded, failover and cooldowns, path validation, the cache, the
//! client rate limit and the sign-in requirement.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Backend, TestServer, unique_email};
use serde_json::{Value, json};

/// What the fake upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    /// The credential used: the bearer token or the `api_key` parameter.
    credential: String,
    path: String,
    query: String,
    headers: HeaderMap,
}

#[derive(Clone, Debug)]
enum Mode {
    Ok,
    Status(u16, Option<&'static str>),
    /// Never answers within the proxy's timeout.
    Hang,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    modes: Arc<Mutex<HashMap<String, Mode>>>,
}

impl Fake {
    async fn start() -> (Fake, String) {
        let fake = Fake::default();
        let app = axum::Router::new()
            .fallback(fake_tmdb)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}/3"))
    }

    fn set(&self, credential: &str, mode: Mode) {
        self.modes
            .lock()
            .unwrap()
            .insert(credential.to_string(), mode);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn credentials(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.credential).collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn fake_tmdb(State(fake): State<Fake>, request: Request) -> Response {
    let headers = request.headers().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let credential = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == "api_key")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_default();
    fake.seen.lock().unwrap().push(Seen {
        credential: credential.clone(),
        path: path.clone(),
        query: query.clone(),
        headers,
    });
    let mode = fake
        .modes
        .lock()
        .unwrap()
        .get(&credential)
        .cloned()
        .unwrap_or(Mode::Ok);
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        Mode::Status(status, retry_after) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"status_code": 7, "status_message": "upstream says no"})),
            )
                .into_response();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        Mode::Ok if path == "/3/movie/404" => {
            let mut r = (
                StatusCode::NOT_FOUND,
                [("content-type", "application/json;charset=utf-8")],
                r#"{"success":false,"status_code":34}"#,
            )
                .into_response();
            if let Some((_, cc)) = pairs.iter().find(|(k, _)| k == "cc") {
                r.headers_mut().insert("cache-control", cc.parse().unwrap());
            }
            r
        }
        Mode::Ok => {
            // The body never contains the credential: the proxy must not leak it either.
            let body = format!(
                r#"{{"path":{path:?},"n":{}}}"#,
                fake.seen.lock().unwrap().len()
            );
            let mut r = (
                StatusCode::OK,
                [("content-type", "application/json;charset=utf-8")],
                body,
            )
                .into_response();
            if let Some((_, cc)) = pairs.iter().find(|(k, _)| k == "cc") {
                r.headers_mut().insert("cache-control", cc.parse().unwrap());
            }
            r.headers_mut()
                .insert("x-upstream-only", "must-not-pass".parse().unwrap());
            r
        }
    }
}

async fn server(base: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("TMDB_API_BASE", base)];
    vars.extend_from_slice(extra);
    TestServer::start_with(Backend::Sqlite, &vars).await
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_api_key_credentials_and_what_is_forwarded() {
    let (fake, base) = Fake::start().await;
    let s = server(
        &base,
        &[
            ("TMDB_ACCESS_TOKEN", "eyJbearer-one"),
            ("TMDB_API_KEY", "plainkey2"),
        ],
    )
    .await;
    let send = |path: &str| {
        s.http
            .get(s.url(path))
            .header("x-client-secret", "do-not-forward")
            .header("cookie", "a=b")
            .header("user-agent", "streamvault-test")
    };

    // Credential #1 is a bearer token: Authorization header, no api_key parameter, and the
    // client's own api_key values removed.
    let r = send("/api/tmdb/search/movie?query=fight%20club&api_key=client-key&page=2&with=1&with=2&api_key=again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_eq!(body, r#"{"path":"/3/search/movie","n":1}"#);
    assert_eq!(headers["content-type"], "application/json;charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.get("x-upstream-only").is_none());
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with(&format!("W/\"{:x}-", body.len())),
        "{etag}"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].credential, "eyJbearer-one");
    assert_eq!(seen[0].headers["authorization"], "Bearer eyJbearer-one");
    assert_eq!(seen[0].headers["accept"], "application/json");
    assert!(seen[0].headers.get("x-client-secret").is_none());
    assert!(seen[0].headers.get("cookie").is_none());
    assert_ne!(seen[0].headers["user-agent"], "streamvault-test");
    assert_eq!(
        query_pairs(&seen[0].query),
        pairs(&[
            ("query", "fight club"),
            ("page", "2"),
            ("with", "1"),
            ("with", "2")
        ])
    );

    // Round robin: credential #2 is an API key, sent as the last `api_key` parameter.
    fake.clear();
    let r = send("/api/tmdb/movie/550?api_key=client-key&language=de")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/3/movie/550");
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(
        query_pairs(&seen[0].query),
        pairs(&[("language", "de"), ("api_key", "plainkey2")])
    );

    // A 404 from TMDB is an answer: passed through, no failover.
    fake.clear();
    let r = s.get("/api/tmdb/movie/404").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text, r#"{"success":false,"status_code":34}"#);
    assert_eq!(fake.credentials(), ["eyJbearer-one"]);

    // A matching If-None-Match gets 304 with no body (the cached answer has the same tag).
    let url = s.url("/api/tmdb/configuration?cc=public%2C%20max-age%3D60");
    let first = s.http.get(&url).send().await.unwrap();
    let tag = first.headers()["etag"].to_str().unwrap().to_string();
    let r = s
        .http
        .get(&url)
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.text().await.unwrap(), "");
    let r = s
        .http
        .get(&url)
        .header("if-none-match", "W/\"1-nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(etag, tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_429_401_and_5xx_with_cooldowns() {
    let (fake, base) = Fake::start().await;
    let s = server(
        &base,
        &[
            ("TMDB_API_KEYS", "k1,k2;k3"),
            ("TMDB_SERVER_FAILURE_COOLDOWN_MS", "400"),
        ],
    )
    .await;
    fake.set("k1", Mode::Status(429, Some("120")));
    fake.set("k2", Mode::Status(401, None));

    // k1 is rate-limited, k2 rejected: the request moves on and k3 answers.
    let r = s.get("/api/tmdb/movie/1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.credentials(), ["k1", "k2", "k3"]);

    // Both are cooling down now, so the next request goes straight to k3.
    fake.clear();
    let r = s.get("/api/tmdb/movie/2").await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.credentials(), ["k3"]);

    // k3 fails with a 5xx: the cooling keys are tried as a last resort, the one whose
    // cooldown ends first (k2: 60 s) before k1 (Retry-After: 120 s). The last failure wins.
    fake.clear();
    fake.set("k3", Mode::Status(503, None));
    let r = s.get("/api/tmdb/movie/3").await;
    assert_eq!(fake.credentials(), ["k3", "k2", "k1"]);
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json,
        json!({"error": "TMDB rate limit hit on credential #1"})
    );
    assert!(!r.text.contains("k1"));

    // The 5xx cooldown (400 ms) passes; k3 answers again and is preferred.
    fake.set("k3", Mode::Ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.clear();
    let r = s.get("/api/tmdb/movie/4").await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.credentials(), ["k3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_sets_the_cooldown() {
    let (fake, base) = Fake::start().await;
    let s = server(&base, &[("TMDB_API_KEY_1", "r1"), ("TMDB_API_KEY_2", "r2")]).await;
    fake.set("r1", Mode::Status(429, Some("1")));
    let r = s.get("/api/tmdb/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.credentials(), ["r1", "r2"]);
    fake.set("r1", Mode::Ok);
    // Still cooling: skipped.
    fake.clear();
    assert_eq!(s.get("/api/tmdb/b").await.status, 200);
    assert_eq!(fake.credentials(), ["r2"]);
    // After Retry-After (1 s, not the 15 s default) r1 is first in scan order again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fake.clear();
    assert_eq!(s.get("/api/tmdb/c").await.status, 200);
    assert_eq!(fake.credentials(), ["r1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_credential_failures_map_to_status_and_message() {
    let (fake, base) = Fake::start().await;
    let s = server(
        &base,
        &[
            ("TMDB_API_KEY", "only"),
            ("TMDB_PROXY_TIMEOUT_MS", "300"),
            ("TMDB_AUTH_FAILURE_COOLDOWN_MS", "1"),
            ("TMDB_SERVER_FAILURE_COOLDOWN_MS", "1"),
        ],
    )
    .await;
    for (mode, status, message) in [
        (
            Mode::Status(403, None),
            403,
            "TMDB credential #1 was rejected",
        ),
        (
            Mode::Status(401, None),
            401,
            "TMDB credential #1 was rejected",
        ),
        (Mode::Status(500, None), 500, "TMDB upstream error 500"),
        (Mode::Status(502, None), 502, "TMDB upstream error 502"),
        (Mode::Hang, 502, "TMDB request failed: request timed out"),
    ] {
        fake.set("only", mode.clone());
        let r = s.get("/api/tmdb/movie/9").await;
        assert_eq!(r.status, status, "{mode:?}: {}", r.text);
        assert_eq!(r.json, json!({"error": message}), "{mode:?}");
        assert!(!r.text.contains("only"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_validation() {
    let (fake, base) = Fake::start().await;
    let s = server(&base, &[("TMDB_API_KEY", "pk")]).await;
    for path in ["/api/tmdb", "/api/tmdb/"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.json, json!({"error": "Missing TMDB API path"}), "{path}");
    }
    for path in [
        "/api/tmdb/%20",
        "/api/tmdb/movie..550",
        "/api/tmdb/a%5Cb",
        "/api/tmdb/http:%2F%2Fevil.example/x",
        "/api/tmdb/HTTPS%3A%2F%2Fevil.example",
        "/api/tmdb/%2F",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.json, json!({"error": "Invalid TMDB path"}), "{path}");
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
    // Encoded segments are decoded and re-encoded: `?` and `#` cannot become query or
    // fragment upstream.
    let r = s.get("/api/tmdb/search%2Fmovie%3Fx%3D1").await;
    assert_eq!(r.status, 200);
    let seen = fake.seen();
    assert_eq!(seen[0].path, "/3/search/movie%3Fx=1");
    assert_eq!(query_pairs(&seen[0].query), pairs(&[("api_key", "pk")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_cached_as_cache_control_allows() {
    let (fake, base) = Fake::start().await;
    let s = server(&base, &[("TMDB_API_KEY", "ck")]).await;
    let cacheable = "/api/tmdb/configuration?cc=public%2C%20max-age%3D60";
    let first = s.get(cacheable).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    let second = s.get(cacheable).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.text, first.text);
    assert_eq!(second.header("cache-control"), Some("public, max-age=60"));
    // A client api_key is stripped, so it does not split the cache.
    let third = s.get(&format!("{cacheable}&api_key=mine")).await;
    assert_eq!(third.header("x-cache"), Some("HIT"));
    assert_eq!(fake.seen().len(), 1);

    // no-store (and no Cache-Control at all) is never cached.
    for path in [
        "/api/tmdb/configuration?cc=no-store",
        "/api/tmdb/trending/all/day",
    ] {
        fake.clear();
        assert_eq!(s.get(path).await.header("x-cache"), Some("MISS"));
        assert_eq!(s.get(path).await.header("x-cache"), Some("MISS"));
        assert_eq!(fake.seen().len(), 2, "{path}");
    }
    // Errors are not cached either.
    fake.clear();
    let p = "/api/tmdb/movie/404?cc=max-age%3D60";
    assert_eq!(s.get(p).await.status, 404);
    assert_eq!(s.get(p).await.status, 404);
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_rate_limit() {
    let (fake, base) = Fake::start().await;
    let s = server(
        &base,
        &[
            ("TMDB_API_KEY", "rk"),
            ("TMDB_PROXY_RATE_LIMIT_MAX", "3"),
            ("TMDB_PROXY_RATE_LIMIT_WINDOW_SECS", "60"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(s.get("/api/tmdb/movie/1").await.status, 200);
    }
    let r = s.get("/api/tmdb/movie/1").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        r.json,
        json!({"error": format!("Too many TMDB requests; try again in {retry} s")})
    );
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_is_503() {
    let (fake, base) = Fake::start().await;
    let s = server(&base, &[]).await;
    let r = s.get("/api/tmdb/movie/550").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json,
        json!({"error": "TMDB credentials are not configured on the backend"})
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_admits_only_signed_in_users() {
    let (fake, base) = Fake::start().await;
    let s = server(
        &base,
        &[("TMDB_API_KEY", "ak"), ("TMDB_PROXY_REQUIRE_AUTH", "true")],
    )
    .await;
    let r = s.get("/api/tmdb/movie/550").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json, json!({"error": "Sign in to use the TMDB proxy"}));
    assert!(fake.seen().is_empty());
    let (token, _) = s.sign_up(&unique_email("tmdb"), "password123").await;
    let r = s.get_bearer("/api/tmdb/movie/550", &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let _: Value = r.json;
    assert_eq!(fake.seen().len(), 1);
}
