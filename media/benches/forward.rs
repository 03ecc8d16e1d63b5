//! The forwarding hot path in process, without syscalls: one camera's VP8 packet (1,100
//! bytes, one frame per packet) handed to the SFU core and sent on to N viewers. What is
//! timed is the core's own work per published packet: SRTP unprotect once, then per viewer a
//! header rewrite and SRTP protect. The camera's packets are made beforehand and the core's
//! datagrams are set aside, so neither end's peer is in the figure.
//!
//! ```sh
//! cargo bench -p watchpost-media --features sim --bench forward
//! ```
//!
//! Criterion's throughput is forwarded packets per second of one core; its inverse is the
//! CPU time per forwarded packet. Each N ends with a count of packets in and out and of the
//! heap allocations the timed work made per forwarded packet (a counting allocator wraps
//! the system's; the count costs an uncontended atomic add per allocation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use watchpost_media::MediaLimits;
use watchpost_media::sfu::sim::{ClientId, Sim, vp8_frame};

/// The system allocator, counting allocations (and reallocations, which may move).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Packets made per batch: enough to time, little enough to keep in memory.
const BATCH: u64 = 256;
const PAYLOAD: usize = 1_100;

/// A room with a camera and `viewers` viewers, each of which has had a keyframe, so every
/// one is being forwarded to. Returns the world, the camera and its next frame number.
fn room_with_viewers(viewers: u64) -> (Sim, ClientId, u32) {
    let mut sim = Sim::with_limits(
        Duration::from_secs(5),
        MediaLimits::server_wide(1, viewers as u32 + 1),
    );
    let camera = sim.publisher("bench", "camera", &[]);
    let watchers: Vec<_> = (0..viewers)
        .map(|i| sim.viewer("bench", &format!("viewer-{i}")))
        .collect();
    let mut frame_number = 0u32;
    for _ in 0..50 {
        sim.send_video(camera, None, &vp8_frame(true, 0, frame_number, PAYLOAD));
        frame_number += 1;
        sim.run_for(Duration::from_millis(33));
        if watchers
            .iter()
            .all(|&v| !sim.clients[v].video_frames().is_empty())
        {
            break;
        }
    }
    assert!(
        watchers
            .iter()
            .all(|&v| !sim.clients[v].video_frames().is_empty()),
        "every viewer has the first keyframe"
    );
    (sim, camera, frame_number)
}

fn forward(c: &mut Criterion) {
    // `cargo test` runs each benchmark once (no `--bench`): a smoke run of the small sizes.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if quick { &[1, 10] } else { &[1, 10, 50, 200] };
    let mut group = c.benchmark_group("forward one VP8 packet to N viewers");
    group
        .sample_size(if quick { 10 } else { 30 })
        .measurement_time(Duration::from_secs(if quick { 1 } else { 5 }));
    for &viewers in sizes {
        let (mut sim, camera, mut frame_number) = room_with_viewers(viewers);
        let mut forwarded = 0u64;
        let mut sent = Vec::with_capacity(BATCH as usize * (viewers as usize + 4));
        let mut published = 0u64;
        let mut allocations = 0u64;
        group.throughput(Throughput::Elements(viewers));
        group.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(BATCH);
                    left -= batch;
                    let held = sim.held_video(camera, batch as usize, PAYLOAD, &mut frame_number);
                    sent.clear();
                    let allocated_before = ALLOCATIONS.load(Ordering::Relaxed);
                    let started = Instant::now();
                    sim.forward_only(&held, &mut sent);
                    spent += started.elapsed();
                    allocations += ALLOCATIONS.load(Ordering::Relaxed) - allocated_before;
                    forwarded += sent.len() as u64;
                    published += held.len() as u64;
                    // Untimed: the viewers get what was sent and the feedback and timers
                    // run, as they would between packets on a live server.
                    sim.deliver(&mut sent);
                    sim.run_for(Duration::from_millis(1));
                }
                spent
            })
        });
        println!(
            "  N = {viewers}: {published} packets in, {forwarded} out ({:.2} per viewer), \
             {:.2} heap allocations per forwarded packet",
            forwarded as f64 / (published.max(1) * viewers) as f64,
            allocations as f64 / forwarded.max(1) as f64
        );
        assert!(
            forwarded >= published * viewers * 95 / 100,
            "the core forwarded {forwarded} datagrams for {published} packets to {viewers} viewers"
        );
    }
    group.finish();
}

/// Larger than this machine's last-level cache (32 MiB), so writing it evicts the viewers'
/// state.
const EVICT_BYTES: usize = 64 << 20;

/// The same one packet to N viewers, but with the caches cold, as on a live server: between
/// two frames 33 ms apart the generator, the kernel and other tenants of the machine's
/// shared cache take it over. Each timed packet follows an untimed pass over a buffer twice
/// the size of the last-level cache. The gap to the warm figure above is what the viewers'
/// state costs to bring back from memory.
fn forward_cold(c: &mut Criterion) {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if quick { &[10] } else { &[10, 50, 200] };
    let mut group = c.benchmark_group("forward one VP8 packet to N viewers, caches cold");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }));
    let mut evict = vec![0u8; EVICT_BYTES];
    for &viewers in sizes {
        let (mut sim, camera, mut frame_number) = room_with_viewers(viewers);
        let mut sent = Vec::with_capacity(viewers as usize + 4);
        let (mut published, mut forwarded) = (0u64, 0u64);
        group.throughput(Throughput::Elements(viewers));
        group.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let held = sim.held_video(camera, 1, PAYLOAD, &mut frame_number);
                    sent.clear();
                    for line in evict.chunks_mut(64) {
                        line[0] = line[0].wrapping_add(1);
                    }
                    std::hint::black_box(&evict);
                    let started = Instant::now();
                    sim.forward_only(&held, &mut sent);
                    spent += started.elapsed();
                    published += held.len() as u64;
                    forwarded += sent.len() as u64;
                    sim.deliver(&mut sent);
                    sim.run_for(Duration::from_millis(1));
                }
                spent
            })
        });
        // A filtered-out size publishes nothing.
        assert!(
            forwarded >= published * viewers * 95 / 100,
            "the core forwarded {forwarded} datagrams for {published} packets to {viewers} viewers"
        );
    }
    group.finish();
}

/// A viewer's join as the media loop does it: its offer parsed and checked, its peer built
/// (ICE, DTLS identity, codecs) and the answer written. Every other peer in the shard
/// waits while it runs, so a burst of joins is a burst of delay for the room's media.
fn join(c: &mut Criterion) {
    let mut group = c.benchmark_group("join");
    group.sample_size(30);
    group.bench_function("offer to answer", |b| {
        let mut sim = Sim::new(Duration::from_secs(5));
        let offer = sim.viewer_offer();
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let answer = sim.answer_viewer("bench", "viewer", &offer);
                timed += started.elapsed();
                assert!(answer.contains("a=fingerprint"));
                // Untimed: leaving tears the peer down, which is not the join's cost.
                sim.leave("bench", "viewer");
            }
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, forward, forward_cold, join);
criterion_main!(benches);
