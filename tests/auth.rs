//! Better Auth wire compatibility, over HTTP, on SQLite and PostgreSQL.

mod common;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use common::{Backend, SECRET, TestServer, unique_email};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// Independent re-implementation of the cookie signature: padded standard base64 of
/// HMAC-SHA256(secret, token).
fn expected_signature(token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn encode_uri_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_iso_millis(s: &str) -> bool {
    // 2026-11-23T04:50:00.123Z
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && DateTime::parse_from_rfc3339(s).is_ok()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn sign_up_returns_token_user_and_signed_cookie(backend: Backend) {
    let s = TestServer::start(backend).await;
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "Ada", "email": "Ada.Lovelace@Example.COM", "password": "correct horse"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["token"].as_str().unwrap();
    assert!(is_id(token));
    let user = &r.json["user"];
    assert!(is_id(user["id"].as_str().unwrap()));
    assert_eq!(user["email"], "ada.lovelace@example.com");
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["emailVerified"], false);
    assert!(is_iso_millis(user["createdAt"].as_str().unwrap()));
    assert!(is_iso_millis(user["updatedAt"].as_str().unwrap()));

    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let signed = format!("{token}.{}", expected_signature(token));
    assert_eq!(
        cookies[0],
        format!(
            "better-auth.session_token={}; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax",
            encode_uri_component(&signed)
        )
    );
    assert_eq!(r.header("set-auth-token"), Some(signed.as_str()));
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("set-auth-token")
    );

    // The password is stored as argon2id, never in clear.
    let hash: String = match &s.state.db {
        watchpost::db::Db::Sqlite(p) => sqlx::query_scalar("SELECT password FROM account")
            .fetch_one(p)
            .await
            .unwrap(),
        watchpost::db::Db::Postgres(p) => sqlx::query_scalar("SELECT password FROM account")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

async fn sign_up_errors(backend: Backend) {
    let s = TestServer::start(backend).await;
    let email = unique_email("dup");
    s.sign_up(&email, "password-1").await;
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "B", "email": email.to_uppercase(), "password": "password-2"}),
        )
        .await;
    r.expect_error(422, "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL");
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "B", "email": unique_email("s"), "password": "short"}),
        )
        .await;
    r.expect_error(400, "PASSWORD_TOO_SHORT");
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "B", "email": unique_email("l"), "password": "x".repeat(129)}),
        )
        .await;
    r.expect_error(400, "PASSWORD_TOO_LONG");
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "B", "email": "not-an-email", "password": "password-1"}),
        )
        .await;
    r.expect_error(400, "INVALID_EMAIL");
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"email": unique_email("n"), "password": "password-1"}),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert!(r.json["message"].as_str().unwrap().contains("name"));
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": 5, "email": unique_email("n"), "password": "password-1"}),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    // Malformed JSON, wrong content type, oversized body: clear 4xx, never 500.
    let raw = |body: &'static str, ct: &'static str| {
        s.http
            .post(s.url("/api/auth/sign-up/email"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = common::Reply::from(raw("{\"name\":", "application/json").await.unwrap()).await;
    r.expect_error(400, "INVALID_JSON");
    let r = common::Reply::from(raw("name=a", "text/plain").await.unwrap()).await;
    r.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = common::post_oversized(
        s.addr,
        "/api/auth/sign-up/email",
        "application/json",
        huge.into_bytes(),
    )
    .await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
}

async fn sign_in_and_errors(backend: Backend) {
    let s = TestServer::start(backend).await;
    let email = unique_email("in");
    let (_, user) = s.sign_up(&email, "password-1").await;

    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "password-1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["redirect"], false);
    assert!(r.json.get("url").is_none());
    assert!(is_id(r.json["token"].as_str().unwrap()));
    assert_eq!(r.json["user"]["id"], user["id"]);
    assert!(r.header("location").is_none());

    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "password-1", "callbackURL": "/dashboard"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["redirect"], true);
    assert_eq!(r.json["url"], "/dashboard");
    assert_eq!(r.header("location"), Some("/dashboard"));

    let r = s
        .post_json("/api/auth/sign-in/email", json!({"email": email, "password": "password-1", "callbackURL": "https://evil.example/x"}))
        .await;
    r.expect_error(403, "INVALID_CALLBACK_URL");
    // Browsers strip tabs: "/\t/evil" would become "//evil".
    s.post_json(
        "/api/auth/sign-in/email",
        json!({"email": email, "password": "password-1", "callbackURL": "/\t/evil.example"}),
    )
    .await
    .expect_error(403, "INVALID_CALLBACK_URL");

    let wrong = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "wrong-password"}),
        )
        .await;
    wrong.expect_error(401, "INVALID_EMAIL_OR_PASSWORD");
    let unknown = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": unique_email("nobody"), "password": "wrong-password"}),
        )
        .await;
    unknown.expect_error(401, "INVALID_EMAIL_OR_PASSWORD");
    assert_eq!(
        wrong.json, unknown.json,
        "unknown user and wrong password must be indistinguishable"
    );

    s.post_json(
        "/api/auth/sign-in/email",
        json!({"email": "bad", "password": "password-1"}),
    )
    .await
    .expect_error(400, "INVALID_EMAIL");
    s.post_json(
        "/api/auth/sign-in/email",
        json!({"email": email, "password": "p".repeat(200)}),
    )
    .await
    .expect_error(400, "PASSWORD_TOO_LONG");
    s.post_json("/api/auth/sign-in/email", json!({"email": email}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
}

async fn sessions_by_cookie_and_bearer(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, user) = s.sign_up(&unique_email("sess"), "password-1").await;
    let signed = format!("{token}.{}", expected_signature(&token));

    // Cookie.
    let r = common::Reply::from(
        s.http
            .get(s.url("/api/auth/get-session"))
            .header(
                "cookie",
                format!(
                    "other=1; better-auth.session_token={}",
                    encode_uri_component(&signed)
                ),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json["user"]["id"], user["id"]);
    let session = &r.json["session"];
    assert_eq!(session["token"], token.as_str());
    assert_eq!(session["userId"], user["id"]);
    assert!(is_id(session["id"].as_str().unwrap()));
    for key in ["expiresAt", "createdAt", "updatedAt"] {
        assert!(is_iso_millis(session[key].as_str().unwrap()), "{key}");
    }
    assert_eq!(session["ipAddress"], "127.0.0.1");
    assert!(session.get("userAgent").is_some());
    // A fresh session is not refreshed, so no cookie is re-sent.
    assert!(r.set_cookies().is_empty());

    // Bearer: signed and raw.
    for credential in [signed.as_str(), token.as_str()] {
        let r = s.get_bearer("/api/auth/get-session", credential).await;
        assert_eq!(r.json["user"]["id"], user["id"], "bearer {credential}");
    }
    // Bad signature, unknown token, nothing: JSON null with 200.
    let forged = format!("{token}.{}", expected_signature("something-else"));
    for r in [
        s.get_bearer("/api/auth/get-session", &forged).await,
        s.get_bearer("/api/auth/get-session", "unknowntokenunknowntokenunknownt")
            .await,
        s.get("/api/auth/get-session").await,
    ] {
        assert_eq!(r.status, 200);
        assert_eq!(r.text, "null");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let r = common::Reply::from(
        s.http
            .get(s.url("/api/auth/get-session"))
            .header(
                "cookie",
                format!(
                    "better-auth.session_token={}",
                    encode_uri_component(&forged)
                ),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.text, "null");
}

async fn sign_out_deletes_session_and_expires_cookies(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("out"), "password-1").await;
    let r = common::Reply::from(
        s.http
            .post(s.url("/api/auth/sign-out"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, json!({"success": true}));
    let cookies = r.set_cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("better-auth.session_token=; Max-Age=0")),
        "{cookies:?}"
    );
    assert_eq!(
        s.get_bearer("/api/auth/get-session", &token).await.text,
        "null"
    );
}

async fn remember_me_false_gives_a_browser_session_cookie(backend: Backend) {
    let s = TestServer::start(backend).await;
    let email = unique_email("rm");
    s.sign_up(&email, "password-1").await;
    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "password-1", "rememberMe": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    let cookies = r.set_cookies();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("better-auth.session_token="))
        .unwrap();
    assert!(!session_cookie.contains("Max-Age"), "{session_cookie}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("better-auth.dont_remember="))
    );
}

async fn sliding_refresh_and_expiry(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("slide"), "password-1").await;
    let two_days_ago = watchpost::time::now() - Duration::days(2);
    let soon = two_days_ago + Duration::days(7);
    let exec = |sql: &'static str, a: DateTime<Utc>, b: DateTime<Utc>| {
        let db = s.state.db.clone();
        let token = token.clone();
        async move {
            match db {
                watchpost::db::Db::Sqlite(p) => {
                    sqlx::query(sql)
                        .bind(a)
                        .bind(b)
                        .bind(token)
                        .execute(&p)
                        .await
                        .unwrap();
                }
                watchpost::db::Db::Postgres(p) => {
                    sqlx::query(sql)
                        .bind(a)
                        .bind(b)
                        .bind(token)
                        .execute(&p)
                        .await
                        .unwrap();
                }
            }
        }
    };
    exec(
        "UPDATE session SET updated_at = $1, expires_at = $2 WHERE token = $3",
        two_days_ago,
        soon,
    )
    .await;
    let r = s.get_bearer("/api/auth/get-session", &token).await;
    assert_eq!(r.status, 200);
    let expires: DateTime<Utc> = r.json["session"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expires > Utc::now() + Duration::days(6),
        "session was not extended: {expires}"
    );
    assert!(
        r.set_cookies().iter().any(|c| c.contains("Max-Age=604800")),
        "refresh re-sends the cookie"
    );
    assert!(r.header("set-auth-token").is_some());

    // Expired sessions are gone, and so are the sockets opened with them; a live
    // session's socket stays.
    let mut socket = s.socket(&token).await;
    let (live_token, _) = s.sign_up(&unique_email("live"), "password-1").await;
    let mut live = s.socket(&live_token).await;
    let past = watchpost::time::now() - Duration::minutes(1);
    exec(
        "UPDATE session SET updated_at = $1, expires_at = $2 WHERE token = $3",
        past,
        past,
    )
    .await;
    // The janitor's sweep (hourly) finds the socket's session ended and closes it.
    assert_eq!(
        watchpost::jobs::close_sockets_of_ended_sessions(&s.state).await,
        1
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while socket.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the expired session's socket stayed open");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
    while let Ok(event) = tokio::time::timeout_at(deadline, live.recv()).await {
        assert!(event.is_some(), "a live session's socket was closed");
    }
    assert_eq!(
        s.get_bearer("/api/auth/get-session", &token).await.text,
        "null"
    );
}

