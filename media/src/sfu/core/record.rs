//! The recorder hand-off: a recorded room's published frames also go to its
//! [`RecorderTap`], without waiting and without copying the payload, and the recorder's
//! keyframe wishes become the same rate-limited PLIs viewers cause.

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::MediaKind;

use super::fanout::Forward;
use super::{Core, Role};
use crate::recorder::{RecorderTap, TapFrame, TrackKind, VideoCodec};
use crate::sfu::SfuError;

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
        room.recorder = Some(tap);
        self.announce_tracks(room_id);
        self.request_keyframe(room_id, None);
        Ok(())
    }

    /// Stops recording the room: the recorder closes its last segment and finishes.
    pub fn detach_recorder(&mut self, room_id: &str) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.recorder = None;
        }
    }

    /// Tells the recorder which tracks the room's (new) publisher sends.
    pub(super) fn announce_tracks(&mut self, room_id: &str) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let (Some(tap), Some(publisher)) = (room.recorder.as_mut(), room.publisher) else {
            return;
        };
        let Some(peer) = self.peers.get(&publisher) else {
            return;
        };
        if matches!(peer.role, Role::Publisher(_)) {
            tap.tracks(
                peer.mid_of(MediaKind::Audio).is_some(),
                peer.mid_of(MediaKind::Video).is_some(),
            );
        }
    }

    /// Hands a forwarded frame to the room's recorder; true when it wants a keyframe.
    pub(super) fn record(tap: &mut RecorderTap, fwd: &Forward) -> bool {
        let codec = fwd.params.spec().codec;
        let (kind, video) = match (fwd.kind, codec) {
            (MediaKind::Audio, Codec::Opus) => (TrackKind::Audio, None),
            (MediaKind::Video, Codec::Vp8) => (TrackKind::Video, Some(VideoCodec::Vp8)),
            (MediaKind::Video, Codec::H264) => (TrackKind::Video, Some(VideoCodec::H264)),
            _ => return false,
        };
        tap.offer(
            TapFrame {
                kind,
                video,
                keyframe: fwd.keyframe,
                rtp_time: fwd.time.numer(),
                clock_rate: fwd.time.denom(),
                arrival: fwd.network_time,
                data: fwd.data.clone(),
            },
            fwd.rid,
        );
        tap.take_keyframe_wish()
    }
}
