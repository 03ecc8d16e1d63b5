//! One measured run: a server, its camera and N viewers.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::camera::{SentLog, run_plain_camera, run_webrtc_camera};
use crate::household;
use crate::janus::JanusProcess;
use crate::peer::Peer;
use crate::procfs;
use crate::viewer::{Phase, Sample, ViewerStats, run_viewer};
use crate::watchpost::{ServerProcess, server_datagrams_sent, start_server};

/// How long after the window packets of its frames still count as heard: a repair takes
/// a NACK round trip, and a busy generator reads late.
const DRAIN: Duration = Duration::from_millis(500);

pub(crate) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) struct Row {
    pub(crate) viewers: usize,
    pub(crate) server_cpu: f64,
    pub(crate) us_per_packet: f64,
    /// The kernel's part of the server's CPU (system time: UDP sends and receives).
    pub(crate) system_share: f64,
    pub(crate) packets_per_second: f64,
    pub(crate) datagrams_per_second: Option<f64>,
    /// Datagrams per message handed to the kernel (GSO runs), where the server counts them.
    pub(crate) datagrams_per_message: Option<f64>,
    pub(crate) loss: f64,
    pub(crate) latency_p50_us: u32,
    pub(crate) latency_p99_us: u32,
    /// p99 to when the generator read the packet: its own queueing included.
    pub(crate) read_latency_p99_us: u32,
    pub(crate) frame_latency_p50_us: u32,
    pub(crate) frame_latency_p99_us: u32,
    pub(crate) rss_per_viewer: f64,
    pub(crate) first_frame_p50_ms: u32,
    pub(crate) first_frame_max_ms: u32,
    /// Of the first frame's wait, the part spent connecting (WHEP POST → ICE and DTLS
    /// done); the rest is waiting for a keyframe.
    pub(crate) connect_p90_ms: u32,
    pub(crate) connect_max_ms: u32,
    pub(crate) generator_cpu: f64,
    /// Every frame's first packet at every viewer (by the viewer's index), for a dump.
    pub(crate) samples: Vec<(usize, Sample)>,
}

impl Row {
    /// Writes the latency samples as tab-separated lines, for looking into a tail.
    pub(crate) fn dump(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "viewer\tframe\tsent_ns\tlatency_us")?;
        for (viewer, s) in &self.samples {
            writeln!(
                out,
                "{viewer}\t{}\t{}\t{}",
                s.frame, s.sent_ns, s.latency_us
            )?;
        }
        out.flush()
    }
}

/// The server under test, as the generator drives it.
pub(crate) enum Target {
    Watchpost {
        server: ServerProcess,
        household: household::Household,
    },
    Janus(JanusProcess),
}

impl Target {
    pub(crate) fn pid(&self) -> &str {
        match self {
            Target::Watchpost { server, .. } => &server.pid,
            Target::Janus(janus) => &janus.pid,
        }
    }

    pub(crate) async fn viewer(&self, http: &reqwest::Client) -> Result<Peer, String> {
        match self {
            Target::Watchpost { server, household } => {
                let whep = format!("{}/whep/{}", server.base, household.sid);
                Ok(Peer::watchpost(http, &whep, &household.subscribe, false)
                    .await?
                    .0)
            }
            Target::Janus(janus) => Peer::janus(http, janus).await,
        }
    }

