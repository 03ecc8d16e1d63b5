//! Faults a self-hosted server meets: its database going away under traffic, and clients
//! whose network vanishes without a goodbye.

mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::{Backend, TestServer, unique_email};
use serde_json::json;

/// PostgreSQL (behind a proxy the test can stop) goes away for 20 s while clients keep
/// asking: every request fails fast with a 503 `DATABASE_UNAVAILABLE`, `/healthz` says the
/// database is down, nothing answers 500 or panics, and service comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_fast_with_503_and_service_resumes() {
    let direct = common::fresh_postgres_url().await;
    // postgres://user@127.0.0.1:<port>/<db>
    let (head, tail) = direct.split_once("127.0.0.1:").unwrap();
    let (port, db) = tail.split_once('/').unwrap();
    let proxy = FaultProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let url = format!("{head}127.0.0.1:{}/{db}", proxy.port);
    let s = TestServer::start_with(Backend::Sqlite, &[("DATABASE_URL", &url)]).await;
    let (token, _) = s.sign_up(&unique_email("outage"), "password-1").await;
    let register = |name: String| {
        s.http
            .post(s.url("/devices/register"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "role": "camera"}))
            .send()
    };
    assert_eq!(register("before".into()).await.unwrap().status(), 201);

    proxy.down();
    let outage = Instant::now();
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while outage.elapsed() < Duration::from_secs(20) {
        let started = Instant::now();
        let (list, created, health) = tokio::join!(
            s.http.get(s.url("/devices")).bearer_auth(&token).send(),
            register(format!("during-{answered}")),
            s.http.get(s.url("/healthz")).send(),
        );
        slowest = slowest.max(started.elapsed());
        for r in [list.unwrap(), created.unwrap()] {
            assert_eq!(r.status(), 503, "during the outage");
            assert!(r.headers().contains_key("retry-after"));
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "DATABASE_UNAVAILABLE", "{body}");
        }
        let health = health.unwrap();
        assert_eq!(health.status(), 503);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["database"]["ok"], false, "{body}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Fail fast: no request waits longer than the pool's 3 s acquire limit (plus slack).
    assert!(
        slowest < Duration::from_secs(5),
        "slowest answer {slowest:?}"
    );
    assert!(answered >= 4, "only {answered} rounds in 20 s");
    eprintln!("postgres outage: {answered} rounds of 3 requests, slowest answer {slowest:?}");

    proxy.up();
    let back = Instant::now();
    loop {
        let r = register("after".into()).await.unwrap();
        if r.status() == 201 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "service did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("postgres back: serving again after {:?}", back.elapsed());
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Nothing acknowledged was lost, and nothing refused was half-written.
    let r = s
        .http
        .get(s.url("/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    let mut names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["after", "before"], "{body}");
}

/// The S3 server (behind a proxy the test can stop) goes away for 20 s: the video routes
/// that need it answer 503 `STORAGE_UNAVAILABLE` fast, those that do not keep working,
/// `/healthz` reports the store down, and everything comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_fails_fast_with_503_and_service_resumes() {
    let mut vars = common::s3_vars();
    let port = vars
        .iter()
        .find(|(k, _)| k == "MINIO_PORT")
        .unwrap()
        .1
        .clone();
    let proxy = FaultProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    for (k, v) in vars.iter_mut() {
        if k == "MINIO_PORT" {
            *v = proxy.port.to_string();
        }
    }
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = TestServer::start_with(Backend::Sqlite, &refs).await;
    let (token, _) = s.sign_up(&unique_email("s3-outage"), "password-1").await;
    let r = s
        .http
        .post(s.url("/devices/register"))
        .bearer_auth(&token)
        .json(&json!({"name": "Porch", "role": "camera"}))
        .send()
        .await
        .unwrap();
    let device: serde_json::Value = r.json().await.unwrap();
    let device_id = device["device"]["id"].as_str().unwrap().to_string();
    let upload = |name: &str| {
        s.http
            .post(s.url("/videos/upload-url"))
            .bearer_auth(&token)
            .json(&json!({"fileName": name, "deviceId": device_id, "contentType": "video/mp4", "size": 5}))
            .send()
    };
    let r: serde_json::Value = upload("a.mp4").await.unwrap().json().await.unwrap();
    let put = s
        .http
        .put(r["uploadUrl"].as_str().unwrap())
        .header("content-type", "video/mp4")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let id = r["video"]["id"].as_str().unwrap().to_string();
    let key = r["objectKey"].as_str().unwrap().to_string();
    let complete = || {
        s.http
            .post(s.url(&format!("/videos/{id}/complete")))
            .bearer_auth(&token)
            .send()
    };

    proxy.down();
    let outage = Instant::now();
    let mut health_down = false;
    let mut slowest = Duration::ZERO;
    while outage.elapsed() < Duration::from_secs(20) {
        let started = Instant::now();
        let (done, deleted, listed, health) = tokio::join!(
            complete(),
            s.http
                .delete(s.url("/videos"))
                .bearer_auth(&token)
                .json(&json!({"objectKey": key}))
                .send(),
            s.http.get(s.url("/videos")).bearer_auth(&token).send(),
            s.http.get(s.url("/healthz")).send(),
        );
        slowest = slowest.max(started.elapsed());
        for r in [done.unwrap(), deleted.unwrap()] {
            assert_eq!(r.status(), 503, "during the outage");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "STORAGE_UNAVAILABLE", "{body}");
        }
        // What only needs the database keeps working.
        assert_eq!(listed.unwrap().status(), 200);
        let health = health.unwrap();
        if health.status() == 503 {
            let body: serde_json::Value = health.json().await.unwrap();
            assert_eq!(body["storage"]["ok"], false, "{body}");
            assert_eq!(body["database"]["ok"], true, "{body}");
            health_down = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(health_down, "/healthz never reported the store down");
    assert!(
        slowest < Duration::from_secs(8),
        "slowest answer {slowest:?}"
    );
    eprintln!("s3 outage: slowest answer {slowest:?}");

    proxy.up();
    let back = Instant::now();
    loop {
        let r = complete().await.unwrap();
        if r.status() == 200 {
            let video: serde_json::Value = r.json().await.unwrap();
            assert_eq!(video["size"], 5);
            eprintln!("s3 back: serving again after {:?}", back.elapsed());
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "service did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/healthz").await.status != 200 {
        assert!(Instant::now() < deadline, "/healthz stayed degraded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A camera whose network vanishes (no close, no FIN: its connection goes through a proxy
/// that starts swallowing everything) is shown offline within the Socket.IO heartbeat
/// window. A command sent into the void before that, and one sent after, both wait for it
/// and reach it when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_socket_goes_offline_within_the_heartbeat_and_its_commands_wait() {
    use common::household::{WAIT, household, id_is};
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("SOCKET_PING_INTERVAL_MS", "1000"),
            ("SOCKET_PING_TIMEOUT_MS", "1000"),
            ("COMMAND_TTL_SECS", "120"),
        ],
    )
    .await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let send = |kind: &'static str| {
        let s = &s;
        let (cam, cli_token) = (cam.clone(), cli_token.clone());
        async move {
            let r = s
                .call(
                    reqwest::Method::POST,
                    "/commands",
                    &cli_token,
                    Some(json!({"targetDeviceId": cam, "type": kind})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["id"].as_str().unwrap().to_string()
        }
    };

    let proxy = FaultProxy::start(s.addr).await;
    let camera = common::sio::connect(
        &format!("http://127.0.0.1:{}", proxy.port),
        json!({"token": cam_token}),
    )
    .await
    .unwrap();
    assert!(is_online(&s, &token, &cam).await);

    proxy.vanish();
    let vanished = Instant::now();
    // Into the void: the server still thinks the camera is there.
    let lost_in_transit = send("take_snapshot").await;
    while is_online(&s, &token, &cam).await {
        assert!(
            vanished.elapsed() < Duration::from_secs(5),
            "still online {:?} after the network vanished (heartbeat window 2 s)",
            vanished.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = vanished.elapsed();
    eprintln!("vanished socket: offline after {detected:?} (heartbeat 1 s + 1 s)");
    let r = s
        .call(
            reqwest::Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "start_stream"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "queued", "{}", r.text);
    let queued = r.json["id"].as_str().unwrap().to_string();

    // The camera comes back on a working network and gets both.
    drop(camera);
    let mut camera = s.socket(&cam_token).await;
    for id in [&lost_in_transit, &queued] {
        camera.wait_for("command:received", WAIT, id_is(id)).await;
    }
}

/// The `online` flag of device `id` in the owner's `/devices` listing.
async fn is_online(s: &TestServer, token: &str, id: &str) -> bool {
    let r = s.call(reqwest::Method::GET, "/devices", token, None).await;
    r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap()["online"]
        == true
}

/// Every item of a paged listing (following `nextCursor`).
async fn all_items(api: &common::Api, path: &str, token: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=200&cursor={c}"),
            None => format!("{path}{sep}limit=200"),
        };
        let r = api.call(reqwest::Method::GET, &url, token, None).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        items.extend(r.json["items"].as_array().unwrap().iter().cloned());
        match r.json["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// SIGKILL while 16 clients create commands, motion events and stream requests: after the
/// restart every request that got a 2xx is stored, every stored row is whole, and the
/// camera is sent again every command it has not acknowledged.
async fn a_sigkill_under_load_loses_nothing_acknowledged(backend: Backend) {
    use common::process::{Child, binary, free_port};
    use std::sync::{Arc, Mutex};
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Postgres => Some(common::fresh_postgres_url().await),
        Backend::Sqlite => None,
    };
    let spawn = || {
        let mut command = std::process::Command::new(binary());
        command
            .current_dir(work.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .env("MEDIA_PUBLIC_IP", "127.0.0.1")
            .env("RECORDING_MODE", "off")
            .env("AUTH_RATE_LIMIT_MAX", "100000")
            .env("COMMAND_TTL_SECS", "600")
            .env("STREAM_REQUEST_TTL_SECS", "600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(url) = &database {
            command.env("DATABASE_URL", url);
        }
        Child(command.spawn().unwrap())
    };
    let api = common::Api::new(&format!("http://127.0.0.1:{port}"));
    let ready = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.http.get(api.url("/api/auth/ok")).send().await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut server = spawn();
    ready().await;
    let (token, _) = api.sign_up(&unique_email("kill"), "password-1").await;
    let camera = api.register_device(&token, "Porch", "camera").await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let client = api
            .register_device(&token, &format!("Phone {i}"), "client")
            .await;
        api.link(&token, &camera.0, &client.0).await;
        clients.push(client);
    }
    // The camera is online, so stream requests are accepted and commands dispatched.
    let live_camera = common::sio::connect(&api.base, json!({"token": camera.1}))
        .await
        .unwrap();

    // (kind, id) of every request the server answered with a 2xx.
    let acknowledged: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let server_errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16usize {
        let (api, acknowledged, server_errors) = (
            common::Api::new(&api.base),
            acknowledged.clone(),
            server_errors.clone(),
        );
        let (camera_id, camera_token) = camera.clone();
        let client_token = clients[w % clients.len()].1.clone();
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let (kind, token, path, body) = match w % 4 {
                    0 => (
                        "event",
                        &camera_token,
                        "/events/motion/start",
                        json!({"score": 0.5}),
                    ),
                    1 => (
                        "stream",
                        &client_token,
                        "/streams/request",
                        json!({"cameraDeviceId": camera_id}),
                    ),
                    _ => (
                        "command",
                        &client_token,
                        "/commands",
                        json!({"targetDeviceId": camera_id, "type": "take_snapshot",
                            "payload": {"worker": w, "n": n}}),
                    ),
                };
                let sent = api
                    .http
                    .post(api.url(path))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                let status = r.status();
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    return;
                };
                if status.is_success() {
                    let id = v["id"].as_str().unwrap().to_string();
                    acknowledged.lock().unwrap().push((kind, id));
                } else if status.is_server_error() {
                    server_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = server.0.wait();
    for w in workers {
        w.await.unwrap();
    }
    drop(live_camera);
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert_eq!(
        server_errors.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "5xx under load"
    );
    for kind in ["command", "event", "stream"] {
        assert!(
            acknowledged.iter().any(|(k, _)| *k == kind),
            "no {kind} was acknowledged before the kill"
        );
    }

    let _server = spawn();
    ready().await;
    let commands = all_items(&api, "/commands", &token).await;
    let events = all_items(&api, "/events", &token).await;
    let mut streams = Vec::new();
    for (_, client_token) in &clients {
        streams.extend(all_items(&api, "/streams/me/list", client_token).await);
    }
    let stored = |items: &[serde_json::Value]| -> std::collections::HashSet<String> {
        items
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (command_ids, event_ids, stream_ids) =
        (stored(&commands), stored(&events), stored(&streams));
    for (kind, id) in &acknowledged {
        let found = match *kind {
            "command" => command_ids.contains(id),
            "event" => event_ids.contains(id),
            _ => stream_ids.contains(id),
        };
        assert!(found, "acknowledged {kind} {id} is gone after the kill");
    }
    // Whole rows only: every stored command has its target, payload and a status, and a
    // stream request's command names a stream session that was stored with it.
    for c in &commands {
        assert_eq!(c["targetDeviceId"], camera.0.as_str(), "{c}");
        match c["type"].as_str().unwrap() {
            "take_snapshot" => assert!(c["payload"]["worker"].is_number(), "{c}"),
            "start_stream" => assert!(
                stream_ids.contains(c["payload"]["streamSessionId"].as_str().unwrap()),
                "{c}"
            ),
            other => panic!("unexpected command type {other}: {c}"),
        }
        assert!(
            ["queued", "dispatched", "expired"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
    }
    for e in &events {
        assert_eq!(e["cameraDeviceId"], camera.0.as_str(), "{e}");
        assert_eq!(e["score"], 0.5, "{e}");
    }

    // Pending commands are delivered again.
    let pending: std::collections::HashSet<String> = commands
        .iter()
        .filter(|c| c["status"] == "queued" || c["status"] == "dispatched")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    let mut camera_socket = common::sio::connect(&api.base, json!({"token": camera.1}))
        .await
        .unwrap();
    let mut received = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_subset(&received) {
        assert!(
            Instant::now() < deadline,
            "{} of {} pending commands redelivered",
            received.len(),
            pending.len()
        );
        if let Ok(Some((event, v))) =
            tokio::time::timeout(Duration::from_secs(1), camera_socket.recv()).await
            && event == "command:received"
        {
            received.insert(v["id"].as_str().unwrap().to_string());
        }
    }
    eprintln!(
        "{backend:?}: {} requests acknowledged before SIGKILL ({} commands, {} events, {} streams stored); {} pending commands redelivered",
        acknowledged.len(),
        commands.len(),
        events.len(),
        streams.len(),
        pending.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_nothing_acknowledged_on_sqlite() {
    a_sigkill_under_load_loses_nothing_acknowledged(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_nothing_acknowledged_on_postgres() {
    a_sigkill_under_load_loses_nothing_acknowledged(Backend::Postgres).await;
}

/// Malformed input from the outside, generated: random bytes as JSON bodies on every kind
/// of write route, random query strings on the list routes, random bearer tokens and
/// cookies, and random Socket.IO payloads on every event a device may send. Every answer
/// is a 2xx or a clear 4xx JSON error; nothing is a 5xx, a hang or a crash; a socket that
/// sent garbage gets an error ack and the server keeps serving everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_malformed_input_gets_4xx_never_5xx() {
    use common::household::household;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let s = TestServer::start(Backend::Sqlite).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut runner = TestRunner::deterministic();
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    let text = any::<String>();
    let json_ish = prop_oneof![
        any::<String>().prop_map(|s| serde_json::json!(s).to_string()),
        (any::<String>(), any::<i64>()).prop_map(|(k, v)| format!("{{\"{k}\": {v}}}")),
        Just("{\"targetDeviceId\": null, \"type\": 7}".to_string()),
        Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_string()),
        Just("{\"cameraDeviceId\": \"\\u0000\"}".to_string()),
        any::<String>(),
    ];
    let routes: &[(&str, &str)] = &[
        ("/commands", &cli_token),
        ("/streams/request", &cli_token),
        ("/events/motion/start", &cam_token),
        ("/devices/register", &token),
        ("/device-links", &token),
        ("/videos/upload-url", &token),
        ("/api/auth/sign-in/email", &token),
        ("/api/auth/sign-up/email", &token),
        ("/api/watchtogether/rooms", &token),
    ];
    let lists = [
        "/commands",
        "/events",
        "/devices",
        "/videos",
        "/recordings",
        "/device-links",
    ];
    let mut cases = 0;
    let check = |status: u16, what: &str, body: &str| {
        assert!(status < 500, "{what} got {status}: {body}");
    };
    for round in 0..40 {
        for (path, bearer) in routes {
            let body = if round % 2 == 0 {
                json_ish
                    .new_tree(&mut runner)
                    .unwrap()
                    .current()
                    .into_bytes()
            } else {
                bytes.new_tree(&mut runner).unwrap().current()
            };
            let r = s
                .http
                .post(s.url(path))
                .bearer_auth(bearer)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let answer = r.text().await.unwrap();
            check(
                status,
                &format!("POST {path} {:?}", String::from_utf8_lossy(&body)),
                &answer,
            );
            if status >= 400 {
                let v: serde_json::Value = serde_json::from_str(&answer)
                    .unwrap_or_else(|_| panic!("POST {path}: not JSON: {answer}"));
                assert!(v.is_object(), "{answer}");
            }
            cases += 1;
        }
        for path in lists {
            let query: String = text.new_tree(&mut runner).unwrap().current();
            let encoded: String = query
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"=&_-".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let r = s
                .http
                .get(format!(
                    "{}?{encoded}&limit={}",
                    s.url(path),
                    round as i64 * 97 - 300
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            check(
                status,
                &format!("GET {path}?{encoded}"),
                &r.text().await.unwrap(),
            );
            cases += 1;
        }
        // Random credentials: refused, never a 5xx.
        let junk: String = text.new_tree(&mut runner).unwrap().current();
        let header: String = junk.chars().filter(|c| c.is_ascii_graphic()).collect();
        for req in [
            s.http
                .get(s.url("/devices"))
                .header("authorization", format!("Bearer {header}")),
            s.http
                .get(s.url("/devices"))
                .header("cookie", format!("better-auth.session_token={header}")),
            s.http
                .get(s.url("/api/auth/get-session"))
                .header("cookie", header.clone()),
        ] {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            check(status, "random credentials", &r.text().await.unwrap());
            cases += 1;
        }
    }

    // Socket.IO: every event a device may send, with random payloads.
    let camera = s.socket(&cam_token).await;
    for _ in 0..60 {
        for event in ["command:ack", "webrtc:signal", "heartbeat", "no:such:event"] {
            let payload = prop_oneof![
                any::<String>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
                (any::<String>(), any::<String>())
                    .prop_map(|(k, v)| serde_json::json!({"commandId": k, "status": v, "to": v})),
            ]
            .new_tree(&mut runner)
            .unwrap()
            .current();
            camera.emit(event, payload);
            cases += 1;
        }
    }
    // The camera is still served, and so is everyone else.
    let reply = camera
        .emit_with_ack("heartbeat", serde_json::json!({}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(is_online(&s, &token, &cam).await);
    assert_eq!(s.get("/healthz").await.status, 200);
    eprintln!("malformed input: {cases} generated cases, no 5xx");
}

/// A request over the server's size limits (a long target, too many or too large header
/// fields) gets a JSON 414 or 431 like any other bad input, not hyper's empty answer; the
/// connection's next requests, and everyone else's, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_a_json_414_or_431() {
    let s = TestServer::start(Backend::Sqlite).await;
    let check = |status: u16, expected: u16, code: &str, body: &str| {
        assert_eq!(status, expected, "{body}");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        assert_eq!(v["code"], code, "{body}");
        assert!(v["message"].is_string(), "{body}");
    };
    let long = format!("/devices?cursor={}", "a".repeat(40 * 1024));
    let r = s.http.get(s.url(&long)).send().await.unwrap();
    let status = r.status().as_u16();
    check(status, 414, "URI_TOO_LONG", &r.text().await.unwrap());

    let mut many = s.http.get(s.url("/health"));
    for i in 0..120 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    let r = many.send().await.unwrap();
    let status = r.status().as_u16();
    check(status, 431, "HEADERS_TOO_LARGE", &r.text().await.unwrap());

    let r = s
        .http
        .get(s.url("/health"))
        .header("cookie", "a".repeat(80 * 1024))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    check(status, 431, "HEADERS_TOO_LARGE", &r.text().await.unwrap());

    // Within the limits everything is as before.
    let r = s
        .http
        .get(s.url(&format!("/health?x={}", "a".repeat(24 * 1024))))
        .header("cookie", "a".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
