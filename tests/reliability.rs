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
