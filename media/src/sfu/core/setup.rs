//! Peer setup: an `Rtc` built from the participant's offer, checked on str0m's parsed SDP.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::Direction;
use str0m::net::TcpType;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc};

use super::super::SfuError;
use super::CoreConfig;

/// The estimate str0m starts from before TWCC feedback arrives.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(600);

/// A parsed offer and what the room needs to know about it.
pub(super) struct Offer {
    pub sdp: SdpOffer,
    /// Some m-line carries `a=simulcast` (the camera sends layers).
    pub simulcast: bool,
}

pub(super) fn parse_offer(sdp: &str) -> Result<Offer, SfuError> {
    let sdp = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(sdp_error_text(&e)))?;
    let simulcast = sdp.media_lines.iter().any(|m| m.simulcast().is_some());
    Ok(Offer { sdp, simulcast })
}

/// What a client is told about an offer the parser refused: the parser's own explanation
/// without its internals (its parse errors name a raw memory address,
/// `Parse error at PointerOffset(0x7f…)`), on one bounded line.
pub(crate) fn sdp_error_text(e: &dyn std::fmt::Display) -> String {
    const MAX_CHARS: usize = 200;
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(|line| match line.find("Parse error at") {
            Some(i) => line[..i].trim(),
            None => line.trim(),
        })
        .map(|line| line.trim_end_matches(':').trim())
        .filter(|line| !line.is_empty() && !line.contains("PointerOffset") && !line.contains("0x"))
        .collect();
    let joined = parts.join("; ");
    let cleaned: String = joined
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CHARS)
        .collect();
    if cleaned.is_empty() {
        "the offer is not valid SDP".to_string()
    } else {
        cleaned
    }
}

/// A new peer, answered and ready for its first ICE check.
pub(super) struct NewPeer {
    pub rtc: Rtc,
    pub answer: String,
    /// Our ICE ufrag for this peer: ICE checks naming it are routed here.
    pub ufrag: String,
}

/// Sent video packets each viewer keeps for answering NACKs: 500 ms at 2.5 Mbit/s (longer
/// at lower rates), as Janus keeps; past that a lost packet is better repaired by a
/// keyframe. The payloads are shared with every other viewer's cache; each cached packet
/// costs a viewer ~430 bytes of its own (str0m's `RtpPacket` and its slot), ~57 KiB here.
const VIDEO_RETRANSMIT_PACKETS: usize = 135;

/// str0m's standard header extensions without transport-wide sequence numbers. TWCC
/// feedback only feeds a bandwidth estimator: a viewer without one (of a single-layer
/// camera) would otherwise keep a 1,000-packet send register, stamp every packet for it,
/// and send the server a feedback report every ~100 ms for nothing. A camera keeps it:
/// its own encoder's estimator lives on the feedback the server sends it.
fn without_transport_cc() -> ExtensionMap {
    let standard = ExtensionMap::standard();
    let mut map = ExtensionMap::empty();
    // Every id str0m maps (1-16; the standard map uses a few of them).
    for id in 1..=16 {
        if let Some(ext) = standard.lookup(id)
            && !matches!(ext, Extension::TransportSequenceNumber)
        {
            map.set(id, ext.clone());
        }
    }
    map
}

/// Builds the peer's `Rtc`, answers the offer and checks the answer can carry media.
/// `bwe` gives it a bandwidth estimator (viewers of a simulcast camera).
pub(super) fn build_peer(
    now: Instant,
    config: &CoreConfig,
    offer: SdpOffer,
    publisher: bool,
    bwe: bool,
) -> Result<NewPeer, SfuError> {
    let mut builder = Rtc::builder()
        // Forward packets, not frames (see `fanout`).
        .set_rtp_mode(true)
        // Per-second stats feed the NACK and bitrate figures in /metrics.
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_ice_lite(true)
        // Made once, not per peer on the media loop (see `dtls`).
        .set_dtls_cert(config.dtls_cert.clone())
        .set_crypto_provider(config.crypto.clone())
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .set_send_buffer_video(VIDEO_RETRANSMIT_PACKETS);
    // Only with layers is there something to choose; without them str0m would pace the one
    // stream at the estimate, turning a lossy (not congested) link into growing delay.
    if bwe {
        builder = builder.enable_bwe(Some(INITIAL_ESTIMATE));
    } else if !publisher {
        builder = builder.set_extension_map(without_transport_cc());
    }
    let mut rtc = builder.build(now);
    for addr in &config.candidates {
        let candidate =
            Candidate::host(*addr, "udp").map_err(|e| SfuError::BadSdp(e.to_string()))?;
        rtc.add_local_candidate(candidate);
    }
    if let Some(tcp) = config.tcp_candidate
        && let Ok(candidate) = Candidate::builder()
            .tcp()
            .host(tcp)
            .tcptype(TcpType::Passive)
            .build()
    {
        rtc.add_local_candidate(candidate);
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| SfuError::BadSdp(sdp_error_text(&e)))?;
    if !carries_media(&answer, publisher) {
        return Err(SfuError::NoUsableMedia);
    }
    let ufrag = answer
        .session
        .ice_creds()
        .or_else(|| answer.media_lines.iter().find_map(|m| m.ice_creds()))
        .map(|creds| creds.ufrag)
        .unwrap_or_default();
    Ok(NewPeer {
        rtc,
        answer: answer.to_sdp_string(),
        ufrag,
    })
}

/// str0m accepts offers whose codecs it cannot use (it answers those m-lines with payload
/// type 0 and no rtpmap), and reports media only once the transport runs, so usability is
/// read off the answer: some m-line must carry one of our codecs in our direction.
fn carries_media(answer: &SdpAnswer, publisher: bool) -> bool {
    let want = if publisher {
        Direction::RecvOnly
    } else {
        Direction::SendOnly
    };
    answer.media_lines.iter().any(|m| {
        let direction = m.direction();
        (direction == want || direction == Direction::SendRecv)
            && m.rtp_params()
                .iter()
                .any(|p| matches!(p.spec().codec, Codec::Opus | Codec::Vp8 | Codec::H264))
    })
}
