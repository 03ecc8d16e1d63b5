//! The StreamVault reference's common HTTP behaviour on its routes (protocol §1–§2): the
//! root banner, case-insensitive paths with a trailing slash, `CORS_ALLOWED_ORIGINS`,
//! security headers and weak ETags with `If-None-Match`.

mod common;

use common::{Backend, TestServer};
use serde_json::Value;

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, server.api.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A browser opening the server's address gets the household web app, under a strict
/// Content-Security-Policy; StreamVault clients asking for JSON keep their banner.
#[tokio::test]
async fn the_root_serves_the_web_app_to_browsers_and_the_banner_to_clients() {
    let server = TestServer::start(Backend::Sqlite).await;
    let browser_accept = [(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )];
    for path in ["/", "/recordings"] {
        let page = send(&server, reqwest::Method::GET, path, &browser_accept).await;
        assert_eq!(page.status(), 200, "{path}");
        assert!(
            header(&page, "content-type")
                .unwrap()
                .starts_with("text/html")
        );
        let csp = header(&page, "content-security-policy")
            .unwrap()
            .to_string();
        for directive in [
            "default-src 'self'",
            "script-src 'self';",
            "style-src 'self';",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(header(&page, "x-frame-options"), Some("DENY"));
        let html = page.text().await.unwrap();
        assert!(html.contains(r#"src="/app/app.js""#), "{html}");
        // No inline script or style would run under that policy, so there must be none.
        assert!(!html.contains("<style"), "inline style in the app page");
        assert!(
            !html.contains(" style="),
            "inline style attribute in the app page"
        );
        for script in html.split("<script").skip(1) {
            let tag_end = script.find('>').unwrap();
            assert!(
                script[..tag_end].contains("src="),
                "inline script: <script{script}"
            );
        }
    }
    for (path, kind) in [
        ("/app/app.js", "text/javascript"),
        ("/app/app.css", "text/css"),
        ("/app/qrcode.js", "text/javascript"),
        ("/sim/socket.io.min.js", "text/javascript"),
    ] {
        let r = send(&server, reqwest::Method::GET, path, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, "content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }
    // Anything but a browser navigation keeps the JSON answers.
    let root = send(
        &server,
        reqwest::Method::GET,
        "/",
        &[("accept", "application/json")],
    )
    .await;
    // Both answers vary on Accept, so no cache hands one to the other.
    assert!(
        root.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Accept")),
        "{:?}",
        root.headers()
    );
    let page = send(&server, reqwest::Method::GET, "/", &browser_accept).await;
    assert!(
        page.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Accept"))
    );
    let body: Value = root.json().await.unwrap();
    assert_eq!(body["service"], "StreamVault Auth Server");
    let list = send(
        &server,
        reqwest::Method::GET,
        "/recordings",
        &[("accept", "*/*")],
    )
    .await;
    assert_eq!(list.status(), 401);
}

#[tokio::test]
async fn banner_health_and_paths_in_any_case_with_a_trailing_slash() {
    let server = TestServer::start(Backend::Sqlite).await;
    let root = send(&server, reqwest::Method::GET, "/", &[]).await;
    assert_eq!(root.status(), 200);
    assert_eq!(header(&root, "x-frame-options"), Some("DENY"));
    let body: Value = root.json().await.unwrap();
    assert_eq!(body["service"], "StreamVault Auth Server");
    assert_eq!(body["version"], "1.2.0");

    for path in ["/health", "/HEALTH", "/Health/"] {
        let r = send(&server, reqwest::Method::GET, path, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ok", "{path}");
        assert_eq!(body["configured"], false);
    }
    // HEAD is answered by the GET route.
    let head = send(&server, reqwest::Method::HEAD, "/health/", &[]).await;
    assert_eq!(head.status(), 200);

    // A room created over REST is found whatever the case of the fixed part; the code keeps
    // its own case.
    let created = reqwest::Client::new()
        .post(server.api.url("/API/WatchTogether/Rooms/"))
        .json(&serde_json::json!({
            "media_id": 1, "media_title": "Film", "host_nickname": "Ann"
        }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let code = created.json::<Value>().await.unwrap()["code"]
        .as_str()
        .expect("room_code")
        .to_string();
    let got = send(
        &server,
        reqwest::Method::GET,
        &format!("/api/WATCHTOGETHER/rooms/{code}/"),
        &[],
    )
    .await;
    assert_eq!(got.status(), 200);
    // The Watchpost API itself is unchanged: its paths stay exact.
    let api = send(&server, reqwest::Method::GET, "/HEALTHZ", &[]).await;
    assert_eq!(api.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn cors_follows_the_configured_list_and_never_rejects() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[(
            "CORS_ALLOWED_ORIGINS",
            "tauri://localhost; http://app.example\n",
        )],
    )
    .await;
    let allowed = send(
        &server,
        reqwest::Method::GET,
        "/health",
        &[("origin", "tauri://localhost")],
    )
    .await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("tauri://localhost")
    );
    assert!(
        allowed
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);

    // Case-sensitive, no wildcard: served, without CORS headers.
    for origin in ["http://APP.example", "http://evil.example"] {
        let r = send(
            &server,
            reqwest::Method::GET,
            "/health",
            &[("origin", origin)],
        )
        .await;
        assert_eq!(r.status(), 200, "{origin}");
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{origin}");
        assert_eq!(header(&r, "x-frame-options"), Some("DENY"), "{origin}");
        assert!(header(&r, "etag").is_some(), "{origin}");
    }

    let preflight = send(
        &server,
        reqwest::Method::OPTIONS,
        "/auth/refresh",
        &[
            ("origin", "http://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-custom"),
        ],
    )
    .await;
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-methods"),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers"),
        Some("content-type,x-custom")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(header(&preflight, "access-control-max-age"), None);
    // Any OPTIONS from an allowed origin is a preflight, with or without the method asked.
    let bare = send(
        &server,
        reqwest::Method::OPTIONS,
        "/health",
        &[("origin", "tauri://localhost")],
    )
    .await;
    assert_eq!(bare.status(), 204);
    assert_eq!(
        header(&bare, "access-control-allow-origin"),
        Some("tauri://localhost")
    );

    // A disallowed preflight falls through to the framework's own OPTIONS answer: 200 with
    // the route's methods in Allow, and no CORS headers at all.
    for (path, methods) in [
        ("/health", "GET,HEAD"),
        ("/auth/refresh", "POST"),
        ("/api/watchtogether/rooms/ABCDEF", "GET,HEAD,DELETE"),
    ] {
        let r = send(
            &server,
            reqwest::Method::OPTIONS,
            path,
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
        assert_eq!(r.status(), 200, "{path}");
        let mut allow: Vec<String> = header(&r, "allow")
            .unwrap_or_else(|| panic!("{path}: no Allow"))
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        allow.sort();
        let mut expected: Vec<&str> = methods.split(',').collect();
        expected.sort();
        assert_eq!(allow, expected, "{path}");
        let cors: Vec<&str> = r
            .headers()
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("access-control-") || *k == "vary")
            .collect();
        assert!(cors.is_empty(), "{path}: {cors:?}");
    }
    // Requests carrying a cookie from a foreign origin are still served (no StreamVault
    // route reads a cookie unless Watch Together requires an account).
    let client = reqwest::Client::new();
    let refresh = client
        .post(server.api.url("/auth/refresh"))
        .header("origin", "http://evil.example")
        .header("cookie", "watchpost.session_token=x")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);
    let body: Value = refresh.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"error": "refresh_token required"}));
    let room = client
        .post(server.api.url("/api/watchtogether/rooms"))
        .header("origin", "http://evil.example")
        .header("cookie", "watchpost.session_token=x")
        .json(&serde_json::json!({"media_id": 1, "media_title": "Film", "host_nickname": "H"}))
        .send()
        .await
        .unwrap();
    assert_eq!(room.status(), 200);
    // An allowed origin's answers vary on Origin only.
    let vary: Vec<&str> = allowed
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["Origin"]);
    server.stop().await;

    // No list: every origin is allowed.
    let open = TestServer::start(Backend::Sqlite).await;
    let r = send(
        &open,
        reqwest::Method::GET,
        "/health",
        &[("origin", "http://anything.example")],
    )
    .await;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://anything.example")
    );
    open.stop().await;
}

