//! Soak: the real server binary as its own process under steady mixed load, watched for
//! leaks and errors.
//!
//! The load: 1,000 devices (20 households × 25 camera/phone pairs) connected over
//! Socket.IO; every phone sends its camera a command every 5 s (REST `POST /commands` →
//! `command:received` at the camera → `command:ack`); one live stream per household (20
//! webrtc-rs cameras publishing over WHIP) with two viewers each, one of which leaves
//! (WHEP `DELETE`) and is replaced by a new one every 10 s.
//!
//! Every few seconds it samples the server's RSS, open file descriptors and threads (from
//! `/proc/<pid>`) and its runtime tasks, pooled database connections, connected devices and
//! media peers (from `/metrics`). At the end it prints command latency, the error count and
//! the resource curves, and fails if there was any error or a resource kept rising.
//!
//! `cargo bench --bench soak` runs 10 minutes. Without `--bench` (as under
//! `cargo test --all-targets`, i.e. in the suite) it runs 60 s of the same load.
//! Overrides: `SOAK_SECONDS`, `SOAK_HOUSEHOLDS`, `SOAK_PAIRS` (per household),
//! `SOAK_STREAMS` (default: one per household), `SOAK_COMMAND_INTERVAL_MS`,
//! `SOAK_VIEWER_CHURN_MS`, `SOAK_PIN` (1, the default of the measured run on a multi-core
//! machine: the server on core 0, the generator on the others; 0: both anywhere),
//! `DATABASE_URL`
//! (default: SQLite),
//! `WATCHPOST_RELEASE_BIN` (the server binary; default: the one cargo built).
//! The figures of record are in docs/reliability.md.

#[path = "../tests/common/sio.rs"]
mod sio;
#[path = "../tests/webrtc_peer/mod.rs"]
mod webrtc_peer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Errors seen anywhere in the load, with the first few described.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Errors {
    fn note(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 20 {
            eprintln!("soak error: {what}");
            samples.push(what);
        }
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

struct Shared {
    base: String,
    http: reqwest::Client,
    errors: Errors,
    /// Set when the measured window starts: latencies before it are warm-up.
    measuring: AtomicBool,
    stopping: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
    /// The same commands' `POST /commands` round trips (sent → 201 read): the server's share
    /// of the command latency, without the camera's side.
    post_latencies: Mutex<Vec<Duration>>,
    commands_sent: AtomicU64,
    viewers_joined: AtomicU64,
    viewers_left: AtomicU64,
    waiters: Waiters,
}

struct Device {
    id: String,
    token: String,
}

struct Household {
    user: String,
    cameras: Vec<Device>,
    phones: Vec<Device>,
}

/// The server binary as a child process, killed when dropped.
struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the server and the generator run on separate cores (`SOAK_PIN`; by default in
/// the measured run on a machine with more than one, not in the suite's short run, whose
/// debug-built generator needs more than one core): otherwise the generator's 60 webrtc-rs
/// peers, which use as much CPU as the server, compete with it for the same cores and
/// their scheduling delays show up in the server's latency.
fn pinned(full: bool) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores > 1 && env_u64("SOAK_PIN", u64::from(full)) == 1
}

/// Moves this process (before it starts any thread) off core 0, which the server has.
fn pin_generator(cores: usize) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-cp", &format!("1-{}", cores - 1)])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset runs");
    assert!(status.success(), "taskset could not pin the load generator");
}