    pub(crate) async fn datagrams_sent(&self, http: &reqwest::Client) -> Option<(u64, u64)> {
        match self {
            Target::Watchpost { server, .. } => {
                Some(server_datagrams_sent(http, &server.base).await)
            }
            Target::Janus(_) => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Server {
    Watchpost,
    /// Janus, reached on its interface's address.
    Janus(IpAddr),
}

pub(crate) async fn wait_for(
    what: &str,
    timeout: Duration,
    done: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what} within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

pub(crate) async fn run_once(
    http: &reqwest::Client,
    which: Server,
    server_cpu: Option<usize>,
    n: usize,
    seconds: u64,
    warmup: Duration,
) -> Result<Row, String> {
    let mut tasks = Vec::new();
    let result = measure(http, which, server_cpu, n, seconds, warmup, &mut tasks).await;
    for task in tasks {
        task.abort();
    }
    result
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    http: &reqwest::Client,
    which: Server,
    server_cpu: Option<usize>,
    n: usize,
    seconds: u64,
    warmup: Duration,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Row, String> {
    let log = Rc::new(SentLog::default());
    let target = match which {
        Server::Watchpost => {
            let server = start_server(http, server_cpu).await;
            let household = household::household(http, &server.base, &format!("load-{n}")).await;
            let camera_connected = Rc::new(Cell::new(false));
            let (camera, media) = Peer::watchpost(
                http,
                &format!("{}/whip/{}", server.base, household.sid),
                &household.publish,
                true,
            )
            .await?;
            tasks.push(tokio::task::spawn_local(run_webrtc_camera(
                camera,
                media,
                camera_connected.clone(),
                log.clone(),
            )));
            wait_for("the camera connected", Duration::from_secs(10), || {
                camera_connected.get()
            })
            .await?;
            Target::Watchpost { server, household }
        }
        Server::Janus(ip) => {
            let janus = JanusProcess::start(http, ip, server_cpu).await?;
            let socket = UdpSocket::bind((janus.ip, 0))
                .await
                .map_err(|e| e.to_string())?;
            tasks.push(tokio::task::spawn_local(run_plain_camera(
                socket,
                SocketAddr::new(janus.ip, janus.audio_port),
                SocketAddr::new(janus.ip, janus.video_port),
                log.clone(),
            )));
            Target::Janus(janus)
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_alone = procfs::rss_bytes(target.pid());

    let phase = Rc::new(Cell::new(Phase::Warmup));
    let mut viewers: Vec<Rc<RefCell<ViewerStats>>> = Vec::with_capacity(n);
    // Viewers arrive in groups of 10, each group once the previous one is connected.
    for group in (0..n).collect::<Vec<_>>().chunks(10) {
        let mut joining = Vec::new();
        for _ in group {
            let stats = Rc::new(RefCell::new(ViewerStats::default()));
            let posted = Instant::now();
            let peer = target.viewer(http).await?;
            tasks.push(tokio::task::spawn_local(run_viewer(
                peer,
                posted,
                phase.clone(),
                stats.clone(),
            )));
            joining.push(stats.clone());
            viewers.push(stats);
        }
        wait_for("viewers connected", Duration::from_secs(20), || {
            joining.iter().all(|s| s.borrow().connected)
        })
        .await?;
    }
    wait_for(
        "every viewer had a keyframe",
        Duration::from_secs(20),
        || viewers.iter().all(|s| s.borrow().first_keyframe.is_some()),
    )
    .await?;
    tokio::time::sleep(warmup).await;

    let pid = target.pid().to_string();
    let datagrams_before = target.datagrams_sent(http).await;
    let (server_before, generator_before) = (
        procfs::user_system_seconds(&pid),
        procfs::cpu_seconds("self"),
    );
    let started = Instant::now();
    let sent_from = log.mark();
    phase.set(Phase::Window);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let sent_to = log.mark();
    phase.set(Phase::Drain);
    let wall = started.elapsed().as_secs_f64();
    let (user, system) = procfs::user_system_seconds(&pid);
    let (user, system) = (user - server_before.0, system - server_before.1);
    let server_cpu_seconds = user + system;
    let generator_cpu_seconds = procfs::cpu_seconds("self") - generator_before;
    let datagrams = match (target.datagrams_sent(http).await, datagrams_before) {
        (Some(after), Some(before)) => Some((after.0 - before.0, after.1 - before.1)),
        _ => None,
    };
    let rss = procfs::rss_bytes(&pid);
    // The window's last packets, and repairs of its losses, may still be on their way.
    tokio::time::sleep(DRAIN).await;
    phase.set(Phase::Over);

    // Loss against what the camera sent: every viewer expected every packet of the frames
    // and audio packets sent while the window was open, whenever it heard them.
    let sent = log.packets_between(sent_from, sent_to);
    let (mut received, mut heard, mut expected) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let mut read_latencies = Vec::new();
    let mut frame_latencies = Vec::new();
    let mut first_frames: Vec<u32> = Vec::new();
    let mut connects: Vec<u32> = Vec::new();
    let mut samples = Vec::new();
    for (viewer, stats) in viewers.iter().enumerate() {
        let s = stats.borrow();
        received += s.window_packets;
        heard += s.heard_between(sent_from, sent_to).min(sent);
        expected += sent;
        latencies.extend(s.first_packets.iter().map(|p| p.latency_us));
        samples.extend(s.first_packets.iter().map(|&p| (viewer, p)));
        read_latencies.extend_from_slice(&s.read_latencies_us);
        frame_latencies.extend_from_slice(&s.frame_latencies_us);
        first_frames.extend(s.first_keyframe.map(|d| d.as_millis() as u32));
        connects.extend(s.connected_after.map(|d| d.as_millis() as u32));
    }
    if received == 0 {
        return Err("no packets reached the viewers in the window".into());
    }
    latencies.sort_unstable();
    read_latencies.sort_unstable();
    frame_latencies.sort_unstable();
    first_frames.sort_unstable();
    connects.sort_unstable();
    Ok(Row {
        viewers: n,
        server_cpu: server_cpu_seconds / wall * 100.0,
        us_per_packet: server_cpu_seconds * 1e6 / received as f64,
        system_share: system / server_cpu_seconds.max(1e-9),
        packets_per_second: received as f64 / wall,
        datagrams_per_second: datagrams.map(|(d, _)| d as f64 / wall),
        datagrams_per_message: datagrams
            .filter(|&(_, m)| m > 0)
            .map(|(d, m)| d as f64 / m as f64),
        loss: (expected - heard) as f64 * 100.0 / expected.max(1) as f64,
        latency_p50_us: percentile(&latencies, 0.5),
        latency_p99_us: percentile(&latencies, 0.99),
        read_latency_p99_us: percentile(&read_latencies, 0.99),
        frame_latency_p50_us: percentile(&frame_latencies, 0.5),
        frame_latency_p99_us: percentile(&frame_latencies, 0.99),
        rss_per_viewer: rss.saturating_sub(rss_alone) as f64 / n as f64 / 1024.0,
        first_frame_p50_ms: percentile(&first_frames, 0.5),
        first_frame_max_ms: first_frames.last().copied().unwrap_or(0),
        connect_p90_ms: percentile(&connects, 0.9),
        connect_max_ms: connects.last().copied().unwrap_or(0),
        generator_cpu: generator_cpu_seconds / wall * 100.0,
        samples,
    })
}