async fn origin_check_guards_cookie_requests(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        &[("BETTER_AUTH_TRUSTED_ORIGINS", "https://app.example")],
    )
    .await;
    let (token, _) = s.sign_up(&unique_email("csrf"), "password-1").await;
    let cookie = format!(
        "better-auth.session_token={}",
        encode_uri_component(&format!("{token}.{}", expected_signature(&token)))
    );
    let post = |origin: Option<&'static str>| {
        let mut req = s
            .http
            .post(s.url("/api/auth/sign-out"))
            .header("cookie", cookie.clone());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    common::Reply::from(post(Some("https://evil.example")).await.unwrap())
        .await
        .expect_error(403, "INVALID_ORIGIN");
    common::Reply::from(post(None).await.unwrap())
        .await
        .expect_error(403, "MISSING_OR_NULL_ORIGIN");
    common::Reply::from(post(Some("null")).await.unwrap())
        .await
        .expect_error(403, "MISSING_OR_NULL_ORIGIN");
    // The session survived the refused attempts.
    assert_ne!(
        s.get_bearer("/api/auth/get-session", &token).await.text,
        "null"
    );
    // Browser-looking sign-in without an Origin is refused; from a trusted origin it works.
    let r = common::Reply::from(
        s.http
            .post(s.url("/api/auth/sign-in/email"))
            .header("sec-fetch-mode", "cors")
            .json(&json!({"email": "x@example.com", "password": "password-1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(403, "MISSING_OR_NULL_ORIGIN");
    let r = common::Reply::from(post(Some("https://app.example")).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.get_bearer("/api/auth/get-session", &token).await.text,
        "null"
    );
    // CORS preflight for a trusted origin allows credentials.
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/auth/sign-in/email"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
}

async fn rate_limit_after_three_attempts(backend: Backend) {
    let s = TestServer::start_with(backend, &[("AUTH_RATE_LIMIT_MAX", "3")]).await;
    let body = json!({"email": unique_email("rl"), "password": "password-1"});
    for _ in 0..3 {
        let r = s.post_json("/api/auth/sign-in/email", body.clone()).await;
        assert_eq!(r.status, 401);
    }
    let r = s.post_json("/api/auth/sign-in/email", body.clone()).await;
    r.expect_error(429, "TOO_MANY_REQUESTS");
    let retry: u64 = r.header("x-retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Sign-up has its own bucket.
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "n", "email": unique_email("rl2"), "password": "password-1"}),
        )
        .await;
    assert_eq!(r.status, 200);
}

async fn scrypt_import_signs_in_and_upgrades(backend: Backend) {
    let s = TestServer::start(backend).await;
    let email = unique_email("imported");
    let now = watchpost::time::now();
    let hash = watchpost::auth::password::better_auth_scrypt_hash(
        "legacy password",
        "00112233445566778899aabbccddeeff",
    );
    let db = s.state.db.clone();
    macro_rules! run {
        ($sql:expr, $($arg:expr),*) => {
            match &db {
                watchpost::db::Db::Sqlite(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
                watchpost::db::Db::Postgres(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
            }
        };
    }
    run!(
        r#"INSERT INTO "user" (id, name, email, email_verified, created_at, updated_at) VALUES ($1, 'Old', $2, FALSE, $3, $4)"#,
        "importeduser0000000000000000000a",
        &email,
        now,
        now
    );
    run!(
        "INSERT INTO account (id, account_id, provider_id, user_id, password, created_at, updated_at) VALUES ('acc1', 'importeduser0000000000000000000a', 'credential', 'importeduser0000000000000000000a', $1, $2, $3)",
        &hash,
        now,
        now
    );

    s.post_json(
        "/api/auth/sign-in/email",
        json!({"email": email, "password": "wrong password"}),
    )
    .await
    .expect_error(401, "INVALID_EMAIL_OR_PASSWORD");
    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "legacy password"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stored: String = match &db {
        watchpost::db::Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT password FROM account WHERE id = 'acc1'")
                .fetch_one(p)
                .await
                .unwrap()
        }
        watchpost::db::Db::Postgres(p) => {
            sqlx::query_scalar("SELECT password FROM account WHERE id = 'acc1'")
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert!(
        stored.starts_with("$argon2id$"),
        "hash was not upgraded: {stored}"
    );
    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "legacy password"}),
        )
        .await;
    assert_eq!(r.status, 200, "sign-in after upgrade: {}", r.text);
}

async fn https_base_url_uses_secure_cookie(backend: Backend) {
    let s =
        TestServer::start_with(backend, &[("BETTER_AUTH_BASE_URL", "https://cams.example")]).await;
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "S", "email": unique_email("sec"), "password": "password-1"}),
        )
        .await;
    let cookie = &r.set_cookies()[0];
    assert!(
        cookie.starts_with("__Secure-better-auth.session_token="),
        "{cookie}"
    );
    assert!(cookie.contains("; Secure"), "{cookie}");
    let token = r.json["token"].as_str().unwrap();
    let r = common::Reply::from(
        s.http
            .get(s.url("/api/auth/get-session"))
            .header("cookie", cookie_pair(cookie))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.json["session"]["token"], token);
}