fn start_server(dir: &Path, pin: bool) -> (ServerProcess, String) {
    let binary = std::env::var("WATCHPOST_RELEASE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_watchpost").to_string());
    let port = free_port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    // Pinned, the server has core 0 to itself and the generator the rest, as if they ran
    // on separate machines (`taskset` execs the binary: the pid is the server's).
    let mut command = if pin {
        let mut taskset = std::process::Command::new("taskset");
        taskset.args(["-c", "0"]).arg(binary);
        taskset
    } else {
        std::process::Command::new(binary)
    };
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("WATCHPOST_DATA_DIR", dir.join("data"))
        .env("BETTER_AUTH_SECRET", "soak-secret-0123456789-abcdefghij")
        .env("BETTER_AUTH_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("AUTH_RATE_LIMIT_MAX", "1000000")
        .env("MEDIA_UDP_PORT", "0")
        .env("MEDIA_PUBLIC_IP", "127.0.0.1")
        .env("MEDIA_MAX_PUBLISHERS", "64")
        // Forwarding and signalling are what is soaked; recording has its own benchmark.
        .env("RECORDING_MODE", "off")
        .env(
            "RUST_LOG",
            std::env::var("SOAK_SERVER_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Ok(url) = std::env::var("DATABASE_URL") {
        command.env("DATABASE_URL", url);
    }
    let child = command.spawn().expect("the server binary starts");
    (ServerProcess(child), format!("http://127.0.0.1:{port}"))
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(Value, reqwest::header::HeaderMap), String> {
    let mut request = http.request(method, &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {text}"));
    }
    Ok((serde_json::from_str(&text).unwrap_or(Value::Null), headers))
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    call(http, reqwest::Method::POST, url, Some(token), Some(body))
        .await
        .unwrap()
        .0
}

async fn household(http: &reqwest::Client, base: &str, n: u64, pairs: u64) -> Household {
    let (_, headers) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/auth/sign-up/email"),
        None,
        Some(json!({"email": format!("soak-{n}@soak.test"), "password": "password-123", "name": format!("Home {n}")})),
    )
    .await
    .unwrap();
    let user = headers["set-auth-token"].to_str().unwrap().to_string();
    let mut cameras = Vec::new();
    let mut phones = Vec::new();
    for i in 0..pairs {
        let mut pair = Vec::new();
        for role in ["camera", "client"] {
            let v = post(
                http,
                format!("{base}/devices/register"),
                &user,
                json!({"name": format!("{role} {i}"), "role": role}),
            )
            .await;
            pair.push(Device {
                id: v["device"]["id"].as_str().unwrap().to_string(),
                token: v["deviceToken"].as_str().unwrap().to_string(),
            });
        }
        post(
            http,
            format!("{base}/device-links"),
            &user,
            json!({"cameraDeviceId": pair[0].id, "clientDeviceId": pair[1].id}),
        )
        .await;
        phones.push(pair.pop().unwrap());
        cameras.push(pair.pop().unwrap());
    }
    Household {
        user,
        cameras,
        phones,
    }
}

/// A camera's socket: answers every command with `command:ack` and tells the waiting
/// sender when it arrived.
async fn camera_loop(shared: Arc<Shared>, mut socket: sio::SioClient) {
    while let Some((name, data)) = socket.recv().await {
        if name != "command:received" {
            continue;
        }
        let at = Instant::now();
        if let Some(nonce) = data["payload"]["nonce"].as_str()
            && let Some(tx) = shared.waiters.lock().unwrap().remove(nonce)
        {
            let _ = tx.send(at);
        }
        let id = data["id"].as_str().unwrap_or_default().to_string();
        let reply = socket
            .emit_with_ack(
                "command:ack",
                json!({"commandId": id, "status": "acknowledged"}),
            )
            .await;
        if reply["ok"] != true {
            shared.errors.note(format!("command:ack {id}: {reply}"));
        }
    }
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.errors.note("a camera's socket closed".into());
    }
}

/// A phone's socket: kept open and drained; it must not close while the soak runs.
async fn phone_loop(shared: Arc<Shared>, mut socket: sio::SioClient) {
    while socket.recv().await.is_some() {}
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.errors.note("a phone's socket closed".into());
    }
}

/// One phone commanding its camera every `interval`, from a random phase.
async fn commander(shared: Arc<Shared>, phone: String, camera: String, interval: Duration, n: u64) {
    let phase = interval.mul_f64((n.wrapping_mul(2654435761) % 1000) as f64 / 1000.0);
    tokio::time::sleep(phase).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0u64;
    loop {
        ticker.tick().await;
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        i += 1;
        let nonce = format!("{n}-{i}");
        let (tx, rx) = oneshot::channel();
        shared.waiters.lock().unwrap().insert(nonce.clone(), tx);
        let measured = shared.measuring.load(Ordering::Relaxed);
        let started = Instant::now();
        let sent = call(
            &shared.http,
            reqwest::Method::POST,
            format!("{}/commands", shared.base),
            Some(&phone),
            Some(json!({"targetDeviceId": camera, "type": "take_snapshot", "payload": {"nonce": nonce}})),
        )
        .await;
        let answered = started.elapsed();
        shared.commands_sent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sent {
            shared.waiters.lock().unwrap().remove(&nonce);
            shared.errors.note(format!("POST /commands: {e}"));
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(at)) => {
                if measured {
                    shared.latencies.lock().unwrap().push(at - started);
                    shared.post_latencies.lock().unwrap().push(answered);
                }
            }
            _ => {
                shared.waiters.lock().unwrap().remove(&nonce);
                shared
                    .errors
                    .note(format!("command {nonce} not delivered within 10 s"));
            }
        }
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    }
}

