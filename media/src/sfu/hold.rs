//! When a media loop's outputs may wait for the datagram behind them.
//!
//! A camera sends a video frame as a burst of packets, and the router hands them to the
//! shard as they come off the socket: the first wakes the loop alone, and the rest trickle in
//! while the loop fans it out. Flushing after every wake-up made each viewer's share of a
//! frame three messages (the start, the packet that woke the loop next, the rest).
//!
//! Only some packets are worth a message of their own: a frame's first packet (the added
//! latency is measured to it, and a viewer's jitter buffer starts from it), its last (the
//! frame is complete, a decoder can start) and audio. A packet inside a frame can wait for
//! the one behind it, which is already on its way: the frame is complete no later, since its
//! last packet never waits, and the middle of the frame goes to each viewer as one GSO run.
//! What is not RTP (ICE, DTLS, the viewers' RTCP) goes at once when nothing waits and joins a
//! wait under way: it is not latency-critical to the millisecond, and a viewer's receiver
//! report arriving mid-frame must not cut the frame's run in two. The wait is bounded in time
//! ([`HOLD`], for a frame whose tail was lost) and in datagrams ([`MAX_HELD`], each viewer
//! holds a copy).
//!
//! The RTP header is read in the clear (SRTP encrypts the payload only), so this costs a few
//! byte reads per datagram and needs no state but each stream's last RTP time.

use std::time::{Duration, Instant};

/// The longest a packet inside a frame waits for the rest of its frame. A camera's burst
/// arrives within microseconds; a paced one within a millisecond or two. The loop's timer has
/// millisecond resolution, so this is its smallest step.
pub(crate) const HOLD: Duration = Duration::from_millis(1);

/// The most datagrams whose outputs wait together: each viewer holds a copy of every one
/// until the flush. As many as one round of the loop takes in; 16 saved no measurable CPU
/// and cost ~20 KiB of RSS per viewer at 10 viewers.
pub(crate) const MAX_HELD: usize = 9;

/// Streams whose frame position is remembered, direct-mapped by SSRC: a shard's cameras
/// rarely share a slot, and one that does only makes a packet go at once.
const STREAMS: usize = 16;

/// What the datagrams taken in since the last flush allow.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    /// Per stream slot: its SSRC and the RTP time of its last packet, while that packet was
    /// inside a frame (not its last).
    inside: [Option<(u32, u32)>; STREAMS],
    /// Datagrams taken in since the last flush.
    held: usize,
    /// One of them must go at once.
    urgent: bool,
    /// When the first of them that could wait came in, plus [`HOLD`].
    until: Option<Instant>,
}

impl Hold {
    /// Notes a datagram the core has just taken in.
    pub(crate) fn take(&mut self, now: Instant, data: &[u8]) {
        self.held += 1;
        let Some(h) = rtp_header(data) else {
            // Control traffic rides along with a wait under way.
            self.urgent |= self.until.is_none();
            return;
        };
        let slot = &mut self.inside[h.ssrc as usize % STREAMS];
        let continues = !h.marker && *slot == Some((h.ssrc, h.time));
        *slot = (!h.marker).then_some((h.ssrc, h.time));
        if continues {
            self.until.get_or_insert(now + HOLD);
        } else {
            self.urgent = true;
        }
    }

    /// Until when the outputs of what was taken in may wait, or `None` when they go now:
    /// only while every datagram behind them is inside a frame, and within both bounds.
    pub(crate) fn may_wait(&self, now: Instant) -> Option<Instant> {
        if self.urgent || self.held == 0 || self.held >= MAX_HELD {
            return None;
        }
        self.until.filter(|until| now < *until)
    }

