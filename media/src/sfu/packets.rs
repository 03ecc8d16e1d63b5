//! What the SFU reads inside an RTP payload, now that it forwards packets rather than
//! frames: where a VP8 or H.264 keyframe starts (to start a viewer or switch its layer
//! there), and how the recorder puts frames back together from packets.
//!
//! Only payload headers are read; the media itself is never decoded.

use std::sync::Arc;

/// The VP8 payload descriptor's length (RFC 7741 § 4.2) when this packet starts a frame
/// (S bit set, partition 0); `None` for a continuation or a malformed descriptor.
pub(crate) fn vp8_frame_start(payload: &[u8]) -> Option<usize> {
    let b0 = *payload.first()?;
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    vp8_descriptor_len(payload)
}

fn vp8_descriptor_len(payload: &[u8]) -> Option<usize> {
    let b0 = *payload.first()?;
    let mut len = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        len = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 with the M bit.
            len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
    }
    (len < payload.len()).then_some(len)
}

/// True on the first packet of a VP8 keyframe: the frame tag's P bit is clear (RFC 6386
/// § 9.1).
pub(crate) fn vp8_keyframe_start(payload: &[u8]) -> bool {
    vp8_frame_start(payload).is_some_and(|at| payload[at] & 0x01 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// True when the packet starts (or carries) an H.264 IDR picture or its parameter sets
/// (RFC 6184: a single NAL unit, a STAP-A aggregate, or the first FU-A fragment).
pub(crate) fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match header & 0x1f {
        H264_STAP_A => stap_a_units(&payload[1..]).any(|nal| is_key(nal[0] & 0x1f)),
        H264_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        nal_type => is_key(nal_type),
    }
}

/// The NAL units in a STAP-A payload (after its header byte): each prefixed by a 16-bit
/// size. A truncated tail ends the walk.
fn stap_a_units(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let size = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
        let unit = rest.get(2..2 + size).filter(|u| !u.is_empty())?;
        rest = &rest[2 + size..];
        Some(unit)
    })
}

/// Which payload format a track uses, for reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadFormat {
    /// One packet is one frame (Opus).
    Whole,
    Vp8,
    H264,
}

/// One packet as the assembler needs it.
pub(crate) struct PacketIn<'a> {
    pub seq: u64,
    pub timestamp: u64,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// A frame put back together.
#[derive(Debug)]
pub(crate) struct FrameOut {
    pub timestamp: u64,
    pub keyframe: bool,
    pub data: Arc<[u8]>,
}

/// Puts one track's frames back together from its packets, in arrival order: a frame is
/// complete at its marker packet if no sequence number was missing. A frame with a hole is
/// dropped whole and counted in `lost`: a recorder writes what a decoder can use, and
/// waits for the next keyframe after a loss. Reordered packets count as holes.
#[derive(Debug)]
pub(crate) struct FrameAssembler {
    format: PayloadFormat,
    next_seq: Option<u64>,
    timestamp: Option<u64>,
    state: Gathering,
    keyframe: bool,
    data: Vec<u8>,
    /// Frames given up on because a packet was missing.
    pub lost: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gathering {
    /// Collecting the frame's packets.
    Open,
    /// A packet is missing: the rest of this frame is ignored.
    Broken,
    /// The marker came (the frame went out or was counted lost).
    Done,
}

/// A frame larger than this is dropped rather than buffered (a 4K keyframe is a few MB).
const MAX_FRAME: usize = 8 << 20;

impl FrameAssembler {
    pub fn new(format: PayloadFormat) -> Self {
        Self {
            format,
            next_seq: None,
            timestamp: None,
            state: Gathering::Done,
            keyframe: false,
            data: Vec::new(),
            lost: 0,
        }
    }

