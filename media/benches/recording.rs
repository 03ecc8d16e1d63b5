//! Recording: the CPU cost of recording real ~2.5 Mbit/s VP8 + Opus streams, and how many
//! concurrent recordings one core sustains.
//!
//! N recorders (the real GStreamer pipeline, 10 s WebM segments in a temp dir) are fed
//! through their taps by one feeder thread, in real time: 30 VP8 frames/s and 50 Opus
//! packets/s from a clip ffmpeg encodes at 2500k (`tests/webrtc_peer/clip.rs`, looped), each
//! frame's arrival the `Instant` it is offered and its RTP time advancing 3000 (video) and
//! 960 (audio) per frame. The frame bytes are shared by all N taps, as the SFU shares them.
//! Stream i plays the clip `i/N` of a GOP ahead, so the recordings do not all start and cut
//! their segments at the same instant (cameras are not in step).
//!
//! Measured per N, over `BENCH_SECONDS` (default 20) after a 3 s warm-up (`BENCH_WARMUP`):
//! the whole process's CPU time (utime + stime of `/proc/self/stat`, every thread), and
//! separately the feeder alone (the same loop for the same N, frames dropped instead of
//! offered), so the recorders' own cost is the difference. Also: frames dropped by the taps,
//! segments written, recorded media against fed wall time, how late segment-closed events
//! arrive (a backlog shows there first), how long the recordings take to finish after their
//! taps are dropped, and, when pinned to one core, how much of that core other processes used.
//! N keeps up when the process stays under 100% of a core, nothing is dropped or fails,
//! every recording holds ≥ 99% of the time it was fed, and no segment closes more than 1 s
//! after the GOP that ends it is complete.
//!
//! `taskset -c 1 cargo bench -p watchpost-media --bench recording` runs N = 1, 2, 4, …
//! (doubling while it keeps up, then bisecting towards the limit), or the list in
//! `BENCH_RECORDINGS=1,4,16`. Without `--bench` (as under `cargo test --all-targets`) it runs
//! a smoke version: one recording, 3 s of frames.

#[path = "../../tests/webrtc_peer/clip.rs"]
#[allow(dead_code)]
mod clip;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use watchpost_media::recorder::{
    self, ClosedSegment, RecorderConfig, RecorderEvent, RecorderTap, Recording, TapFrame,
    TrackKind, VideoCodec,
};

const TICK: Duration = Duration::from_millis(10);
const SEGMENT: Duration = Duration::from_secs(10);
const VIDEO_FPS: u64 = 30;
const AUDIO_PPS: u64 = 50;
/// USER_HZ, the unit of /proc's CPU times: 100 on Linux (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;
/// The clip's keyframe interval. `splitmuxsink` closes a segment once the GOP after the cut
/// is complete, so a segment-closed event comes about this long after the segment's end.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
const GOP_FRAMES: u64 = KEYFRAME_INTERVAL.as_secs() * VIDEO_FPS;
/// A segment-closed event later than this after its end's wall time means a backlog.
const MAX_CLOSE_LAG: Duration = Duration::from_secs(KEYFRAME_INTERVAL.as_secs() + 1);

/// The clip's frames, ready to share.
struct Media {
    video: Vec<(bool, Arc<[u8]>)>,
    audio: Vec<Arc<[u8]>>,
}

impl Media {
    fn encode(dir: &Path, seconds: u32) -> Media {
        let clip = clip::Clip::encode(dir, seconds, "2500k");
        Media {
            video: clip
                .video
                .into_iter()
                .map(|(key, data)| (key, data.into()))
                .collect(),
            audio: clip.audio.into_iter().map(Into::into).collect(),
        }
    }

    /// Mbit/s of (video, audio).
    fn bitrates(&self) -> (f64, f64) {
        let video: usize = self.video.iter().map(|f| f.1.len()).sum();
        let audio: usize = self.audio.iter().map(|p| p.len()).sum();
        let video_s = self.video.len() as f64 / VIDEO_FPS as f64;
        let audio_s = self.audio.len() as f64 / AUDIO_PPS as f64;
        (
            video as f64 * 8.0 / video_s / 1e6,
            audio as f64 * 8.0 / audio_s / 1e6,
        )
    }
}

/// CPU seconds used so far by the whole process (all threads, live and exited).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised name: state is 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> u64 { fields[i].parse().expect("a CPU time in /proc/self/stat") };
    (field(11) + field(12)) as f64 / CLK_TCK
}

/// The one core this process is pinned to (`taskset -c K`), if it is pinned to one.
fn pinned_core() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse::<u32>().ok().map(|k| format!("cpu{k}"))
}

/// Busy CPU seconds of one core so far (everything but idle and iowait; steal included),
/// whoever used it: with the process's own time taken off, what else ran on its core.
fn core_busy_seconds(core: &str) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(core))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy as f64 / CLK_TCK)
}

