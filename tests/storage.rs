//! Object storage, videos and the admin dashboard, on the embedded store and on a real
//! S3-compatible server (s3s-fs, which verifies SigV4 signatures and expiry), with SQLite
//! and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, Reply, Store, TestServer, unique_email};
use serde_json::{Value, json};

/// Registers a camera for the user and returns its id (videos belong to a device).
async fn device(s: &TestServer, token: &str) -> String {
    let r = authed(
        s,
        reqwest::Method::POST,
        "/devices/register",
        token,
        Some(json!({"name": "Porch", "role": "camera"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["device"]["id"].as_str().unwrap().to_string()
}

async fn upload_url(s: &TestServer, token: &str, body: Value) -> Reply {
    Reply::from(
        s.http
            .post(s.url("/videos/upload-url"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn put_bytes(s: &TestServer, url: &str, content_type: &str, bytes: Vec<u8>) -> u16 {
    s.http
        .put(url)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn authed(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = s.http.request(method, s.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    Reply::from(req.send().await.unwrap()).await
}

fn sample_bytes() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Uploads through the presigned URL and confirms; returns the object key.
async fn upload(s: &TestServer, token: &str, name: &str, bytes: Vec<u8>) -> String {
    let dev = device(s, token).await;
    let r = upload_url(
        s,
        token,
        json!({"fileName": name, "deviceId": dev, "contentType": "video/mp4"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = r.json["uploadUrl"].as_str().unwrap().to_string();
    assert_eq!(
        put_bytes(s, &url, "video/mp4", bytes).await,
        200,
        "PUT to {url}"
    );
    let id = r.json["video"]["id"].as_str().unwrap();
    let done = authed(
        s,
        reqwest::Method::POST,
        &format!("/videos/{id}/complete"),
        token,
        None,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text);
    r.json["objectKey"].as_str().unwrap().to_string()
}

async fn upload_download_round_trip(backend: Backend, store: Store) {
    let s = TestServer::start_store(backend, store, &[]).await;
    let (token, user) = s.sign_up(&unique_email("up"), "password-1").await;
    let dev = device(&s, &token).await;
    let bytes = sample_bytes();

    let r = upload_url(&s, &token, json!({"fileName": "clip.mp4", "deviceId": dev, "contentType": "video/mp4", "prefix": "clips/2026"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = r.json["objectKey"].as_str().unwrap().to_string();
    let uid = user["id"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("users/{uid}/clips/2026/")),
        "{key}"
    );
    assert!(key.ends_with("-clip.mp4"));
    assert_eq!(r.json["video"]["status"], "pending");
    assert_eq!(r.json["video"]["deviceId"], dev.as_str());
    let id = r.json["video"]["id"].as_str().unwrap().to_string();

    // Completing before anything was uploaded is a conflict.
    authed(
        &s,
        reqwest::Method::POST,
        &format!("/videos/{id}/complete"),
        &token,
        None,
    )
    .await
    .expect_error(409, "UPLOAD_NOT_FOUND");

    let url = r.json["uploadUrl"].as_str().unwrap();
    assert_eq!(put_bytes(&s, url, "video/mp4", bytes.clone()).await, 200);
    let done = authed(
        &s,
        reqwest::Method::POST,
        &format!("/videos/{id}/complete"),
        &token,
        None,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["status"], "uploaded");
    assert_eq!(done.json["size"], bytes.len() as u64);

    let r = authed(
        &s,
        reqwest::Method::GET,
        &format!("/videos/download-url?objectKey={key}"),
        &token,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = s
        .http
        .get(r.json["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    if store == Store::Local {
        // The embedded store never lets a browser render stored bytes as a page.
        let header = |name: &str| {
            got.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        let disposition = header("content-disposition").unwrap_or_default();
        assert!(
            disposition.starts_with("attachment") && disposition.contains("-clip.mp4"),
            "{disposition}"
        );
    }
    assert_eq!(
        got.bytes().await.unwrap().to_vec(),
        bytes,
        "downloaded bytes differ"
    );

    let list = authed(&s, reqwest::Method::GET, "/videos", &token, None).await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.json["items"][0]["objectKey"], key.as_str());
    assert_eq!(list.json["items"][0]["size"], bytes.len() as u64);

    let health = s.get("/healthz").await;
    assert_eq!(health.json["storage"]["ok"], true);
    assert_eq!(
        health.json["storage"]["backend"],
        if store == Store::S3 { "s3" } else { "local" }
    );
}

async fn users_only_see_their_own_videos(backend: Backend, store: Store) {
    let s = TestServer::start_store(backend, store, &[]).await;
    let (alice, _) = s.sign_up(&unique_email("alice"), "password-1").await;
    let (bob, _) = s.sign_up(&unique_email("bob"), "password-1").await;
    let key = upload(&s, &alice, "a.mp4", b"alice's video".to_vec()).await;
    let other = upload(&s, &alice, "b.mp4", b"second".to_vec()).await;

    let list = authed(&s, reqwest::Method::GET, "/videos", &bob, None).await;
    assert_eq!(list.json["items"], json!([]));
    authed(
        &s,
        reqwest::Method::GET,
        &format!("/videos/download-url?objectKey={key}"),
        &bob,
        None,
    )
    .await
    .expect_error(404, "NOT_FOUND");
    authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &bob,
        Some(json!({"objectKey": key})),
    )
    .await
    .expect_error(404, "NOT_FOUND");

    // Pagination: newest first, one per page.
    let page1 = authed(&s, reqwest::Method::GET, "/videos?limit=1", &alice, None).await;
    assert_eq!(page1.json["items"][0]["objectKey"], other.as_str());
    let cursor = page1.json["nextCursor"].as_str().unwrap();
    let page2 = authed(
        &s,
        reqwest::Method::GET,
        &format!("/videos?limit=1&cursor={cursor}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(page2.json["items"][0]["objectKey"], key.as_str());
    assert!(page2.json.get("nextCursor").is_none(), "{}", page2.text);
    authed(&s, reqwest::Method::GET, "/videos?limit=abc", &alice, None)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    authed(&s, reqwest::Method::GET, "/videos?cursor=!!!", &alice, None)
        .await
        .expect_error(400, "INVALID_CURSOR");
    // Well-formed base64 of "123|\0": a NUL in the id (PostgreSQL refuses it in text).
    authed(
        &s,
        reqwest::Method::GET,
        "/videos?cursor=MTIzfAA",
        &alice,
        None,
    )
    .await
    .expect_error(400, "INVALID_CURSOR");

    // Alice's object survived Bob's attempts; deleting is idempotent.
    let r = authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &alice,
        Some(json!({"objectKey": key})),
    )
    .await;
    assert_eq!(r.json, json!({"deleted": true}));
    let r = authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &alice,
        Some(json!({"objectKey": key})),
    )
    .await;
    assert_eq!(r.json, json!({"deleted": false}));
    // Deletes racing for one video: exactly one of them deleted it.
    let raced = upload(&s, &alice, "raced.mp4", b"raced".to_vec()).await;
    let answers = futures_util::future::join_all((0..8).map(|_| {
        authed(
            &s,
            reqwest::Method::DELETE,
            "/videos",
            &alice,
            Some(json!({"objectKey": raced})),
        )
    }))
    .await;
    let deleted = answers
        .iter()
        .filter(|r| r.json == json!({"deleted": true}))
        .count();
    assert_eq!(
        deleted,
        1,
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    authed(
        &s,
        reqwest::Method::GET,
        &format!("/videos/download-url?objectKey={key}"),
        &alice,
        None,
    )
    .await
    .expect_error(404, "NOT_FOUND");
    assert!(
        s.state.storage.head(&key).await.unwrap().is_none(),
        "object still stored"
    );

    // Unauthenticated callers get 401.
    s.get("/videos").await.expect_error(401, "UNAUTHORIZED");
}

async fn hostile_names_are_neutralised(backend: Backend, store: Store) {
    let s = TestServer::start_store(backend, store, &[]).await;
    let (token, user) = s.sign_up(&unique_email("evil"), "password-1").await;
    let dev = device(&s, &token).await;
    let ns = format!("users/{}/", user["id"].as_str().unwrap());
    for (name, prefix, suffix) in [
        ("../../etc/passwd", None, "-passwd"),
        ("/etc/shadow", None, "-shadow"),
        ("..", None, "-file"),
        ("x.mp4", Some("../../users/someone-else"), "-x.mp4"),
        ("C:\\Windows\\win.ini", Some("/abs/olute"), "-win.ini"),
    ] {
        let mut body = json!({"fileName": name, "deviceId": dev});
        if let Some(p) = prefix {
            body["prefix"] = json!(p);
        }
        let r = upload_url(&s, &token, body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        let key = r.json["objectKey"].as_str().unwrap();
        assert!(
            key.starts_with(&ns),
            "{name:?} escaped the namespace: {key}"
        );
        assert!(key.ends_with(suffix), "{name:?} → {key}");
        assert!(!key.contains(".."), "{key}");
        assert_eq!(
            put_bytes(
                &s,
                r.json["uploadUrl"].as_str().unwrap(),
                "application/octet-stream",
                b"x".to_vec()
            )
            .await,
            200
        );
    }
    if store == Store::Local {
        // Nothing was written outside the object root.
        let root = s.dir.path().join("data/objects");
        assert!(!s.dir.path().join("data/etc").exists());
        for entry in walk(&root) {
            assert!(entry.starts_with(&root));
        }
    }
    // A NUL byte anywhere in a JSON body is refused outright (PostgreSQL cannot store it).
    upload_url(
        &s,
        &token,
        json!({"fileName": "a\u{0}b.mp4", "deviceId": dev}),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // Invalid input is a clear 400.
    upload_url(
        &s,
        &token,
        json!({"fileName": "a.mp4", "deviceId": "not-my-device"}),
    )
    .await
    .expect_error(404, "DEVICE_NOT_FOUND");
    upload_url(&s, &token, json!({"deviceId": dev}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    upload_url(
        &s,
        &token,
        json!({"fileName": "a", "deviceId": dev, "contentType": "bad\r\ntype"}),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    upload_url(
        &s,
        &token,
        json!({"fileName": "a", "deviceId": dev, "surprise": 1}),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // Only media: a page or a script stored here would be served from this origin.
    for ct in ["text/html", "application/javascript", "image/svg+xml"] {
        upload_url(
            &s,
            &token,
            json!({"fileName": "a", "deviceId": dev, "contentType": ct}),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    }
    let r = upload_url(
        &s,
        &token,
        json!({"fileName": "snap.jpg", "deviceId": dev, "contentType": "image/jpeg"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Flips one character of the signature in a presigned URL.
fn tamper(url: &str) -> String {
    let idx = url.find("ignature=").expect("URL carries a signature") + "ignature=".len();
    let mut chars: Vec<char> = url.chars().collect();
    chars[idx] = if chars[idx] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

async fn tampered_and_expired_urls_are_refused(backend: Backend, store: Store) {
    let s = TestServer::start_store(backend, store, &[("PRESIGN_TTL_SECS", "1")]).await;
    let (token, _) = s.sign_up(&unique_email("tamper"), "password-1").await;
    let dev = device(&s, &token).await;
    let key = upload(&s, &token, "ok.mp4", b"original".to_vec()).await;

    let r = upload_url(
        &s,
        &token,
        json!({"fileName": "t.mp4", "deviceId": dev, "contentType": "video/mp4"}),
    )
    .await;
    let put_url = r.json["uploadUrl"].as_str().unwrap().to_string();
    let status = put_bytes(&s, &tamper(&put_url), "video/mp4", b"forged".to_vec()).await;
    assert_eq!(status, 403, "tampered PUT accepted");

    let r = authed(
        &s,
        reqwest::Method::GET,
        &format!("/videos/download-url?objectKey={key}"),
        &token,
        None,
    )
    .await;
    let get_url = r.json["downloadUrl"].as_str().unwrap().to_string();
    let status = s
        .http
        .get(tamper(&get_url))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403, "tampered GET accepted");
    // The untampered URLs are fine while fresh.
    assert_eq!(s.http.get(&get_url).send().await.unwrap().status(), 200);

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let status = s.http.get(&get_url).send().await.unwrap().status().as_u16();
    assert_eq!(status, 403, "expired GET accepted");
    let status = put_bytes(&s, &put_url, "video/mp4", b"late".to_vec()).await;
    assert_eq!(status, 403, "expired PUT accepted");
}

async fn admin_dashboard_requires_credentials(backend: Backend, store: Store) {
    // Disabled when unset.
    let s = TestServer::start_store(backend, store, &[]).await;
    s.get("/admin").await.expect_error(404, "NOT_FOUND");
    s.get("/admin/objects").await.expect_error(404, "NOT_FOUND");
    drop(s);

    let s = TestServer::start_store(
        backend,
        store,
        &[
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "s3cret-pass"),
        ],
    )
    .await;
    let r = s.get("/admin").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    for (u, p) in [("root", "wrong"), ("admin", "s3cret-pass"), ("root", "")] {
        let r = Reply::from(
            s.http
                .get(s.url("/admin/objects"))
                .basic_auth(u, Some(p))
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.expect_error(401, "UNAUTHORIZED");
    }
    let admin = |m: reqwest::Method, path: &str| {
        s.http
            .request(m, s.url(path))
            .basic_auth("root", Some("s3cret-pass"))
    };
    let page = Reply::from(admin(reqwest::Method::GET, "/admin").send().await.unwrap()).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text.contains("Watchpost admin"));

    let r = Reply::from(
        admin(reqwest::Method::POST, "/admin/upload-url")
            .json(&json!({"fileName": "report.txt", "contentType": "text/plain"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = r.json["objectKey"].as_str().unwrap().to_string();
    assert_eq!(
        put_bytes(
            &s,
            r.json["uploadUrl"].as_str().unwrap(),
            "text/plain",
            b"hello".to_vec()
        )
        .await,
        200
    );
    // A user's upload is listed too: the admin sees the whole bucket.
    let (token, _) = s.sign_up(&unique_email("adm"), "password-1").await;
    let user_key = upload(&s, &token, "u.mp4", b"user bytes".to_vec()).await;

    let list = Reply::from(
        admin(reqwest::Method::GET, "/admin/objects")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let items = list.json["items"].as_array().unwrap();
    let keys: Vec<&str> = items.iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert!(
        keys.contains(&key.as_str()) && keys.contains(&user_key.as_str()),
        "{keys:?}"
    );
    let item = items.iter().find(|o| o["key"] == key.as_str()).unwrap();
    assert_eq!(item["size"], 5);
    // A page size it cannot serve is refused, as on every other list.
    for limit in ["0", "1001", "-1", "abc"] {
        Reply::from(
            admin(
                reqwest::Method::GET,
                &format!("/admin/objects?limit={limit}"),
            )
            .send()
            .await
            .unwrap(),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    }
    assert!(item["lastModified"].is_string());
    let fetched = s
        .http
        .get(item["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"hello");

    let users = Reply::from(
        admin(reqwest::Method::GET, "/admin/users")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(users.json.as_array().unwrap().len(), 1);

    let r = Reply::from(
        admin(reqwest::Method::DELETE, "/admin/object")
            .json(&json!({"objectKey": user_key}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.json, json!({"deleted": true}));
    // The user's video row went with the object.
    let list = authed(&s, reqwest::Method::GET, "/videos", &token, None).await;
    assert_eq!(list.json["items"], json!([]));
    let r = Reply::from(
        admin(reqwest::Method::DELETE, "/admin/object")
            .json(&json!({"objectKey": "../escape"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(400, "INVALID_OBJECT_KEY");
    // A browser on another site cannot ride the Basic credentials (CSRF).
    let r = Reply::from(
        admin(reqwest::Method::DELETE, "/admin/object")
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"objectKey": key}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(403, "INVALID_ORIGIN");
    assert!(s.state.storage.head(&key).await.unwrap().is_some());
}

/// A PUT that may be refused: the server answers before reading the body, so the client
/// may see the connection close while still sending instead of the status (`None`).
async fn put_outcome(_s: &TestServer, url: &str, len: usize) -> Option<u16> {
    // Its own connection: one the server cut must not go back to the shared pool.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .put(url)
        .header("content-type", "video/mp4")
        .body(vec![7u8; len])
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Asks for an upload URL for a video clip, of `size` bytes if given.
async fn ask_upload(s: &TestServer, token: &str, device: &str, size: Option<u64>) -> Reply {
    let mut body = json!({"fileName": "clip.mp4", "deviceId": device, "contentType": "video/mp4"});
    if let Some(n) = size {
        body["size"] = json!(n);
    }
    upload_url(s, token, body).await
}

async fn complete_upload(s: &TestServer, token: &str, id: String) -> Reply {
    authed(
        s,
        reqwest::Method::POST,
        &format!("/videos/{id}/complete"),
        token,
        None,
    )
    .await
}

/// Moves a video's upload back in time to `at`, as if its URL had been issued then.
async fn issued_at(s: &TestServer, id: &str, at: chrono::DateTime<chrono::Utc>) {
    let sql = "UPDATE videos SET created_at = $1 WHERE id = $2";
    let updated = match &s.state.db {
        watchpost::db::Db::Sqlite(p) => sqlx::query(sql)
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        watchpost::db::Db::Postgres(p) => sqlx::query(sql)
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(updated.unwrap(), 1);
}

/// `STORAGE_QUOTA_BYTES_PER_USER`: a declared size is bound into the URL and reserved;
/// an undeclared upload gets what is left (the embedded store refuses more, S3 is checked
/// when the upload is confirmed); nobody else's quota is touched.
async fn uploads_are_held_to_the_storage_quota(backend: Backend, store: Store) {
    let s = TestServer::start_store(
        backend,
        store,
        &[("STORAGE_QUOTA_BYTES_PER_USER", "1000000")],
    )
    .await;
    let (token, _) = s.sign_up(&unique_email("quota"), "password-1").await;
    let dev = device(&s, &token).await;
    let ask = |size: Option<u64>| ask_upload(&s, &token, &dev, size);
    let complete = |id: String| complete_upload(&s, &token, id);
    let bytes = |n: usize| vec![7u8; n];

    ask(Some(2_000_000))
        .await
        .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
    ask(Some(6 << 30))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let r = upload_url(
        &s,
        &token,
        json!({"fileName": "x.mp4", "deviceId": dev, "size": -1}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Declared: exactly that many bytes go in, not one more.
    let r = ask(Some(600_000)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = r.json["uploadUrl"].as_str().unwrap().to_string();
    let id = r.json["video"]["id"].as_str().unwrap().to_string();
    let refused = put_outcome(&s, &url, 600_001).await;
    assert!(
        matches!(refused, None | Some(400 | 403 | 413)),
        "oversized PUT got {refused:?}"
    );
    // The bound is signed: raising it breaks the URL.
    if url.contains("&max=") {
        let raised = url.replace("&max=600000", "&max=900000");
        let status = put_outcome(&s, &raised, 700_000).await;
        assert!(matches!(status, None | Some(403)), "{status:?}");
    }
    assert_eq!(put_bytes(&s, &url, "video/mp4", bytes(600_000)).await, 200);
    let done = complete(id).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["size"], 600_000);

    // 400,000 bytes are left.
    ask(Some(600_000))
        .await
        .expect_error(413, "STORAGE_QUOTA_EXCEEDED");

    // Undeclared: the remainder is the limit.
    let r = ask(None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = r.json["uploadUrl"].as_str().unwrap().to_string();
    let id = r.json["video"]["id"].as_str().unwrap().to_string();
    let key = r.json["objectKey"].as_str().unwrap().to_string();
    match store {
        Store::Local => {
            let status = put_outcome(&s, &url, 500_000).await;
            assert!(matches!(status, None | Some(413)), "{status:?}");
        }
        Store::S3 => {
            // S3 cannot bound an undeclared PUT; confirming it is where the quota holds.
            assert_eq!(put_bytes(&s, &url, "video/mp4", bytes(500_000)).await, 200);
            complete(id.clone())
                .await
                .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
            assert!(
                s.state.storage.head(&key).await.unwrap().is_none(),
                "object kept"
            );
            let list = authed(&s, reqwest::Method::GET, "/videos", &token, None).await;
            assert_eq!(
                list.json["items"].as_array().unwrap().len(),
                1,
                "{}",
                list.text
            );
        }
    }

    // A pending declared upload reserves its bytes until its URL expires.
    let r = ask(Some(300_000)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    ask(Some(200_000))
        .await
        .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
    assert_eq!(ask(Some(100_000)).await.status, 200);

    // Another account has its own quota.
    let (other, _) = s.sign_up(&unique_email("quota-other"), "password-1").await;
    let other_dev = device(&s, &other).await;
    let r = upload_url(
        &s,
        &other,
        json!({"fileName": "a.mp4", "deviceId": other_dev, "size": 900_000}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// An upload that was put but never completed still takes its bytes from the quota, until
/// the janitor deletes it (an hour after its URL expired); two completions checked at once
/// cannot both fit where only one does; and a URL cannot put an object back once its
/// upload is completed or deleted (the embedded store refuses; on S3 the URL lives on, and
/// deleting its key again removes what it put).
async fn open_uploads_hold_their_bytes_and_closed_ones_take_no_more(
    backend: Backend,
    store: Store,
) {
    let s = TestServer::start_store(
        backend,
        store,
        &[("STORAGE_QUOTA_BYTES_PER_USER", "1000000")],
    )
    .await;
    let (token, _) = s.sign_up(&unique_email("open"), "password-1").await;
    let dev = device(&s, &token).await;
    let ask = |size: Option<u64>| ask_upload(&s, &token, &dev, size);
    let complete = |id: String| complete_upload(&s, &token, id);
    let opened = |r: Reply| {
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.json["uploadUrl"].as_str().unwrap().to_string(),
            r.json["video"]["id"].as_str().unwrap().to_string(),
            r.json["objectKey"].as_str().unwrap().to_string(),
        )
    };

    // Two undeclared uploads, each given the whole quota, each filled to 600,000 bytes:
    // completed at once, exactly one fits.
    let (url_a, id_a, key_a) = opened(ask(None).await);
    let (url_b, id_b, key_b) = opened(ask(None).await);
    assert_eq!(
        put_bytes(&s, &url_a, "video/mp4", vec![1; 600_000]).await,
        200
    );
    assert_eq!(
        put_bytes(&s, &url_b, "video/mp4", vec![2; 600_000]).await,
        200
    );
    // Put but not completed, it counts already.
    ask(Some(500_000))
        .await
        .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
    let (a, b) = tokio::join!(complete(id_a.clone()), complete(id_b.clone()));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 413], "{} / {}", a.text, b.text);
    let (kept_url, kept_key, gone_key) = if a.status == 200 {
        (&url_a, &key_a, &key_b)
    } else {
        (&url_b, &key_b, &key_a)
    };
    assert!(s.state.storage.head(gone_key).await.unwrap().is_none());

    // The completed upload's URL is still within its lifetime.
    let again = put_bytes(&s, kept_url, "video/mp4", vec![3; 900_000]).await;
    match store {
        Store::Local => assert_eq!(again, 409, "a completed video was overwritten"),
        Store::S3 => assert_eq!(again, 200),
    }
    let r = authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &token,
        Some(json!({"objectKey": kept_key})),
    )
    .await;
    assert_eq!(r.json["deleted"], true, "{}", r.text);
    let again = put_bytes(&s, kept_url, "video/mp4", vec![4; 100]).await;
    match store {
        Store::Local => assert_eq!(again, 409, "a deleted video came back"),
        Store::S3 => {
            assert_eq!(again, 200);
            // Deleting the key again removes what the live URL put back.
            let r = authed(
                &s,
                reqwest::Method::DELETE,
                "/videos",
                &token,
                Some(json!({"objectKey": kept_key})),
            )
            .await;
            assert_eq!(r.json["deleted"], false, "{}", r.text);
        }
    }
    assert!(s.state.storage.head(kept_key).await.unwrap().is_none());

    // Put and never completed: an hour after its URL expired, the janitor deletes it.
    let (url_c, id_c, key_c) = opened(ask(None).await);
    assert_eq!(
        put_bytes(&s, &url_c, "video/mp4", vec![5; 700_000]).await,
        200
    );
    ask(Some(400_000))
        .await
        .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
    let ttl = s.state.presign_ttl();
    let swept = || watchpost::videos::service::sweep_abandoned(&s.state.db, &s.state.storage, ttl);
    assert_eq!(swept().await.unwrap(), 0, "swept while its URL was valid");
    let aged = watchpost::time::now() - chrono::Duration::hours(3);
    issued_at(&s, &id_c, aged).await;
    assert_eq!(swept().await.unwrap(), 1);
    assert!(s.state.storage.head(&key_c).await.unwrap().is_none());
    complete(id_c).await.expect_error(404, "NOT_FOUND");
    assert_eq!(ask(Some(900_000)).await.status, 200);

    // Completed small, then written over through its live URL (S3 only: the embedded store
    // refuses): once the URL has expired, the janitor records the size that is stored.
    let (url_d, id_d, _) = opened(ask(None).await);
    assert_eq!(put_bytes(&s, &url_d, "video/mp4", vec![6; 100]).await, 200);
    let done = complete(id_d.clone()).await;
    assert_eq!(done.json["size"], 100, "{}", done.text);
    let over = put_bytes(&s, &url_d, "video/mp4", vec![7; 800_000]).await;
    assert_eq!(over, if store == Store::S3 { 200 } else { 409 });
    let settle = || watchpost::videos::service::settle_sizes(&s.state.db, &s.state.storage, ttl);
    assert_eq!(
        settle().await.unwrap(),
        0,
        "settled while its URL was valid"
    );
    let aged = watchpost::time::now() - chrono::Duration::hours(1);
    issued_at(&s, &id_d, aged).await;
    let changed = settle().await.unwrap();
    let list = authed(&s, reqwest::Method::GET, "/videos", &token, None).await;
    let size = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id_d.as_str())
        .unwrap()["size"]
        .clone();
    match store {
        Store::S3 => {
            assert_eq!((changed, size), (1, json!(800_000)));
            ask(Some(1))
                .await
                .expect_error(413, "STORAGE_QUOTA_EXCEEDED");
        }
        Store::Local => {
            assert_eq!((changed, size), (0, json!(100)));
            assert_eq!(ask(Some(1)).await.status, 200);
        }
    }
    assert_eq!(settle().await.unwrap(), 0, "settled twice");
}

/// An account has at most `MAX_OPEN_UPLOADS` uploads open; completing or deleting one
/// makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_uploads_are_capped_per_account() {
    let s = TestServer::start_store(Backend::Sqlite, Store::Local, &[]).await;
    let (token, _) = s.sign_up(&unique_email("cap"), "password-1").await;
    let dev = device(&s, &token).await;
    let body = json!({"fileName": "clip.mp4", "deviceId": dev, "size": 10});
    let mut first = None;
    for _ in 0..watchpost::videos::service::MAX_OPEN_UPLOADS {
        let r = upload_url(&s, &token, body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        first.get_or_insert(r.json["objectKey"].as_str().unwrap().to_string());
    }
    upload_url(&s, &token, body.clone())
        .await
        .expect_error(409, "TOO_MANY_OPEN_UPLOADS");
    let r = authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &token,
        Some(json!({"objectKey": first.unwrap()})),
    )
    .await;
    assert_eq!(r.json["deleted"], true, "{}", r.text);
    assert_eq!(upload_url(&s, &token, body).await.status, 200);
    // Another account is not held by this one's.
    let (other, _) = s.sign_up(&unique_email("cap-other"), "password-1").await;
    let other_dev = device(&s, &other).await;
    let r = upload_url(
        &s,
        &other,
        json!({"fileName": "a.mp4", "deviceId": other_dev}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Keys the embedded store's file tree cannot hold as an object (a folder of objects, a
/// path through an object, an over-long segment) are "no such object" or an invalid key,
/// never a 500, on every route that reaches the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_no_object_file_are_never_a_server_error() {
    use watchpost::storage::SizeBound;
    let s = TestServer::start_store(Backend::Sqlite, Store::Local, &[]).await;
    let ttl = Duration::from_secs(60);
    let store = &s.state.storage;
    let put = store
        .presign_put("house/clips/a.mp4", None, SizeBound::Any, ttl)
        .await
        .unwrap();
    assert_eq!(
        put_bytes(&s, &put.url, "video/mp4", b"hello".to_vec()).await,
        200
    );

    // A folder of objects.
    let folder = store.presign_get("house/clips", ttl).await.unwrap();
    let r = Reply::from(s.http.get(&folder.url).send().await.unwrap()).await;
    r.expect_error(404, "NOT_FOUND");
    assert!(store.head("house/clips").await.unwrap().is_none());
    store.delete("house/clips").await.unwrap();
    // A path through an object, for reading and for writing.
    let through = store
        .presign_get("house/clips/a.mp4/b.mp4", ttl)
        .await
        .unwrap();
    let r = Reply::from(s.http.get(&through.url).send().await.unwrap()).await;
    r.expect_error(404, "NOT_FOUND");
    assert!(
        store
            .head("house/clips/a.mp4/b.mp4")
            .await
            .unwrap()
            .is_none()
    );
    let put = store
        .presign_put("house/clips/a.mp4/b.mp4", None, SizeBound::Any, ttl)
        .await
        .unwrap();
    let r = Reply::from(s.http.put(&put.url).body("x").send().await.unwrap()).await;
    r.expect_error(400, "INVALID_OBJECT_KEY");
    // A segment longer than a file name may be.
    let long = format!("house/{}.mp4", "a".repeat(300));
    assert!(store.head(&long).await.unwrap().is_none());
    store.delete(&long).await.unwrap();
    // The object itself is untouched, and no temporary file was left behind.
    assert_eq!(
        store.head("house/clips/a.mp4").await.unwrap().unwrap().size,
        5
    );
    let tmp = s.dir.path().join("data").join("objects").join(".tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// Downloads from the embedded store answer ranges as RFC 9110 asks: one satisfiable range
/// is a 206, a well-formed range past the end a 416 naming the size, and what is not
/// understood (another unit, bad syntax, several ranges) is ignored for the whole object.
/// Each answer carries the object's validators, and a resumed download whose `If-Range`
/// names an older version gets the whole new version rather than a splice of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_answer_ranges_and_carry_validators() {
    use watchpost::storage::SizeBound;
    let s = TestServer::start_store(Backend::Sqlite, Store::Local, &[]).await;
    let ttl = Duration::from_secs(60);
    let store = &s.state.storage;
    let key = "house/clips/range.mp4";
    let put = store
        .presign_put(key, None, SizeBound::Any, ttl)
        .await
        .unwrap();
    let first: Vec<u8> = (0..100u8).collect();
    let stored = s
        .http
        .put(&put.url)
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    let put_etag = stored.headers()["etag"].to_str().unwrap().to_string();
    let get = store.presign_get(key, ttl).await.unwrap();
    let fetch = |range: Option<&str>, if_range: Option<&str>| {
        let mut req = s.http.get(&get.url);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        if let Some(c) = if_range {
            req = req.header("if-range", c);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
            let (etag, modified, content_range) = (
                header("etag"),
                header("last-modified"),
                header("content-range"),
            );
            (
                status,
                etag,
                modified,
                content_range,
                r.bytes().await.unwrap().to_vec(),
            )
        }
    };

    let (status, etag, modified, _, body) = fetch(None, None).await;
    assert_eq!((status, body), (200, first.clone()));
    let etag = etag.expect("an ETag");
    let modified = modified.expect("a Last-Modified");
    assert_eq!(etag, put_etag, "the PUT's ETag is the one a GET carries");
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");

    let (status, _, _, content_range, body) = fetch(Some("bytes=10-19"), None).await;
    assert_eq!((status, body), (206, first[10..20].to_vec()));
    assert_eq!(content_range.as_deref(), Some("bytes 10-19/100"));
    let (status, _, _, content_range, body) =
        fetch(Some("bytes=90-99999999999999999999999"), None).await;
    assert_eq!((status, body), (206, first[90..].to_vec()));
    assert_eq!(content_range.as_deref(), Some("bytes 90-99/100"));
    for unsatisfiable in ["bytes=100-", "bytes=-0"] {
        let (status, _, _, content_range, _) = fetch(Some(unsatisfiable), None).await;
        assert_eq!(status, 416, "{unsatisfiable}");
        assert_eq!(content_range.as_deref(), Some("bytes */100"));
    }
    for ignored in [
        "items=0-5",
        "bytes=abc",
        "bytes=5-1",
        "bytes=0-0,-1",
        "bytes=-",
    ] {
        let (status, _, _, content_range, body) = fetch(Some(ignored), None).await;
        assert_eq!((status, body.len()), (200, 100), "{ignored}");
        assert_eq!(content_range, None, "{ignored}");
    }
    // If-Range naming this version keeps the range: by its ETag at once, by its date once
    // that date's second has passed (two versions within one second share it).
    let (status, ..) = fetch(Some("bytes=0-0"), Some(&etag)).await;
    assert_eq!(status, 206);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, ..) = fetch(Some("bytes=0-0"), Some(&modified)).await;
    assert_eq!(status, 206);

    // A new version under the same key: a resume that names the old one gets it all.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let put = store
        .presign_put(key, None, SizeBound::Any, ttl)
        .await
        .unwrap();
    let second: Vec<u8> = (0..100u8).rev().collect();
    assert_eq!(
        put_bytes(&s, &put.url, "video/mp4", second.clone()).await,
        200
    );
    let (status, new_etag, _, content_range, body) = fetch(Some("bytes=50-"), Some(&etag)).await;
    assert_eq!((status, body), (200, second.clone()));
    assert_eq!(content_range, None);
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
    let (status, _, _, _, body) = fetch(Some("bytes=50-"), new_etag.as_deref()).await;
    assert_eq!((status, body), (206, second[50..].to_vec()));
}

/// An upload deleted while its PUT's body is still streaming in: the PUT is refused when
/// it ends (409 `UPLOAD_CLOSED`) and nothing is stored, so no object outlives its row
/// (where the quota and the sweep would never see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_deleted_mid_put_stores_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_store(Backend::Sqlite, Store::Local, &[]).await;
    let (token, _) = s.sign_up(&unique_email("mid-put"), "password-1").await;
    let dev = device(&s, &token).await;
    let r = upload_url(
        &s,
        &token,
        json!({"fileName": "clip.mp4", "deviceId": dev, "contentType": "video/mp4"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = r.json["objectKey"].as_str().unwrap().to_string();
    let url = url::Url::parse(r.json["uploadUrl"].as_str().unwrap()).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());

    let mut put = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: video/mp4\r\n\
         Content-Length: 2000\r\nConnection: close\r\n\r\n",
        s.addr
    );
    put.write_all(head.as_bytes()).await.unwrap();
    put.write_all(&[7u8; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = authed(
        &s,
        reqwest::Method::DELETE,
        "/videos",
        &token,
        Some(json!({"objectKey": key})),
    )
    .await;
    assert_eq!(deleted.json, json!({"deleted": true}));
    put.write_all(&[7u8; 1000]).await.unwrap();
    let mut answer = String::new();
    put.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("UPLOAD_CLOSED"), "{answer}");
    assert!(s.state.storage.head(&key).await.unwrap().is_none());
    let tmp = s.dir.path().join("data").join("objects").join(".tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// Temporary upload files nobody has written to for an hour (a crash, a client gone
/// mid-upload) are removed; fresh ones are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upload_files_are_swept() {
    let s = TestServer::start_store(Backend::Sqlite, Store::Local, &[]).await;
    let tmp = s.dir.path().join("data").join("objects").join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stale = tmp.join("stale-upload");
    let fresh = tmp.join("fresh-upload");
    std::fs::write(&stale, b"half an upload").unwrap();
    std::fs::write(&fresh, b"in progress").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    // The janitor's first round runs at start.
    let s = s.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stale.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!stale.exists(), "stale temp file kept");
    assert!(fresh.exists(), "fresh temp file removed");
    drop(s);
}

all_stores!(
    uploads_are_held_to_the_storage_quota,
    open_uploads_hold_their_bytes_and_closed_ones_take_no_more,
    upload_download_round_trip,
    users_only_see_their_own_videos,
    hostile_names_are_neutralised,
    tampered_and_expired_urls_are_refused,
    admin_dashboard_requires_credentials,
);

#[tokio::test]
async fn unreachable_s3_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vars: std::collections::HashMap<String, String> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".to_string()),
        ("WATCHPOST_DATA_DIR", dir.path().display().to_string()),
        ("MEDIA_UDP_PORT", "0".to_string()),
        ("MINIO_ENDPOINT", "127.0.0.1".to_string()),
        ("MINIO_PORT", port.to_string()),
        ("MINIO_ACCESS_KEY", "x".to_string()),
        ("MINIO_SECRET_KEY", "y".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = watchpost::Config::from_vars(&vars).unwrap();
    let err = match watchpost::Server::build(config).await {
        Ok(_) => panic!("server started without reachable storage"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("cannot reach object storage at http://127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_page_works_in_chromium() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "s3cret-pass"),
        ],
    )
    .await;
    let (token, _) = s.sign_up(&unique_email("ui"), "password-1").await;
    device(&s, &token).await;
    common::run_node(
        "admin-ui.mjs",
        &[s.base.as_str(), "root", "s3cret-pass", "Porch"],
        "admin UI test",
    )
    .await;
    // The page really stored and then deleted the object.
    let left = s
        .state
        .storage
        .list(Some("admin/"), None, 10)
        .await
        .unwrap();
    assert!(left.objects.is_empty(), "object not deleted");
}
