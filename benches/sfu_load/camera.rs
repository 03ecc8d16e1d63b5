//! The camera: a phone's encoder and packetiser, feeding Watchpost over WebRTC or Janus
//! as plain RTP.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use str0m::Event;
use str0m::rtp::RtpWrite;
use tokio::net::UdpSocket;

use crate::janus::{JANUS_OPUS_PT, JANUS_VP8_PT};
use crate::peer::{Peer, Published};
use crate::since_epoch;

pub(crate) const FPS: u32 = 30;
/// A frame's step on the 90 kHz video clock.
pub(crate) const FRAME_TICKS: u32 = 90_000 / FPS;
pub(crate) const KEYFRAME_EVERY: u32 = 60;
pub(crate) const VIDEO_BITS_PER_SECOND: usize = 2_500_000;
/// A keyframe is this many times the size of a delta frame.
pub(crate) const KEYFRAME_WEIGHT: usize = 4;
pub(crate) const OPUS_PACKET_BYTES: usize = 120;

/// Sizes of a delta frame and a keyframe that average 2.5 Mbit/s over a keyframe interval.
pub(crate) fn frame_sizes() -> (usize, usize) {
    let interval_bytes = VIDEO_BITS_PER_SECOND / 8 * KEYFRAME_EVERY as usize / FPS as usize;
    let delta = interval_bytes / (KEYFRAME_EVERY as usize - 1 + KEYFRAME_WEIGHT);
    (delta, delta * KEYFRAME_WEIGHT)
}

/// A frame the camera sends: a VP8 frame tag whose P bit (bit 0) is clear on a keyframe,
/// then the frame index and its send time, then filler.
pub(crate) fn stamped(first: u8, index: u32, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    data.push(first);
    data.extend_from_slice(&index.to_be_bytes());
    data.extend_from_slice(&since_epoch(Instant::now()).to_be_bytes());
    data.resize(len.max(13), 0x5a);
    data
}

/// Largest VP8 chunk per packet: with the descriptor, the RTP header and str0m's header
/// extensions and SRTP tag, a packet stays near 1,200 bytes.
pub(crate) const VP8_CHUNK: usize = 1_150;

/// One camera RTP packet, before SRTP (Watchpost) or as sent plain (Janus).
pub(crate) struct CameraPacket {
    pub(crate) video: bool,
    pub(crate) seq: u64,
    pub(crate) time: u32,
    pub(crate) marker: bool,
    pub(crate) payload: Vec<u8>,
}

/// What the camera sent, so loss is counted against it: the packets of each video frame
/// (by frame index) and the audio packets. A mark is a point in both sequences.
#[derive(Default)]
pub(crate) struct SentLog {
    frame_packets: RefCell<Vec<u16>>,
    audio_packets: Cell<u32>,
}

/// (frames sent, audio packets sent) at some moment.
pub(crate) type Mark = (u32, u32);

impl SentLog {
    pub(crate) fn mark(&self) -> Mark {
        (
            self.frame_packets.borrow().len() as u32,
            self.audio_packets.get(),
        )
    }

    /// The RTP packets of the frames and audio packets sent between two marks.
    pub(crate) fn packets_between(&self, from: Mark, to: Mark) -> u64 {
        let frames = self.frame_packets.borrow();
        let video: u64 = frames[from.0 as usize..to.0 as usize]
            .iter()
            .map(|&n| u64::from(n))
            .sum();
        video + u64::from(to.1 - from.1)
    }
}

/// The camera's encoder and packetiser: frames and audio packets on their clocks, a
/// keyframe every 2 s and whenever one is asked for, cut into RTP packets once, so the
/// very same packets can go to either server.
pub(crate) struct CameraClock {
    pub(crate) start: Instant,
    pub(crate) frames: u32,
    pub(crate) audio_packets: u32,
    pub(crate) video_seq: u64,
    pub(crate) audio_seq: u64,
    pub(crate) keyframe_wanted: bool,
    pub(crate) sizes: (usize, usize),
    pub(crate) log: Rc<SentLog>,
}

impl CameraClock {
    pub(crate) fn new(start: Instant, log: Rc<SentLog>) -> Self {
        CameraClock {
            start,
            frames: 0,
            audio_packets: 0,
            video_seq: 1,
            audio_seq: 1,
            keyframe_wanted: false,
            sizes: frame_sizes(),
            log,
        }
    }

    /// When the next frame or audio packet is due.
    pub(crate) fn next_due(&self) -> Instant {
        (self.start + Duration::from_millis(20) * self.audio_packets)
            .min(self.start + Duration::from_secs(1) * self.frames / FPS)
    }

