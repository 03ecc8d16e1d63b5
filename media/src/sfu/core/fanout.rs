//! Fan-out: a publisher's RTP packet goes to each viewer of its room that can use it.
//!
//! Packets, not frames: the payload is parsed once when it arrives (which stream, which
//! codec, does a keyframe start here) and then, per viewer, only the header is rewritten
//! (payload type, sequence number, timestamp on the viewer's own continuous lines) before
//! str0m protects and sends it. The payload itself is shared, never copied.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, MediaTime, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};

use super::super::forward::Source;
use super::super::packets::{h264_keyframe_start, vp8_keyframe_start};
use super::{Core, Peer, PeerKey, Role, Viewing, enqueue_peer};

/// A published packet on its way to the room's viewers.
pub(super) struct Forward {
    room: Arc<str>,
    source: PeerKey,
    pub(super) kind: MediaKind,
    pub(super) rid: Option<Rid>,
    /// The first packet of a keyframe.
    pub(super) keyframe: bool,
    pub(super) params: PayloadParams,
    /// Extended sequence number and RTP time, as the publisher sent them.
    pub(super) seq: u64,
    pub(super) time: MediaTime,
    pub(super) marker: bool,
    pub(super) network_time: Instant,
    /// Header extensions worth passing on (audio level, video orientation); the rest of
    /// str0m's `ExtensionValues` is the viewer's own (and would make this 300 bytes).
    audio_level: Option<(i8, Option<bool>)>,
    video_orientation: Option<VideoOrientation>,
    pub(super) payload: Arc<[u8]>,
}

impl Forward {
    pub(super) fn from_publisher(
        source: PeerKey,
        peer: &mut Peer,
        packet: RtpPacket,
    ) -> Option<Self> {
        let (mid, rid) = {
            let mut api = peer.rtc.direct_api();
            let stream = api.stream_rx(&packet.header.ssrc)?;
            (stream.mid(), stream.rid())
        };
        let kind = peer
            .media
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, k)| *k)?;
        // One audio and one video track per camera: a second track of a kind (a screen
        // share, say) would otherwise be interleaved into the viewers' stream.
        if peer.mid_of(kind) != Some(mid) {
            return None;
        }
        let pt = packet.header.payload_type;
        let params = *peer.rtc.codec_config().find(|p| p.pt() == pt)?;
        let keyframe = kind == MediaKind::Video
            && match params.spec().codec {
                Codec::Vp8 => vp8_keyframe_start(&packet.payload),
                Codec::H264 => h264_keyframe_start(&packet.payload),
                _ => false,
            };
        let ext = &packet.header.ext_vals;
        let audio_level = ext.audio_level.map(|level| (level, ext.voice_activity));
        let video_orientation = ext.video_orientation;
        Some(Forward {
            room: peer.room.clone(),
            source,
            kind,
            rid,
            keyframe,
            params,
            seq: *packet.seq_no,
            time: packet.time,
            marker: packet.header.marker,
            network_time: packet.timestamp,
            audio_level,
            video_orientation,
            payload: packet.payload,
        })
    }

    fn extensions(&self) -> ExtensionValues {
        let mut ext = ExtensionValues::default();
        if let Some((level, voice)) = self.audio_level {
            ext.audio_level = Some(level);
            ext.voice_activity = voice;
        }
        ext.video_orientation = self.video_orientation;
        ext
    }

    /// The last packet of a video frame, or any audio packet: what `frames_forwarded`
    /// counts.
    fn ends_frame(&self) -> bool {
        self.kind == MediaKind::Audio || self.marker
    }
}

impl Viewing {
    /// This viewer's payload type for the publisher's, looked up once per publisher and
    /// codec (str0m's parameter matching compares format parameters, too slow per packet).
    fn pt_for(
        &mut self,
        publisher: PeerKey,
        params: PayloadParams,
        peer_rtc: &str0m::Rtc,
    ) -> Option<Pt> {
        if self.pts_of != Some(publisher) {
            self.pts_of = Some(publisher);
            self.pts.clear();
        }
        if let Some((_, ours)) = self.pts.iter().find(|(theirs, _)| *theirs == params.pt()) {
            return *ours;
        }
        let ours = peer_rtc.codec_config().match_params(params).map(|p| p.pt());
        self.pts.push((params.pt(), ours));
        ours
    }
}

impl Core {
    pub(super) fn forward(&mut self, fwd: &Forward) {
        let Some(room) = self.rooms.get_mut(&fwd.room) else {
            return;
        };
        if room.publisher != Some(fwd.source) {
            return;
        }
        if let Some(rid) = fwd.rid {
            room.layers.record(rid, fwd.payload.len(), fwd.network_time);
        }
        let source = Source {
            publisher: fwd.source,
            rid: fwd.rid,
        };
        let video = fwd.kind == MediaKind::Video;
        // Every video packet moves the layer's line, keyframe start or not.
        let in_order = video && room.in_order(fwd.rid, fwd.seq);
        let keyframe = fwd.keyframe && in_order;
        // Built once per packet; each viewer's write takes a copy.
        let extensions = fwd.extensions();
        // At most a layer or two: a tiny vector, allocated only when someone waits.
        let mut wanted: Vec<Option<Rid>> = Vec::new();
        for &key in &room.subscribers {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            let Some(mid) = peer.mid_of(fwd.kind) else {
                continue;
            };
            let Peer { rtc, role, .. } = &mut *peer;
            let Role::Subscriber(_, viewing) = role else {
                continue;
            };
            if video && !viewing.video.admit(fwd.rid, keyframe) {
                if let Some(layer) = viewing.video.wants_keyframe_from()
                    && !wanted.contains(&layer)
                {
                    wanted.push(layer);
                }
                continue;
            }
            let Some(pt) = viewing.pt_for(fwd.source, fwd.params, rtc) else {
                continue;
            };
            let (time, seq) = if video {
                (
                    viewing.video_time.map(source, fwd.time, fwd.network_time),
                    viewing.video_seq.map(source, fwd.seq),
                )
            } else {
                (
                    viewing.audio_time.map(source, fwd.time, fwd.network_time),
                    viewing.audio_seq.map(source, fwd.seq),
                )
            };
            let mut api = rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    pt,
                    seq.into(),
                    time.numer() as u32,
                    fwd.network_time,
                    fwd.payload.clone(),
                )
                .marker(fwd.marker)
                .ext_vals(extensions.clone())
                // Audio is not worth repairing: a late Opus packet is a lost one.
                .nackable(video),
            );
            peer.unstamped = true;
            if fwd.ends_frame() {
                self.counters
                    .frames_forwarded
                    .fetch_add(1, Ordering::Relaxed);
            }
            enqueue_peer(&mut self.work, key, peer);
        }
        // The recorder gets the publisher's packets as they are, whoever watches.
        let mut recorder_wants_keyframe = false;
        if let Some(recording) = room.recording.as_mut() {
            recorder_wants_keyframe = Core::record(recording, fwd);
            if recording.tap.is_closed() {
                room.recording = None;
            }
        }
        if recorder_wants_keyframe {
            self.request_keyframe(&fwd.room, fwd.rid);
        }
        for layer in wanted {
            self.request_keyframe(&fwd.room, layer);
        }
    }
}
