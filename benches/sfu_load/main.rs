//! SFU load: the server as a process of its own, pinned to one core, and a load generator
//! (this process, pinned to another) with one camera and N viewers, all str0m peers over
//! real WebRTC (ICE, DTLS, SRTP) on loopback.
//!
//! The camera sends what a phone sends: VP8 at ~2.5 Mbit/s and 30 frames/s in packets of
//! up to ~1,200 bytes, a keyframe every 2 s (and on each keyframe request), and Opus at 50
//! packets/s. Every frame and audio packet starts with its index and its send time, so a
//! viewer knows how long it took. Viewers run str0m in RTP mode: they decrypt and count
//! packets without reassembling frames, which keeps the generator light.
//!
//! Figures per N, over a window after warm-up:
//! - server CPU (utime + stime of its process, from /proc) and CPU µs per RTP packet the
//!   viewers received (every forwarded packet that arrived, repairs included);
//! - forwarded RTP packets/s; viewer-side loss: of the packets the camera sent while the
//!   window was open (it logs each frame's packet count), those a viewer never heard,
//!   repairs and stragglers within 500 ms after the window included;
//! - added latency, camera send → arrival at the viewer's socket of each frame's first
//!   packet (the kernel's receive stamp, `SO_TIMESTAMPNS`, so the generator's own queueing
//!   behind other viewers does not count against the server), and to its last packet
//!   ("whole frame": when a decoder could have it); beside it, the p99 as the generator
//!   read the packet, which does include that queueing;
//! - server RSS per viewer (RSS with N viewers minus RSS with the camera alone, over N);
//! - time from a viewer's WHEP POST to its first keyframe, and of it the part spent connecting
//!   (ICE and DTLS done; the rest is the wait for a keyframe);
//! - the generator's own CPU, so a saturated generator is seen for what it is.
//!
//! `cargo bench --bench sfu_load` runs N = 10, 50, 100, 200, 400 for 20 s each (override
//! with `BENCH_VIEWERS=10,50` and `BENCH_SECONDS`). Without `--bench` (as under
//! `cargo test --all-targets`) it runs a smoke version: 2 viewers for 2 s.
//!
//! A full run keeps idle CPUs polling ([`idle`]; `BENCH_IDLE_POLL=0` lets them halt).
//! `BENCH_DUMP=<dir>` writes every latency sample, one file per server and N (viewer,
//! camera frame, send time, latency), for looking into a tail.

#[path = "../support/chart.rs"]
mod chart;
#[path = "../support/household.rs"]
mod household;
#[path = "../support/procfs.rs"]
mod procfs;

mod camera;
mod idle;
mod janus;
mod peer;
mod run;
mod viewer;
mod watchpost;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use camera::frame_sizes;
use janus::JanusNet;
use run::{Row, Server, run_once};

/// The generator's clock origin: send times travel as nanoseconds since it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_nanos() as u64
}