/// The real-time feed: which frames are due is decided by the wall clock, so a late wake-up
/// sends the overdue frames at once (late arrivals, RTP times still exact).
struct Feeder {
    start: Instant,
    video: u64,
    audio: u64,
    last_offer: Instant,
    /// The latest the feeder woke after a tick it meant to wake at.
    max_late: Duration,
}

impl Feeder {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            video: 0,
            audio: 0,
            last_offer: now,
            max_late: Duration::ZERO,
        }
    }

    /// Feeds N streams until `until` after the start. `offer(i, frame)` gets stream i's
    /// frame; `tick()` runs after each tick's frames.
    fn run(
        &mut self,
        media: &Media,
        n: usize,
        until: Duration,
        offer: &mut impl FnMut(usize, TapFrame),
        tick: &mut impl FnMut(),
    ) {
        loop {
            let elapsed = self.start.elapsed();
            if elapsed >= until {
                return;
            }
            let nanos = elapsed.as_nanos() as u64;
            let video_due = nanos * VIDEO_FPS / 1_000_000_000 + 1;
            while self.video < video_due {
                for i in 0..n {
                    // Cameras are not in step: stream i is `i/n` of a GOP ahead in the clip,
                    // so the N recordings start and cut segments at different moments.
                    let at = self.video + (i as u64 * GOP_FRAMES / n as u64);
                    let (keyframe, data) = &media.video[(at % media.video.len() as u64) as usize];
                    offer(
                        i,
                        TapFrame {
                            kind: TrackKind::Video,
                            video: Some(VideoCodec::Vp8),
                            keyframe: *keyframe,
                            rtp_time: self.video * 3000,
                            clock_rate: 90_000,
                            arrival: Instant::now(),
                            data: data.clone(),
                        },
                    );
                }
                self.video += 1;
            }
            let audio_due = nanos * AUDIO_PPS / 1_000_000_000 + 1;
            while self.audio < audio_due {
                let data = &media.audio[(self.audio % media.audio.len() as u64) as usize];
                for i in 0..n {
                    offer(
                        i,
                        TapFrame {
                            kind: TrackKind::Audio,
                            video: None,
                            keyframe: false,
                            rtp_time: self.audio * 960,
                            clock_rate: 48_000,
                            arrival: Instant::now(),
                            data: data.clone(),
                        },
                    );
                }
                self.audio += 1;
            }
            self.last_offer = Instant::now();
            tick();
            // Sleep to the next 10 ms tick.
            let ticks = (self.start.elapsed().as_nanos() / TICK.as_nanos()) as u32 + 1;
            let next = self.start + TICK * ticks;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            self.max_late = self
                .max_late
                .max(Instant::now().saturating_duration_since(next));
        }
    }
}

