//! Google sign-in with server-held secrets, against a fake OAuth/OIDC provider and a fake
//! desktop callback, both on loopback: the StreamVault desktop flow (redirect parameters
//! with PKCE, the exact `tokens` blob, refresh, every error redirect and JSON error) and
//! Better Auth social sign-in driven by the real `better-auth` client. Replayed or foreign
//! states are refused and create nothing.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::{Backend, TestServer, run_node, unique_email};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "test-client.apps.example";
const CLIENT_SECRET: &str = "test-secret-never-leaves";
/// Chosen so that its token blob's standard base64 has `+`, `/` and `=`.
const ACCESS_TOKEN: &str = "ya29.~~~~?~";
const REFRESH_TOKEN: &str = "1//0refresh";

#[derive(Clone)]
struct Grant {
    challenge: String,
    redirect_uri: String,
    identity: Value,
}

/// Query parameters in the order they arrived.
type Params = Vec<(String, String)>;

/// A fake provider: `/authorize` approves at once, `/token` checks the client secret,
/// redirect URI and PKCE verifier, `/userinfo` answers for the token it issued.
#[derive(Clone, Default)]
struct Provider {
    authorize_calls: Arc<Mutex<Vec<Params>>>,
    token_calls: Arc<Mutex<Vec<HashMap<String, String>>>>,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
    access: Arc<Mutex<HashMap<String, Value>>>,
    /// Who signs in at the next `/authorize`.
    identity: Arc<Mutex<Value>>,
    counter: Arc<Mutex<u32>>,
}

impl Provider {
    async fn start() -> (Provider, String) {
        let p = Provider::default();
        *p.identity.lock().unwrap() = json!({"sub": "g-1", "email": "someone@example.com", "email_verified": true, "name": "Some One"});
        let app = axum::Router::new()
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .route("/userinfo", axum::routing::get(userinfo))
            .with_state(p.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (p, format!("http://{addr}"))
    }

    fn sign_in_as(&self, identity: Value) {
        *self.identity.lock().unwrap() = identity;
    }

    fn token_calls(&self) -> Vec<HashMap<String, String>> {
        self.token_calls.lock().unwrap().clone()
    }
}

async fn authorize(State(p): State<Provider>, Query(q): Query<Vec<(String, String)>>) -> Response {
    p.authorize_calls.lock().unwrap().push(q.clone());
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let code = {
        let mut n = p.counter.lock().unwrap();
        *n += 1;
        format!("code-{n}")
    };
    p.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: get("code_challenge").unwrap_or_default(),
            redirect_uri: get("redirect_uri").unwrap_or_default(),
            identity: p.identity.lock().unwrap().clone(),
        },
    );
    let location = format!(
        "{}?code={code}&state={}",
        get("redirect_uri").unwrap(),
        get("state").unwrap()
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn token(State(p): State<Provider>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    p.token_calls.lock().unwrap().push(form.clone());
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let error = |status: u16, body: Value| {
        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
    };
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return error(
            401,
            json!({"error": "invalid_client", "error_description": "Unauthorized"}),
        );
    }
    match get("grant_type").as_str() {
        "authorization_code" => match get("code").as_str() {
            "bad-desc" => error(
                400,
                json!({"error": "invalid_grant", "error_description": "Bad Request: code/expired & gone"}),
            ),
            "bad-nodesc" => error(400, json!({"error": "invalid_grant"})),
            "html" => (StatusCode::BAD_GATEWAY, "<html>upstream broke</html>").into_response(),
            code => {
                let Some(grant) = p.grants.lock().unwrap().remove(code) else {
                    return error(
                        400,
                        json!({"error": "invalid_grant", "error_description": "Malformed auth code."}),
                    );
                };
                let verifier_ok = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(get("code_verifier").as_bytes()))
                    == grant.challenge;
                if !verifier_ok || get("redirect_uri") != grant.redirect_uri {
                    return error(
                        400,
                        json!({"error": "invalid_grant", "error_description": "PKCE or redirect_uri mismatch"}),
                    );
                }
                let access = if grant.identity["sub"] == "g-1" {
                    ACCESS_TOKEN.to_string()
                } else {
                    format!("ya29.{code}")
                };
                p.access
                    .lock()
                    .unwrap()
                    .insert(access.clone(), grant.identity);
                axum::Json(json!({
                    "access_token": access, "expires_in": 3599, "refresh_token": REFRESH_TOKEN,
                    "scope": "openid email", "token_type": "Bearer", "id_token": "eyJhbGciOiJub25lIn0.e30."
                }))
                .into_response()
            }
        },
        "refresh_token" => match get("refresh_token").as_str() {
            "good" => axum::Json(
                json!({"access_token": "ya29.fresh", "expires_in": 3599, "scope": "x",
                                        "token_type": "Bearer", "id_token": "eyJ.x.y"}),
            )
            .into_response(),
            "html" => (StatusCode::OK, "<html>not json</html>").into_response(),
            _ => error(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            ),
        },
        _ => error(400, json!({"error": "unsupported_grant_type"})),
    }
}