    /// The packets due by `now`.
    pub(crate) fn due(&mut self, now: Instant, out: &mut Vec<CameraPacket>) {
        while self.start + Duration::from_millis(20) * self.audio_packets <= now {
            out.push(CameraPacket {
                video: false,
                seq: self.audio_seq,
                time: self.audio_packets.wrapping_mul(960),
                marker: true,
                payload: stamped(0, self.audio_packets, OPUS_PACKET_BYTES),
            });
            self.audio_seq += 1;
            self.audio_packets += 1;
            self.log.audio_packets.set(self.audio_packets);
        }
        while self.start + Duration::from_secs(1) * self.frames / FPS <= now {
            let keyframe = self.frames.is_multiple_of(KEYFRAME_EVERY)
                || std::mem::take(&mut self.keyframe_wanted);
            let (delta, key) = self.sizes;
            let frame = if keyframe {
                stamped(0x10, self.frames, key)
            } else {
                stamped(0x11, self.frames, delta)
            };
            let chunks = frame.len().div_ceil(VP8_CHUNK);
            for (k, chunk) in frame.chunks(VP8_CHUNK).enumerate() {
                // VP8 payload descriptor (RFC 7741): S=1 on the frame's first packet.
                let mut payload = Vec::with_capacity(chunk.len() + 1);
                payload.push(if k == 0 { 0x10 } else { 0x00 });
                payload.extend_from_slice(chunk);
                out.push(CameraPacket {
                    video: true,
                    seq: self.video_seq,
                    time: self.frames.wrapping_mul(FRAME_TICKS),
                    marker: k + 1 == chunks,
                    payload,
                });
                self.video_seq += 1;
            }
            self.log.frame_packets.borrow_mut().push(chunks as u16);
            self.frames += 1;
        }
    }
}

/// The payload type the answer gives `codec` (e.g. "VP8/90000").
pub(crate) fn answer_pt(sdp: &str, codec: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let (pt, name) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
        name.starts_with(codec).then(|| pt.parse().ok())?
    })
}

/// The camera publishing to Watchpost over WHIP: its packets go out through str0m in RTP
/// mode (SRTP, NACK answers), as a phone's encoder output would.
pub(crate) async fn run_webrtc_camera(
    mut peer: Peer,
    media: Published,
    connected: Rc<Cell<bool>>,
    log: Rc<SentLog>,
) {
    let (vp8, opus) = (media.vp8.into(), media.opus.into());
    let mut buf = vec![0u8; 2048];
    let mut clock: Option<CameraClock> = None;
    let keyframe_wanted = Cell::new(false);
    let mut packets = Vec::new();
    let mut on_event = |event: Event| match event {
        Event::Connected => connected.set(true),
        Event::KeyframeRequest(_) => keyframe_wanted.set(true),
        _ => {}
    };
    loop {
        let now = Instant::now();
        // Media clocks start once connected, so nothing piles up while ICE and DTLS run.
        if connected.get() && clock.is_none() {
            clock = Some(CameraClock::new(now, log.clone()));
        }
        if let Some(clock) = clock.as_mut() {
            clock.keyframe_wanted |= keyframe_wanted.replace(false);
            clock.due(now, &mut packets);
            let mut api = peer.rtc.direct_api();
            for p in packets.drain(..) {
                let (mid, pt) = if p.video {
                    (media.video, vp8)
                } else {
                    (media.audio, opus)
                };
                if let Some(stream) = api.stream_tx_by_mid(mid, None) {
                    stream.write_rtp(
                        RtpWrite::new(pt, p.seq.into(), p.time, now, p.payload)
                            .marker(p.marker)
                            .nackable(p.video),
                    );
                }
            }
        }
        // What was just written asks for a timeout of its own (str0m's pacer snapshots its
        // queues there). It is taken here, at once: through tokio's timer (whole
        // milliseconds) the packets would leave ~1 ms after their send stamp, and that wait
        // would count as latency the server added.
        let Some(mut timeout) = peer.drain(&mut on_event) else {
            return;
        };
        for _ in 0..4 {
            let now = Instant::now();
            if timeout > now {
                break;
            }
            let _ = peer.rtc.handle_input(str0m::Input::Timeout(now));
            let Some(next) = peer.drain(&mut on_event) else {
                return;
            };
            timeout = next;
        }
        let until = clock
            .as_ref()
            .map_or(timeout, |c| timeout.min(c.next_due()));
        peer.wait(until, &mut buf, &mut on_event).await;
    }
}

/// The same camera feeding Janus's Streaming mountpoint: the packets as plain RTP.
pub(crate) async fn run_plain_camera(
    socket: UdpSocket,
    audio_to: SocketAddr,
    video_to: SocketAddr,
    log: Rc<SentLog>,
) {
    let mut clock = CameraClock::new(Instant::now(), log);
    let mut packets = Vec::new();
    let mut datagram = Vec::with_capacity(1_500);
    loop {
        tokio::time::sleep_until(clock.next_due().into()).await;
        clock.due(Instant::now(), &mut packets);
        for p in packets.drain(..) {
            let (pt, ssrc, to) = if p.video {
                (JANUS_VP8_PT, 0x5750_0001u32, video_to)
            } else {
                (JANUS_OPUS_PT, 0x5750_0002u32, audio_to)
            };
            datagram.clear();
            datagram.push(0x80);
            datagram.push(pt | if p.marker { 0x80 } else { 0 });
            datagram.extend_from_slice(&(p.seq as u16).to_be_bytes());
            datagram.extend_from_slice(&p.time.to_be_bytes());
            datagram.extend_from_slice(&ssrc.to_be_bytes());
            datagram.extend_from_slice(&p.payload);
            let _ = socket.send_to(&datagram, to).await;
        }
    }
}