/// The feeder alone for N streams over the same window: CPU seconds per wall second.
fn feeder_only(media: &Media, n: usize, warmup: Duration, window: Duration) -> f64 {
    let mut feeder = Feeder::new();
    let mut offer = |_: usize, frame: TapFrame| drop(std::hint::black_box(frame));
    feeder.run(media, n, warmup, &mut offer, &mut || {});
    let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
    feeder.run(media, n, warmup + window, &mut offer, &mut || {});
    (process_cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64()
}

struct Rec {
    recording: Recording,
    tap: Option<RecorderTap>,
    /// Arrival of its first (key)frame: the recording's time zero.
    start: Option<Instant>,
    segments: Vec<ClosedSegment>,
    max_close_lag: Duration,
    failed: Option<String>,
}

impl Rec {
    fn handle(&mut self, event: RecorderEvent, now: Instant) {
        match event {
            RecorderEvent::SegmentClosed(segment) => {
                if let Some(start) = self.start {
                    let end = start + segment.offset + segment.duration;
                    self.max_close_lag = self.max_close_lag.max(now.saturating_duration_since(end));
                }
                self.segments.push(segment);
            }
            RecorderEvent::Failed { error } => self.failed = Some(error),
            RecorderEvent::Started { .. } | RecorderEvent::Finished => {}
        }
    }
}

struct Outcome {
    n: usize,
    /// CPU seconds per wall second, whole process.
    total: f64,
    /// The same for the feeder alone (`None` in the smoke run).
    feeder: Option<f64>,
    offered: u64,
    dropped: u64,
    segments: usize,
    /// Lowest (recorded media, fed wall time) ratio over the N recordings, with its figures.
    recorded: (f64, Duration, Duration),
    max_close_lag: Duration,
    feeder_late: Duration,
    drain: Duration,
    /// CPU share of the pinned core used by other processes (and steal) in the window.
    others: Option<f64>,
    failures: Vec<String>,
}

impl Outcome {
    fn per_recording(&self) -> Option<f64> {
        self.feeder
            .map(|feeder| (self.total - feeder).max(0.0) / self.n as f64)
    }

    fn keeps_up(&self) -> bool {
        self.total < 1.0
            && self.dropped == 0
            && self.failures.is_empty()
            && self.recorded.0 >= 0.99
            && self.max_close_lag <= MAX_CLOSE_LAG
    }
}

fn record(
    media: &Media,
    n: usize,
    dir: &Path,
    warmup: Duration,
    window: Duration,
    baseline: bool,
) -> Outcome {
    let feeder_cpu = baseline.then(|| feeder_only(media, n, warmup, window));
    let core = pinned_core();
    let mut recs: Vec<Rec> = (0..n)
        .map(|i| {
            let config = RecorderConfig::new(dir.join(format!("rec-{i:03}")), SEGMENT);
            let (recording, mut tap) = recorder::start(config).expect("the recorder starts");
            tap.tracks(true, true);
            Rec {
                recording,
                tap: Some(tap),
                start: None,
                segments: Vec::new(),
                max_close_lag: Duration::ZERO,
                failed: None,
            }
        })
        .collect();
    let mut feeder = Feeder::new();
    let (cpu0, t0, cpu1, t1, others) = {
        let recs = std::cell::RefCell::new(&mut recs);
        let mut offer = |i: usize, frame: TapFrame| {
            let mut recs = recs.borrow_mut();
            let rec = &mut recs[i];
            if frame.keyframe {
                rec.start.get_or_insert(frame.arrival);
            }
            if let Some(tap) = &mut rec.tap {
                tap.offer(frame, None);
            }
        };
        let mut tick = || {
            let now = Instant::now();
            for rec in recs.borrow_mut().iter_mut() {
                while let Ok(event) = rec.recording.events.try_recv() {
                    rec.handle(event, now);
                }
            }
        };
        feeder.run(media, n, warmup, &mut offer, &mut tick);
        feeder.max_late = Duration::ZERO;
        let busy0 = core.as_deref().and_then(core_busy_seconds);
        let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
        feeder.run(media, n, warmup + window, &mut offer, &mut tick);
        let (cpu1, t1) = (process_cpu_seconds(), Instant::now());
        let busy1 = core.as_deref().and_then(core_busy_seconds);
        let others = busy0
            .zip(busy1)
            .map(|(b0, b1)| ((b1 - b0) - (cpu1 - cpu0)).max(0.0) / (t1 - t0).as_secs_f64());
        (cpu0, t0, cpu1, t1, others)
    };
    let offered = (feeder.video + feeder.audio) * n as u64;
    let dropped: u64 = recs
        .iter()
        .map(|r| r.recording.stats.frames_dropped.load(Ordering::Relaxed))
        .sum();
    // The end: every tap dropped, then each recording closes its last segment.
    let last_offer = feeder.last_offer;
    let ended = Instant::now();
    for rec in &mut recs {
        rec.tap = None;
    }
    for rec in &mut recs {
        loop {
            match rec.recording.events.blocking_recv() {
                Some(RecorderEvent::Finished) => break,
                Some(event @ RecorderEvent::Failed { .. }) => {
                    rec.handle(event, Instant::now());
                    break;
                }
                Some(event) => rec.handle(event, Instant::now()),
                None => {
                    rec.failed.get_or_insert("the recorder went away".into());
                    break;
                }
            }
        }
    }
    let drain = ended.elapsed();
    let recorded = recs
        .iter()
        .map(|rec| {
            let media: Duration = rec.segments.iter().map(|s| s.duration).sum();
            let fed = last_offer.saturating_duration_since(rec.start.unwrap_or(last_offer));
            (
                media.as_secs_f64() / fed.as_secs_f64().max(1e-9),
                media,
                fed,
            )
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default();
    Outcome {
        n,
        total: (cpu1 - cpu0) / (t1 - t0).as_secs_f64(),
        feeder: feeder_cpu,
        offered,
        dropped,
        segments: recs.iter().map(|r| r.segments.len()).sum(),
        recorded,
        max_close_lag: recs
            .iter()
            .map(|r| r.max_close_lag)
            .max()
            .unwrap_or_default(),
        feeder_late: feeder.max_late,
        drain,
        others,
        failures: recs.iter().filter_map(|r| r.failed.clone()).collect(),
    }
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn env_seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let base = std::env::temp_dir().join(format!("wp-bench-recording-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    if full {
        bench(&base);
    } else {
        smoke(&base);
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// One recording, 3 s of frames: it writes a segment, in time, and drops nothing.
fn smoke(base: &Path) {
    let media = Media::encode(base, 4);
    let run = record(
        &media,
        1,
        &base.join("run"),
        Duration::ZERO,
        Duration::from_secs(3),
        false,
    );
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert!(run.segments >= 1, "no segment was closed");
    assert_eq!(run.dropped, 0, "frames dropped");
    assert!(run.recorded.0 >= 0.95, "recorded {:?}", run.recorded);
    println!(
        "recording smoke: {} segment(s), {:.2} s recorded of {:.2} s fed, {} frames, 0 dropped, {} of a core",
        run.segments,
        run.recorded.1.as_secs_f64(),
        run.recorded.2.as_secs_f64(),
        run.offered,
        pct(run.total),
    );
}

fn bench(base: &Path) {
    let warmup = env_seconds("BENCH_WARMUP", 3);
    let window = env_seconds("BENCH_SECONDS", 20);
    let list: Option<Vec<usize>> = std::env::var("BENCH_RECORDINGS")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().parse().unwrap()).collect());
    // 10 s of clip (a multiple of the 2 s keyframe interval), looped.
    let media = Media::encode(base, 10);
    let (video_mbps, audio_mbps) = media.bitrates();
    eprintln!(
        "clip: {} VP8 frames ({video_mbps:.2} Mbit/s), {} Opus packets ({audio_mbps:.3} Mbit/s); \
         warm-up {warmup:?}, window {window:?}",
        media.video.len(),
        media.audio.len()
    );
    let mut outcomes: Vec<Outcome> = Vec::new();
    let run = |n: usize, outcomes: &mut Vec<Outcome>| -> bool {
        let dir = base.join(format!("n{n}"));
        let outcome = record(&media, n, &dir, warmup, window, true);
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "N={n}: total {} feeder {} per recording {} dropped {} segments {} lag {} drain {} others {} -> {}",
            pct(outcome.total),
            pct(outcome.feeder.unwrap_or(0.0)),
            pct(outcome.per_recording().unwrap_or(0.0)),
            outcome.dropped,
            outcome.segments,
            ms(outcome.max_close_lag),
            ms(outcome.drain),
            outcome.others.map_or("–".to_string(), pct),
            if outcome.keeps_up() {
                "keeps up"
            } else {
                "does not keep up"
            },
        );
        let ok = outcome.keeps_up();
        outcomes.push(outcome);
        ok
    };
    match list {
        Some(list) => {
            for n in list {
                run(n, &mut outcomes);
            }
        }
        None => {
            // Double while it keeps up (1 … 32 in any case), then bisect towards the limit.
            let (mut good, mut bad) = (0, None);
            let mut n = 1;
            while n <= 1024 {
                if run(n, &mut outcomes) {
                    good = n;
                } else if n >= 32 {
                    bad = Some(n);
                    break;
                } else {
                    bad.get_or_insert(n);
                }
                n *= 2;
            }
            if let Some(mut bad) = bad.filter(|&bad| bad > good) {
                for _ in 0..3 {
                    if bad - good <= (good / 8).max(1) {
                        break;
                    }
                    let mid = (good + bad) / 2;
                    if run(mid, &mut outcomes) {
                        good = mid;
                    } else {
                        bad = mid;
                    }
                }
            }
        }
    }
    outcomes.sort_by_key(|o| o.n);

    println!(
        "Recording VP8 {video_mbps:.2} Mbit/s + Opus {audio_mbps:.3} Mbit/s per stream, \
         {}s segments, {} s measured after {} s warm-up\n",
        SEGMENT.as_secs(),
        window.as_secs(),
        warmup.as_secs()
    );
    println!(
        "| recordings | process CPU | feeder alone | recorder CPU per recording | frames dropped | \
         segments | recorded / fed (worst) | segment close lag (max) | feeder late (max) | \
         finish after end | others on the core | keeps up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let per_recording = format!("{:.2}%", o.per_recording().unwrap_or(0.0) * 100.0);
        println!(
            "| {} | {} | {} | {} | {} of {} | {} | {:.2} s / {:.2} s | {} | {} | {} | {} | {} |",
            o.n,
            pct(o.total),
            pct(o.feeder.unwrap_or(0.0)),
            per_recording,
            o.dropped,
            o.offered,
            o.segments,
            o.recorded.1.as_secs_f64(),
            o.recorded.2.as_secs_f64(),
            ms(o.max_close_lag),
            ms(o.feeder_late),
            ms(o.drain),
            o.others.map_or("–".to_string(), pct),
            if o.keeps_up() { "yes" } else { "**no**" },
        );
        for failure in &o.failures {
            println!("\nN={}: recording failed: {failure}", o.n);
        }
    }
    let capacity = outcomes.iter().filter(|o| o.keeps_up()).map(|o| o.n).max();
    match capacity {
        Some(n) => println!(
            "\nCapacity: {n} concurrent recordings on this core (largest N measured with process \
             CPU under 100% of one core, zero drops, every recording real-time)."
        ),
        None => println!("\nCapacity: no N measured kept up."),
    }
}
