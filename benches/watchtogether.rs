//! Watch Together sync relay: R rooms × M members over real WebSockets on loopback.
//!
//! Every room is playing (so the server also sends each member a `state_update` every
//! 500 ms and a `ping` every 2 s, as in production). Each room's host sends one `sync`
//! (`seek`) a second, at a random phase; the latency is measured at every other member,
//! from the host's send to the relayed message being read. The server's CPU is read from
//! `/proc/self/task/*/stat` for its own runtime threads (the clients run on another
//! runtime in the same process).
//!
//! `cargo bench --bench watchtogether` runs 1,000 rooms × 5 members for 10 s (override
//! with `BENCH_ROOMS`, `BENCH_MEMBERS`, `BENCH_SECONDS`). Without `--bench` (as under
//! `cargo test --all-targets`) it runs a smoke version (20 rooms, 2 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::{SERVER_THREADS, server_cpu_seconds};

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> Ws {
    // A small read buffer, as the server uses: tungstenite zero-fills the whole buffer
    // before each read, and at its 128 KiB default the 5,000 clients spend most of their
    // CPU doing so, which would show up as queueing in the server's figures.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    for attempt in 0.. {
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((ws, _)) => return ws,
            Err(e) if attempt < 20 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    unreachable!()
}

async fn next_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("message in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == ty {
                return v;
            }
        }
    }
}

/// Counters shared by all clients.
#[derive(Default)]
struct Totals {
    syncs_sent: AtomicU64,
    relays: AtomicU64,
    state_updates: AtomicU64,
}

/// Reads a member's socket until `stop`; a host also sends a `sync` every second.
/// Returns the relay latencies seen, in microseconds.
async fn member(
    mut ws: Ws,
    host: bool,
    base: Instant,
    measure_from: Instant,
    stop: Instant,
    totals: Arc<Totals>,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    let phase = Duration::from_millis(rand::random::<u64>() % 1000);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
    let mut seq = 0u64;
    let until = tokio::time::Instant::from_std(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = tick.tick(), if host => {
                seq += 1;
                let sent_us = base.elapsed().as_micros() as u64;
                let msg = json!({"type": "sync", "command": {"action": "seek",
                    "position": 100.0 + seq as f64, "sent_us": sent_us}});
                if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                    break;
                }
                if Instant::now() >= measure_from {
                    totals.syncs_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Text(text) = frame else { continue };
                let now_us = base.elapsed().as_micros() as u64;
                if text.contains("\"state_update\"") {
                    if Instant::now() >= measure_from {
                        totals.state_updates.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                if !text.contains("\"sync\"") {
                    continue;
                }
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["is_echo"] == true {
                    continue;
                }
                let sent = v["command"]["sent_us"].as_u64().unwrap_or(now_us);
                if Instant::now() >= measure_from && sent >= (measure_from - base).as_micros() as u64 {
                    latencies.push(now_us.saturating_sub(sent));
                    totals.relays.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    latencies
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rooms: usize = env_num("BENCH_ROOMS", if full { 1000 } else { 20 });
    let members: usize = env_num("BENCH_MEMBERS", 5);
    let seconds: u64 = env_num("BENCH_SECONDS", if full { 10 } else { 2 });

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
        ("MEDIA_UDP_PORT", "0"),
        ("MEDIA_PUBLIC_IP", "127.0.0.1"),
        // Every client comes from 127.0.0.1.
        ("WT_MAX_ROOMS_PER_ADDRESS", "1000000"),
        ("RUST_LOG", "warn"),
    ] {
        vars.insert(k.into(), v.into());
    }
    vars.insert(
        "WATCHPOST_DATA_DIR".into(),
        dir.path().display().to_string(),
    );
    let config = watchpost::Config::from_vars(&vars).unwrap();
    let server = server_rt
        .block_on(watchpost::Server::build(config))
        .unwrap();
    let url = format!(
        "ws://127.0.0.1:{}/ws/watchtogether",
        server.local_addr().port()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = server_rt.spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    clients_rt.block_on(async {
        println!("Watch Together: {rooms} rooms x {members} members, {seconds} s, 1 sync/s per room");
        let setup = Instant::now();
        // Rooms are set up 50 at a time: create, join, start playing.
        let mut sockets: Vec<(Ws, bool)> = Vec::with_capacity(rooms * members);
        for batch in (0..rooms).collect::<Vec<_>>().chunks(50) {
            let mut tasks = Vec::new();
            for &r in batch {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut host = open(&url).await;
                    let create = json!({"type": "create", "client_id": format!("h{r}"),
                        "nickname": "Host", "media_id": r + 1, "media_title": format!("Film {r}")});
                    host.send(Message::Text(create.to_string().into())).await.unwrap();
                    let code = next_of(&mut host, "room_created").await["room"]["code"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let mut room = vec![(host, true)];
                    for m in 1..members {
                        let mut ws = open(&url).await;
                        let join = json!({"type": "join", "room_code": code,
                            "client_id": format!("r{r}m{m}"), "nickname": format!("M{m}"),
                            "media_id": r + 1});
                        ws.send(Message::Text(join.to_string().into())).await.unwrap();
                        next_of(&mut ws, "room_joined").await;
                        room.push((ws, false));
                    }
                    let play = json!({"type": "sync", "command": {"action": "play", "position": 1}});
                    room[0].0.send(Message::Text(play.to_string().into())).await.unwrap();
                    room
                }));
            }
            for t in tasks {
                sockets.extend(t.await.unwrap());
            }
        }
        println!(
            "setup: {} sockets in {:.1} s",
            sockets.len(),
            setup.elapsed().as_secs_f64()
        );

        let base = Instant::now();
        let measure_from = base + Duration::from_secs(2);
        let stop = measure_from + Duration::from_secs(seconds);
        let totals = Arc::new(Totals::default());
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|(ws, host)| {
                tokio::spawn(member(ws, host, base, measure_from, stop, totals.clone()))
            })
            .collect();
        tokio::time::sleep_until(tokio::time::Instant::from_std(measure_from)).await;
        let cpu_start = server_cpu_seconds();
        tokio::time::sleep_until(tokio::time::Instant::from_std(stop)).await;
        let cpu = server_cpu_seconds() - cpu_start;
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        latencies.sort_unstable();
        let sent = totals.syncs_sent.load(Ordering::Relaxed);
        let relays = totals.relays.load(Ordering::Relaxed);
        let expected = sent * (members as u64 - 1);
        println!("| rooms × members | syncs sent | relays received | state_update/s | server CPU | p50 | p90 | p99 | max |");
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {rooms} × {members} | {sent} | {relays} of ~{expected} | {:.0} | {:.0}% of one core | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            totals.state_updates.load(Ordering::Relaxed) as f64 / seconds as f64,
            cpu / seconds as f64 * 100.0,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        assert!(!latencies.is_empty(), "no relay was measured");
    });
    let _ = stop_tx.send(());
    let _ = server_rt.block_on(server_task);
}
