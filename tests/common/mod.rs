//! Test harness: starts the real server on an ephemeral loopback port against a fresh
//! SQLite file or a fresh PostgreSQL database, and drives it over HTTP.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod household;
pub mod process;
pub mod sio;

use std::collections::HashMap;
use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use watchpost::{AppState, Config, Server};

pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The embedded store under the data dir.
    Local,
    /// The s3s-fs server scripts/test.sh starts (fresh bucket per test).
    S3,
}

/// Environment for a fresh bucket on the test S3 server. Never silently skipped.
pub fn s3_vars() -> Vec<(String, String)> {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run the suite with scripts/test.sh, which starts s3s-fs")
        })
    };
    vec![
        ("MINIO_ENDPOINT".into(), get("WATCHPOST_TEST_S3_ENDPOINT")),
        ("MINIO_PORT".into(), get("WATCHPOST_TEST_S3_PORT")),
        (
            "MINIO_ACCESS_KEY".into(),
            get("WATCHPOST_TEST_S3_ACCESS_KEY"),
        ),
        (
            "MINIO_SECRET_KEY".into(),
            get("WATCHPOST_TEST_S3_SECRET_KEY"),
        ),
        ("MINIO_USE_SSL".into(), "false".into()),
        (
            "MINIO_BUCKET".into(),
            format!(
                "wp-{}",
                watchpost::auth::tokens::generate_id().to_lowercase()
            ),
        ),
    ]
}

/// Generates one `#[tokio::test]` per (database, object store) pair for an
/// `async fn name(backend: Backend, store: Store)`.
#[macro_export]
macro_rules! all_stores {
    ($($name:ident),* $(,)?) => {
        mod local_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite, $crate::common::Store::Local).await;
                }
            )*
        }
        mod s3_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite, $crate::common::Store::S3).await;
                }
            )*
        }
        mod local_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres, $crate::common::Store::Local).await;
                }
            )*
        }
        mod s3_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres, $crate::common::Store::S3).await;
                }
            )*
        }
    };
}

/// Generates one `#[tokio::test]` per backend for an `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A fresh PostgreSQL database on the server named by `WATCHPOST_TEST_DATABASE_URL`
/// (scripts/test.sh starts a local one). Never silently skipped.
pub async fn fresh_postgres_url() -> String {
    let admin_url = std::env::var("WATCHPOST_TEST_DATABASE_URL").expect(
        "WATCHPOST_TEST_DATABASE_URL is not set: run the suite with scripts/test.sh, which starts a local PostgreSQL",
    );
    let name = format!(
        "wp_test_{}",
        watchpost::auth::tokens::generate_id().to_lowercase()
    );
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').expect("URL has a database path");
    format!("{base}/{name}")
}

