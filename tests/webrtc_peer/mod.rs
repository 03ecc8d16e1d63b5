//! webrtc-rs as an independent WebRTC stack in tests: a publisher that sends hand-made,
//! self-describing Opus and VP8 payloads over WHIP, and viewers that receive them over WHEP
//! and check every frame byte for byte. Only loopback candidates are gathered.
//!
//! Shared by `tests/media.rs` and `benches/sfu_fanout.rs`; each uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

async fn new_peer(simulcast: bool, codec: VideoCodec) -> Arc<RTCPeerConnection> {
    // Both ring and aws-lc-rs are compiled in, so rustls cannot pick one by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut media = MediaEngine::default();
    match codec {
        VideoCodec::Vp8 => media.register_default_codecs().unwrap(),
        // Only H.264 (and Opus) on offer: the call cannot fall back to VP8.
        VideoCodec::H264 => {
            for (mime, clock_rate, channels, fmtp, pt, kind) in [
                (
                    MIME_TYPE_OPUS,
                    48000,
                    2,
                    "minptime=10;useinbandfec=1",
                    111,
                    RTPCodecType::Audio,
                ),
                (
                    MIME_TYPE_H264,
                    90000,
                    0,
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                    102,
                    RTPCodecType::Video,
                ),
            ] {
                let rtcp_feedback = if kind == RTPCodecType::Video {
                    ["nack", "nack pli", "ccm fir"]
                        .iter()
                        .map(|fb| {
                            let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                            webrtc::rtp_transceiver::RTCPFeedback {
                                typ: typ.to_owned(),
                                parameter: parameter.to_owned(),
                            }
                        })
                        .collect()
                } else {
                    vec![]
                };
                media
                    .register_codec(
                        RTCRtpCodecParameters {
                            capability: RTCRtpCodecCapability {
                                mime_type: mime.to_owned(),
                                clock_rate,
                                channels,
                                sdp_fmtp_line: fmtp.to_owned(),
                                rtcp_feedback,
                            },
                            payload_type: pt,
                            ..Default::default()
                        },
                        kind,
                    )
                    .unwrap();
            }
        }
    }
    // RTX for VP8, as browsers offer it: str0m NACKs and retransmits only over RTX.
    if codec == VideoCodec::Vp8 {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90000,
                        sdp_fmtp_line: "apt=96".to_owned(),
                        ..Default::default()
                    },
                    payload_type: 97,
                    ..Default::default()
                },
                RTPCodecType::Video,
            )
            .unwrap();
    }
    if simulcast {
        // Simulcast layers are told apart by the mid and RTP stream id header extensions.
        for uri in [
            webrtc::sdp::extmap::SDES_MID_URI,
            webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
        ] {
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RTPCodecType::Video,
                    None,
                )
                .unwrap();
        }
    }
    let mut registry = Registry::new();
    registry.add(Box::new(RepairTapBuilder::default()));
    let registry = register_default_interceptors(registry, &mut media).unwrap();
    let mut settings = SettingEngine::default();
    // Tests never leave the machine: loopback candidates only, no mDNS.
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.enable_sender_rtx(true);
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    )
}

/// A UDP relay between a test peer and the SFU that drops every `drop_every`-th VP8 RTP
/// packet (payload type 96) travelling one way, so NACK recovery has real work to do.
#[derive(Clone, Copy, Debug)]
pub struct Loss {
    pub drop_every: u32,
    /// Drop on the way to the SFU (publisher leg) rather than from it (viewer leg).
    pub towards_sfu: bool,
}

/// The relay's counters and switch.
#[derive(Debug, Default)]
pub struct Link {
    /// Packets the relay dropped for loss.
    pub dropped: AtomicU32,
    /// Set: the relay drops everything both ways, as a dead network would.
    pub cut: AtomicBool,
}

/// Starts the relay in front of `sfu`; returns its address.
async fn lossy_link(sfu: SocketAddr, loss: Loss, link: Arc<Link>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front_addr = front.local_addr().unwrap();
    let peer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let is_video_rtp = |b: &[u8]| b.len() > 12 && b[0] & 0xc0 == 0x80 && b[1] & 0x7f == 96;
    for towards_sfu in [true, false] {
        let (from, to) = if towards_sfu {
            (front.clone(), back.clone())
        } else {
            (back.clone(), front.clone())
        };
        let (peer, link) = (peer.clone(), link.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut seen = 0u32;
            while let Ok((n, source)) = from.recv_from(&mut buf).await {
                let packet = &buf[..n];
                if link.cut.load(Ordering::SeqCst) {
                    continue;
                }
                if loss.towards_sfu == towards_sfu && is_video_rtp(packet) {
                    seen += 1;
                    if seen.is_multiple_of(loss.drop_every) {
                        link.dropped.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                }
                let destination = if towards_sfu {
                    *peer.lock().unwrap() = Some(source);
                    Some(sfu)
                } else {
                    *peer.lock().unwrap()
                };
                if let Some(destination) = destination {
                    let _ = to.send_to(packet, destination).await;
                }
            }
        });
    }
    front_addr
}

