//! The test viewer: connects over WHEP and checks every frame and packet it receives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use webrtc::api::media_engine::MIME_TYPE_H264;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;

use super::h264::{check_h264_frame, h264_nals};
use super::lossy_link::{Link, Loss};
use super::peer::{negotiate, new_peer, wait_connected};
use super::{VideoCodec, check_audio_packet, check_video_frame};

/// What a viewer received, in arrival order.
#[derive(Default, Debug)]
pub struct Received {
    /// (index, keyframe, layer, arrival) per verified video frame.
    pub video: Vec<(u32, bool, u8, Instant)>,
    pub audio: Vec<u32>,
    /// Frames or packets that were not byte-exact copies of what was sent.
    pub corrupt: u32,
    /// The negotiated video codec (MIME type).
    pub video_codec: String,
    /// Retransmissions received over RTX.
    pub repairs: u32,
    /// What the first few of those looked like, for the failure message.
    pub corrupt_samples: Vec<String>,
    /// Raw RTP header facts per kind: (ssrc, sequence number, timestamp).
    pub video_rtp: Vec<(u32, u16, u32)>,
    pub audio_rtp: Vec<(u32, u16, u32)>,
}

/// Attribute key marking a packet that arrived as an RTX retransmission.
pub const REPAIRED: usize = 0x5254_5800;

/// An interceptor that puts every retransmission arriving over RTX back into its original
/// stream as the original packet (RFC 4588: the original sequence number leads the
/// payload). webrtc-rs only drains RTX streams, so without this a test viewer would never
/// see repairs and its NACK generator would keep asking for them. Registered first, it
/// sits next to the transport, below the NACK generator, which then counts repairs as
/// received.
#[derive(Default)]
pub(super) struct RepairTapBuilder {
    /// Main stream SSRC → its queue of repaired packets.
    queues: Arc<std::sync::Mutex<HashMap<u32, RepairQueue>>>,
}

type RepairQueue = Arc<std::sync::Mutex<std::collections::VecDeque<webrtc::rtp::packet::Packet>>>;

impl InterceptorBuilder for RepairTapBuilder {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn Interceptor + Send + Sync>, webrtc::interceptor::Error> {
        Ok(Arc::new(RepairTap {
            queues: self.queues.clone(),
        }))
    }
}

struct RepairTap {
    queues: Arc<std::sync::Mutex<HashMap<u32, RepairQueue>>>,
}

#[async_trait::async_trait]
impl Interceptor for RepairTap {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        reader
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        _info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        writer
    }

    async fn unbind_local_stream(&self, _info: &StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        let mut queues = self.queues.lock().unwrap();
        match &info.associated_stream {
            Some(main) => Arc::new(RtxUnwrap {
                inner: reader,
                main_ssrc: main.ssrc,
                queue: queues.entry(main.ssrc).or_default().clone(),
            }),
            None => Arc::new(WithRepairs {
                inner: reader,
                queue: queues.entry(info.ssrc).or_default().clone(),
            }),
        }
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        Ok(())
    }
}

/// The RTX stream's reader: unwraps each retransmission into its main stream's queue.
struct RtxUnwrap {
    inner: Arc<dyn RTPReader + Send + Sync>,
    main_ssrc: u32,
    queue: RepairQueue,
}

#[async_trait::async_trait]
impl RTPReader for RtxUnwrap {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<(webrtc::rtp::packet::Packet, Attributes), webrtc::interceptor::Error> {
        let (packet, attributes) = self.inner.read(buf, attributes).await?;
        if packet.payload.len() > 2 {
            let mut original = packet.clone();
            original.header.sequence_number =
                u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
            original.header.ssrc = self.main_ssrc;
            original.payload = packet.payload.slice(2..);
            // Its arrival was already reported to the sender's estimator (transport-cc) on
            // the RTX stream; counting it again, late, would look like congestion.
            original.header.extension = false;
            original.header.extensions.clear();
            self.queue.lock().unwrap().push_back(original);
        }
        Ok((packet, attributes))
    }
}

/// The main stream's reader: hands out queued repairs before the next packet off the wire
/// (so a repair surfaces within one packet interval, with no racing reads).
struct WithRepairs {
    inner: Arc<dyn RTPReader + Send + Sync>,
    queue: RepairQueue,
}

#[async_trait::async_trait]
impl RTPReader for WithRepairs {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<(webrtc::rtp::packet::Packet, Attributes), webrtc::interceptor::Error> {
        let repaired = self.queue.lock().unwrap().pop_front();
        if let Some(packet) = repaired {
            let mut attributes = attributes.clone();
            attributes.insert(REPAIRED, 1);
            return Ok((packet, attributes));
        }
        self.inner.read(buf, attributes).await
    }
}

/// A minimal jitter buffer: holds VP8 packets until a frame is whole (its start packet,
/// its marker packet and every sequence number between, all with one timestamp), so
/// retransmitted packets that arrive late and out of order still complete their frame.
#[derive(Default)]
struct FrameAssembler {
    pending: std::collections::HashMap<u16, (u32, bool, bool, Vec<u8>)>,
    done: std::collections::HashSet<u32>,
}

impl FrameAssembler {
    fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        start: bool,
        marker: bool,
        chunk: &[u8],
    ) -> Option<Vec<u8>> {
        if self.done.contains(&timestamp) {
            return None; // a duplicate of a frame already delivered
        }
        self.pending
            .insert(seq, (timestamp, start, marker, chunk.to_vec()));
        let first = self
            .pending
            .iter()
            .find(|(_, p)| p.0 == timestamp && p.1)
            .map(|(s, _)| *s)?;
        let mut seqs = vec![first];
        loop {
            let last = *seqs.last().unwrap();
            let (ts, _, marker, _) = self.pending.get(&last)?;
            if *ts != timestamp {
                return None;
            }
            if *marker {
                break;
            }
            seqs.push(last.wrapping_add(1));
        }
        let mut frame = Vec::new();
        for s in seqs {
            frame.extend_from_slice(&self.pending.remove(&s).unwrap().3);
        }
        self.done.insert(timestamp);
        Some(frame)
    }
}

