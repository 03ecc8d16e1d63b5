//! A viewer: counts and times what arrives.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use str0m::Event;

use crate::peer::Peer;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    Warmup,
    Window,
    Over,
}

/// Distinct extended sequence numbers seen, to tell loss from what arrived.
#[derive(Default)]
pub(crate) struct SeqCount {
    pub(crate) seen: HashSet<u64>,
    pub(crate) lo: u64,
    pub(crate) hi: u64,
}

impl SeqCount {
    pub(crate) fn add(&mut self, seq: u64) {
        if self.seen.is_empty() {
            (self.lo, self.hi) = (seq, seq);
        }
        if self.seen.insert(seq) {
            self.lo = self.lo.min(seq);
            self.hi = self.hi.max(seq);
        }
    }
    pub(crate) fn expected(&self) -> u64 {
        if self.seen.is_empty() {
            0
        } else {
            self.hi - self.lo + 1
        }
    }
}

#[derive(Default)]
pub(crate) struct ViewerStats {
    pub(crate) connected: bool,
    pub(crate) first_keyframe: Option<Duration>,
    pub(crate) video: SeqCount,
    pub(crate) audio: SeqCount,
    /// Camera send of a frame's first packet → its arrival at the viewer's socket.
    pub(crate) latencies_us: Vec<u32>,
    /// The same, to when the generator read it (behind the other viewers it serves).
    pub(crate) read_latencies_us: Vec<u32>,
    /// Camera send of a frame's first packet → arrival of its last (marker) packet: when
    /// a decoder could have the frame.
    pub(crate) frame_latencies_us: Vec<u32>,
    /// The send stamp of the frame in flight (from its first packet).
    frame_sent: Option<u64>,
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
            Event::Connected => stats.connected = true,
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
                if phase.get() != Phase::Window {
                    return;
                }
                if video {
                    stats.video.add(*p.seq_no);
                    let (arrived, read) = arrival.get();
                    if let Some(frame) = start.filter(|f| f.len() >= 13) {
                        let sent = u64::from_be_bytes(frame[5..13].try_into().unwrap());
                        let latency = arrived.saturating_sub(sent) / 1_000;
                        stats.latencies_us.push(latency as u32);
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
                } else {
                    stats.audio.add(*p.seq_no);
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