/// An HTTP client for one server (in-process or a child process): the request helpers
/// the tests share. A [`TestServer`] dereferences to its `Api`.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct TestServer {
    /// The configuration it was started with (for restarts).
    pub vars: HashMap<String, String>,
    pub addr: SocketAddr,
    pub api: Api,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_store(backend: Backend, store: Store, extra: &[(&str, &str)]) -> TestServer {
        let mut vars: Vec<(String, String)> = if store == Store::S3 {
            s3_vars()
        } else {
            Vec::new()
        };
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_with(backend, &refs).await
    }

    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("HOST".into(), "127.0.0.1".into());
        vars.insert("PORT".into(), "0".into());
        vars.insert(
            "WATCHPOST_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        );
        vars.insert(
            "MEDIA_RECORDINGS_DIR".into(),
            dir.path().join("rec").display().to_string(),
        );
        vars.insert("BETTER_AUTH_SECRET".into(), SECRET.into());
        // Each test server gets its own ephemeral media port on loopback.
        vars.insert("MEDIA_UDP_PORT".into(), "0".into());
        vars.insert("MEDIA_PUBLIC_IP".into(), "127.0.0.1".into());
        // Recording (on by default in the product) has its own tests, which turn it on;
        // elsewhere it would only add GStreamer work to media tests about other things.
        vars.insert("RECORDING_MODE".into(), "off".into());
        // Tests sign many users up from one address; the limiter has its own test.
        vars.insert("AUTH_RATE_LIMIT_MAX".into(), "100000".into());
        if backend == Backend::Postgres {
            vars.insert("DATABASE_URL".into(), fresh_postgres_url().await);
        }
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        Self::start_vars(vars, dir).await
    }

    pub async fn start_vars(vars: HashMap<String, String>, dir: tempfile::TempDir) -> TestServer {
        let config = Config::from_vars(&vars).expect("valid test config");
        let mut server = Self::start_config(config, dir).await;
        server.vars = vars;
        server
    }

    /// Stops the server and starts a new process-equivalent on the same database and data
    /// directory (a fresh port).
    pub async fn restart(mut self) -> TestServer {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        let vars = std::mem::take(&mut self.vars);
        let dir = tempfile::tempdir().expect("temp dir");
        let old = std::mem::replace(&mut self.dir, dir);
        Self::start_vars(vars, old).await
    }

    /// Stops the server and starts it again on the same address, database and data
    /// directory: to a browser that was using it, an outage and a recovery.
    pub async fn restart_on_same_port(mut self) -> TestServer {
        self.vars
            .insert("PORT".into(), self.addr.port().to_string());
        self.restart().await
    }

    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> TestServer {
        let server = Server::build(config).await.expect("server starts");
        let addr = server.local_addr();
        let state = server.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            vars: HashMap::new(),
            addr,
            api: Api::new(&format!("http://127.0.0.1:{}", addr.port())),
            state,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        Reply::from(
            self.http
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        Reply::from(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A request with a bearer token (user session or device token).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// Registers a device; returns (device id, device token).
    pub async fn register_device(
        &self,
        user_token: &str,
        name: &str,
        role: &str,
    ) -> (String, String) {
        let r = self
            .call(
                reqwest::Method::POST,
                "/devices/register",
                user_token,
                Some(serde_json::json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(r.status, 201, "register failed: {}", r.text);
        (
            r.json["device"]["id"].as_str().unwrap().to_string(),
            r.json["deviceToken"].as_str().unwrap().to_string(),
        )
    }

    pub async fn link(&self, user_token: &str, camera: &str, client: &str) -> String {
        let r = self
            .call(
                reqwest::Method::POST,
                "/device-links",
                user_token,
                Some(serde_json::json!({"cameraDeviceId": camera, "clientDeviceId": client})),
            )
            .await;
        assert_eq!(r.status, 201, "link failed: {}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    }

    /// Connects a Socket.IO client with `token` as `auth.token`.
    pub async fn socket(&self, token: &str) -> sio::SioClient {
        sio::connect(&self.base, serde_json::json!({"token": token}))
            .await
            .expect("socket connects")
    }

    /// Signs a new user up and returns (token, user JSON).
    pub async fn sign_up(&self, email: &str, password: &str) -> (String, Value) {
        let r = self
            .post_json(
                "/api/auth/sign-up/email",
                serde_json::json!({"name": "Test User", "email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status, 200, "sign-up failed: {}", r.text);
        (
            r.json["token"].as_str().unwrap().to_string(),
            r.json["user"].clone(),
        )
    }
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Reply::from_parts(status, headers, text)
    }

    /// A reply from its parts; `json` is `Null` when the body is not JSON.
    fn from_parts(status: u16, headers: HeaderMap, text: String) -> Reply {
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// Asserts the API's error shape and returns the code.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.json["code"], code,
            "unexpected code; body: {}",
            self.text
        );
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {}",
            self.text
        );
    }
}

/// POSTs a body larger than the server takes, as a client that reads the reply while it
/// is still sending: the server answers 413 once the body passes its limit and closes the
/// connection without reading the rest, so the rest of the write may fail (EPIPE or a
/// reset). reqwest gives up on the whole request when its body write fails, even though
/// the 413 is already on its way, which made such tests race; here the write goes on in
/// its own task, its failure ignored, and the reply is read to the end.
pub async fn post_oversized(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
        write
    });
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let read_all = async {
        // A reset after the reply (the server closed with unread body bytes) ends it too.
        while let Ok(n) = read.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read_all)
        .await
        .expect("the server answered an oversized body within 20 s");
    // Not awaited to completion: the write may still be blocked on a full window.
    writer.abort();
    parse_http_reply(&raw)
}

/// An HTTP/1.1 reply as read off the wire (`Content-Length` or chunked body).
fn parse_http_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete reply head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII reply head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let rest = &raw[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        let mut at = rest;
        loop {
            let line_end = at
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&at[..line_end]).unwrap().trim(), 16)
                    .expect("hex chunk size");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&at[line_end + 2..line_end + 2 + size]);
            at = &at[line_end + 2 + size + 2..];
        }
        body
    } else {
        let len = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(rest.len());
        assert!(rest.len() >= len, "reply body cut short");
        rest[..len].to_vec()
    };
    Reply::from_parts(
        status,
        headers,
        String::from_utf8(body).expect("UTF-8 reply body"),
    )
}

/// Path of a Node test script under `tests/node/`. Resolved at run time (cargo sets
/// `CARGO_MANIFEST_DIR` for test runs), so a test binary reused from a shared target
/// directory never runs another checkout's scripts.
pub fn node_script(name: &str) -> String {
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    format!("{root}/tests/node/{name}")
}

/// Runs `tests/node/<name>` with `args`, fails the test with both output streams if the
/// script fails, and returns (and prints) its stdout. `what` names the check in the failure.
pub async fn run_node(name: &str, args: &[&str], what: &str) -> String {
    let out = tokio::process::Command::new("node")
        .arg(node_script(name))
        .args(args)
        .output()
        .await
        .expect("node runs (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    stdout
}

pub fn unique_email(tag: &str) -> String {
    format!(
        "{tag}-{}@example.com",
        watchpost::auth::tokens::generate_id().to_lowercase()
    )
}