async fn credentials(shared: &Shared, sid: &str, which: &str, token: &str) -> String {
    let (v, _) = call(
        &shared.http,
        reqwest::Method::GET,
        format!("{}/streams/{sid}/{which}-credentials", shared.base),
        Some(token),
        None,
    )
    .await
    .unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Joins a viewer with fresh subscribe credentials (returned with it: the WHEP resource
/// is ended with them); a failure is an error, not a panic.
async fn join_viewer(
    shared: &Arc<Shared>,
    sid: &str,
    phone: &str,
) -> Option<(webrtc_peer::Viewer, String)> {
    let token = credentials(shared, sid, "subscribe", phone).await;
    let (base, sid, media_token) = (shared.base.clone(), sid.to_string(), token.clone());
    match tokio::spawn(async move { webrtc_peer::Viewer::start(&base, &sid, &media_token).await })
        .await
    {
        Ok(viewer) => {
            shared.viewers_joined.fetch_add(1, Ordering::Relaxed);
            Some((viewer, token))
        }
        Err(e) => {
            shared.errors.note(format!("a viewer could not join: {e}"));
            None
        }
    }
}

/// Ends a viewer as a WHEP client does (DELETE, then close) and checks what it received.
async fn leave_viewer(shared: &Shared, (viewer, token): (webrtc_peer::Viewer, String)) {
    let url = absolute(&shared.base, &viewer.location);
    if let Err(e) = call(
        &shared.http,
        reqwest::Method::DELETE,
        url,
        Some(&token),
        None,
    )
    .await
    {
        shared.errors.note(format!("WHEP DELETE: {e}"));
    }
    let _ = viewer.pc.close().await;
    let got = viewer.received.lock().await;
    if got.corrupt > 0 {
        shared
            .errors
            .note(format!("a viewer got {} corrupt frames", got.corrupt));
    }
    // A viewer replaced a moment before the run ended may not have had its first keyframe
    // yet (the SFU asks the camera for one on join); any older one must have frames.
    let watched = viewer.connected_at.elapsed();
    if got.video.is_empty() && watched > Duration::from_secs(2) {
        shared
            .errors
            .note(format!("a viewer left without a frame after {watched:?}"));
    }
    shared.viewers_left.fetch_add(1, Ordering::Relaxed);
}

/// One household's live stream: the camera publishes for the whole run; two viewers watch,
/// and every `churn` the older one leaves and a new one joins.
async fn live_stream(shared: Arc<Shared>, camera: Device, phone: Device, churn: Duration, n: u64) {
    let base = shared.base.clone();
    let session = post(
        &shared.http,
        format!("{base}/streams/request"),
        &phone.token,
        json!({"cameraDeviceId": camera.id}),
    )
    .await;
    let sid = session["id"].as_str().unwrap().to_string();
    post(
        &shared.http,
        format!("{base}/streams/{sid}/accept"),
        &camera.token,
        json!({}),
    )
    .await;
    let publish = credentials(&shared, &sid, "publish", &camera.token).await;
    let mut publisher =
        webrtc_peer::Publisher::start(&base, &sid, &publish, Default::default()).await;
    let mut viewers = std::collections::VecDeque::new();
    for _ in 0..2 {
        viewers.extend(join_viewer(&shared, &sid, &phone.token).await);
    }
    let phase = churn.mul_f64((n * 37 % 100) as f64 / 100.0);
    tokio::time::sleep(phase).await;
    while !shared.stopping.load(Ordering::Relaxed) {
        tokio::time::sleep(churn).await;
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        if let Some(old) = viewers.pop_front() {
            leave_viewer(&shared, old).await;
        }
        viewers.extend(join_viewer(&shared, &sid, &phone.token).await);
    }
    for viewer in viewers {
        leave_viewer(&shared, viewer).await;
    }
    let _ = publisher.stop_sending().await;
    let url = absolute(&base, &publisher.location);
    if let Err(e) = call(
        &shared.http,
        reqwest::Method::DELETE,
        url,
        Some(&publish),
        None,
    )
    .await
    {
        shared.errors.note(format!("WHIP DELETE: {e}"));
    }
    let _ = publisher.pc.close().await;
}

#[derive(Clone, Copy, Default)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
    db_connections: u64,
    devices: u64,
    publishers: u64,
    subscribers: u64,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 12th and 13th fields after the name; USER_HZ is 100.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn proc_sample(pid: u32, sample: &mut Sample) {
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next().and_then(|v| v.parse().ok())) {
                (Some("VmRSS:"), Some(v)) => sample.rss_kib = v,
                (Some("Threads:"), Some(v)) => sample.threads = v,
                _ => {}
            }
        }
    }
    sample.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
}