    pub fn push(&mut self, packet: PacketIn<'_>) -> Option<FrameOut> {
        if self.next_seq.is_some_and(|next| packet.seq < next) {
            return None; // late (a repair of something already given up on)
        }
        let in_order = self.next_seq.is_none_or(|next| packet.seq == next);
        self.next_seq = Some(packet.seq + 1);
        if self.format == PayloadFormat::Whole {
            return Some(FrameOut {
                timestamp: packet.timestamp,
                keyframe: false,
                data: packet.payload.into(),
            });
        }
        if self.timestamp != Some(packet.timestamp) {
            // A new frame; the last one, if it never saw its marker, is lost.
            if self.state != Gathering::Done {
                self.lost += 1;
            }
            self.timestamp = Some(packet.timestamp);
            self.keyframe = false;
            self.data.clear();
            // VP8 proves a frame's start by its S bit; H.264 slices do not, so a gap just
            // before the frame may have taken its first NAL units.
            self.state = if !in_order && self.format == PayloadFormat::H264 {
                Gathering::Broken
            } else {
                Gathering::Open
            };
        } else if !in_order && self.state == Gathering::Open {
            self.state = Gathering::Broken;
        }
        if self.state == Gathering::Open {
            let whole = match self.format {
                PayloadFormat::Vp8 => self.push_vp8(packet.payload),
                PayloadFormat::H264 => self.push_h264(packet.payload),
                PayloadFormat::Whole => unreachable!("handled above"),
            };
            if !whole || self.data.len() > MAX_FRAME {
                self.state = Gathering::Broken;
                self.data.clear();
            }
        }
        if !packet.marker {
            return None;
        }
        let state = std::mem::replace(&mut self.state, Gathering::Done);
        match state {
            Gathering::Open if !self.data.is_empty() => Some(FrameOut {
                timestamp: packet.timestamp,
                keyframe: self.keyframe,
                data: std::mem::take(&mut self.data).into(),
            }),
            Gathering::Done => None,
            _ => {
                self.lost += 1;
                None
            }
        }
    }

    /// Adds a VP8 packet's payload; false when the frame cannot be whole.
    fn push_vp8(&mut self, payload: &[u8]) -> bool {
        if self.data.is_empty() {
            // A frame must begin at its first partition's start.
            let Some(at) = vp8_frame_start(payload) else {
                return false;
            };
            self.keyframe = payload[at] & 0x01 == 0;
            self.data.extend_from_slice(&payload[at..]);
            return true;
        }
        let Some(at) = vp8_descriptor_len(payload) else {
            return false;
        };
        self.data.extend_from_slice(&payload[at..]);
        true
    }

