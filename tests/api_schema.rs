//! Generated API tests: schemathesis (PyPI, installed by `scripts/setup.sh test` into
//! `$HOME/.cache/watchpost/venv`) runs every check it has (`--checks all`: no 5xx,
//! responses and status codes as documented, schema-valid requests accepted and invalid
//! ones refused, deleted resources gone, …) against `/openapi.json` of the real server.
//!
//! Every security scheme has real credentials: a user session (bearer), a camera and a
//! client device linked to each other, with stream sessions (live, pending), commands and
//! motion events whose ids schemathesis draws from dictionaries, the stream's publish and
//! subscribe media tokens for WHIP/WHEP, and the operator's Basic credentials. Each
//! operation is called with the credential meant for it (tests/schemathesis/hooks.py):
//! first the devices' and media tokens' operations, then the user's and the operator's
//! (which may delete the devices). The seed is fixed.
//!
//! The suite's pass generates about 3,400 cases in about 70 s (≥ 1,000 is asserted). The
//! long run (≥ 10,000 cases: about 11,500 in about 5.5 min) raises the examples per
//! operation: `SCHEMATHESIS_MAX_EXAMPLES=150 cargo test --test api_schema schemathesis -- --nocapture`.
//! Google sign-in and TMDB are configured against a stub on loopback, so nothing leaves
//! the machine. `SCHEMATHESIS_KEEP_REPORTS=1` keeps schemathesis's NDJSON reports.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{Backend, TestServer, unique_email};
use reqwest::Method;
use serde_json::{Value, json};

/// Fixed, so that a failure is reproducible and the pass is the same every time.
const SEED: &str = "20261129";
/// Examples per operation in the suite's pass.
const DEFAULT_MAX_EXAMPLES: u32 = 25;
/// The suite's pass must generate at least this many test cases.
const MIN_CASES: usize = 1_000;
const ADMIN_USER: &str = "admin";
/// The operations called with a device token or a media token (the rest take the user's
/// session, or Basic for `/admin`); tests/schemathesis/hooks.py picks the same way.
const DEVICE_OPERATIONS: &str = r"^(POST /commands|POST /commands/\{commandId\}/ack|POST /events/motion/start|POST /events/\{eventId\}/motion/end|POST /streams/request|POST /streams/\{streamSessionId\}/accept|GET /streams/\{streamSessionId\}/publish-credentials|GET /streams/\{streamSessionId\}/sfu/session|POST /streams/\{streamSessionId\}/sfu/.*|GET /streams/me/list|GET /devices/me|POST /devices/\{deviceId\}/heartbeat|[A-Z]+ /whip/.*|[A-Z]+ /whep/.*)$";
const ADMIN_PASSWORD: &str = "schemathesis-admin-password";

fn venv() -> PathBuf {
    match std::env::var_os("WATCHPOST_SCHEMATHESIS_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/watchpost/venv")
        }
    }
}

/// Answers every request with `200 {}`: stands in for TMDB and Google's endpoints.
async fn stub_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({})) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// What schemathesis gets to work with.
struct Fixtures {
    session: String,
    camera: String,
    camera_token: String,
    client: String,
    client_token: String,
    streams: Vec<String>,
    commands: Vec<String>,
    events: Vec<String>,
    publish_token: String,
    subscribe_token: String,
}