/// The VP8 payload after the RTP payload descriptor (RFC 7741 §4.2). Written out here
/// because the SFU may legally send packets shorter than webrtc-rs's depacketizer accepts.
fn vp8_payload(payload: &[u8]) -> Option<&[u8]> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M flag).
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at..)
}

impl Received {
    fn note_corrupt(&mut self, what: &str, bytes: &[u8]) {
        self.corrupt += 1;
        if self.corrupt_samples.len() < 5 {
            let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
            self.corrupt_samples
                .push(format!("{what}: {} bytes: {}", bytes.len(), head.join(" ")));
        }
    }
}

pub struct Viewer {
    pub pc: Arc<RTCPeerConnection>,
    /// The WHEP resource (absolute URL), for a DELETE when the viewer leaves.
    pub location: String,
    /// The lossy relay, if the peer goes through one.
    pub link: Arc<Link>,
    pub received: Arc<Mutex<Received>>,
    pub connected_at: Instant,
}

impl Viewer {
    pub async fn start(base: &str, session: &str, token: &str) -> Viewer {
        Self::start_with(base, session, token, None, None).await
    }

    /// A viewer that, with `remb_cap`, reports that bandwidth (bits/s) in REMB four times a
    /// second, as a receiver on a slow link would.
    pub async fn start_with(
        base: &str,
        session: &str,
        token: &str,
        remb_cap: Option<u64>,
        loss: Option<Loss>,
    ) -> Viewer {
        let link = Arc::new(Link::default());
        let pc = new_peer(false, VideoCodec::Vp8).await;
        for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    send_encodings: vec![],
                }),
            )
            .await
            .unwrap();
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        pc.on_track(Box::new(move |track, _, _| {
            let sink = sink.clone();
            let video = track.kind() == RTPCodecType::Video;
            tokio::spawn(async move {
                let mut frames = FrameAssembler::default();
                let h264 = track
                    .codec()
                    .capability
                    .mime_type
                    .eq_ignore_ascii_case(MIME_TYPE_H264);
                let mut access_unit: (u32, Vec<Vec<u8>>) = (0, Vec::new());
                if video {
                    sink.lock().await.video_codec = track.codec().capability.mime_type;
                }
                while let Ok((packet, attributes)) = track.read_rtp().await {
                    let repaired = attributes.contains_key(&REPAIRED);
                    let h = &packet.header;
                    if packet.payload.is_empty() {
                        // Padding (bandwidth probing) carries no media.
                        continue;
                    }
                    let mut got = sink.lock().await;
                    let facts = (h.ssrc, h.sequence_number, h.timestamp);
                    if repaired {
                        got.repairs += 1;
                    }
                    if !video {
                        got.audio_rtp.push(facts);
                        match check_audio_packet(&packet.payload) {
                            Some(i) => got.audio.push(i),
                            None => got.note_corrupt("audio", &packet.payload),
                        }
                        continue;
                    }
                    if !repaired {
                        got.video_rtp.push(facts);
                    }
                    if h264 {
                        // In order on loopback: an access unit is the packets of one
                        // timestamp, up to the marker.
                        if access_unit.0 != h.timestamp {
                            access_unit = (h.timestamp, Vec::new());
                        }
                        access_unit.1.push(packet.payload.to_vec());
                        if h.marker {
                            let nals = h264_nals(&access_unit.1).unwrap_or_default();
                            match check_h264_frame(&nals) {
                                Some((i, key)) => got.video.push((i, key, 0, Instant::now())),
                                None => got.note_corrupt("h264 access unit", &nals.concat()),
                            }
                            access_unit.1.clear();
                        }
                        continue;
                    }
                    let Some(chunk) = vp8_payload(&packet.payload) else {
                        got.note_corrupt("vp8 packet", &packet.payload);
                        continue;
                    };
                    let start = packet.payload[0] & 0x17 == 0x10;
                    let assembled =
                        frames.push(h.sequence_number, h.timestamp, start, h.marker, chunk);
                    if let Some(frame) = assembled {
                        match check_video_frame(&frame) {
                            Some((i, key, layer)) => {
                                got.video.push((i, key, layer, Instant::now()))
                            }
                            None => got.note_corrupt("video frame", &frame),
                        }
                    }
                }
            });
            Box::pin(async {})
        }));
        let location = negotiate(
            &pc,
            &format!("{base}/whep/{session}"),
            token,
            loss.map(|l| (l, link.clone())),
        )
        .await;
        wait_connected(&pc).await;
        if let Some(cap) = remb_cap {
            let (pc, received) = (pc.clone(), received.clone());
            tokio::spawn(async move {
                while pc.connection_state() == RTCPeerConnectionState::Connected {
                    let ssrc = received.lock().await.video_rtp.first().map(|f| f.0);
                    if let Some(ssrc) = ssrc {
                        let remb = ReceiverEstimatedMaximumBitrate {
                            sender_ssrc: 1,
                            bitrate: cap as f32,
                            ssrcs: vec![ssrc],
                        };
                        let _ = pc.write_rtcp(&[Box::new(remb)]).await;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
        }
        Viewer {
            pc,
            location,
            link,
            received,
            connected_at: Instant::now(),
        }
    }
}