    /// Adds an H.264 packet's NAL units as an Annex B byte stream (a start code before
    /// each), which is what the recorder's H.264 parser takes; false when the frame cannot
    /// be whole.
    fn push_h264(&mut self, payload: &[u8]) -> bool {
        const START: [u8; 4] = [0, 0, 0, 1];
        let Some(&header) = payload.first() else {
            return false;
        };
        let is_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
        match header & 0x1f {
            H264_STAP_A => {
                for nal in stap_a_units(&payload[1..]) {
                    self.keyframe |= is_key(nal[0] & 0x1f);
                    self.data.extend_from_slice(&START);
                    self.data.extend_from_slice(nal);
                }
            }
            H264_FU_A => {
                let Some(&fu) = payload.get(1) else {
                    return false;
                };
                if fu & 0x80 != 0 {
                    self.keyframe |= is_key(fu & 0x1f);
                    self.data.extend_from_slice(&START);
                    self.data.push((header & 0xe0) | (fu & 0x1f));
                } else if self.data.is_empty() {
                    // A later fragment with nothing before it: its start was lost.
                    return false;
                }
                self.data.extend_from_slice(&payload[2..]);
            }
            0 | 25..=31 => return false, // STAP-B, MTAP, FU-B: not used by WebRTC
            nal_type => {
                self.keyframe |= is_key(nal_type);
                self.data.extend_from_slice(&START);
                self.data.extend_from_slice(payload);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u64, timestamp: u64, marker: bool, payload: &[u8]) -> PacketIn<'_> {
        PacketIn {
            seq,
            timestamp,
            marker,
            payload,
        }
    }

    #[test]
    fn vp8_keyframes_are_found_at_the_frame_start_only() {
        // S=1, PID=0, no extensions; frame tag with P=0 (keyframe).
        assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d]));
        // The same with a 15-bit PictureID (X=1, I=1, M=1).
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        // An interframe (P=1), a continuation (S=0), a later partition (PID=1).
        assert!(!vp8_keyframe_start(&[0x10, 0x01]));
        assert!(!vp8_keyframe_start(&[0x00, 0x00]));
        assert!(!vp8_keyframe_start(&[0x11, 0x00]));
        // Truncated descriptors are not keyframes (and not a panic).
        for bad in [
            &[][..],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81],
            &[0x10],
        ] {
            assert!(!vp8_keyframe_start(bad));
        }
    }

    #[test]
    fn h264_keyframes_are_found_in_each_packetisation() {
        assert!(h264_keyframe_start(&[0x65, 0x88])); // IDR slice
        assert!(h264_keyframe_start(&[0x67, 0x42])); // SPS
        assert!(!h264_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
        // STAP-A with SPS and PPS.
        assert!(h264_keyframe_start(&[
            0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce
        ]));
        assert!(!h264_keyframe_start(&[0x78, 0, 2, 0x41, 0x42]));
        // FU-A: the first fragment of an IDR is a start, a later one is not.
        assert!(h264_keyframe_start(&[0x7c, 0x85, 0xaa]));
        assert!(!h264_keyframe_start(&[0x7c, 0x05, 0xaa]));
        assert!(!h264_keyframe_start(&[]));
        assert!(!h264_keyframe_start(&[0x78, 0, 9, 0x67])); // truncated STAP-A
    }

    #[test]
    fn vp8_frames_are_reassembled_and_holes_drop_the_frame() {
        let mut a = FrameAssembler::new(PayloadFormat::Vp8);
        assert!(
            a.push(packet(10, 3000, false, &[0x10, 0x00, 1, 2]))
                .is_none()
        );
        assert!(a.push(packet(11, 3000, false, &[0x00, 3])).is_none());
        let frame = a.push(packet(12, 3000, true, &[0x00, 4])).expect("a frame");
        assert_eq!(&frame.data[..], &[0x00, 1, 2, 3, 4]);
        assert!(frame.keyframe);
        // Packet 14 is lost: the frame at 6000 is dropped whole.
        assert!(a.push(packet(13, 6000, false, &[0x10, 0x01, 5])).is_none());
        assert!(a.push(packet(15, 6000, true, &[0x00, 6])).is_none());
        assert_eq!(a.lost, 1);
        // The next frame is whole again.
        let frame = a
            .push(packet(16, 9000, true, &[0x10, 0x01, 7]))
            .expect("a frame");
        assert_eq!(&frame.data[..], &[0x01, 7]);
        assert!(!frame.keyframe);
        // A frame whose start was lost is not emitted.
        assert!(a.push(packet(18, 12000, true, &[0x00, 8])).is_none());
        assert_eq!(a.lost, 2);
        // Nor one that never saw its marker; the next one is fine.
        assert!(a.push(packet(19, 15000, false, &[0x10, 0x01, 9])).is_none());
        let frame = a
            .push(packet(20, 18000, true, &[0x10, 0x01, 10]))
            .expect("a frame");
        assert_eq!(&frame.data[..], &[0x01, 10]);
        assert_eq!(a.lost, 3);
    }

    #[test]
    fn h264_frames_come_out_as_annex_b() {
        let mut a = FrameAssembler::new(PayloadFormat::H264);
        // STAP-A (SPS, PPS), then an IDR in two FU-A fragments.
        assert!(
            a.push(packet(
                1,
                90,
                false,
                &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]
            ))
            .is_none()
        );
        assert!(a.push(packet(2, 90, false, &[0x7c, 0x85, 0xaa])).is_none());
        let frame = a
            .push(packet(3, 90, true, &[0x7c, 0x45, 0xbb]))
            .expect("a frame");
        assert!(frame.keyframe);
        assert_eq!(
            &frame.data[..],
            &[
                0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0xaa, 0xbb
            ]
        );
        // A single-NAL interframe.
        let frame = a
            .push(packet(4, 180, true, &[0x41, 0x9a]))
            .expect("a frame");
        assert!(!frame.keyframe);
        assert_eq!(&frame.data[..], &[0, 0, 0, 1, 0x41, 0x9a]);
    }

    #[test]
    fn whole_packets_are_frames_and_late_ones_are_dropped() {
        let mut a = FrameAssembler::new(PayloadFormat::Whole);
        assert_eq!(
            &a.push(packet(5, 960, true, &[1])).expect("frame").data[..],
            &[1]
        );
        assert_eq!(
            &a.push(packet(7, 2880, true, &[3])).expect("frame").data[..],
            &[3]
        );
        assert!(a.push(packet(6, 1920, true, &[2])).is_none());
    }
}