async fn create_fixtures(s: &TestServer) -> Fixtures {
    let (session, _) = s
        .sign_up(&unique_email("schemathesis"), "schemathesis-password")
        .await;
    let (camera, camera_token) = s.register_device(&session, "Porch", "camera").await;
    let (client, client_token) = s.register_device(&session, "Phone", "client").await;
    // Linked, so the client may command and watch the camera. (The link's id is not
    // offered to schemathesis: deleting it would turn the viewer's routes into 403s.)
    s.link(&session, &camera, &client).await;
    let mut streams = Vec::new();
    for i in 0..4 {
        let r = s
            .call(
                Method::POST,
                "/streams/request",
                &client_token,
                Some(json!({"cameraDeviceId": camera})),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 200,
            "stream request: {}",
            r.text
        );
        let id = r.json["id"].as_str().unwrap().to_string();
        // The last one stays pending (requested, not accepted).
        if i < 3 {
            let r = s
                .call(
                    Method::POST,
                    &format!("/streams/{id}/accept"),
                    &camera_token,
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "accept: {}", r.text);
        }
        streams.push(id);
    }
    let r = s
        .get_bearer(
            &format!("/streams/{}/publish-credentials", streams[0]),
            &camera_token,
        )
        .await;
    assert_eq!(r.status, 200, "publish credentials: {}", r.text);
    let publish_token = r.json["token"].as_str().unwrap().to_string();
    let r = s
        .get_bearer(
            &format!("/streams/{}/subscribe-credentials", streams[0]),
            &client_token,
        )
        .await;
    assert_eq!(r.status, 200, "subscribe credentials: {}", r.text);
    let subscribe_token = r.json["token"].as_str().unwrap().to_string();
    let mut commands = Vec::new();
    for _ in 0..2 {
        let r = s
            .call(
                Method::POST,
                "/commands",
                &client_token,
                Some(json!({"targetDeviceId": camera, "type": "take_snapshot"})),
            )
            .await;
        assert_eq!(r.status, 201, "command: {}", r.text);
        commands.push(r.json["id"].as_str().unwrap().to_string());
    }
    let mut events = Vec::new();
    for _ in 0..2 {
        let r = s
            .call(
                Method::POST,
                "/events/motion/start",
                &camera_token,
                Some(json!({"score": 0.5})),
            )
            .await;
        assert_eq!(r.status, 201, "motion: {}", r.text);
        events.push(r.json["id"].as_str().unwrap().to_string());
    }
    Fixtures {
        session,
        camera,
        camera_token,
        client,
        client_token,
        streams,
        commands,
        events,
        publish_token,
        subscribe_token,
    }
}

fn toml_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| Value::from(*v).to_string()).collect();
    format!("[{}]", quoted.join(", "))
}

/// A cursor the list routes accept (`base64url("<millis>|<id>")`): the schema cannot say
/// what an opaque cursor looks like, so schemathesis gets a valid one.
fn valid_cursor() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1767225600000|~")
}

