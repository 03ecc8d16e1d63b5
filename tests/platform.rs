//! The server as an operator sees it: zero-config start, configuration errors, the CLI,
//! OpenAPI, health, metrics, and the real Better Auth client.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{Child, binary, free_port};
use common::{Backend, TestServer, unique_email};
use serde_json::json;

#[test]
fn zero_config_start_answers_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = Instant::now();
    let _child = Child(
        Command::new(binary())
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/api/auth/ok");
    let answered = loop {
        if let Ok(body) = ureq_get(&url) {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no answer within 2 s of launch"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    assert_eq!(answered, r#"{"ok":true}"#);
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    eprintln!("zero-config start answered after {elapsed:?}");
    // Embedded defaults were created in the working directory.
    assert!(dir.path().join("data/watchpost.db").exists());
    let secret = std::fs::read_to_string(dir.path().join("data/secret")).unwrap();
    assert!(secret.len() >= 32);
}

/// Minimal blocking HTTP GET (the test must not depend on an async runtime for timing).
fn ureq_get(url: &str) -> Result<String, std::io::Error> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    Ok(body.to_string())
}

#[test]
fn invalid_configuration_stops_with_one_clear_line() {
    for (var, value) in [
        ("PORT", "not-a-port"),
        ("MEDIA_MODE", "p2p"),
        ("DATABASE_URL", "mysql://x/y"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(binary())
            .current_dir(dir.path())
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
        assert!(
            lines[0].contains(var) && lines[0].contains("expected"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Password hashing takes 32 MiB a time (scrypt as Better Auth does it). The binary hands
/// such blocks back to the system once a hash is done, so a burst of sign-ups leaves no
/// lasting footprint (glibc's default kept them: +330 MiB after 20 sign-ups; mimalloc, which
/// serves the binary's small blocks, kept +45 MiB for seconds or for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sign_ups_leaves_no_lasting_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Child(
        Command::new(binary())
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .env("AUTH_RATE_LIMIT_MAX", "1000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rss_kib(child.0.id());
    let sign_ups = (0..20).map(|i| {
        http.post(format!("{base}/api/auth/sign-up/email"))
            .header("origin", &base)
            .json(&json!({"email": unique_email(&format!("burst{i}")), "password": "password-123", "name": "Burst"}))
            .send()
    });
    for r in futures_util::future::join_all(sign_ups).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let after = rss_kib(child.0.id());
    eprintln!("RSS before {before} KiB, after 20 sign-ups {after} KiB");
    assert!(
        after < before + 24 * 1024,
        "20 sign-ups left {} MiB behind",
        (after - before) / 1024
    );
}

/// A Postgres password with `@` and `:` in it appears in no output, even when the database
/// cannot be reached and the server says so.
#[test]
fn a_database_password_never_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .current_dir(dir.path())
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://watch:p@ss:w0rd@127.0.0.1:1/cams",
        )
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.contains("127.0.0.1:1/cams"), "{output}");
    for secret in ["p@ss", "w0rd", "watch:", "p%40ss"] {
        assert!(!output.contains(secret), "{secret} in: {output}");
    }
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "auth-migrate"] {
        assert!(text.contains(cmd), "{cmd} missing from --help: {text}");
    }
}

#[test]
fn migrate_and_auth_migrate_commands_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .current_dir(dir.path())
            .env_clear()
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    let out = run(&["auth-migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("auth-migrate:"));
}

async fn auth_migrate_backfills_legacy_users(backend: Backend) {
    let s = TestServer::start(backend).await;
    let hash = watchpost::auth::password::better_auth_scrypt_hash(
        "old secret 1",
        "aabbccddeeff00112233445566778899",
    );
    let email = unique_email("legacy");
    let db = &s.state.db;
    macro_rules! exec {
        ($sql:expr $(, $arg:expr)*) => {
            match db {
                watchpost::db::Db::Sqlite(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
                watchpost::db::Db::Postgres(p) => { sqlx::query($sql)$(.bind($arg))*.execute(p).await.unwrap(); }
            }
        };
    }
    exec!(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, username TEXT, password TEXT)"
    );
    exec!(
        "INSERT INTO users (id, email, username, password) VALUES ('1', $1, 'grandma', $2)",
        email.to_uppercase(),
        hash.clone()
    );
    exec!(
        "INSERT INTO users (id, email, username, password) VALUES ('2', $1, NULL, NULL)",
        unique_email("nohash")
    );
    let report = watchpost::cli::auth_migrate::run(db).await.unwrap();
    assert_eq!(report.users_created, 2);
    assert_eq!(report.accounts_created, 1);
    assert_eq!(report.users_without_password, 1);
    // Idempotent.
    let again = watchpost::cli::auth_migrate::run(db).await.unwrap();
    assert_eq!((again.users_created, again.accounts_created), (0, 0));
    let r = s
        .post_json(
            "/api/auth/sign-in/email",
            json!({"email": email, "password": "old secret 1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["name"], "grandma");
}

/// With `METRICS_TOKEN`, `/metrics` answers only that bearer token (a clear 401 JSON
/// otherwise); `/healthz` stays open for load balancers.
async fn metrics_can_be_protected_with_a_token(backend: Backend) {
    let token = "metrics-token-0123456789";
    let s = TestServer::start_with(backend, &[("METRICS_TOKEN", token)]).await;
    s.get("/metrics").await.expect_error(401, "UNAUTHORIZED");
    s.get_bearer("/metrics", "metrics-token-wrong-56789")
        .await
        .expect_error(401, "UNAUTHORIZED");
    let r = s.get_bearer("/metrics", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("watchpost_media_publishers 0"),
        "{}",
        r.text
    );
    assert_eq!(s.get("/healthz").await.status, 200);
    // A token too short to be a secret is refused at start, by name.
    let mut vars = std::collections::HashMap::new();
    vars.insert("METRICS_TOKEN".to_string(), "short".to_string());
    let e = watchpost::config::Config::from_vars(&vars).unwrap_err();
    assert_eq!(e.var, "METRICS_TOKEN");
    assert!(!e.to_string().contains("short"), "{e}");
}

async fn healthz_and_metrics(backend: Backend) {
    let s = TestServer::start(backend).await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ok");
    assert_eq!(r.json["database"]["ok"], true);
    assert_eq!(
        r.json["database"]["backend"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(r.json["storage"]["ok"], true);
    assert_eq!(r.json["media"]["mode"], "single_server_sfu");
    s.get("/api/auth/ok").await;
    s.get("/api/auth/ok").await;
    let r = s.get("/metrics").await;
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(
        r.text.contains(
            r#"watchpost_http_requests_total{method="GET",route="/api/auth/ok",status="200"} 2"#
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains(
        r#"watchpost_http_request_duration_seconds_count{method="GET",route="/api/auth/ok"} 2"#
    ));
    assert!(r.text.contains("watchpost_media_publishers 0"));
    // The resource gauges the soak benchmark watches for leaks, with real values.
    let gauge = |name: &str| -> u64 {
        r.text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {}", r.text))
            .parse()
            .unwrap()
    };
    assert!(gauge("process_resident_memory_bytes") > 1 << 20);
    assert!(gauge("process_open_fds") >= 3);
    assert!(gauge("process_threads") >= 1);
    assert!(gauge("watchpost_runtime_alive_tasks") >= 1);
    let pool = gauge("watchpost_db_connections");
    assert!((1..=16).contains(&pool), "{pool}");
    assert!(gauge("watchpost_db_connections_idle") <= pool);
    assert_eq!(gauge("watchpost_realtime_connected_devices"), 0);
}

async fn openapi_is_valid_3_1_and_lists_every_route(backend: Backend) {
    let s = TestServer::start(backend).await;
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = r.json["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/auth/sign-up/email", "post"),
        ("/api/auth/sign-in/email", "post"),
        ("/api/auth/sign-out", "post"),
        ("/api/auth/get-session", "get"),
        ("/api/auth/ok", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/videos/upload-url", "post"),
        ("/videos/download-url", "get"),
        ("/videos", "get"),
        ("/videos", "delete"),
        ("/videos/{id}/complete", "post"),
        ("/storage/{bucket}/{key}", "get"),
        ("/storage/{bucket}/{key}", "put"),
        ("/admin", "get"),
        ("/admin/upload-url", "post"),
        ("/admin/objects", "get"),
        ("/admin/object", "delete"),
        ("/admin/users", "get"),
        ("/admin/devices", "get"),
        ("/admin/streams", "get"),
        ("/admin/recordings", "get"),
        ("/recordings", "get"),
        ("/recordings/{recordingId}", "get"),
        ("/recordings/{recordingId}", "delete"),
        (
            "/recordings/{recordingId}/segments/{seq}/download-url",
            "get",
        ),
        ("/devices/register", "post"),
        ("/devices", "get"),
        ("/devices/{deviceId}", "patch"),
        ("/devices/{deviceId}", "delete"),
        ("/devices/{deviceId}/heartbeat", "post"),
        ("/device-links", "post"),
        ("/device-links", "get"),
        ("/device-links/{linkId}", "delete"),
        ("/commands", "post"),
        ("/commands", "get"),
        ("/commands/{commandId}/ack", "post"),
        ("/events/motion/start", "post"),
        ("/events/{eventId}/motion/end", "post"),
        ("/events", "get"),
        ("/streams/request", "post"),
        ("/streams/{streamSessionId}/accept", "post"),
        ("/streams/{streamSessionId}/publish-credentials", "get"),
        ("/streams/{streamSessionId}/subscribe-credentials", "get"),
        ("/streams/{streamSessionId}/playback-token", "get"),
        ("/streams/{streamSessionId}/end", "post"),
        ("/streams/me/list", "get"),
        ("/sim/mobile-sim.html", "get"),
        ("/sim/socket.io.min.js", "get"),
        ("/watch/{streamSessionId}", "get"),
        ("/streams/{streamSessionId}/sfu/session", "get"),
        ("/streams/{streamSessionId}/sfu/publish-transport", "post"),
        ("/streams/{streamSessionId}/sfu/subscribe-transport", "post"),
        ("/streams/{streamSessionId}/sfu/trickle", "post"),
        ("/streams/{streamSessionId}/sfu/close", "post"),
        ("/whip/{streamSessionId}", "post"),
        ("/whep/{streamSessionId}", "post"),
        ("/whip/{streamSessionId}/{resourceId}", "patch"),
        ("/whip/{streamSessionId}/{resourceId}", "delete"),
        ("/whep/{streamSessionId}/{resourceId}", "patch"),
        ("/whep/{streamSessionId}/{resourceId}", "delete"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the spec"
        );
    }
    // Validate with an independent OpenAPI 3.1 validator.
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, &r.text).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,sys; from openapi_spec_validator import validate; from openapi_spec_validator.validation import OpenAPIV31SpecValidator; validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator); print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "OpenAPI validation failed (scripts/setup.sh test installs openapi-spec-validator): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = s.get("/docs/").await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("swagger"), "Swagger UI page expected");
}

async fn real_better_auth_client(backend: Backend) {
    let s = TestServer::start(backend).await;
    assert!(
        std::path::Path::new(&common::node_script("node_modules/better-auth")).exists(),
        "tests/node/node_modules is missing: scripts/setup.sh test installs it"
    );
    common::run_node(
        "better-auth-client.mjs",
        &[s.base.as_str()],
        "better-auth client",
    )
    .await;
}

both_backends!(
    auth_migrate_backfills_legacy_users,
    healthz_and_metrics,
    metrics_can_be_protected_with_a_token,
    openapi_is_valid_3_1_and_lists_every_route,
    real_better_auth_client,
);

/// An idle server; `tests/media.rs` sends SIGTERM in the middle of a live stream.
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(binary())
        .current_dir(dir.path())
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("MEDIA_UDP_PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/auth/ok");
    let started = Instant::now();
    while ureq_get(&url).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit status {status:?}; stderr: {stderr}");
    assert!(stderr.contains("shut down cleanly"), "{stderr}");
}

/// Data at rest: a data directory the server creates is 0700 and its generated secret
/// 0600; a secret file found readable by others is made 0600 again at start.
#[tokio::test]
async fn the_data_directory_and_the_secret_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new").join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let vars: std::collections::HashMap<String, String> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".to_string()),
        ("WATCHPOST_DATA_DIR", data.display().to_string()),
        (
            "MEDIA_RECORDINGS_DIR",
            dir.path().join("rec").display().to_string(),
        ),
        ("MEDIA_UDP_PORT", "0".to_string()),
        ("MEDIA_PUBLIC_IP", "127.0.0.1".to_string()),
        ("RECORDING_MODE", "off".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s = TestServer::start_vars(vars, dir).await;
    assert_eq!(mode(&data), 0o700);
    let secret = data.join("secret");
    assert_eq!(mode(&secret), 0o600);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = s.restart().await;
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(s.get("/healthz").await.status, 200);
    s.stop().await;
}

/// `/healthz` is unauthenticated: it checks the store at most every few seconds (it writes
/// a probe object to do so), and a failure says which component without the backend's own
/// error text (paths, hosts), which goes to the log.
#[tokio::test]
async fn healthz_neither_writes_on_every_call_nor_shows_backend_errors() {
    let s = TestServer::start(Backend::Sqlite).await;
    let tmp = s.dir.path().join("data").join("objects").join(".tmp");
    assert_eq!(s.get("/healthz").await.status, 200);
    let modified = || std::fs::metadata(&tmp).unwrap().modified().unwrap();
    let after_first = modified();
    for _ in 0..20 {
        assert_eq!(s.get("/healthz").await.status, 200);
    }
    assert_eq!(
        modified(),
        after_first,
        "the store was written again within the probe interval"
    );

    // Break the embedded store (its bucket directory becomes a file) and let the last
    // result expire: the answer is a 503 naming the store, not the OS error.
    let bucket = s.dir.path().join("data").join("objects").join("watchpost");
    let _ = std::fs::remove_dir_all(&bucket);
    std::fs::write(&bucket, b"not a directory").unwrap();
    *s.state.storage_probe.0.lock().unwrap() = None;
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["status"], "degraded");
    assert_eq!(r.json["storage"]["ok"], false);
    let error = r.json["storage"]["error"].as_str().unwrap();
    assert!(
        !error.contains("os error") && !error.contains("/"),
        "{error}"
    );
}

/// The standalone pages (`/sim`, `/watch/{id}`, `/admin`) run inline scripts, so they do
/// not get the web app's script policy, but no other site may frame them (a framed admin
/// page is one click from a delete), and their URLs never leave in a `Referer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_pages_cannot_be_framed() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "s3cret-pass"),
        ],
    )
    .await;
    for path in ["/sim/mobile-sim.html", "/watch/some-session", "/admin"] {
        let r = s
            .http
            .get(s.url(path))
            .basic_auth("root", Some("s3cret-pass"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with("text/html"), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp:?}"
            );
        }
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
    }
}
