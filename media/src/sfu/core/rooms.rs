//! Room membership: joins (and a participant's reconnect replacing its old transport),
//! hang-ups, closing rooms, reaping dead transports, and the reconnect grace that keeps
//! viewers connected while a lost camera comes back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{MediaEvent, SfuError};
use super::setup::{build_peer, parse_offer};
use super::stats::{PeerStats, release_gauges};
use super::{Core, Output, Owner, Peer, PeerKey, Role, RouteUpdate, enqueue_peer};
use crate::limits::Admission;

/// A connected peer that has sent nothing at all (media, RTCP or ICE checks) for this long
/// is gone: a camera or viewer always sends RTCP every few seconds. Without this a dead
/// network is noticed only when ICE consent lapses (15 s).
pub(super) const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(8);
/// A transport that has not connected this long after its offer never will (the client
/// went away after signalling); it is dropped so it cannot hold a slot.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A closed room refuses late joins this long (an offer racing the stream's end).
const CLOSED_ROOM_MEMORY: Duration = Duration::from_secs(120);

/// Why a publisher's room ended, as the control plane hears it.
const REASON_HUNG_UP: &str = "publisher hung up";
const REASON_DISCONNECTED: &str = "publisher disconnected";
const REASON_NO_RECONNECT: &str = "publisher did not reconnect";
const REASON_STOPPING: &str = "media server stopping";

impl Core {
    /// Adds a participant from its SDP offer; returns the SDP answer. Limits are checked
    /// before any transport exists, so a refusal leaves nothing half-open.
    pub fn join(
        &mut self,
        now: Instant,
        room_id: &str,
        participant: &str,
        owner: Owner,
        publisher: bool,
        offer: &str,
    ) -> Result<String, SfuError> {
        self.advance(now);
        let now = self.now;
        if self.stopped {
            return Err(SfuError::Stopped);
        }
        if self.closed.contains_key(room_id) {
            return Err(SfuError::RoomClosed);
        }
        let offer = parse_offer(offer)?;
        // A reconnecting participant replaces its previous transport.
        if let Some(key) = self
            .peers
            .iter()
            .find(|(_, p)| p.id == participant && *p.room == *room_id)
            .map(|(k, _)| *k)
        {
            self.remove_peer(key, false);
        }
        let room_id: Arc<str> = room_id.into();
        let account = owner.account.as_deref();
        let role = if publisher {
            Role::Publisher(Admission::admit_publisher(
                &self.admission,
                &room_id,
                account,
            )?)
        } else {
            Role::Subscriber(
                Admission::admit_subscriber(&self.admission, &room_id, account)?,
                Box::default(),
            )
        };
        // A viewer of a simulcast camera gets a bandwidth estimator: its estimate picks the
        // layer.
        let simulcast_room = self.rooms.get(&*room_id).is_some_and(|r| r.simulcast);
        let new = build_peer(
            now,
            &self.config,
            offer.sdp,
            publisher,
            !publisher && simulcast_room,
        )?;
        self.outputs
            .push_back(Output::Route(RouteUpdate::Claim(new.ufrag.clone())));
        let key = self.next_key;
        self.next_key += 1;
        self.by_ufrag.insert(new.ufrag.clone(), key);
        self.peers.insert(
            key,
            Peer {
                id: participant.to_string(),
                room: room_id.clone(),
                device: owner.device,
                rtc: new.rtc,
                role,
                ufrag: new.ufrag,
                media: Vec::new(),
                connected: false,
                hung_up: false,
                last_heard: now,
                joined_at: now,
                queued: false,
                unstamped: false,
                next_timeout: now,
                armed: None,
                stats: PeerStats::default(),
                bound: VecDeque::new(),
            },
        );
        let room = self.rooms.entry(room_id.clone()).or_default();
        if publisher {
            if room.orphaned_since.take().is_some() {
                tracing::info!(room = %room_id, "publisher reconnected within the grace period");
            }
            room.publisher = Some(key);
            room.simulcast = offer.simulcast;
            room.layers.reset();
            room.video_seq.clear();
            if let Some(recording) = room.recording.as_mut() {
                recording.new_source();
            }
            // Viewers start the new publisher's video at its first keyframe.
            for sub in &room.subscribers {
                if let Some(Role::Subscriber(_, viewing)) =
                    self.peers.get_mut(sub).map(|p| &mut p.role)
                {
                    viewing.video.waiting_keyframe = true;
                    viewing.video.layer = None;
                    viewing.video.target = None;
                }
            }
        } else {
            room.subscribers.push(key);
        }
        self.enqueue(key);
        Ok(new.answer)
    }

    /// A participant hangs up. For the publisher this ends the room at once (no grace).
    pub fn leave(&mut self, now: Instant, room: &str, participant: &str) {
        self.advance(now);
        self.hang_up(|p| &*p.room == room && p.id == participant);
    }

    /// A device's access was revoked: every transport it holds (in `room`, or anywhere on
    /// this shard) hangs up. A publisher among them ends its room as a hang-up does.
    pub fn close_device(&mut self, now: Instant, device: &str, room: Option<&str>) {
        self.advance(now);
        self.hang_up(|p| {
            p.device.as_deref() == Some(device) && room.is_none_or(|room| *p.room == *room)
        });
    }