/// `schemathesis.toml`: the ids schemathesis draws from, and what it must expect.
fn config(f: &Fixtures) -> String {
    let q = toml_list;
    let mut c = format!(
        r#"
[dictionaries.device]
values = {devices}
[dictionaries.camera]
values = {camera}
[dictionaries.client]
values = {client}
[dictionaries.stream]
values = {streams}
[dictionaries.command]
values = {commands}
[dictionaries.event]
values = {events}

[parameters]
"query.cursor" = "{cursor}"
"path.streamSessionId" = {{ dictionary = "stream", probability = 0.6 }}
"path.commandId" = {{ dictionary = "command", probability = 0.6 }}
"path.eventId" = {{ dictionary = "event", probability = 0.6 }}
"query.cameraDeviceId" = {{ dictionary = "camera", probability = 0.5 }}
"query.deviceId" = {{ dictionary = "device", probability = 0.5 }}
"body.cameraDeviceId" = {{ dictionary = "camera", probability = 0.6 }}
"body.clientDeviceId" = {{ dictionary = "client", probability = 0.6 }}
"body.targetDeviceId" = {{ dictionary = "camera", probability = 0.6 }}
"body.sourceDeviceId" = {{ dictionary = "client", probability = 0.6 }}
"#,
        devices = q(&[&f.camera, &f.client]),
        camera = q(&[&f.camera]),
        client = q(&[&f.client]),
        streams = q(&f.streams.iter().map(String::as_str).collect::<Vec<_>>()),
        commands = q(&f.commands.iter().map(String::as_str).collect::<Vec<_>>()),
        events = q(&f.events.iter().map(String::as_str).collect::<Vec<_>>()),
        cursor = valid_cursor(),
    );
    // A heartbeat names the caller's own device.
    c.push_str(
        "\n[[operations]]\ninclude-path-regex = '^/devices/[^/]+/heartbeat$'\n[operations.parameters]\n\"path.deviceId\" = { dictionary = \"camera\", probability = 0.7 }\n",
    );
    // Refusals the schema cannot announce, so they are expected even of valid requests
    // (every other operation must accept whatever its schema allows):
    // - the SDP inside WHIP/WHEP and SFU transport bodies is refused for what its text says
    //   (INVALID_SDP, NO_USABLE_MEDIA, SDP_TOO_LARGE): SDP is not something JSON Schema
    //   describes; so are trickled SDP fragments and candidates (their fields: an
    //   address, a port, a type), which a pattern only sketches;
    // - Better Auth's rules for accounts (its email syntax, passwords of 8-128 UTF-16 units,
    //   names of at most 256 bytes, an email already taken: 422);
    // - StreamVault's reference routes take "required" to mean truthy (`""`, `0` are missing);
    // - an upload URL reserves its size against the account's quota (413 once it is spent),
    //   and JSON Schema calls `1.0` an integer where serde wants `1`;
    // - `GET /api/tmdb` (no path) is always the reference's 400 "Missing TMDB API path".
    for (regex, statuses) in [
        ("^/(whip|whep)/[^/]+$", r#""400", "413", "422""#),
        ("^/(whip|whep)/[^/]+/[^/]+$", r#""400", "413""#),
        ("^/streams/[^/]+/sfu/trickle$", r#""400""#),
        (
            "^/streams/[^/]+/sfu/(publish|subscribe)-transport$",
            r#""400", "413", "422""#,
        ),
        (
            "^/(api/auth/sign-(up|in)/email|admin/users)$",
            r#""400", "422""#,
        ),
        ("^/(api/watchtogether/rooms|auth/refresh)$", r#""400""#),
        ("^/videos/upload-url$", r#""400", "413""#),
        ("^/api/tmdb$", r#""400""#),
    ] {
        c.push_str(&format!(
            "\n[[operations]]\ninclude-path-regex = '{regex}'\n[operations.checks.positive_data_acceptance]\nexpected-statuses = [\"2xx\", \"3xx\", \"401\", \"403\", \"404\", \"409\", \"429\", {statuses}]\n"
        ));
    }
    // The TMDB proxy forwards any path the reference would (the pattern is a guide, not the
    // rule), and the stub answers them all: a path that breaks the pattern may be a 200.
    c.push_str(
        "\n[[operations]]\ninclude-path-regex = '^/api/tmdb/'\n[operations.checks.negative_data_rejection]\nexpected-statuses = [\"200\", \"304\", \"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \"415\", \"422\", \"428\", \"429\", \"5xx\"]\n",
    );
    c
}

/// Test cases schemathesis generated, from its summary (`  731 generated, 731 passed, …`).
fn generated_cases(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|line| line.trim().split_once(" generated"))
        .filter_map(|(n, _)| n.parse::<usize>().ok())
        .sum()
}

/// Requests schemathesis made, from its NDJSON report.
fn count_requests(report_dir: &Path) -> usize {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(report_dir) else {
        return 0;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(interactions) = event
                .pointer("/ScenarioFinished/recorder/interactions")
                .and_then(Value::as_object)
            {
                total += interactions.len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failures() {
    let bin = venv().join("bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh test (it installs schemathesis)",
        bin.display()
    );
    let max_examples: u32 = std::env::var("SCHEMATHESIS_MAX_EXAMPLES")
        .ok()
        .map(|v| v.parse().expect("SCHEMATHESIS_MAX_EXAMPLES is a number"))
        .unwrap_or(DEFAULT_MAX_EXAMPLES);
    let stub = stub_upstream().await;
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("ADMIN_USERNAME", ADMIN_USER),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            // Every generated sign-in and sign-up is an attempt; 429s would hide the rest.
            ("AUTH_RATE_LIMIT_MAX", "1000000"),
            ("OAUTH_RATE_LIMIT_MAX", "1000000"),
            (
                "GOOGLE_CLIENT_ID",
                "schemathesis.apps.googleusercontent.com",
            ),
            ("GOOGLE_CLIENT_SECRET", "schemathesis-google-secret"),
            ("GOOGLE_AUTHORIZE_URL", &format!("{stub}/authorize")),
            ("GOOGLE_TOKEN_URL", &format!("{stub}/token")),
            ("GOOGLE_USERINFO_URL", &format!("{stub}/userinfo")),
            ("TMDB_API_KEY", "schemathesis-tmdb-key"),
            ("TMDB_API_BASE", &format!("{stub}/3")),
        ],
    )
    .await;
    let fixtures = create_fixtures(&server).await;
    let work = tempfile::tempdir().unwrap();
    // Which operation gets which credential is decided in tests/schemathesis/hooks.py.
    let credentials_path = work.path().join("credentials.json");
    let credentials = json!({
        "session": fixtures.session,
        "camera": fixtures.camera_token,
        "client": fixtures.client_token,
        "publish": fixtures.publish_token,
        "subscribe": fixtures.subscribe_token,
        "admin": format!("{ADMIN_USER}:{ADMIN_PASSWORD}"),
    });
    std::fs::write(&credentials_path, credentials.to_string()).unwrap();
    let config_path = work.path().join("schemathesis.toml");
    std::fs::write(&config_path, config(&fixtures)).unwrap();
    let hooks_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");

    // Devices' and media tokens' operations first, while the devices, their link and
    // the streams are as created; then the user's and the operator's, which may disable or
    // delete the devices.
    let mut failures = String::new();
    let mut total = 0;
    let mut generated = 0;
    let started = Instant::now();
    for (name, filter) in [
        ("device", "--include-name-regex"),
        ("user", "--exclude-name-regex"),
    ] {
        let report_dir = work.path().join(format!("report-{name}"));
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("SCHEMATHESIS_HOOKS", "hooks")
            .env("PYTHONPATH", &hooks_dir)
            .env("WATCHPOST_SCHEMATHESIS_CREDENTIALS", &credentials_path)
            .env("NO_COLOR", "1")
            .current_dir(work.path())
            .arg("--config-file")
            .arg(&config_path)
            .arg("run")
            .arg(format!("{}/openapi.json", server.base))
            .args([filter, DEVICE_OPERATIONS])
            // A WHIP/WHEP resource's id is only in the `Location` header of the POST that
            // made it; the stateful phase's inferred link passes the session id as the
            // resource id, which is rightly a 404 (see tests/media.rs). The other stateful
            // checks, `use_after_free` included, still run on them.
            .args(if name == "device" {
                &["--exclude-checks", "ensure_resource_availability"][..]
            } else {
                &[][..]
            })
            .args(["--checks", "all"])
            .args(["--max-examples", &max_examples.to_string()])
            .args(["--seed", SEED])
            // One worker: with two, hypothesis's `ast.parse` of filter lambdas races in
            // CPython 3.11 ("AST constructor recursion depth mismatch"), a flaky error.
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            // The hooks set each operation's credential; generated ones would only reach
            // the 401s.
            .args(["--generation-with-security-parameters", "false"])
            // Signing out would end the session every other operation uses.
            .args(["--exclude-path", "/api/auth/sign-out"])
            .args(["--no-color", "--output-truncate", "false"])
            .args(["--report", "ndjson", "--report-dir"])
            .arg(&report_dir);
        let pass_started = Instant::now();
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("schemathesis runs");
        let requests = count_requests(&report_dir);
        let cases = generated_cases(&String::from_utf8_lossy(&output.stdout));
        total += requests;
        generated += cases;
        println!(
            "schemathesis ({name} operations): {cases} cases, {requests} requests in {:.0?}",
            pass_started.elapsed()
        );
        if !output.status.success() {
            failures.push_str(&format!(
                "schemathesis ({name} operations) reported failures (exit {:?}):\n{}\n{}\n",
                output.status.code(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    let elapsed = started.elapsed();
    if std::env::var_os("SCHEMATHESIS_KEEP_REPORTS").is_some() {
        println!("reports kept in {}", work.keep().display());
    }
    println!(
        "schemathesis: {generated} cases ({total} requests), {max_examples} examples per operation, {:.0?}",
        elapsed
    );
    assert!(failures.is_empty(), "{failures}");
    assert!(
        generated >= MIN_CASES || max_examples < DEFAULT_MAX_EXAMPLES,
        "only {generated} cases were generated (at least {MIN_CASES} expected)"
    );
    server.stop().await;
}

/// Found by schemathesis: `DELETE /admin/object` with a key the embedded store cannot hold
/// as a file (a segment over 255 bytes) answered 500; so did a key naming one of its
/// folders or running through an object. There is no such object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_delete_of_a_key_that_is_no_object_is_not_a_server_error() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("ADMIN_USERNAME", ADMIN_USER),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await;
    let (session, user) = server
        .sign_up(&unique_email("admin-delete"), "schemathesis-password")
        .await;
    let (camera, _) = server.register_device(&session, "Porch", "camera").await;
    let r = server
        .call(
            Method::POST,
            "/videos/upload-url",
            &session,
            Some(json!({"fileName": "clip.mp4", "deviceId": camera, "contentType": "video/mp4"})),
        )
        .await;
    assert_eq!(r.status, 200, "upload url: {}", r.text);
    let key = r.json["objectKey"].as_str().unwrap().to_string();
    let put = server
        .http
        .put(r.json["uploadUrl"].as_str().unwrap())
        .header("content-type", "video/mp4")
        .body(vec![1u8; 64])
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "upload: {}", put.status());
    let user_id = user["id"].as_str().unwrap();
    for bad in [
        "users".to_string(),
        format!("users/{user_id}"),
        format!("{key}/inside"),
        ".tmp".to_string(),
        "0".repeat(1024),
        format!("a/{}/b", "x".repeat(300)),
    ] {
        let r = server
            .http
            .delete(server.url("/admin/object"))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .json(&json!({"objectKey": bad}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{bad}: {text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["deleted"],
            false,
            "{bad}"
        );
    }
    // The object itself is still there, and deleting it works.
    let r = server
        .http
        .delete(server.url("/admin/object"))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .json(&json!({"objectKey": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
}
