//! The recorder hand-off: a recorded room's published packets are put back into frames
//! (the SFU forwards packets; the recorder muxes frames) and go to its [`RecorderTap`]
//! without waiting, and the recorder's keyframe wishes become the same rate-limited PLIs
//! viewers cause.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{MediaKind, Rid};

use super::fanout::Forward;
use super::{Core, Role};
use crate::recorder::{RecorderTap, TapFrame, TrackKind, VideoCodec};
use crate::sfu::SfuError;
use crate::sfu::packets::{FrameAssembler, PacketIn, PayloadFormat};

/// A room's recording: the recorder and one frame assembler per track (and layer).
pub(super) struct Recording {
    pub tap: RecorderTap,
    assemblers: Vec<(MediaKind, Option<Rid>, FrameAssembler)>,
}

impl Recording {
    /// The publisher changed: its packets start new sequences.
    pub fn new_source(&mut self) {
        self.tap.new_source();
        self.assemblers.clear();
    }
}

impl Core {
    /// Starts handing the room's frames to a recorder (replacing any previous one).
    pub fn attach_recorder(
        &mut self,
        now: Instant,
        room_id: &str,
        tap: RecorderTap,
    ) -> Result<(), SfuError> {
        self.advance(now);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return Err(SfuError::RoomClosed);
        };
        room.recording = Some(Recording {
            tap,
            assemblers: Vec::new(),
        });
        self.announce_tracks(room_id);
        self.request_keyframe(room_id, None);
        Ok(())
    }

    /// Stops recording the room: the recorder closes its last segment and finishes.
    pub fn detach_recorder(&mut self, room_id: &str) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.recording = None;
        }
    }

    /// Tells the recorder which tracks the room's (new) publisher sends.
    pub(super) fn announce_tracks(&mut self, room_id: &str) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let (Some(recording), Some(publisher)) = (room.recording.as_mut(), room.publisher) else {
            return;
        };
        let Some(peer) = self.peers.get(&publisher) else {
            return;
        };
        if matches!(peer.role, Role::Publisher(_)) {
            recording.tap.tracks(
                peer.mid_of(MediaKind::Audio).is_some(),
                peer.mid_of(MediaKind::Video).is_some(),
            );
        }
    }

    /// Adds a forwarded packet to its frame and hands each whole frame to the room's
    /// recorder; true when the recorder wants a keyframe.
    pub(super) fn record(recording: &mut Recording, fwd: &Forward) -> bool {
        let codec = fwd.params.spec().codec;
        let (kind, video, format) = match (fwd.kind, codec) {
            (MediaKind::Audio, Codec::Opus) => (TrackKind::Audio, None, PayloadFormat::Whole),
            (MediaKind::Video, Codec::Vp8) => {
                (TrackKind::Video, Some(VideoCodec::Vp8), PayloadFormat::Vp8)
            }
            (MediaKind::Video, Codec::H264) => (
                TrackKind::Video,
                Some(VideoCodec::H264),
                PayloadFormat::H264,
            ),
            _ => return false,
        };
        let assemblers = &mut recording.assemblers;
        let at = match assemblers
            .iter()
            .position(|(k, rid, _)| *k == fwd.kind && *rid == fwd.rid)
        {
            Some(at) => at,
            None => {
                assemblers.push((fwd.kind, fwd.rid, FrameAssembler::new(format)));
                assemblers.len() - 1
            }
        };
        let assembler = &mut assemblers[at].2;
        let lost_before = assembler.lost;
        let frame = assembler.push(PacketIn {
            seq: fwd.seq,
            timestamp: fwd.time.numer(),
            marker: fwd.marker,
            payload: &fwd.payload,
        });
        if assembler.lost != lost_before && kind == TrackKind::Video {
            recording.tap.lost_video();
        }
        if let Some(frame) = frame {
            recording.tap.offer(
                TapFrame {
                    kind,
                    video,
                    keyframe: frame.keyframe,
                    rtp_time: frame.timestamp,
                    clock_rate: fwd.time.denom(),
                    arrival: fwd.network_time,
                    data: frame.data,
                },
                fwd.rid,
            );
        }
        recording.tap.take_keyframe_wish()
    }
}
