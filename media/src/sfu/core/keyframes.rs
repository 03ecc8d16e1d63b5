//! Keyframe requests: viewers that start, switch layer or lose a picture need one, and a
//! publisher is asked at most every 250 ms per layer however many viewers ask.

use std::sync::atomic::Ordering;
use std::time::Duration;

use str0m::media::{KeyframeRequestKind, MediaKind, Rid};

use super::{Core, PeerKey, Role};

/// Keyframe requests for one layer of a publisher are spaced at least this far apart.
pub(super) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

impl Core {
    pub(super) fn viewer_needs_keyframe(&mut self, viewer: PeerKey) {
        let Some(peer) = self.peers.get(&viewer) else {
            return;
        };
        // Frames keep flowing meanwhile: the decoder copes until the keyframe arrives, and
        // holding them back would only lengthen the freeze.
        let layer = match &peer.role {
            Role::Subscriber(_, viewing) => viewing.video.target.or(viewing.video.layer),
            Role::Publisher(_) => return,
        };
        let room = peer.room.clone();
        self.request_keyframe(&room, layer);
    }

    /// Asks the room's publisher for a keyframe (PLI) on one layer, rate-limited per layer.
    pub(super) fn request_keyframe(&mut self, room_id: &str, layer: Option<Rid>) {
        let now = self.now;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(key) = room.publisher else { return };
        if room.keyframe_requests.iter().any(|(l, t)| {
            *l == layer && now.saturating_duration_since(*t) < KEYFRAME_REQUEST_INTERVAL
        }) {
            return;
        }
        let Some(publisher) = self.peers.get_mut(&key) else {
            return;
        };
        if !publisher.connected {
            return;
        }
        let Some(mid) = publisher.mid_of(MediaKind::Video) else {
            return;
        };
        // RTP mode: the request goes to the receive stream of that layer.
        let mut api = publisher.rtc.direct_api();
        if let Some(stream) = api.stream_rx_by_mid(mid, layer) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.counters
                .keyframe_requests
                .fetch_add(1, Ordering::Relaxed);
            room.keyframe_requests.retain(|(l, _)| *l != layer);
            room.keyframe_requests.push((layer, now));
            self.enqueue(key);
        }
    }
}