    /// The outputs went out.
    pub(crate) fn flushed(&mut self) {
        self.held = 0;
        self.urgent = false;
        self.until = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct RtpHeader {
    ssrc: u32,
    time: u32,
    marker: bool,
}

/// The fixed RTP header, or `None` for anything else on the port: STUN (first byte 0–3),
/// DTLS (20–63), and RTCP, whose packet types 192–223 read as RTP payload types 64–95 with
/// the marker bit set (RFC 5761 §4).
fn rtp_header(data: &[u8]) -> Option<RtpHeader> {
    if data.len() < 12 || data[0] >> 6 != 2 || (64..96).contains(&(data[1] & 0x7f)) {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    Some(RtpHeader {
        ssrc: word(8),
        time: word(4),
        marker: data[1] & 0x80 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, time: u32, marker: bool) -> Vec<u8> {
        let mut packet = vec![0x80, 96 | if marker { 0x80 } else { 0 }, 0, 1];
        packet.extend_from_slice(&time.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&[0; 100]);
        packet
    }

    /// Takes `data` in and says whether its outputs (and those before it) may wait.
    fn take(hold: &mut Hold, now: Instant, data: &[u8]) -> bool {
        hold.take(now, data);
        hold.may_wait(now).is_some()
    }

    #[test]
    fn only_the_inside_of_a_frame_waits() {
        let now = Instant::now();
        let mut hold = Hold::default();
        assert_eq!(hold.may_wait(now), None, "nothing to wait with");
        assert!(
            !take(&mut hold, now, &rtp(7, 3000, false)),
            "a frame's first packet goes at once"
        );
        hold.flushed();
        assert!(
            take(&mut hold, now, &rtp(7, 3000, false)),
            "its second waits for the third"
        );
        assert_eq!(hold.may_wait(now), Some(now + HOLD));
        assert!(take(&mut hold, now, &rtp(7, 3000, false)));
        assert!(
            !take(&mut hold, now, &rtp(7, 3000, true)),
            "the last packet releases the frame"
        );
        hold.flushed();
        assert!(
            !take(&mut hold, now, &rtp(7, 6000, false)),
            "the next frame starts at once"
        );
        assert!(
            !take(&mut hold, now, &rtp(7, 6000, false)),
            "nothing waits behind a frame's start that has not gone"
        );
    }

    #[test]
    fn audio_and_other_streams_go_at_once_and_leave_a_frame_whole() {
        let now = Instant::now();
        let mut hold = Hold::default();
        hold.take(now, &rtp(7, 3000, false));
        hold.flushed();
        assert!(take(&mut hold, now, &rtp(7, 3000, false)));
        // Opus packets carry the marker bit only on talkspurt starts: each is its own frame.
        assert!(
            !take(&mut hold, now, &rtp(9, 960, false)),
            "audio goes at once"
        );
        hold.flushed();
        assert!(
            !take(&mut hold, now, &rtp(9, 1920, false)),
            "and the next audio"
        );
        hold.flushed();
        assert!(
            take(&mut hold, now, &rtp(7, 3000, false)),
            "the frame in flight still waits after the audio between its packets"
        );
        // Another camera in the shard interleaving its frames does not cut this one's run;
        // a stream sharing the slot (7 + 16) displaces it, and its next packet goes at once.
        assert!(!take(&mut hold, now, &rtp(23, 500, false)));
        hold.flushed();
        assert!(!take(&mut hold, now, &rtp(7, 3000, false)));
    }

    #[test]
    fn control_traffic_goes_at_once_or_joins_a_wait() {
        let now = Instant::now();
        let packets: [&[u8]; 4] = [
            // RTCP receiver report: packet type 201.
            &[0x81, 201, 0, 7, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0],
            // STUN binding request.
            &[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0],
            // DTLS handshake record.
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // Too short for RTP.
            &[0x80, 96],
        ];
        for packet in packets {
            let mut hold = Hold::default();
            assert!(
                !take(&mut hold, now, packet),
                "{packet:?} alone goes at once"
            );
            hold.flushed();
            hold.take(now, &rtp(7, 3000, false));
            hold.flushed();
            assert!(take(&mut hold, now, &rtp(7, 3000, false)));
            assert!(take(&mut hold, now, packet), "{packet:?} joins the wait");
            assert!(
                take(&mut hold, now, &rtp(7, 3000, false)),
                "and leaves the frame's run whole"
            );
            assert!(!take(&mut hold, now, &rtp(7, 3000, true)));
        }
    }

    #[test]
    fn a_wait_is_bounded_in_time_and_in_datagrams() {
        let now = Instant::now();
        let mut hold = Hold::default();
        hold.take(now, &rtp(7, 3000, false));
        hold.flushed();
        assert!(take(&mut hold, now, &rtp(7, 3000, false)));
        // The frame's tail was lost: once the wait is up, the outputs go.
        assert_eq!(hold.may_wait(now + HOLD), None);
        hold.flushed();
        let mut waited = 0;
        while take(&mut hold, now, &rtp(7, 3000, false)) {
            waited += 1;
        }
        assert_eq!(
            waited,
            MAX_HELD - 1,
            "the datagram that fills the round releases it"
        );
    }
}
