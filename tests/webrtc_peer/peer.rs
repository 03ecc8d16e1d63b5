//! The webrtc-rs peer connection every test peer uses, and WHIP/WHEP negotiation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};

use super::VideoCodec;
use super::lossy_link::{Link, Loss, through_lossy_link};
use super::viewer::RepairTapBuilder;

pub(super) async fn new_peer(simulcast: bool, codec: VideoCodec) -> Arc<RTCPeerConnection> {
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

/// Offer, POST it to a WHIP/WHEP endpoint, apply the answer (through a lossy relay when
/// `loss` is given). Returns the resource URL path.
pub(super) async fn negotiate(
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

pub(super) async fn wait_connected(pc: &RTCPeerConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pc.connection_state() != RTCPeerConnectionState::Connected {
        assert!(Instant::now() < deadline, "peer did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
