//! webrtc-rs as an independent WebRTC stack in tests: a publisher that sends hand-made,
//! self-describing Opus and VP8 (or H.264) payloads over WHIP, and viewers that receive them
//! over WHEP and check every frame byte for byte. Only loopback candidates are gathered.
//!
//! - [`peer`]: the peer connection both sides use, and WHIP/WHEP negotiation;
//! - [`publisher`]: the sending side;
//! - [`viewer`]: the receiving side (RTX repair, frame assembly, checks);
//! - [`lossy_link`]: a UDP relay that drops packets or dies, in front of the SFU;
//! - [`h264`]: H.264 access units and their RTP packetization;
//! - here: the codec choice and the self-describing VP8 and Opus payloads.
//!
//! Shared by `tests/media.rs` and `benches/sfu_fanout.rs`; each uses part of it.
#![allow(dead_code)]

mod clip;
mod h264;
mod lossy_link;
mod peer;
mod publisher;
mod viewer;

// Each user takes what it needs.
#[allow(unused_imports)]
pub use clip::Clip;
#[allow(unused_imports)]
pub use h264::{check_h264_frame, h264_frame};
#[allow(unused_imports)]
pub use lossy_link::{Link, Loss};
#[allow(unused_imports)]
pub use publisher::{Options, Publisher};
#[allow(unused_imports)]
pub use viewer::{REPAIRED, Received, Viewer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VideoCodec {
    #[default]
    Vp8,
    H264,
}

// --- The payloads: every frame says what it is, so a receiver can check it exactly. ---

const VIDEO_MAGIC: &[u8; 2] = b"WP";
const AUDIO_MAGIC: &[u8; 4] = b"OPUS";

/// Simulcast layers of the test publisher: (rid, layer number).
pub const LAYERS: [(&str, u8); 2] = [("l", 1), ("h", 2)];

/// A VP8 frame: the real 3-byte frame tag (and, for a keyframe, the start code and a
/// size) so SFUs parse it as VP8, then layer, index and filler derived from them. Layer 0
/// (the single-layer stream) runs ~100 B-3 KB per frame, so some frames span several
/// packets; simulcast layer 1 runs ~100 kbit/s at 30 frames/s and layer 2 ~720 kbit/s.
pub fn video_frame(index: u32, keyframe: bool, layer: u8) -> Vec<u8> {
    let mut frame = if keyframe {
        vec![0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
    } else {
        vec![0x11, 0x00, 0x00]
    };
    frame.extend_from_slice(VIDEO_MAGIC);
    frame.push(layer);
    frame.extend_from_slice(&index.to_be_bytes());
    let len = match layer {
        0 => 100 + (index as usize * 397) % 3000,
        1 => 200 + (index as usize * 97) % 400,
        _ => 2000 + (index as usize * 397) % 2000,
    };
    frame.extend((0..len).map(|k| (index as usize * 31 + k * 7 + layer as usize) as u8));
    frame
}

/// Parses and checks a received video frame: `(index, keyframe, layer)`, or `None` if it
/// is not exactly what was sent.
pub fn check_video_frame(frame: &[u8]) -> Option<(u32, bool, u8)> {
    let keyframe = frame.first()? & 1 == 0;
    let at = if keyframe { 10 } else { 3 };
    if frame.get(at..at + 2)? != VIDEO_MAGIC {
        return None;
    }
    let layer = *frame.get(at + 2)?;
    let index = u32::from_be_bytes(frame.get(at + 3..at + 7)?.try_into().ok()?);
    (video_frame(index, keyframe, layer) == frame).then_some((index, keyframe, layer))
}

pub fn audio_packet(index: u32) -> Vec<u8> {
    let mut p = AUDIO_MAGIC.to_vec();
    p.extend_from_slice(&index.to_be_bytes());
    p.extend((0..60 + index as usize % 40).map(|k| (index as usize * 13 + k) as u8));
    p
}

pub fn check_audio_packet(payload: &[u8]) -> Option<u32> {
    if payload.get(..4)? != AUDIO_MAGIC {
        return None;
    }
    let index = u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?);
    (audio_packet(index) == payload).then_some(index)
}