/// Points the answer's UDP host candidate at a lossy relay and drops its TCP candidate.
async fn through_lossy_link(answer: String, loss: Loss, link: Arc<Link>) -> String {
    let candidate = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.to_lowercase().contains(" udp "))
        .expect("a UDP candidate");
    let fields: Vec<&str> = candidate.split(' ').collect();
    let sfu: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().unwrap();
    let relay = lossy_link(sfu, loss, link).await;
    answer
        .split("\r\n")
        .filter(|l| !(l.starts_with("a=candidate:") && l.to_lowercase().contains(" tcp ")))
        .map(|l| {
            if l == candidate {
                l.replace(&format!(" {} ", sfu.port()), &format!(" {} ", relay.port()))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Offer, POST it to a WHIP/WHEP endpoint, apply the answer (through a lossy relay when
/// `loss` is given). Returns the resource URL path.
async fn negotiate(
    pc: &RTCPeerConnection,
    url: &str,
    token: &str,
    loss: Option<(Loss, Arc<Link>)>,
) -> String {
    let offer = pc.create_offer(None).await.unwrap();
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await.unwrap();
    let _ = gathered.recv().await;
    let sdp = pc.local_description().await.unwrap().sdp;
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let mut answer = resp.text().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    if let Some((loss, link)) = loss {
        answer = through_lossy_link(answer, loss, link).await;
    }
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    location.expect("Location header")
}

async fn wait_connected(pc: &RTCPeerConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pc.connection_state() != RTCPeerConnectionState::Connected {
        assert!(Instant::now() < deadline, "peer did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

// --- Publisher ---

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VideoCodec {
    #[default]
    Vp8,
    H264,
}

/// How a test publisher sends.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The first frame/packet index (so a reconnected publisher's frames are told apart).
    pub first: u32,
    /// Two VP8 layers ([`LAYERS`]) instead of one stream.
    pub simulcast: bool,
    /// Send through a lossy relay.
    pub loss: Option<Loss>,
    pub codec: VideoCodec,
}

pub struct Publisher {
    pub pc: Arc<RTCPeerConnection>,
    pub location: String,
    /// The lossy relay, if the peer goes through one.
    pub link: Arc<Link>,
    /// When each video frame (by index) went out, for latency measurements.
    pub sent: Arc<std::sync::Mutex<Vec<(u32, Instant)>>>,
    /// Picture loss indications the SFU sent this publisher.
    pub plis: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    sender: Option<tokio::task::JoinHandle<(u32, u32)>>,
}

impl Publisher {
    /// Connects over WHIP and starts sending: 30 video frames/s (a keyframe every 60
    /// frames and right after each PLI) and 50 audio packets/s. Indices start at `first`,
    /// RTP sequence numbers and timestamps at random points as a real encoder's would.
    /// With `simulcast`, video goes out as two layers ([`LAYERS`]) of the same frames.
    pub async fn start(base: &str, session: &str, token: &str, options: Options) -> Publisher {
        let Options {
            first,
            simulcast,
            loss,
            codec,
        } = options;
        let link = Arc::new(Link::default());
        let pc = new_peer(simulcast, codec).await;
        let vp8 = || match codec {
            VideoCodec::Vp8 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                ..Default::default()
            },
            VideoCodec::H264 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90000,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
                        .to_owned(),
                ..Default::default()
            },
        };
        let layers: Vec<Arc<TrackLocalStaticRTP>> = if simulcast {
            LAYERS
                .iter()
                .map(|(rid, _)| {
                    Arc::new(TrackLocalStaticRTP::new_with_rid(
                        vp8(),
                        "video".to_owned(),
                        rid.to_string(),
                        "watchpost-test".to_owned(),
                    ))
                })
                .collect()
        } else {
            vec![Arc::new(TrackLocalStaticRTP::new(
                vp8(),
                "video".to_owned(),
                "watchpost-test".to_owned(),
            ))]
        };
        let audio = Arc::new(TrackLocalStaticRTP::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                ..Default::default()
            },
            "audio".to_owned(),
            "watchpost-test".to_owned(),
        ));
        let init = || RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            send_encodings: vec![],
        };
        let video_tx = pc
            .add_transceiver_from_track(layers[0].clone(), Some(init()))
            .await
            .unwrap();
        let sender = video_tx.sender().await;
        for layer in &layers[1..] {
            sender.add_encoding(layer.clone()).await.unwrap();
        }
        pc.add_transceiver_from_track(audio.clone(), Some(init()))
            .await
            .unwrap();
        let location = negotiate(
            &pc,
            &format!("{base}/whip/{session}"),
            token,
            loss.map(|l| (l, link.clone())),
        )
        .await;
        wait_connected(&pc).await;

        let plis = Arc::new(AtomicU32::new(0));
        let want_keyframe = Arc::new(AtomicBool::new(true));
        let rids: Vec<Option<&'static str>> = if simulcast {
            LAYERS.iter().map(|(rid, _)| Some(*rid)).collect()
        } else {
            vec![None]
        };
        for rid in rids {
            let (plis, want_keyframe, sender) =
                (plis.clone(), want_keyframe.clone(), sender.clone());
            tokio::spawn(async move {
                loop {
                    let read = match rid {
                        Some(rid) => sender.read_rtcp_simulcast(rid).await,
                        None => sender.read_rtcp().await,
                    };
                    let Ok((packets, _)) = read else { break };
                    for p in packets {
                        if p.as_any().is::<PictureLossIndication>() {
                            plis.fetch_add(1, Ordering::SeqCst);
                            want_keyframe.store(true, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sent: Arc<std::sync::Mutex<Vec<(u32, Instant)>>> = Arc::default();
        let sent_log = sent.clone();
        let task = tokio::spawn(async move {
            let mut video_seq: Vec<u16> = layers.iter().map(|_| rand_u16()).collect();
            let mut audio_seq: u16 = rand_u16();
            let video_ts0 = u32::from(rand_u16()) << 12;
            let audio_ts0 = u32::from(rand_u16()) << 10;
            let (mut v, mut a) = (first, first);
            let sent = sent_log;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let start = Instant::now();
            while !stopped.load(Ordering::SeqCst) {
                tick.tick().await;
                let elapsed = start.elapsed().as_millis() as u32;
                while (a - first) * 20 <= elapsed {
                    let packet = webrtc::rtp::packet::Packet {
                        header: webrtc::rtp::header::Header {
                            version: 2,
                            marker: true,
                            sequence_number: audio_seq,
                            timestamp: audio_ts0.wrapping_add((a - first) * 960),
                            ..Default::default()
                        },
                        payload: audio_packet(a).into(),
                    };
                    audio_seq = audio_seq.wrapping_add(1);
                    let _ = audio.write_rtp(&packet).await;
                    a += 1;
                }
                while (v - first) * 100 / 3 <= elapsed {
                    let keyframe = (v - first).is_multiple_of(60)
                        || want_keyframe.swap(false, Ordering::SeqCst);
                    sent.lock().unwrap().push((v, Instant::now()));
                    for (n, track) in layers.iter().enumerate() {
                        let layer = if simulcast { LAYERS[n].1 } else { 0 };
                        let payloads = match codec {
                            VideoCodec::Vp8 => {
                                let frame = video_frame(v, keyframe, layer);
                                let chunks: Vec<&[u8]> = frame.chunks(1000).collect();
                                // VP8 payload descriptor: S=1 on the frame's first packet.
                                chunks
                                    .iter()
                                    .enumerate()
                                    .map(|(k, chunk)| {
                                        let mut payload = vec![if k == 0 { 0x10 } else { 0x00 }];
                                        payload.extend_from_slice(chunk);
                                        payload
                                    })
                                    .collect::<Vec<_>>()
                            }
                            VideoCodec::H264 => h264_payloads(&h264_frame(v, keyframe)),
                        };
                        let count = payloads.len();
                        for (k, payload) in payloads.into_iter().enumerate() {
                            let packet = webrtc::rtp::packet::Packet {
                                header: webrtc::rtp::header::Header {
                                    version: 2,
                                    marker: k + 1 == count,
                                    sequence_number: video_seq[n],
                                    timestamp: video_ts0.wrapping_add((v - first) * 3000),
                                    ..Default::default()
                                },
                                payload: payload.into(),
                            };
                            video_seq[n] = video_seq[n].wrapping_add(1);
                            let _ = track.write_rtp(&packet).await;
                        }
                    }
                    v += 1;
                }
            }
            (v, a)
        });
        Publisher {
            pc,
            location,
            link,
            sent,
            plis,
            stop,
            sender: Some(task),
        }
    }

    /// Stops sending; returns the next (unsent) video and audio indices.
    pub async fn stop_sending(&mut self) -> (u32, u32) {
        self.stop.store(true, Ordering::SeqCst);
        self.sender.take().unwrap().await.unwrap()
    }
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 60000) as u16
}

/// H.264 access units as NAL units (without start codes): a keyframe is SPS, PPS and an
/// IDR slice, other frames one non-IDR slice. Index and filler are chosen so no NAL holds
/// two zero bytes in a row, which keeps Annex-B start codes out of the payload.
pub fn h264_frame(index: u32, keyframe: bool) -> Vec<Vec<u8>> {
    let slice = |header: u8| {
        let mut nal = vec![header];
        nal.extend_from_slice(H264_MAGIC);
        nal.extend_from_slice(format!("{index:010}").as_bytes());
        let len = 100 + (index as usize * 397) % 3000;
        nal.extend((0..len).map(|k| (index as usize * 31 + k * 7) as u8 | 1));
        nal
    };
    if keyframe {
        vec![
            // Baseline profile 3.1, matching profile-level-id=42001f.
            vec![0x67, 0x42, 0x00, 0x1f, 0x95, 0xa8, 0x14, 0x01, 0x6e, 0x40],
            vec![0x68, 0xce, 0x3c, 0x80],
            slice(0x65),
        ]
    } else {
        vec![slice(0x41)]
    }
}

const H264_MAGIC: &[u8; 3] = b"WPH";

/// Checks a received access unit: `(index, keyframe)` if it is exactly what was sent.
pub fn check_h264_frame(nals: &[Vec<u8>]) -> Option<(u32, bool)> {
    let slice = nals.last()?;
    let keyframe = slice.first()? & 0x1f == 5;
    if slice.get(1..4)? != H264_MAGIC {
        return None;
    }
    let index: u32 = std::str::from_utf8(slice.get(4..14)?).ok()?.parse().ok()?;
    (h264_frame(index, keyframe) == nals).then_some((index, keyframe))
}

/// RTP payloads for one access unit (RFC 6184 packetization mode 1): small NAL units as
/// they are, large ones as FU-A fragments.
fn h264_payloads(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    for nal in nals {
        if nal.len() <= 1000 {
            payloads.push(nal.clone());
            continue;
        }
        let chunks: Vec<&[u8]> = nal[1..].chunks(1000).collect();
        for (k, chunk) in chunks.iter().enumerate() {
            let mut fu_header = nal[0] & 0x1f;
            if k == 0 {
                fu_header |= 0x80;
            }
            if k + 1 == chunks.len() {
                fu_header |= 0x40;
            }
            let mut payload = vec![(nal[0] & 0xe0) | 28, fu_header];
            payload.extend_from_slice(chunk);
            payloads.push(payload);
        }
    }
    payloads
}

/// Splits one access unit's RTP payloads back into NAL units (single NAL, STAP-A, FU-A).
fn h264_nals(payloads: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let mut nals = Vec::new();
    let mut fragment: Option<Vec<u8>> = None;
    for p in payloads {
        match p.first()? & 0x1f {
            1..=23 => nals.push(p.clone()),
            24 => {
                let mut at = 1;
                while at + 2 <= p.len() {
                    let len = u16::from_be_bytes([p[at], p[at + 1]]) as usize;
                    nals.push(p.get(at + 2..at + 2 + len)?.to_vec());
                    at += 2 + len;
                }
            }
            28 => {
                let fu = *p.get(1)?;
                if fu & 0x80 != 0 {
                    fragment = Some(vec![(p[0] & 0xe0) | (fu & 0x1f)]);
                }
                fragment.as_mut()?.extend_from_slice(p.get(2..)?);
                if fu & 0x40 != 0 {
                    nals.push(fragment.take()?);
                }
            }
            _ => return None,
        }
    }
    Some(nals)
}

// --- Viewer ---

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
struct RepairTapBuilder {
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
        negotiate(
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
            link,
            received,
            connected_at: Instant::now(),
        }
    }
}
