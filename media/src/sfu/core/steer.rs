//! Simulcast steering, once a second: re-measure each publisher's layers, re-target every
//! viewer from its bandwidth estimate (the switch itself happens at the layer's next
//! keyframe, see [`VideoState::admit`](super::super::forward::VideoState::admit)) and point
//! the viewers' estimators at the next layer up.

use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::media::Rid;

use super::super::forward::retarget;
use super::{Core, Role, enqueue_peer};

impl Core {
    pub(super) fn steer(&mut self, now: Instant) {
        let mut keyframes: Vec<(Arc<str>, Option<Rid>)> = Vec::new();
        for (room_id, room) in &mut self.rooms {
            if room.orphaned_since.is_some() {
                continue;
            }
            room.layers.tick(now);
            let active = room.layers.active(now);
            if active.is_empty() {
                continue;
            }
            for &key in &room.subscribers {
                let Some(peer) = self.peers.get_mut(&key) else {
                    continue;
                };
                let Role::Subscriber(_, viewing) = &mut peer.role else {
                    continue;
                };
                let target = retarget(viewing.video.target, &active, viewing.estimate());
                viewing.video.target = target;
                if let Some(layer) = viewing.video.wants_keyframe_from()
                    && !keyframes.iter().any(|(r, l)| r == room_id && *l == layer)
                {
                    keyframes.push((room_id.clone(), layer));
                }
                // Probe towards the next layer up, so a viewer on a low layer can climb.
                let position = active.iter().position(|(rid, _)| Some(*rid) == target);
                let next = position
                    .and_then(|p| active.get(p + 1))
                    .or(active.last())
                    .map(|(_, bps)| *bps)
                    .unwrap_or(0);
                let best = active.last().map(|(_, bps)| *bps).unwrap_or(0);
                if best > 0 {
                    // Never probe past what the viewer itself says it can take (REMB).
                    let ceiling = viewing.remb_bps.unwrap_or(u64::MAX);
                    let desired = Bitrate::bps((best + best / 5).min(ceiling));
                    let minimum = Bitrate::bps(next.min(best + best / 5).min(ceiling));
                    peer.rtc.bwe().set_bitrate(minimum, desired);
                    enqueue_peer(&mut self.work, key, peer);
                }
            }
        }
        for (room, layer) in keyframes {
            self.request_keyframe(&room, layer);
        }
    }
}