#[tokio::test]
async fn successful_bodies_get_weak_etags_and_304() {
    let server = TestServer::start(Backend::Sqlite).await;
    let first = send(&server, reqwest::Method::GET, "/", &[]).await;
    let etag = header(&first, "etag").expect("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = send(
        &server,
        reqwest::Method::GET,
        "/",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = send(
        &server,
        reqwest::Method::GET,
        "/",
        &[("if-none-match", "W/\"0-nope\"")],
    )
    .await;
    assert_eq!(other.status(), 200);
    // HEAD gets the GET body's ETag (and its 304), with no body.
    let head = send(&server, reqwest::Method::HEAD, "/", &[]).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "etag"), Some(etag.as_str()));
    assert!(head.bytes().await.unwrap().is_empty());
    let head = send(
        &server,
        reqwest::Method::HEAD,
        "/",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(head.status(), 304);
    // Errors never get an ETag.
    let missing = send(
        &server,
        reqwest::Method::GET,
        "/api/watchtogether/rooms/ZZZZZZ",
        &[],
    )
    .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, "etag"), None);
    server.stop().await;
}

/// A body over the 1 MiB limit on the StreamVault POST routes gets 413 in the reference's
/// `{"error": …}` shape, never axum's plain-text rejection.
#[tokio::test]
async fn oversized_bodies_get_a_json_413() {
    let server = TestServer::start(Backend::Sqlite).await;
    let big = format!("{{\"refresh_token\":\"{}\"}}", "x".repeat(1024 * 1024 + 16));
    for path in ["/auth/refresh", "/api/watchtogether/rooms"] {
        let r = common::post_oversized(
            server.addr,
            path,
            "application/json",
            big.clone().into_bytes(),
        )
        .await;
        assert_eq!(r.status, 413, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{path}"
        );
        assert_eq!(r.json["error"], "Request body too large", "{path}");
    }
}