async fn ok_and_unknown_routes(backend: Backend) {
    let s = TestServer::start(backend).await;
    let r = s.get("/api/auth/ok").await;
    assert_eq!(r.json, json!({"ok": true}));
    s.get("/no/such/route").await.expect_error(404, "NOT_FOUND");
    let r = common::Reply::from(s.http.delete(s.url("/api/auth/ok")).send().await.unwrap()).await;
    r.expect_error(405, "METHOD_NOT_ALLOWED");
}

/// `BETTER_AUTH_DISABLE_SIGNUP=true`: sign-up answers with Better Auth's error, and the
/// operator creates accounts with `POST /admin/users` (HTTP Basic), which then sign in.
async fn sign_up_can_be_closed_and_the_admin_creates_accounts(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        &[
            ("BETTER_AUTH_DISABLE_SIGNUP", "true"),
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "admin-pass-1"),
        ],
    )
    .await;
    let email = unique_email("closed");
    let r = s
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "Ann", "email": email, "password": "password-1"}),
        )
        .await;
    r.expect_error(400, "EMAIL_PASSWORD_SIGN_UP_DISABLED");
    assert_eq!(
        r.json["message"],
        "Email and password sign up is not enabled"
    );

    let create = |basic: Option<(&'static str, &'static str)>, body: serde_json::Value| {
        let mut req = s.http.post(s.url("/admin/users")).json(&body);
        if let Some((user, password)) = basic {
            req = req.basic_auth(user, Some(password));
        }
        req.send()
    };
    let body = json!({"name": "Ann", "email": email, "password": "password-1"});
    let r = create(None, body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = create(Some(("root", "wrong")), body.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = create(Some(("root", "admin-pass-1")), body.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: serde_json::Value = r.json().await.unwrap();
    assert_eq!(user["email"], email.as_str());
    let r = create(Some(("root", "admin-pass-1")), body).await.unwrap();
    assert_eq!(r.status(), 422);
    let r = create(
        Some(("root", "admin-pass-1")),
        json!({"name": "Bo", "email": "not-an-email", "password": "password-1"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "password-1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["id"], user["id"]);
}

/// Failed `/admin` sign-ins are limited per client; behind a trusted proxy the client is
/// the right-most untrusted `X-Forwarded-For` hop, so a forged left-most hop neither
/// escapes the limit nor blocks someone else.
async fn admin_sign_in_failures_are_limited_per_client(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        &[
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "admin-pass-1"),
            ("ADMIN_MAX_FAILURES", "3"),
            ("TRUST_PROXY_HEADERS", "true"),
        ],
    )
    .await;
    let attempt = |forwarded: &str, password: Option<&'static str>| {
        let mut req = s
            .http
            .get(s.url("/admin/users"))
            .header("x-forwarded-for", forwarded);
        if let Some(p) = password {
            req = req.basic_auth("root", Some(p));
        }
        req.send()
    };
    // A browser's credential-less challenge does not count.
    for _ in 0..5 {
        let r = attempt("203.0.113.9", None).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    // Each guess comes with a different forged left-most hop; the proxy's hop is the same.
    for i in 0..3 {
        let r = attempt(&format!("6.6.6.{i}, 203.0.113.9"), Some("guess"))
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = common::Reply::from(
        attempt("6.6.6.99, 203.0.113.9", Some("admin-pass-1"))
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(429, "TOO_MANY_REQUESTS");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // Another address in the same IPv6 /64 is the same client; another client is not.
    for i in 0..3 {
        let r = attempt(&format!("2001:db8:5:6::{i}"), Some("guess"))
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = attempt("2001:db8:5:6::ffff", Some("admin-pass-1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = attempt("2001:db8:5:7::1", Some("admin-pass-1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The guesser stays blocked; whoever's address it forged as the left-most hop is not.
    let r = attempt("203.0.113.9", Some("admin-pass-1")).await.unwrap();
    assert_eq!(r.status(), 429);
    let r = attempt("6.6.6.0", Some("admin-pass-1")).await.unwrap();
    assert_eq!(r.status(), 200);
}

both_backends!(
    admin_sign_in_failures_are_limited_per_client,
    sign_up_can_be_closed_and_the_admin_creates_accounts,
    sign_up_returns_token_user_and_signed_cookie,
    sign_up_errors,
    sign_in_and_errors,
    sessions_by_cookie_and_bearer,
    sign_out_deletes_session_and_expires_cookies,
    remember_me_false_gives_a_browser_session_cookie,
    sliding_refresh_and_expiry,
    origin_check_guards_cookie_requests,
    rate_limit_after_three_attempts,
    scrypt_import_signs_in_and_upgrades,
    https_base_url_uses_secure_cookie,
    ok_and_unknown_routes,
);
