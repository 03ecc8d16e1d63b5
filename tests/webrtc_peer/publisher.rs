//! The test publisher: connects over WHIP and sends self-describing audio and video.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

use super::h264::{h264_frame, h264_payloads};
use super::lossy_link::{Link, Loss};
use super::peer::{negotiate, new_peer, wait_connected};
use super::{LAYERS, VideoCodec, audio_packet, video_frame};

/// How a test publisher sends.
#[derive(Clone, Default)]
pub struct Options {
    /// The first frame/packet index (so a reconnected publisher's frames are told apart).
    pub first: u32,
    /// Two VP8 layers ([`LAYERS`]) instead of one stream.
    pub simulcast: bool,
    /// Send through a lossy relay.
    pub loss: Option<Loss>,
    pub codec: VideoCodec,
    /// Real VP8 + Opus to send (looped) instead of self-describing frames; its keyframes
    /// are where the clip has them.
    pub clip: Option<Arc<super::Clip>>,
    /// The first RTP sequence number of every stream (random otherwise, as an encoder's).
    pub first_seq: Option<u16>,
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
            clip,
            first_seq,
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
            let seq0 = || first_seq.unwrap_or_else(rand_u16);
            let mut video_seq: Vec<u16> = layers.iter().map(|_| seq0()).collect();
            let mut audio_seq: u16 = seq0();
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
                        payload: match &clip {
                            Some(clip) => clip.audio[(a - first) as usize % clip.audio.len()]
                                .clone()
                                .into(),
                            None => audio_packet(a).into(),
                        },
                    };
                    audio_seq = audio_seq.wrapping_add(1);
                    let _ = audio.write_rtp(&packet).await;
                    a += 1;
                }
                while (v - first) * 100 / 3 <= elapsed {
                    let clip_frame = clip
                        .as_ref()
                        .map(|c| &c.video[(v - first) as usize % c.video.len()]);
                    let keyframe = match clip_frame {
                        Some((keyframe, _)) => *keyframe,
                        None => {
                            (v - first).is_multiple_of(60)
                                || want_keyframe.swap(false, Ordering::SeqCst)
                        }
                    };
                    sent.lock().unwrap().push((v, Instant::now()));
                    for (n, track) in layers.iter().enumerate() {
                        let layer = if simulcast { LAYERS[n].1 } else { 0 };
                        let payloads = match codec {
                            VideoCodec::Vp8 => {
                                let frame = match clip_frame {
                                    Some((_, frame)) => frame.clone(),
                                    None => video_frame(v, keyframe, layer),
                                };
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
