//! A viewer: counts and times what arrives.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use str0m::Event;

use crate::camera::{FRAME_TICKS, Mark};
use crate::peer::Peer;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    Warmup,
    Window,
    /// After the window: packets of the window's frames still count (late or repaired).
    Drain,
    Over,
}

#[derive(Default)]
pub(crate) struct ViewerStats {
    pub(crate) connected: bool,
    /// WHEP POST → ICE and DTLS done: the part of the first frame's wait spent connecting.
    pub(crate) connected_after: Option<Duration>,
    pub(crate) first_keyframe: Option<Duration>,
    /// RTP packets received while the window was open (for CPU per packet and packets/s).
    pub(crate) window_packets: u64,
    /// Distinct video packets heard from the window on: (camera frame index, sequence).
    pub(crate) heard_video: HashSet<(u32, u64)>,
    /// Distinct audio packets heard from the window on, by the camera's index.
    pub(crate) heard_audio: HashSet<u32>,
    /// This viewer's RTP timestamp minus the camera's frame clock (the server may start
    /// each viewer's line elsewhere): maps every video packet to its camera frame.
    video_time_offset: Option<u32>,
    /// Camera send of a frame's first packet → its arrival at the viewer's socket.
    pub(crate) first_packets: Vec<Sample>,
    /// The same, to when the generator read it (behind the other viewers it serves).
    pub(crate) read_latencies_us: Vec<u32>,
    /// Camera send of a frame's first packet → arrival of its last (marker) packet: when
    /// a decoder could have the frame.
    pub(crate) frame_latencies_us: Vec<u32>,
    /// The send stamp of the frame in flight (from its first packet).
    frame_sent: Option<u64>,
}

/// One frame's first packet at one viewer.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    /// The camera's frame index.
    pub(crate) frame: u32,
    /// The camera's send time (ns on the generator's clock).
    pub(crate) sent_ns: u64,
    /// Send → arrival at the viewer's socket.
    pub(crate) latency_us: u32,
}

impl ViewerStats {
    /// The packets heard of the camera's frames and audio packets in [from, to).
    pub(crate) fn heard_between(&self, from: Mark, to: Mark) -> u64 {
        let video = self
            .heard_video
            .iter()
            .filter(|(frame, _)| (from.0..to.0).contains(frame))
            .count();
        let audio = self
            .heard_audio
            .iter()
            .filter(|index| (from.1..to.1).contains(*index))
            .count();
        (video + audio) as u64
    }
}

/// The VP8 payload after the payload descriptor (RFC 7741 § 4.2), when this packet starts
/// a frame.
pub(crate) fn vp8_frame_start(payload: &[u8]) -> Option<&[u8]> {
    let b0 = *payload.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at..)
}

/// A viewer: counts what arrives while the window is open and times each frame.
pub(crate) async fn run_viewer(
    mut peer: Peer,
    posted: Instant,
    phase: Rc<Cell<Phase>>,
    stats: Rc<RefCell<ViewerStats>>,
) {
    let mut buf = vec![0u8; 2048];
    let arrival = peer.arrived.clone();
    let mut on_event = |event: Event| {
        let mut stats = stats.borrow_mut();
        match event {
            Event::Connected => {
                stats.connected = true;
                stats.connected_after = Some(posted.elapsed());
            }
            Event::RtpPacket(p) => {
                let video = p.time.denom() == 90_000;
                let start = if video {
                    vp8_frame_start(&p.payload)
                } else {
                    Some(&p.payload[..])
                };
                if video
                    && stats.first_keyframe.is_none()
                    && start.is_some_and(|f| f.first().is_some_and(|b| b & 1 == 0))
                {
                    stats.first_keyframe = Some(p.timestamp.duration_since(posted));
                }
                if video && let Some(index) = start.and_then(|f| f.get(1..5)) {
                    let index = u32::from_be_bytes(index.try_into().unwrap());
                    stats.video_time_offset = Some(
                        p.header
                            .timestamp
                            .wrapping_sub(index.wrapping_mul(FRAME_TICKS)),
                    );
                }
                let window = phase.get() == Phase::Window;
                if !window && phase.get() != Phase::Drain {
                    return;
                }
                if video {
                    if let Some(offset) = stats.video_time_offset {
                        let frame = p.header.timestamp.wrapping_sub(offset) / FRAME_TICKS;
                        stats.heard_video.insert((frame, *p.seq_no));
                    }
                } else if let Some(index) = p.payload.get(1..5) {
                    let index = u32::from_be_bytes(index.try_into().unwrap());
                    stats.heard_audio.insert(index);
                }
                if !window {
                    return;
                }
                stats.window_packets += 1;
                if video {
                    let (arrived, read) = arrival.get();
                    if let Some(frame) = start.filter(|f| f.len() >= 13) {
                        let sent = u64::from_be_bytes(frame[5..13].try_into().unwrap());
                        let latency = arrived.saturating_sub(sent) / 1_000;
                        stats.first_packets.push(Sample {
                            frame: u32::from_be_bytes(frame[1..5].try_into().unwrap()),
                            sent_ns: sent,
                            latency_us: latency as u32,
                        });
                        let read_latency = read.saturating_sub(sent) / 1_000;
                        stats.read_latencies_us.push(read_latency as u32);
                        stats.frame_sent = Some(sent);
                    }
                    if p.header.marker
                        && let Some(sent) = stats.frame_sent.take()
                    {
                        let latency = arrived.saturating_sub(sent) / 1_000;
                        stats.frame_latencies_us.push(latency as u32);
                    }
                }
            }
            _ => {}
        }
    };
    loop {
        let Some(timeout) = peer.drain(&mut on_event) else {
            return;
        };
        if phase.get() == Phase::Over {
            return;
        }
        peer.wait(timeout, &mut buf, &mut on_event).await;
    }
}