/// The server's own latency histogram for `POST /commands`, as cumulative shares per bucket:
/// what the server spent apart from the client and the network.
async fn server_command_histogram(shared: &Shared) -> String {
    let Ok(text) = async {
        shared
            .http
            .get(format!("{}/metrics", shared.base))
            .send()
            .await?
            .text()
            .await
    }
    .await
    else {
        return "unavailable".into();
    };
    let prefix =
        "watchpost_http_request_duration_seconds_bucket{method=\"POST\",route=\"/commands\",le=\"";
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (bound, count) = rest.split_once("\"} ")?;
            Some((bound.to_string(), count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return "no samples".into();
    }
    buckets
        .iter()
        .filter(|(bound, _)| ["0.001", "0.0025", "0.005", "0.01"].contains(&bound.as_str()))
        .map(|(bound, count)| {
            let ms = bound.parse::<f64>().unwrap_or(0.0) * 1000.0;
            format!("≤ {ms} ms {:.2}%", count / total * 100.0)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

async fn take_sample(shared: &Shared, pid: u32, started: Instant) -> Sample {
    let mut sample = Sample {
        at_s: started.elapsed().as_secs_f64(),
        ..Sample::default()
    };
    proc_sample(pid, &mut sample);
    let metrics = match shared
        .http
        .get(format!("{}/metrics", shared.base))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        Ok(r) => {
            shared.errors.note(format!("/metrics: {}", r.status()));
            None
        }
        Err(e) => {
            shared.errors.note(format!("/metrics: {e}"));
            None
        }
    };
    if let Some(text) = metrics {
        sample.tasks = gauge(&text, "watchpost_runtime_alive_tasks");
        sample.db_connections = gauge(&text, "watchpost_db_connections");
        sample.devices = gauge(&text, "watchpost_realtime_connected_devices");
        sample.publishers = gauge(&text, "watchpost_media_publishers");
        sample.subscribers = gauge(&text, "watchpost_media_subscribers");
    }
    sample
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Means of the first and last thirds of a series: a leak is a last third above the first
/// by more than noise (`relative` of the first, plus `absolute`).
fn rising(values: &[u64], relative: f64, absolute: f64) -> (f64, f64, bool) {
    let third = (values.len() / 3).max(1);
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
    let first = mean(&values[..third]);
    let last = mean(&values[values.len() - third..]);
    (first, last, last > first * (1.0 + relative) + absolute)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = env_u64("SOAK_SECONDS", if full { 600 } else { 60 });
    let households = env_u64("SOAK_HOUSEHOLDS", 20);
    let streams = env_u64("SOAK_STREAMS", households).min(households);
    let pairs = env_u64("SOAK_PAIRS", 25);
    let interval = Duration::from_millis(env_u64("SOAK_COMMAND_INTERVAL_MS", 5000));
    let churn = Duration::from_millis(env_u64("SOAK_VIEWER_CHURN_MS", 10_000));
    let sample_every = Duration::from_secs(if seconds >= 300 { 5 } else { 2 });
    let warm_up = Duration::from_secs((seconds / 6).clamp(10, 60));

    // Read before pinning narrows what this process sees.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = pinned(full);
    if pin {
        pin_generator(cores);
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base) = start_server(dir.path(), pin);
    let pid = server.0.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The WebRTC peers get a runtime of their own, so their bursts of SRTP work do not
    // queue behind (or in front of) the device clients that time the commands.
    // Niced, too: the generator stands in for a thousand devices on other machines, so
    // its peers' bursts must not delay the clocks of the clients that time the commands
    // (the commands would then measure the generator, not the server).
    let media_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak-media")
        .on_thread_start(|| {
            // SAFETY: setpriority has no memory effects; on Linux PRIO_PROCESS with a
            // thread id renices that one thread.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
            }
        })
        .enable_all()
        .build()
        .unwrap();
    let media = media_runtime.handle().clone();
    let report = runtime.block_on(async {
        let http = reqwest::Client::new();
        wait_ready(&http, &base).await;
        let shared = Arc::new(Shared {
            base: base.clone(),
            http: http.clone(),
            errors: Errors::default(),
            measuring: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            latencies: Mutex::new(Vec::new()),
            post_latencies: Mutex::new(Vec::new()),
            commands_sent: AtomicU64::new(0),
            viewers_joined: AtomicU64::new(0),
            viewers_left: AtomicU64::new(0),
            waiters: Arc::new(Mutex::new(HashMap::new())),
        });

        let setup = Instant::now();
        let homes: Vec<Household> = futures_util::future::join_all(
            (0..households).map(|n| household(&http, &base, n, pairs)),
        )
        .await;
        let mut tasks = Vec::new();
        for home in &homes {
            for device in home.cameras.iter().chain(&home.phones) {
                let socket = sio::connect(&base, json!({"token": device.token}))
                    .await
                    .expect("a device connects");
                let camera = home.cameras.iter().any(|c| c.id == device.id);
                tasks.push(if camera {
                    tokio::spawn(camera_loop(shared.clone(), socket))
                } else {
                    tokio::spawn(phone_loop(shared.clone(), socket))
                });
            }
            assert!(!home.user.is_empty());
        }
        let devices = tasks.len();
        let setup_time = setup.elapsed();
        let started = Instant::now();

        let mut load = Vec::new();
        let mut n = 0u64;
        for (h, home) in homes.iter().enumerate() {
            for (camera, phone) in home.cameras.iter().zip(&home.phones) {
                n += 1;
                load.push(tokio::spawn(commander(
                    shared.clone(),
                    phone.token.clone(),
                    camera.id.clone(),
                    interval,
                    n,
                )));
            }
            if h as u64 >= streams {
                continue;
            }
            load.push(media.spawn(live_stream(
                shared.clone(),
                Device {
                    id: home.cameras[0].id.clone(),
                    token: home.cameras[0].token.clone(),
                },
                Device {
                    id: home.phones[0].id.clone(),
                    token: home.phones[0].token.clone(),
                },
                churn,
                h as u64,
            )));
        }

        let mut samples = Vec::new();
        let end = started + warm_up + Duration::from_secs(seconds);
        let mut warm = false;
        let mut cpu_at_warm = (0.0, 0.0, Instant::now());
        while Instant::now() < end {
            tokio::time::sleep(sample_every).await;
            if !warm && started.elapsed() >= warm_up {
                warm = true;
                shared.measuring.store(true, Ordering::Relaxed);
                cpu_at_warm = (
                    cpu_seconds(&pid.to_string()),
                    cpu_seconds("self"),
                    Instant::now(),
                );
            }
            let sample = take_sample(&shared, pid, started).await;
            if warm {
                samples.push(sample);
            }
        }
        let window = cpu_at_warm.2.elapsed().as_secs_f64();
        let cpu = (
            (cpu_seconds(&pid.to_string()) - cpu_at_warm.0) / window * 100.0,
            (cpu_seconds("self") - cpu_at_warm.1) / window * 100.0,
        );
        let server_view = server_command_histogram(&shared).await;
        shared.stopping.store(true, Ordering::Relaxed);
        for task in load {
            if let Err(e) = task.await {
                shared.errors.note(format!("a load task failed: {e}"));
            }
        }
        // Everyone left: the media plane and the sockets must be back to nothing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after_streams = take_sample(&shared, pid, started).await;
        for task in &tasks {
            task.abort();
        }
        (
            shared,
            samples,
            after_streams,
            devices,
            setup_time,
            started.elapsed(),
            cpu,
            server_view,
        )
    });
    let (
        shared,
        samples,
        after,
        devices,
        setup_time,
        ran,
        (server_cpu, generator_cpu),
        server_view,
    ) = report;
    let _ = server.0.kill();
    let _ = server.0.wait();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    if let Ok(keep) = std::env::var("SOAK_SERVER_LOG") {
        std::fs::write(keep, &log).expect("SOAK_SERVER_LOG is writable");
    }
    let server_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .collect();

    let mut latencies = shared.latencies.lock().unwrap().clone();
    latencies.sort();
    let mut post_latencies = shared.post_latencies.lock().unwrap().clone();
    post_latencies.sort();
    let errors = shared.errors.count.load(Ordering::Relaxed);
    println!(
        "soak: {devices} devices, {streams} live streams (2 viewers each, one replaced every {} s), a command per phone every {} s; {} s measured after {} s warm-up (setup {:.1} s, ran {:.0} s)",
        churn.as_secs_f64(),
        interval.as_secs_f64(),
        seconds,
        warm_up.as_secs(),
        setup_time.as_secs_f64(),
        ran.as_secs_f64(),
    );
    println!(
        "  commands: {} sent, {} measured: p50 {}  p90 {}  p99 {}  max {}",
        shared.commands_sent.load(Ordering::Relaxed),
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "  of which POST /commands answered: p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&post_latencies, 0.5)),
        ms(percentile(&post_latencies, 0.9)),
        ms(percentile(&post_latencies, 0.99)),
        ms(post_latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "  POST /commands inside the server (its /metrics histogram, warm-up included): {server_view}"
    );
    println!(
        "  CPU over the measured window (of one core; the machine has {cores}, {}): server {server_cpu:.0}%, load generator {generator_cpu:.0}%",
        if pin {
            "the server pinned to core 0, the generator to the others"
        } else {
            "unpinned"
        }
    );
    println!(
        "  viewers: {} joined, {} left; errors: {errors}; server log ERROR/panic lines: {}",
        shared.viewers_joined.load(Ordering::Relaxed),
        shared.viewers_left.load(Ordering::Relaxed),
        server_errors.len(),
    );
    println!(
        "| t (s) | RSS (MiB) | open fds | threads | tasks | db connections | devices | publishers | subscribers |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let step = (samples.len() / 12).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            println!(
                "| {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                s.at_s,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.threads,
                s.tasks,
                s.db_connections,
                s.devices,
                s.publishers,
                s.subscribers
            );
        }
    }
    println!(
        "  after the streams ended: {} publishers, {} subscribers, {} tasks, {} fds",
        after.publishers, after.subscribers, after.tasks, after.fds
    );

    let series = |f: fn(&Sample) -> u64| samples.iter().map(f).collect::<Vec<_>>();
    let checks = [
        ("RSS (KiB)", series(|s| s.rss_kib), 0.10, 16.0 * 1024.0),
        ("open fds", series(|s| s.fds), 0.05, 16.0),
        ("threads", series(|s| s.threads), 0.0, 4.0),
        ("tasks", series(|s| s.tasks), 0.05, 64.0),
        ("db connections", series(|s| s.db_connections), 0.0, 2.0),
    ];
    let mut leaks = Vec::new();
    for (name, values, relative, absolute) in checks {
        let (first, last, leak) = rising(&values, relative, absolute);
        println!(
            "  {name}: first third {first:.0}, last third {last:.0}{}",
            if leak { "  <- RISING" } else { "  (flat)" }
        );
        if leak {
            leaks.push(name);
        }
    }
    if full {
        let p99 = percentile(&latencies, 0.99);
        println!(
            "  target: command p99 < 5 ms: {} ({})",
            if p99 < Duration::from_millis(5) {
                "met"
            } else {
                "NOT met"
            },
            ms(p99)
        );
    }
    for line in server_errors.iter().take(10) {
        eprintln!("server: {line}");
    }
    assert!(!samples.is_empty(), "no samples");
    assert!(!latencies.is_empty(), "no command was measured");
    assert_eq!(
        errors,
        0,
        "errors: {:?}",
        shared.errors.samples.lock().unwrap()
    );
    assert!(server_errors.is_empty(), "the server logged errors");
    assert!(leaks.is_empty(), "still rising at the end: {leaks:?}");
    assert!(
        samples.iter().all(|s| s.devices == devices as u64),
        "a device dropped off"
    );
    assert_eq!(
        (after.publishers, after.subscribers),
        (0, 0),
        "media peers left behind"
    );
}
