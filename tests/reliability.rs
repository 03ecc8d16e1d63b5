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
    assert!(slowest < Duration::from_secs(5), "slowest answer {slowest:?}");
    assert!(answered >= 4, "only {answered} rounds in 20 s");

    proxy.up();
    let back = Instant::now();
    loop {
        let r = register("after".into()).await.unwrap();
        if r.status() == 201 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(back.elapsed() < Duration::from_secs(15), "service did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
