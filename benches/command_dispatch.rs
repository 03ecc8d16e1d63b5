//! Command dispatch latency: REST `POST /commands` → `command:received` at the camera,
//! with many devices connected over Socket.IO.
//!
//! `cargo bench --bench command_dispatch` runs the full load (1,000 connected devices,
//! 2,000 commands) against the real server on loopback and prints p50/p90/p99/max.
//! Without `--bench` (as under `cargo test --all-targets`) it runs a small smoke version
//! so the harness itself stays tested. Environment overrides: `BENCH_DEVICES`,
//! `BENCH_COMMANDS`, `BENCH_CONCURRENCY`, `DATABASE_URL` (default: SQLite in a temp dir).

// Only its `post` helper is used here.
#[path = "support/household.rs"]
#[allow(dead_code)]
mod household;
#[path = "../tests/common/sio.rs"]
mod sio;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Mutex, oneshot};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let devices = env_usize("BENCH_DEVICES", if full { 1000 } else { 20 });
    let commands = env_usize("BENCH_COMMANDS", if full { 2000 } else { 20 });
    let concurrency = env_usize("BENCH_CONCURRENCY", 1).max(1);
    let pairs = devices / 2;

    let dir = tempfile::tempdir().unwrap();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("HOST".into(), "127.0.0.1".into());
    vars.insert("PORT".into(), "0".into());
    vars.insert(
        "WATCHPOST_DATA_DIR".into(),
        dir.path().display().to_string(),
    );
    vars.insert(
        "BETTER_AUTH_SECRET".into(),
        "bench-secret-0123456789-abcdefghij".into(),
    );
    vars.insert("AUTH_RATE_LIMIT_MAX".into(), "1000000".into());
    vars.insert("MEDIA_UDP_PORT".into(), "0".into());
    if let Ok(url) = std::env::var("DATABASE_URL") {
        vars.insert("DATABASE_URL".into(), url);
    }
    let config = watchpost::Config::from_vars(&vars).unwrap();
    let backend = format!("{:?}", config.database)
        .split('(')
        .next()
        .unwrap()
        .to_lowercase();
    let server = watchpost::Server::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.local_addr().port());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::new();
    let (signup, _) = household::post(
        &http,
        &base,
        "/api/auth/sign-up/email",
        None,
        json!({"name": "Bench", "email": "bench@example.com", "password": "password-123"}),
    )
    .await;
    let user = signup["token"].as_str().unwrap().to_string();

    // Register and link the devices.
    let setup = Instant::now();
    let mut cameras = Vec::with_capacity(pairs);
    let mut clients = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let mut ids = Vec::new();
        for role in ["camera", "client"] {
            let (r, _) = household::post(
                &http,
                &base,
                "/devices/register",
                Some(&user),
                json!({"name": format!("{role} {i}"), "role": role}),
            )
            .await;
            ids.push((
                r["device"]["id"].as_str().unwrap().to_string(),
                r["deviceToken"].as_str().unwrap().to_string(),
            ));
        }
        household::post(
            &http,
            &base,
            "/device-links",
            Some(&user),
            json!({"cameraDeviceId": ids[0].0, "clientDeviceId": ids[1].0}),
        )
        .await;
        cameras.push(ids[0].clone());
        clients.push(ids[1].clone());
    }

    // Connect every device. Cameras report when a command arrives, keyed by a nonce in the
    // payload (the event can reach the camera before the REST response reaches the sender).
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut sockets = Vec::new();
    for (_, token) in clients.iter() {
        sockets.push(sio::connect(&base, json!({"token": token})).await.unwrap());
    }
    let mut readers = Vec::new();
    for (_, token) in cameras.iter() {
        let mut socket = sio::connect(&base, json!({"token": token})).await.unwrap();
        let waiters = waiters.clone();
        readers.push(tokio::spawn(async move {
            while let Some((name, data)) = socket.recv().await {
                if name == "command:received" {
                    let at = Instant::now();
                    if let Some(nonce) = data["payload"]["nonce"].as_str()
                        && let Some(tx) = waiters.lock().await.remove(nonce)
                    {
                        let _ = tx.send(at);
                    }
                }
            }
        }));
    }
    let connected = sockets.len() + readers.len();
    let setup_time = setup.elapsed();

    // Warm up (connection pools, statement caches), then measure.
    let send = |i: usize| {
        let http = http.clone();
        let base = base.clone();
        let waiters = waiters.clone();
        let (cam, _) = cameras[i % pairs].clone();
        let (_, cli_token) = clients[i % pairs].clone();
        async move {
            let nonce = format!("n{i}-{}", rand_suffix());
            let (tx, rx) = oneshot::channel();
            waiters.lock().await.insert(nonce.clone(), tx);
            let started = Instant::now();
            let r = http
                .post(format!("{base}/commands"))
                .bearer_auth(&cli_token)
                .json(&json!({"targetDeviceId": cam, "type": "take_snapshot", "payload": {"nonce": nonce}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let received = tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("command delivered within 10 s")
                .unwrap();
            received - started
        }
    };
    for i in 0..(commands / 10).max(5) {
        send(i).await;
    }

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(commands);
    let mut next = 0usize;
    while next < commands {
        let batch: Vec<_> = (next..(next + concurrency).min(commands))
            .map(&send)
            .collect();
        next += batch.len();
        latencies.extend(futures_util::future::join_all(batch).await);
    }
    let wall = started.elapsed();
    latencies.sort();

    println!("command dispatch latency (POST /commands -> command:received at the camera)");
    println!("  database:            {backend}");
    println!(
        "  connected devices:   {connected} ({} cameras, {} clients; setup {:.1} s)",
        readers.len(),
        sockets.len(),
        setup_time.as_secs_f64()
    );
    println!(
        "  commands:            {commands} (concurrency {concurrency}) in {:.2} s = {:.0}/s",
        wall.as_secs_f64(),
        commands as f64 / wall.as_secs_f64()
    );
    println!(
        "  p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );

    for r in readers {
        r.abort();
    }
    drop(sockets);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
}

fn rand_suffix() -> String {
    watchpost::auth::tokens::generate_id()[..8].to_string()
}
