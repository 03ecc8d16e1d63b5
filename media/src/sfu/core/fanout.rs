//! Fan-out: a publisher's frame goes to each viewer of its room that can use it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::media::{MediaData, MediaKind, MediaTime, Rid};

use super::super::forward::Source;
use super::{Core, Peer, PeerKey, Role, enqueue_peer};

/// A published frame on its way to the room's viewers.
pub(super) struct Forward {
    room: Arc<str>,
    source: PeerKey,
    pub(super) kind: MediaKind,
    pub(super) rid: Option<Rid>,
    pub(super) keyframe: bool,
    pub(super) params: str0m::format::PayloadParams,
    pub(super) time: MediaTime,
    pub(super) network_time: Instant,
    pub(super) data: Arc<[u8]>,
}

impl Forward {
    pub(super) fn from_publisher(source: PeerKey, peer: &Peer, data: MediaData) -> Option<Self> {
        let kind = peer
            .media
            .iter()
            .find(|(m, _)| *m == data.mid)
            .map(|(_, k)| *k)
            .unwrap_or(MediaKind::Video);
        // One audio and one video track per camera: a second track of a kind (a screen
        // share, say) would otherwise be interleaved into the viewers' stream.
        if peer.mid_of(kind) != Some(data.mid) {
            return None;
        }
        Some(Forward {
            room: peer.room.clone(),
            source,
            kind,
            rid: data.rid,
            keyframe: kind == MediaKind::Video && data.is_keyframe(),
            params: data.params,
            time: data.time,
            network_time: data.network_time,
            data: data.data,
        })
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
            room.layers.record(rid, fwd.data.len(), fwd.network_time);
        }
        let source = Source {
            publisher: fwd.source,
            rid: fwd.rid,
        };
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
            let Role::Subscriber(_, viewing) = &mut peer.role else {
                continue;
            };
            let time = if fwd.kind == MediaKind::Video {
                if !viewing.video.admit(fwd.rid, fwd.keyframe) {
                    if let Some(layer) = viewing.video.wants_keyframe_from()
                        && !wanted.contains(&layer)
                    {
                        wanted.push(layer);
                    }
                    continue;
                }
                viewing.video_time.map(source, fwd.time, fwd.network_time)
            } else {
                viewing.audio_time.map(source, fwd.time, fwd.network_time)
            };
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(fwd.params) else {
                continue;
            };
            if writer
                .write(pt, fwd.network_time, time, fwd.data.clone())
                .is_ok()
            {
                self.counters
                    .frames_forwarded
                    .fetch_add(1, Ordering::Relaxed);
            }
            enqueue_peer(&mut self.work, key, peer);
        }
        // The recorder gets the publisher's frames as they are, whoever watches.
        let mut recorder_wants_keyframe = false;
        if let Some(tap) = room.recorder.as_mut() {
            recorder_wants_keyframe = Core::record(tap, fwd);
            if tap.is_closed() {
                room.recorder = None;
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