/// The wall clock (CLOCK_REALTIME, ns) at `EPOCH`: the kernel stamps a datagram's arrival
/// on the wall clock, the camera its send on the monotonic one.
static EPOCH_WALL_NS: LazyLock<u64> = LazyLock::new(|| {
    // The tightest of a few readings taken around a monotonic one.
    (0..16)
        .map(|_| {
            let before = wall_ns();
            let mono = since_epoch(Instant::now());
            let after = wall_ns();
            (
                after - before,
                (before + (after - before) / 2).saturating_sub(mono),
            )
        })
        .min()
        .map_or(0, |(_, origin)| origin)
});

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A kernel arrival stamp (wall clock, ns) on the generator's `since_epoch` scale.
fn wall_to_epoch(wall: u64) -> u64 {
    wall.saturating_sub(*EPOCH_WALL_NS)
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Keeps this thread (and the threads it starts later) on one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: as above; the set names one CPU this process is allowed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let counts: Vec<usize> = std::env::var("BENCH_VIEWERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if full {
                vec![10, 50, 100, 200, 400]
            } else {
                vec![2]
            }
        });
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 20 } else { 2 });
    let warmup = Duration::from_secs(if full { 3 } else { 1 });
    LazyLock::force(&EPOCH);
    LazyLock::force(&EPOCH_WALL_NS);

    // The server on the first allowed CPU, the generator on the last (when there are two).
    let cpus = allowed_cpus();
    let server_cpu = match (cpus.first(), cpus.last()) {
        (Some(&server), Some(&generator)) if server != generator => {
            pin_to(generator);
            Some(server)
        }
        _ => None,
    };
    // Janus side by side in full runs, unless BENCH_JANUS=0.
    let janus_net = if full && std::env::var("BENCH_JANUS").as_deref() != Ok("0") {
        match JanusNet::setup() {
            Ok(net) => Some(net),
            Err(e) => {
                eprintln!("Janus is left out: {e}");
                None
            }
        }
    } else {
        None
    };
    // Held to the end of main: the kernel lets idle CPUs halt again when it closes.
    let idle_poll = if full && std::env::var("BENCH_IDLE_POLL").as_deref() != Ok("0") {
        idle::IdlePoll::hold()
            .map_err(|e| eprintln!("idle CPUs may halt: {e}"))
            .ok()
    } else {
        None
    };
    let dump = std::env::var_os("BENCH_DUMP").map(std::path::PathBuf::from);
    let mut servers = vec![Server::Watchpost];
    servers.extend(janus_net.as_ref().map(|net| Server::Janus(net.ip)));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let http = reqwest::Client::new();
    let (delta, keyframe) = frame_sizes();
    println!(
        "SFU load: {seconds} s per run; camera VP8 ~2.5 Mbit/s, 30 frames/s ({delta} B delta, \
         {keyframe} B keyframe every 2 s) + Opus 50 packets/s; server on CPU {server_cpu:?}; \
         idle CPUs {}",
        if idle_poll.is_some() {
            "poll (cpu_dma_latency 0)"
        } else {
            "may halt"
        }
    );
    println!(
        "| server | viewers | server CPU | CPU µs/packet | of it kernel | packets/s | server datagrams/s | per send | loss | \
         latency p50 | p99 | p99 read | whole frame p50 | p99 | RSS/viewer | first frame p50 | max | of it connecting p90 | max | generator CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut series: Vec<chart::Series> = Vec::new();
    for &n in &counts {
        let mut rows = Vec::new();
        for &server in &servers {
            let name = match server {
                Server::Watchpost => "Watchpost",
                Server::Janus(_) => "Janus",
            };
            match local.block_on(
                &runtime,
                run_once(&http, server, server_cpu, n, seconds, warmup),
            ) {
                Ok(row) => {
                    print_row(name, &row);
                    if let Some(dir) = &dump {
                        let path = dir.join(format!("{name}-{n}.tsv"));
                        if let Err(e) = row.dump(&path) {
                            eprintln!("no dump at {}: {e}", path.display());
                        }
                    }
                    let points = match series.iter_mut().find(|s| s.name == name) {
                        Some(s) => &mut s.points,
                        None => {
                            series.push(chart::Series {
                                name: name.to_string(),
                                points: Vec::new(),
                            });
                            &mut series.last_mut().expect("pushed").points
                        }
                    };
                    points.push((n as f64, row.us_per_packet, row.loss));
                    rows.push(Some(row));
                }
                // A server past its capacity is a finding in a full run, a failure in the smoke.
                Err(e) if full => {
                    println!("| {name} | {n} | did not hold: {e} |||||||||||||||");
                    rows.push(None);
                }
                Err(e) => panic!("{name} with {n} viewers: {e}"),
            }
        }
        if let [Some(watchpost), Some(janus)] = &rows[..] {
            ratios.push((
                n,
                janus.us_per_packet / watchpost.us_per_packet,
                janus.loss,
                watchpost.loss,
            ));
        }
    }
    if !ratios.is_empty() {
        println!();
        println!("| viewers | Janus/Watchpost CPU per packet | loss Janus | loss Watchpost |");
        println!("|---|---|---|---|");
        for (n, ratio, janus_loss, watchpost_loss) in ratios {
            println!("| {n} | {ratio:.2}× | {janus_loss:.3}% | {watchpost_loss:.3}% |");
        }
    }
    if full && !series.is_empty() {
        let path = std::env::var("BENCH_CHART").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sfu-load.png").to_string()
        });
        let title = format!(
            "One camera (VP8 2.5 Mbit/s + Opus) to N viewers, server pinned to one core, {seconds} s per point"
        );
        match chart::draw(std::path::Path::new(&path), &title, &series) {
            Ok(()) => println!("\nchart: {path}"),
            Err(e) => eprintln!("no chart: {e}"),
        }
    }
}

fn print_row(name: &str, row: &Row) {
    println!(
        "| {name} | {} | {:.1}% | {:.2} | {:.0}% | {:.0} | {} | {} | {:.3}% | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | \
         {:.0} KiB | {} ms | {} ms | {} ms | {} ms | {:.1}%{} |",
        row.viewers,
        row.server_cpu,
        row.us_per_packet,
        row.system_share * 100.0,
        row.packets_per_second,
        row.datagrams_per_second
            .map_or("–".to_string(), |d| format!("{d:.0}")),
        row.datagrams_per_message
            .map_or("–".to_string(), |d| format!("{d:.1}")),
        row.loss,
        f64::from(row.latency_p50_us) / 1000.0,
        f64::from(row.latency_p99_us) / 1000.0,
        f64::from(row.read_latency_p99_us) / 1000.0,
        f64::from(row.frame_latency_p50_us) / 1000.0,
        f64::from(row.frame_latency_p99_us) / 1000.0,
        row.rss_per_viewer,
        row.first_frame_p50_ms,
        row.first_frame_max_ms,
        row.connect_p90_ms,
        row.connect_max_ms,
        row.generator_cpu,
        if row.generator_cpu > 90.0 {
            " (generator saturated)"
        } else {
            ""
        },
    );
}
