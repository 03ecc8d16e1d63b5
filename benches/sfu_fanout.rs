//! SFU fan-out: one webrtc-rs camera publishing (Opus + VP8, ~30 frames/s, ~0.4 Mbit/s)
//! to N webrtc-rs viewers through the real server on loopback.
//!
//! Measured per N: the server's CPU (its runtime's threads only, from /proc: the peers run
//! on another runtime in the same process), frame delivery, and forwarding latency per
//! frame (camera write → viewer has the whole frame; both ends' WebRTC stacks included).
//!
//! `cargo bench --bench sfu_fanout` runs N = 1, 10, 25, 50 for 10 s each (override with
//! `BENCH_VIEWERS=1,10` and `BENCH_SECONDS`). Without `--bench` (as under
//! `cargo test --all-targets`) it runs a short smoke version (2 viewers, 2 s).

#[path = "../tests/webrtc_peer/mod.rs"]
mod webrtc_peer;

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[path = "support/household.rs"]
mod household;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::{SERVER_THREADS, server_cpu_seconds};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let counts: Vec<usize> = std::env::var("BENCH_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if full { vec![1, 10, 25, 50] } else { vec![2] });
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10 } else { 2 });

    // The server on its own runtime (its threads are what the CPU figure counts).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars: HashMap<String, String> = HashMap::new();
    for (k, v) in [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("BETTER_AUTH_SECRET", "bench-secret-0123456789-abcdefghij"),
        ("AUTH_RATE_LIMIT_MAX", "1000000"),
        ("MEDIA_UDP_PORT", "0"),
        ("MEDIA_PUBLIC_IP", "127.0.0.1"),
        ("MEDIA_MAX_SUBSCRIBERS_PER_ROOM", "1000"),
        // Every viewer here belongs to one account: lift the fair-share cap with the room cap.
        ("MEDIA_MAX_SUBSCRIBERS_PER_USER", "1000"),
        // Forwarding is what is measured; recording has its own benchmark.
        ("RECORDING_MODE", "off"),
        ("RUST_LOG", "warn"),
    ] {
        vars.insert(k.into(), v.into());
    }
    vars.insert(
        "WATCHPOST_DATA_DIR".into(),
        dir.path().display().to_string(),
    );
    vars.insert(
        "MEDIA_RECORDINGS_DIR".into(),
        dir.path().join("rec").display().to_string(),
    );
    let config = watchpost::Config::from_vars(&vars).unwrap();
    let server = server_rt
        .block_on(watchpost::Server::build(config))
        .unwrap();
    let base = format!("http://127.0.0.1:{}", server.local_addr().port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = server_rt.spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let peers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peers")
        .enable_all()
        .build()
        .unwrap();
    peers_rt.block_on(async {
        let http = reqwest::Client::new();
        println!("SFU fan-out: {seconds} s per run, camera ~30 frames/s VP8 + 50 packets/s Opus");
        println!(
            "| viewers | server CPU | CPU per viewer | frames delivered | latency p50 | p90 | p99 | max |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &n in &counts {
            let h = household::household(&http, &base, &format!("fanout-{n}")).await;
            let mut publisher =
                webrtc_peer::Publisher::start(&base, &h.sid, &h.publish, Default::default())
                    .await;
            let mut viewers = Vec::with_capacity(n);
            for _ in 0..n {
                viewers.push(webrtc_peer::Viewer::start(&base, &h.sid, &h.subscribe).await);
            }
            // Warm up: every viewer has started at a keyframe and the estimators settled.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let window_start = Instant::now();
            let cpu_start = server_cpu_seconds();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let cpu = server_cpu_seconds() - cpu_start;
            let wall = window_start.elapsed().as_secs_f64();
            let window_end = Instant::now();
            let _ = publisher.stop_sending().await;
            tokio::time::sleep(Duration::from_millis(500)).await;

            let sent: HashMap<u32, Instant> = publisher
                .sent
                .lock()
                .unwrap()
                .iter()
                .copied()
                .filter(|(_, t)| *t >= window_start && *t < window_end)
                .collect();
            let mut latencies = Vec::new();
            let mut delivered = 0usize;
            for viewer in &viewers {
                let got = viewer.received.lock().await;
                assert_eq!(got.corrupt, 0, "corrupted frames");
                for (index, _, _, arrived) in &got.video {
                    if let Some(at) = sent.get(index) {
                        delivered += 1;
                        latencies.push(arrived.saturating_duration_since(*at));
                    }
                }
            }
            latencies.sort();
            let expected = sent.len() * n;
            println!(
                "| {n} | {:.1}% | {:.2}% | {:.2}% ({delivered}/{expected}) | {} | {} | {} | {} |",
                cpu / wall * 100.0,
                cpu / wall * 100.0 / n as f64,
                delivered as f64 * 100.0 / expected.max(1) as f64,
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.9)),
                ms(percentile(&latencies, 0.99)),
                ms(latencies.last().copied().unwrap_or_default()),
            );
            assert!(delivered > 0, "no frames reached the viewers");
            for viewer in viewers {
                let _ = viewer.pc.close().await;
            }
            let _ = publisher.pc.close().await;
        }
    });
    let _ = stop_tx.send(());
    let _ = server_rt.block_on(server_task);
}