    /// The stream ended: everyone in the room hangs up, and late joins are refused.
    pub fn close_room(&mut self, now: Instant, room: &str) {
        self.advance(now);
        self.hang_up(|p| &*p.room == room);
        if let Some(r) = self.rooms.get_mut(room) {
            r.orphaned_since = None;
        }
        self.drop_room_if_empty(room);
        self.closed.insert(Arc::from(room), self.now);
    }

    /// The server is stopping: every peer hangs up (its goodbye packets are among the
    /// outputs), rooms waiting for a publisher end, and later joins get `Stopped`.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.hang_up(|_| true);
        self.settle(super::Settle::Quiet);
        // A peer still alive after its close drained is dropped outright.
        let left: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in left {
            self.remove_peer(key, true);
        }
        let orphaned: Vec<Arc<str>> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.orphaned_since.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for room in orphaned {
            self.outputs
                .push_back(Output::Event(MediaEvent::PublisherLeft {
                    room: room.to_string(),
                    reason: REASON_STOPPING.to_string(),
                }));
        }
        self.rooms.clear();
    }

    /// Graceful close for the matching peers: RTCP BYE and DTLS close_notify go out on the
    /// next drain, then the peer is reaped as hung up.
    fn hang_up(&mut self, matches: impl Fn(&Peer) -> bool) {
        for (key, peer) in &mut self.peers {
            if !matches(peer) {
                continue;
            }
            peer.hung_up = true;
            if peer.rtc.close().is_err() {
                peer.rtc.disconnect();
            }
            enqueue_peer(&mut self.work, *key, peer);
        }
    }

    /// Marks transports that went silent or never connected; they are removed when drained.
    pub(super) fn reap(&mut self, now: Instant) {
        self.closed
            .retain(|_, at| now.saturating_duration_since(*at) < CLOSED_ROOM_MEMORY);
        for (key, peer) in &mut self.peers {
            let silent = peer.connected
                && now.saturating_duration_since(peer.last_heard) > PEER_SILENCE_TIMEOUT;
            let never_connected =
                !peer.connected && now.saturating_duration_since(peer.joined_at) > CONNECT_TIMEOUT;
            if silent || never_connected {
                tracing::info!(peer = %peer.id, silent, "dropping a dead transport");
                peer.rtc.disconnect();
                enqueue_peer(&mut self.work, *key, peer);
            }
        }
    }

    /// Ends rooms whose publisher did not come back within the grace period.
    pub(super) fn expire_grace(&mut self, now: Instant) {
        let grace = self.config.grace;
        let expired: Vec<Arc<str>> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                r.orphaned_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for room_id in expired {
            if let Some(room) = self.rooms.get_mut(&room_id) {
                room.orphaned_since = None;
            }
            self.outputs
                .push_back(Output::Event(MediaEvent::PublisherLeft {
                    room: room_id.to_string(),
                    reason: REASON_NO_RECONNECT.to_string(),
                }));
            self.drop_room_if_empty(&room_id);
        }
    }

    /// Removes a peer; `reaped` means its transport ended on its own (or by a hang-up)
    /// rather than being replaced by the same participant's new transport.
    pub(super) fn remove_peer(&mut self, key: PeerKey, reaped: bool) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        peer.rtc.disconnect();
        self.outputs
            .push_back(Output::Route(RouteUpdate::Release(peer.ufrag.clone())));
        for addr in &peer.bound {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        if self.by_ufrag.get(&peer.ufrag) == Some(&key) {
            self.by_ufrag.remove(&peer.ufrag);
        }
        release_gauges(&self.counters, &mut peer);
        let room_id = peer.room.clone();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            if peer.is_publisher() {
                if room.publisher == Some(key) {
                    room.publisher = None;
                    room.layers.reset();
                    if reaped && !peer.hung_up && !self.config.grace.is_zero() && !self.stopped {
                        // Lost, not hung up: viewers stay while the camera reconnects.
                        room.orphaned_since = Some(self.now);
                        tracing::info!(room = %room_id, "publisher transport lost; waiting for it to reconnect");
                    } else if reaped {
                        let reason = if self.stopped {
                            REASON_STOPPING
                        } else if peer.hung_up {
                            REASON_HUNG_UP
                        } else {
                            REASON_DISCONNECTED
                        };
                        self.outputs
                            .push_back(Output::Event(MediaEvent::PublisherLeft {
                                room: room_id.to_string(),
                                reason: reason.to_string(),
                            }));
                    }
                }
            } else {
                room.subscribers.retain(|k| *k != key);
                if reaped {
                    self.outputs
                        .push_back(Output::Event(MediaEvent::SubscriberLeft {
                            room: room_id.to_string(),
                            participant: peer.id.clone(),
                        }));
                }
            }
        }
        self.drop_room_if_empty(&room_id);
    }

    fn drop_room_if_empty(&mut self, room_id: &str) {
        if self.rooms.get(room_id).is_some_and(|r| {
            r.publisher.is_none() && r.subscribers.is_empty() && r.orphaned_since.is_none()
        }) {
            self.rooms.remove(room_id);
        }
    }
}