async fn userinfo(State(p): State<Provider>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match p.access.lock().unwrap().get(token) {
        Some(identity) => axum::Json(identity.clone()).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The desktop app's loopback listener: records each raw query it receives.
async fn loopback() -> (Arc<Mutex<Vec<String>>>, String) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| async move {
            s.lock()
                .unwrap()
                .push(uri.query().unwrap_or_default().to_string());
            "You can close this window."
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, format!("http://{addr}/callback"))
}

fn provider_vars(provider: &str, callback: &str) -> Vec<(String, String)> {
    vec![
        ("GOOGLE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("GOOGLE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        (
            "GOOGLE_AUTHORIZE_URL".into(),
            format!("{provider}/authorize"),
        ),
        ("GOOGLE_TOKEN_URL".into(), format!("{provider}/token")),
        ("GOOGLE_USERINFO_URL".into(), format!("{provider}/userinfo")),
        ("OAUTH_DESKTOP_CALLBACK_URL".into(), callback.into()),
    ]
}

async fn server_with(backend: Backend, vars: &[(String, String)]) -> TestServer {
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(backend, &refs).await
}

/// GET without following redirects; returns (status, Location, body) and checks the
/// secret appears in none of them.
async fn get(s: &TestServer, url: &str) -> (u16, String, String) {
    let r = s.http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert!(!location.contains(CLIENT_SECRET) && !body.contains(CLIENT_SECRET));
    (status, location, body)
}

fn params(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(url: &str, name: &str) -> String {
    params(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{name} missing in {url}"))
}

/// Starts a desktop flow; returns the provider's redirect back to `/auth/callback`.
async fn desktop_to_provider(s: &TestServer, client_state: &str) -> String {
    let (status, to_provider, _) = get(
        s,
        &s.url(&format!("/auth/google?state={}", urlencode(client_state))),
    )
    .await;
    assert_eq!(status, 302);
    let (status, back, _) = get(s, &to_provider).await;
    assert_eq!(status, 302);
    back
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn expected_blob() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"access_token":"{ACCESS_TOKEN}","refresh_token":"{REFRESH_TOKEN}","expires_in":3599,"token_type":"Bearer"}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_flow_end_to_end() {
    let (provider, p) = Provider::start().await;
    let (received, cb) = loopback().await;
    let s = server_with(Backend::Sqlite, &provider_vars(&p, &cb)).await;

    // The redirect to the provider: the reference's parameters in order, then PKCE.
    let (status, location, _) = get(&s, &s.url("/auth/google?state=client%20xyz&ignored=1")).await;
    assert_eq!(status, 302);
    assert!(
        location.starts_with(&format!("{p}/authorize?client_id=")),
        "{location}"
    );
    assert!(
        location.contains("&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive+https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fuserinfo.email&"),
        "spaces are form-encoded as +: {location}"
    );
    let q = params(&location);
    let names: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "access_type",
            "prompt",
            "state",
            "code_challenge",
            "code_challenge_method"
        ]
    );
    let redirect_uri = format!("http://127.0.0.1:{}/auth/callback", s.addr.port());
    assert_eq!(q[0].1, CLIENT_ID);
    assert_eq!(q[1].1, redirect_uri);
    assert_eq!(q[2].1, "code");
    assert_eq!(
        q[3].1,
        "https://www.googleapis.com/auth/drive https://www.googleapis.com/auth/userinfo.email"
    );
    assert_eq!((q[4].1.as_str(), q[5].1.as_str()), ("offline", "consent"));
    let server_state = q[6].1.clone();
    assert_ne!(server_state, "client xyz", "the server sends its own state");
    assert!(server_state.len() >= 32);
    assert_eq!(
        q[7].1.len(),
        43,
        "S256 challenge is 43 base64url characters"
    );
    assert_eq!(q[8].1, "S256");

    // /auth/google/social differs only in scope.
    let (_, social, _) = get(&s, &s.url("/auth/google/social")).await;
    assert_eq!(
        param(&social, "scope"),
        "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile"
    );
    assert_ne!(param(&social, "state"), server_state);

    // Provider → /auth/callback → the loopback URL with the exact blob and the client's state.
    let (_, back, _) = get(&s, &location).await;
    assert!(back.starts_with(&redirect_uri), "{back}");
    let (status, to_app, _) = get(&s, &back).await;
    assert_eq!(status, 302);
    let blob = expected_blob();
    assert!(blob.contains('+') && blob.contains('/') && blob.ends_with('='));
    assert_eq!(to_app, format!("{cb}?tokens={blob}&state=client%20xyz"));
    // The token request carried the secret, the verifier and the same redirect URI.
    let calls = provider.token_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["grant_type"], "authorization_code");
    assert_eq!(calls[0]["redirect_uri"], redirect_uri);
    assert_eq!(calls[0]["code_verifier"].len(), 64);
    // The desktop app receives the blob unescaped.
    let (status, _, _) = get(&s, &to_app).await;
    assert_eq!(status, 200);
    assert_eq!(
        received.lock().unwrap().clone(),
        [format!("tokens={blob}&state=client%20xyz")]
    );

    // Replaying the callback: the state was single-use; no second token request.
    let (status, replay, _) = get(&s, &back).await;
    assert_eq!(status, 302);
    assert_eq!(replay, format!("{cb}?error=invalid_state"));
    // A state this server never issued, or none at all.
    for url in [
        "/auth/callback?code=code-99&state=forged-state",
        "/auth/callback?code=code-99",
        "/auth/callback?code=code-99&state=%00",
    ] {
        let (_, l, _) = get(&s, &s.url(url)).await;
        assert_eq!(l, format!("{cb}?error=invalid_state"), "{url}");
    }
    assert_eq!(provider.token_calls().len(), 1);
    // An absent client state is the literal `default`, passed back.
    let back = desktop_to_provider(&s, "").await;
    let (_, l, _) = get(&s, &back).await;
    assert!(l.ends_with("&state=default"), "{l}");
    // One with a control character is refused before anything is stored.
    let (status, _, _) = get(&s, &s.url("/auth/google?state=a%00b")).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_error_redirects() {
    let (provider, p) = Provider::start().await;
    let (_, cb) = loopback().await;
    let s = server_with(Backend::Sqlite, &provider_vars(&p, &cb)).await;

    // The provider's error, strictly component-encoded; with a valid state, the client's
    // state follows.
    let (_, l, _) = get(&s, &s.url("/auth/callback?error=access_denied")).await;
    assert_eq!(l, format!("{cb}?error=access_denied"));
    let (_, l, _) = get(&s, &s.url("/auth/callback?error=a%20b%26c%2Fd")).await;
    assert_eq!(l, format!("{cb}?error=a%20b%26c%2Fd"));
    let back = desktop_to_provider(&s, "s1").await;
    let state = param(&back, "state");
    let (_, l, _) = get(
        &s,
        &s.url(&format!("/auth/callback?error=access_denied&state={state}")),
    )
    .await;
    assert_eq!(l, format!("{cb}?error=access_denied&state=s1"));
    let (_, l, _) = get(&s, &s.url("/auth/callback")).await;
    assert_eq!(l, format!("{cb}?error=no_code"));
    // An empty error is no error: without a code that is still no_code.
    let (_, l, _) = get(&s, &s.url("/auth/callback?error=")).await;
    assert_eq!(l, format!("{cb}?error=no_code"));

    // Token endpoint errors: the description (encoded), else the code; non-JSON → fixed text.
    for (code, expected) in [
        ("bad-desc", "Bad%20Request%3A%20code%2Fexpired%20%26%20gone"),
        ("bad-nodesc", "invalid_grant"),
        ("html", "token_exchange_failed"),
    ] {
        let back = desktop_to_provider(&s, "s2").await;
        let state = param(&back, "state");
        let (_, l, _) = get(
            &s,
            &s.url(&format!("/auth/callback?code={code}&state={state}")),
        )
        .await;
        assert_eq!(l, format!("{cb}?error={expected}&state=s2"), "{code}");
    }
    assert_eq!(provider.token_calls().len(), 3);

    // A provider that cannot be reached.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut vars = provider_vars(&p, &cb);
    vars.push((
        "GOOGLE_TOKEN_URL".into(),
        format!("http://127.0.0.1:{closed}/token"),
    ));
    vars.push((
        "REDIRECT_URI".into(),
        "https://sv.example/auth/callback".into(),
    ));
    let down = server_with(Backend::Sqlite, &vars).await;
    let (_, to_provider, _) = get(&down, &down.url("/auth/google?state=s3")).await;
    assert_eq!(
        param(&to_provider, "redirect_uri"),
        "https://sv.example/auth/callback"
    );
    let state = param(&to_provider, "state");
    let (_, l, _) = get(
        &down,
        &down.url(&format!("/auth/callback?code=x&state={state}")),
    )
    .await;
    assert_eq!(l, format!("{cb}?error=token_exchange_failed&state=s3"));
    let r = down
        .post_json("/auth/refresh", json!({"refresh_token": "good"}))
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (500, json!({"error": "refresh_failed"}))
    );

    // Without REDIRECT_URI, the forwarded proto and host build it.
    let r = s
        .http
        .get(s.url("/auth/google"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "sv.example.net")
        .send()
        .await
        .unwrap();
    let l = r.headers()["location"].to_str().unwrap();
    assert_eq!(
        param(l, "redirect_uri"),
        "https://sv.example.net/auth/callback"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    // Without GOOGLE_CLIENT_ID. The token endpoint is a local listener that counts its
    // connections: a refresh without a client must not reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((_conn, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let bare = server_with(Backend::Sqlite, &[("GOOGLE_TOKEN_URL".into(), token_url)]).await;
    for path in ["/auth/google", "/auth/google/social"] {
        let r = bare.get(path).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json, json!({"error": "GOOGLE_CLIENT_ID not configured"}));
    }
    let r = bare
        .post_json("/auth/refresh", json!({"refresh_token": "good"}))
        .await;
    assert_eq!(
        (r.status, r.json),
        (500, json!({"error": "GOOGLE_CLIENT_ID not configured"}))
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    accepting.abort();
}

/// Starting a Google sign-in stores a state for 10 minutes, so it is limited per client
/// (`OAUTH_RATE_LIMIT_MAX` a minute), the web and desktop ways in one bucket; each answers
/// 429 in its own shape, and another client is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_google_sign_ins_is_limited_per_client() {
    let (_provider, p) = Provider::start().await;
    let (_, cb) = loopback().await;
    let mut vars = provider_vars(&p, &cb);
    vars.push(("OAUTH_RATE_LIMIT_MAX".into(), "3".into()));
    let s = server_with(Backend::Sqlite, &vars).await;
    for path in ["/auth/google", "/auth/google/social"] {
        let (status, _, _) = get(&s, &s.url(path)).await;
        assert_eq!(status, 302, "{path}");
    }
    let web = |client: reqwest::Client| {
        let url = s.url("/api/auth/sign-in/social");
        let origin = s.base.clone();
        async move {
            client
                .post(url)
                .header("origin", origin)
                .json(&json!({"provider": "google", "callbackURL": "/"}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(web(s.http.clone()).await.status(), 200);
    // The fourth start from this client, either way.
    let refused = web(s.http.clone()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("x-retry-after"));
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "TOO_MANY_REQUESTS"
    );
    let refused = s.http.get(s.url("/auth/google")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // Another client address starts its own.
    let other = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other.get(s.url("/auth/google")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(web(other).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_refresh() {
    let (provider, p) = Provider::start().await;
    let (_, cb) = loopback().await;
    let s = server_with(Backend::Sqlite, &provider_vars(&p, &cb)).await;

    let r = s
        .post_json("/auth/refresh", json!({"refresh_token": "good"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text,
        r#"{"access_token":"ya29.fresh","expires_in":3599,"token_type":"Bearer"}"#
    );
    let call = provider.token_calls().pop().unwrap();
    assert_eq!(call["grant_type"], "refresh_token");
    assert_eq!(call["refresh_token"], "good");
    assert_eq!(call["client_secret"], CLIENT_SECRET);

    let form = s
        .http
        .post(s.url("/auth/refresh"))
        .form(&[("refresh_token", "good")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("ya29.fresh"));

    let r = s
        .post_json("/auth/refresh", json!({"refresh_token": "revoked"}))
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, r#"{"error":"invalid_grant"}"#)
    );
    for body in [
        json!({}),
        json!({"refresh_token": ""}),
        json!({"refresh_token": null}),
        json!({"refresh_token": false}),
    ] {
        let r = s.post_json("/auth/refresh", body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json, json!({"error": "refresh_token required"}));
    }
    let r = s
        .post_json("/auth/refresh", json!({"refresh_token": "html"}))
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (500, json!({"error": "refresh_failed"}))
    );
}

#[derive(sqlx::FromRow, Debug)]
struct AccountRow {
    user_id: String,
    account_id: String,
}

async fn google_accounts(s: &TestServer) -> Vec<AccountRow> {
    match &s.state.db {
        watchpost::db::Db::Sqlite(pool) => sqlx::query_as::<_, AccountRow>(
            "SELECT user_id, account_id FROM account WHERE provider_id = 'google' ORDER BY created_at",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        watchpost::db::Db::Postgres(pool) => sqlx::query_as::<_, AccountRow>(
            "SELECT user_id, account_id FROM account WHERE provider_id = 'google' ORDER BY created_at",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    }
}

async fn user_count(s: &TestServer) -> i64 {
    match &s.state.db {
        watchpost::db::Db::Sqlite(pool) => sqlx::query_scalar(r#"SELECT COUNT(*) FROM "user""#)
            .fetch_one(pool)
            .await
            .unwrap(),
        watchpost::db::Db::Postgres(pool) => sqlx::query_scalar(r#"SELECT COUNT(*) FROM "user""#)
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

async fn better_auth_social(backend: Backend) {
    let (provider, p) = Provider::start().await;
    let (_, cb) = loopback().await;
    let s = server_with(backend, &provider_vars(&p, &cb)).await;
    let origin = s.base.clone();

    // An existing email/password user; Google says the same email is verified: linked.
    let email = unique_email("linked");
    let (old_session, existing) = s.sign_up(&email, "password123").await;
    assert_eq!(
        s.get_bearer("/api/auth/get-session", &old_session)
            .await
            .json["user"]["id"],
        existing["id"]
    );
    provider.sign_in_as(json!({"sub": "g-1", "email": email.to_uppercase(), "email_verified": true, "name": "G One"}));
    let after = format!("{origin}/after-sign-in");
    let out = run_node(
        "better-auth-social.mjs",
        &[&origin, &after],
        "better-auth signIn.social",
    )
    .await;
    let out: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(out["callbackURL"], after);
    assert_eq!(out["userId"], existing["id"]);
    assert_eq!(out["email"], email);
    assert_eq!(out["emailVerified"], true);
    let accounts = google_accounts(&s).await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(
        (
            accounts[0].account_id.as_str(),
            accounts[0].user_id.as_str()
        ),
        ("g-1", existing["id"].as_str().unwrap())
    );
    assert_eq!(user_count(&s).await, 1);
    // Nobody had verified that email, so whoever set its password may not be its owner
    // (an account made ahead of them, to share theirs): the password and the sessions it
    // opened end; the Google identity is the account's way in now.
    assert_eq!(
        s.get_bearer("/api/auth/get-session", &old_session)
            .await
            .json,
        Value::Null
    );
    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "password123"}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    // The authorize request carried PKCE and the Better Auth redirect URI.
    let authorize = provider
        .authorize_calls
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let get_q = |k: &str| {
        authorize
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get_q("code_challenge_method"), "S256");
    assert_eq!(
        get_q("redirect_uri"),
        format!(
            "http://localhost:{}/api/auth/callback/google",
            s.addr.port()
        )
    );

    // Replaying the provider's redirect (same code and state, same cookie) is refused.
    let replay = s
        .http
        .get(out["providerCallback"].as_str().unwrap())
        .header("cookie", out["stateCookie"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 403);
    assert!(replay.headers().get("set-cookie").is_none());

    // A new identity: a new user with a google account.
    provider.sign_in_as(json!({"sub": "g-2", "email": "fresh-google@example.com", "email_verified": true, "name": "Fresh"}));
    let out = run_node(
        "better-auth-social.mjs",
        &[&origin, "/welcome"],
        "better-auth signIn.social (new user)",
    )
    .await;
    let out: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(out["email"], "fresh-google@example.com");
    assert_eq!(out["callbackURL"], "/welcome");
    assert_eq!(user_count(&s).await, 2);
    assert_eq!(google_accounts(&s).await.len(), 2);

    // Login CSRF: an attacker's own flow, completed in a victim's browser (no state cookie,
    // or a cookie for another state), signs nobody in and creates nothing.
    provider.sign_in_as(
        json!({"sub": "g-evil", "email": "attacker@example.com", "email_verified": true}),
    );
    let start = s
        .http
        .post(s.url("/api/auth/sign-in/social"))
        .header("origin", &origin)
        .json(&json!({"provider": "google", "callbackURL": "/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let attacker_cookie = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let url = start.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, provider_redirect, _) = get(&s, &url).await;
    let other = s
        .http
        .post(s.url("/api/auth/sign-in/social"))
        .header("origin", &origin)
        .json(&json!({"provider": "google"}))
        .send()
        .await
        .unwrap();
    let victim_cookie = other.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for cookie in [None, Some(victim_cookie.as_str())] {
        let mut req = s.http.get(&provider_redirect);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{cookie:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "STATE_MISMATCH");
    }
    // A state the server never issued, with a cookie signed for it by someone else.
    let forged = s
        .http
        .get(s.url("/api/auth/callback/google?code=code-1&state=forged"))
        .header("cookie", "better-auth.state=forged.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // A desktop state is not accepted by the web callback (and the other way round).
    let desktop_back = desktop_to_provider(&s, "d").await;
    let desktop_state = param(&desktop_back, "state");
    let signed = format!(
        "better-auth.state={}",
        urlencode(&watchpost::crypto::signed_token(
            common::SECRET.as_bytes(),
            &desktop_state
        ))
    );
    let r = s
        .http
        .get(s.url(&format!(
            "/api/auth/callback/google?code=x&state={desktop_state}"
        )))
        .header("cookie", signed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let attacker_state = param(&provider_redirect, "state");
    let (_, l, _) = get(
        &s,
        &s.url(&format!("/auth/callback?code=x&state={attacker_state}")),
    )
    .await;
    assert_eq!(l, format!("{cb}?error=invalid_state"));
    assert_eq!(user_count(&s).await, 2);
    let _ = attacker_cookie;

    // An unverified provider email never links to the existing account.
    provider.sign_in_as(json!({"sub": "g-3", "email": email, "email_verified": false}));
    let start = s
        .http
        .post(s.url("/api/auth/sign-in/social"))
        .header("origin", &origin)
        .json(&json!({"provider": "google", "callbackURL": "/ok", "errorCallbackURL": "/oops"}))
        .send()
        .await
        .unwrap();
    let cookie = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let url = start.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, provider_redirect, _) = get(&s, &url).await;
    let r = s
        .http
        .get(&provider_redirect)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/oops?error=account_not_linked");
    assert_eq!(google_accounts(&s).await.len(), 2);

    // Open redirects and unknown providers are refused.
    for (body, status, code) in [
        (
            json!({"provider": "google", "callbackURL": "https://evil.example/x"}),
            403,
            "INVALID_CALLBACK_URL",
        ),
        // A trusted origin, but no `Location` header could carry it.
        (
            json!({"provider": "google", "callbackURL": format!("{origin}/\u{1}")}),
            403,
            "INVALID_CALLBACK_URL",
        ),
        (
            json!({"provider": "google", "errorCallbackURL": format!("/{}", "a".repeat(3000))}),
            403,
            "INVALID_CALLBACK_URL",
        ),
        (json!({"provider": "github"}), 404, "PROVIDER_NOT_FOUND"),
    ] {
        let r = s
            .http
            .post(s.url("/api/auth/sign-in/social"))
            .header("origin", &origin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code);
    }
}

both_backends!(better_auth_social);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_streamvault_routes() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = s.get("/openapi.json").await;
    let paths = r.json["paths"].as_object().unwrap();
    for (path, method) in [
        ("/auth/google", "get"),
        ("/auth/google/social", "get"),
        ("/auth/callback", "get"),
        ("/auth/refresh", "post"),
        ("/api/auth/sign-in/social", "post"),
        ("/api/auth/callback/google", "get"),
        ("/api/tmdb", "get"),
        ("/api/tmdb/{path}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the spec"
        );
    }
}
