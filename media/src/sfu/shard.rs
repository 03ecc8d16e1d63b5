//! One media loop: a task that owns a share of the rooms and every peer in them.
//!
//! str0m is sans-IO, so the loop does all the I/O for its peers. A peer is polled only when
//! something touched it (a datagram arrived, a frame was written to it, a keyframe was asked
//! of it, its timer fell due or a command reached it), so the cost of a packet does not grow
//! with the number of peers. Frames are `Arc<[u8]>`: fanning out to N viewers clones a
//! pointer, not the payload. Nothing here locks across rooms or touches the database.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{broadcast, mpsc};

use super::forward::{Layers, Source, Timeline, VideoState, retarget};
use super::net::{Datagram, Net, UfragOwners, stun_local_ufrag};
use super::{Command, MediaCounters, MediaEvent, ParticipantInfo, SfuError};
use crate::limits::{Admission, PublisherSlot, SubscriberSlot};

/// Keyframe requests for one layer of a publisher are spaced at least this far apart.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Rooms re-measure layers and re-target viewers this often.
const ROOM_TICK: Duration = Duration::from_secs(1);
/// A connected peer that has sent nothing at all (media, RTCP or ICE checks) for this long
/// is gone: a camera or viewer always sends RTCP every few seconds. Without this a dead
/// network is noticed only when ICE consent lapses (15 s).
const PEER_SILENCE_TIMEOUT: Duration = Duration::from_secs(8);
/// A transport that has not connected this long after its offer never will (the client
/// went away after signalling); it is dropped so it cannot hold a slot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A closed room refuses late joins this long (an offer racing the stream's end).
const CLOSED_ROOM_MEMORY: Duration = Duration::from_secs(120);
/// The estimate str0m starts from before TWCC feedback arrives.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(600);

type PeerKey = u64;

enum Role {
    Publisher(#[allow(dead_code)] PublisherSlot),
    Subscriber(#[allow(dead_code)] SubscriberSlot, Box<Viewing>),
}

/// A viewer's forwarding state.
#[derive(Default)]
struct Viewing {
    video: VideoState,
    audio_time: Timeline,
    video_time: Timeline,
    /// Latest egress estimates (bits/s): TWCC from str0m's own estimator, and REMB if the
    /// viewer sends it. The smaller one wins.
    twcc_bps: Option<u64>,
    remb_bps: Option<u64>,
    /// This viewer's contribution to the estimate gauge.
    estimate_gauge: u64,
}

impl Viewing {
    fn estimate(&self) -> Option<u64> {
        match (self.twcc_bps, self.remb_bps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Peer {
    id: String,
    room: Arc<str>,
    rtc: Rtc,
    role: Role,
    ufrag: String,
    media: Vec<(Mid, MediaKind)>,
    connected: bool,
    /// The participant hung up (DELETE) rather than losing its transport.
    hung_up: bool,
    /// When the peer last sent anything.
    last_heard: Instant,
    joined_at: Instant,
    /// Already in the work list.
    queued: bool,
    next_timeout: Instant,
    /// The deadline a timer-heap entry exists for.
    armed: Option<Instant>,
    /// Cumulative NACK counts per stream, to turn str0m's totals into counter increments.
    nack_totals: HashMap<(Mid, Option<Rid>, bool), u64>,
    last_peer_stats: Option<(Instant, u64, u64)>,
    bps_in: u64,
    bps_out: u64,
    packets_in: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Peer {
    fn is_publisher(&self) -> bool {
        matches!(self.role, Role::Publisher(_))
    }

    fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.media.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }
}

#[derive(Default)]
struct Room {
    publisher: Option<PeerKey>,
    subscribers: Vec<PeerKey>,
    /// The publisher's transport died without a hang-up; a reconnecting publisher may take
    /// over until the grace period ends, and viewers keep their streams meanwhile.
    orphaned_since: Option<Instant>,
    layers: Layers,
    /// The publisher offered simulcast.
    simulcast: bool,
    keyframe_requests: Vec<(Option<Rid>, Instant)>,
}

/// A published frame on its way to the room's viewers.
struct Forward {
    room: Arc<str>,
    source: PeerKey,
    kind: MediaKind,
    rid: Option<Rid>,
    keyframe: bool,
    params: str0m::format::PayloadParams,
    time: MediaTime,
    network_time: Instant,
    data: Arc<[u8]>,
}

/// What draining a peer produced beyond its own bookkeeping.
enum Happening {
    Forward(Forward),
    /// A viewer connected or asked for a keyframe.
    NeedsKeyframe(PeerKey),
    PublisherConnected(Arc<str>),
}

pub(crate) struct Shard {
    pub index: usize,
    pub admission: Arc<Admission>,
    pub net: Arc<Net>,
    pub candidates: Vec<SocketAddr>,
    pub tcp_candidate: Option<SocketAddr>,
    pub owners: UfragOwners,
    pub counters: Arc<MediaCounters>,
    pub events: broadcast::Sender<MediaEvent>,
    pub grace: Duration,
    pub commands: mpsc::Receiver<Command>,
    pub inbound: mpsc::Receiver<Datagram>,
    pub state: ShardState,
}

#[derive(Default)]
pub(crate) struct ShardState {
    peers: HashMap<PeerKey, Peer>,
    rooms: HashMap<Arc<str>, Room>,
    by_addr: HashMap<(Protocol, SocketAddr), PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
    /// Rooms closed recently, so an offer racing the close cannot reopen them.
    closed: HashMap<Arc<str>, Instant>,
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    next_key: PeerKey,
    /// Peers to poll before sleeping.
    work: Vec<PeerKey>,
    happenings: Vec<Happening>,
}

impl Shard {
    pub async fn run(mut self) {
        let mut next_tick = Instant::now() + ROOM_TICK;
        loop {
            self.settle();
            let deadline = self
                .state
                .timers
                .peek()
                .map(|Reverse((t, _))| *t)
                .unwrap_or(next_tick)
                .min(next_tick);
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                Some(datagram) = self.inbound.recv() => self.receive(datagram),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.fire_timers(now);
            if now >= next_tick {
                next_tick = now + ROOM_TICK;
                self.tick(now);
            }
        }
    }

    fn enqueue(state: &mut ShardState, key: PeerKey) {
        if let Some(peer) = state.peers.get_mut(&key)
            && !peer.queued
        {
            peer.queued = true;
            state.work.push(key);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let state = &mut self.state;
        while let Some(Reverse((at, key))) = state.timers.peek().copied() {
            if at > now {
                break;
            }
            state.timers.pop();
            // Stale entries (the peer's timer moved or it left) are skipped.
            if let Some(peer) = state.peers.get_mut(&key)
                && peer.armed == Some(at)
            {
                peer.armed = None;
                let _ = peer.rtc.handle_input(Input::Timeout(now));
                Self::enqueue(state, key);
            }
        }
    }

    fn receive(&mut self, datagram: Datagram) {
        let Ok(contents) = (&datagram.data[..]).try_into() else {
            return;
        };
        let destination = match datagram.proto {
            Protocol::Tcp => match self.tcp_candidate {
                Some(addr) => addr,
                None => return,
            },
            _ => self.candidates[0],
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: datagram.proto,
                source: datagram.source,
                destination,
                contents,
            },
        );
        let state = &mut self.state;
        let addr = (datagram.proto, datagram.source);
        // ICE checks name their transport (the USERNAME's local ufrag), so a remote address
        // that moves to a new transport is re-bound at its first check; everything else
        // comes from an address some check has bound.
        let key = match stun_local_ufrag(&datagram.data) {
            Some(ufrag) => {
                let Some(&key) = state.by_ufrag.get(ufrag) else {
                    return;
                };
                state.by_addr.insert(addr, key);
                key
            }
            None => match state.by_addr.get(&addr) {
                Some(&key) => key,
                None => return,
            },
        };
        if !state.peers.get(&key).is_some_and(|p| p.rtc.accepts(&input)) {
            return;
        }
        let Some(peer) = state.peers.get_mut(&key) else {
            return;
        };
        let len = datagram.data.len() as u64;
        self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_in.fetch_add(len, Ordering::Relaxed);
        peer.packets_in += 1;
        peer.bytes_in += len;
        peer.last_heard = Instant::now();
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = %peer.id, error = %e, "dropping peer after input error");
            peer.rtc.disconnect();
        }
        Self::enqueue(state, key);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                room,
                participant,
                publisher,
                offer,
                reply,
            } => {
                let result = self.join(room, participant, publisher, offer);
                let _ = reply.send(result);
            }
            Command::Leave { room, participant } => {
                let keys: Vec<PeerKey> = self
                    .state
                    .peers
                    .iter_mut()
                    .filter(|(_, p)| *p.room == *room && p.id == participant)
                    .map(|(k, p)| {
                        p.hung_up = true;
                        // Graceful: RTCP BYE and DTLS close_notify go out on the next drain.
                        if p.rtc.close().is_err() {
                            p.rtc.disconnect();
                        }
                        *k
                    })
                    .collect();
                for key in keys {
                    Self::enqueue(&mut self.state, key);
                }
            }
            Command::CloseRoom { room } => {
                let keys: Vec<PeerKey> = self
                    .state
                    .peers
                    .iter_mut()
                    .filter(|(_, p)| *p.room == *room)
                    .map(|(k, p)| {
                        p.hung_up = true;
                        // Graceful: RTCP BYE and DTLS close_notify go out on the next drain.
                        if p.rtc.close().is_err() {
                            p.rtc.disconnect();
                        }
                        *k
                    })
                    .collect();
                for key in keys {
                    Self::enqueue(&mut self.state, key);
                }
                if let Some(r) = self.state.rooms.get_mut(room.as_str()) {
                    r.orphaned_since = None;
                }
                self.drop_room_if_empty(&room);
                self.state
                    .closed
                    .insert(Arc::from(room.as_str()), Instant::now());
            }
            Command::Describe { room, reply } => {
                let _ = reply.send(self.describe(&room));
            }
        }
    }

    fn describe(&self, room: &str) -> Vec<ParticipantInfo> {
        let mut peers: Vec<&Peer> = self
            .state
            .peers
            .values()
            .filter(|p| &*p.room == room)
            .collect();
        peers.sort_by_key(|p| (!p.is_publisher(), p.id.clone()));
        peers
            .into_iter()
            .map(|p| {
                let viewing = match &p.role {
                    Role::Subscriber(_, v) => Some(v),
                    Role::Publisher(_) => None,
                };
                ParticipantInfo {
                    id: p.id.clone(),
                    role: if p.is_publisher() {
                        "publisher"
                    } else {
                        "subscriber"
                    },
                    connected: p.connected,
                    tracks: p
                        .media
                        .iter()
                        .map(|(mid, kind)| format!("{kind:?}:{mid}").to_lowercase())
                        .collect(),
                    packets_in: p.packets_in,
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out,
                    bitrate_in: p.bps_in,
                    bitrate_out: p.bps_out,
                    estimated_bitrate: viewing.and_then(|v| v.estimate()),
                    layer: viewing.and_then(|v| v.video.layer.map(|r| r.to_string())),
                    layer_switches: viewing.map(|v| v.video.layer_switches),
                }
            })
            .collect()
    }

    fn join(
        &mut self,
        room_id: String,
        participant: String,
        publisher: bool,
        offer: String,
    ) -> Result<String, SfuError> {
        if self.state.closed.contains_key(room_id.as_str()) {
            return Err(SfuError::RoomClosed);
        }
        let offers_simulcast = offer.contains("a=simulcast:");
        let offer =
            SdpOffer::from_sdp_string(&offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // A reconnecting participant replaces its previous transport.
        if let Some(key) = self
            .state
            .peers
            .iter()
            .find(|(_, p)| p.id == participant && *p.room == *room_id)
            .map(|(k, _)| *k)
        {
            self.remove_peer(key, false);
        }
        let state = &mut self.state;
        let room_id: Arc<str> = room_id.into();
        let admission = self.admission.clone();
        let role = if publisher {
            Role::Publisher(Admission::admit_publisher(&admission, &room_id)?)
        } else {
            Role::Subscriber(
                Admission::admit_subscriber(&admission, &room_id)?,
                Box::default(),
            )
        };
        let now = Instant::now();
        let mut config = Rtc::builder()
            // Per-second stats feed the NACK and bitrate figures in /metrics.
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true);
        // A viewer of a simulcast camera gets a bandwidth estimator: its estimate picks the
        // layer. Without layers there is nothing to choose, and str0m would pace the one
        // stream at the estimate, turning a lossy (not congested) link into growing delay.
        let simulcast_room = state.rooms.get(&*room_id).is_some_and(|r| r.simulcast);
        if !publisher && simulcast_room {
            config = config.enable_bwe(Some(INITIAL_ESTIMATE));
        }
        let mut rtc = config.build(now);
        for addr in &self.candidates {
            let candidate =
                Candidate::host(*addr, "udp").map_err(|e| SfuError::BadSdp(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        if let Some(tcp) = self.tcp_candidate
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
            .map_err(|e| SfuError::BadSdp(e.to_string()))?
            .to_sdp_string();
        // str0m accepts offers whose codecs it cannot use (it answers those m-lines with
        // payload type 0 and no rtpmap), and reports media only once the transport runs, so
        // usability is read off the answer: some m-line must carry a codec in our direction.
        let want = if publisher {
            "a=recvonly"
        } else {
            "a=sendonly"
        };
        let usable = answer.split("\r\nm=").skip(1).any(|section| {
            section.contains("a=rtpmap:")
                && (section.contains(want) || section.contains("a=sendrecv"))
        });
        if !usable {
            return Err(SfuError::NoUsableMedia);
        }
        let ufrag = answer
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap_or_default()
            .to_string();
        self.owners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ufrag.clone(), self.index);
        let key = state.next_key;
        state.next_key += 1;
        state.by_ufrag.insert(ufrag.clone(), key);
        state.peers.insert(
            key,
            Peer {
                id: participant,
                room: room_id.clone(),
                rtc,
                role,
                ufrag,
                media: Vec::new(),
                connected: false,
                hung_up: false,
                last_heard: now,
                joined_at: now,
                queued: false,
                next_timeout: now,
                armed: None,
                nack_totals: HashMap::new(),
                last_peer_stats: None,
                bps_in: 0,
                bps_out: 0,
                packets_in: 0,
                bytes_in: 0,
                bytes_out: 0,
            },
        );
        let room = state.rooms.entry(room_id.clone()).or_default();
        if publisher {
            if room.orphaned_since.take().is_some() {
                tracing::info!(room = %room_id, "publisher reconnected within the grace period");
            }
            room.publisher = Some(key);
            room.simulcast = offers_simulcast;
            room.layers.reset();
            // Viewers start the new publisher's video at its first keyframe.
            for sub in &room.subscribers {
                if let Some(Role::Subscriber(_, viewing)) =
                    state.peers.get_mut(sub).map(|p| &mut p.role)
                {
                    viewing.video.waiting_keyframe = true;
                    viewing.video.layer = None;
                    viewing.video.target = None;
                }
            }
        } else {
            room.subscribers.push(key);
        }
        Self::enqueue(state, key);
        Ok(answer)
    }

    /// Polls every touched peer until all are quiet, forwarding media as it appears.
    fn settle(&mut self) {
        let mut dead = Vec::new();
        loop {
            while let Some(key) = self.state.work.pop() {
                let Some(peer) = self.state.peers.get_mut(&key) else {
                    continue;
                };
                peer.queued = false;
                drain(
                    &self.net,
                    &self.counters,
                    key,
                    peer,
                    &mut self.state.happenings,
                );
                if !peer.rtc.is_alive() {
                    dead.push(key);
                } else if peer.armed != Some(peer.next_timeout) {
                    peer.armed = Some(peer.next_timeout);
                    self.state.timers.push(Reverse((peer.next_timeout, key)));
                }
            }
            if self.state.happenings.is_empty() {
                break;
            }
            let happenings = std::mem::take(&mut self.state.happenings);
            for happening in &happenings {
                match happening {
                    Happening::Forward(fwd) => self.forward(fwd),
                    Happening::NeedsKeyframe(viewer) => self.viewer_needs_keyframe(*viewer),
                    Happening::PublisherConnected(room) => {
                        let _ = self.events.send(MediaEvent::PublisherConnected {
                            room: room.to_string(),
                        });
                    }
                }
            }
            // Keep the buffer's capacity for the next round.
            let mut happenings = happenings;
            happenings.clear();
            self.state.happenings = happenings;
        }
        for key in dead {
            self.remove_peer(key, true);
        }
    }

    fn forward(&mut self, fwd: &Forward) {
        let state = &mut self.state;
        let Some(room) = state.rooms.get_mut(&fwd.room) else {
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
        let mut wanted: Vec<Option<Rid>> = Vec::new();
        for &key in &room.subscribers {
            let Some(peer) = state.peers.get_mut(&key) else {
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
            if !peer.queued {
                peer.queued = true;
                state.work.push(key);
            }
        }
        let room_id = fwd.room.clone();
        for layer in wanted {
            self.request_keyframe(&room_id, layer);
        }
    }

    fn viewer_needs_keyframe(&mut self, viewer: PeerKey) {
        let Some(peer) = self.state.peers.get_mut(&viewer) else {
            return;
        };
        let room = peer.room.clone();
        // Frames keep flowing meanwhile: the decoder copes until the keyframe arrives, and
        // holding them back would only lengthen the freeze.
        let layer = match &peer.role {
            Role::Subscriber(_, viewing) => viewing.video.target.or(viewing.video.layer),
            Role::Publisher(_) => return,
        };
        self.request_keyframe(&room, layer);
    }

    /// Asks the room's publisher for a keyframe on one layer, at most every 250 ms per layer.
    fn request_keyframe(&mut self, room_id: &str, layer: Option<Rid>) {
        let now = Instant::now();
        let state = &mut self.state;
        let Some(room) = state.rooms.get_mut(room_id) else {
            return;
        };
        let Some(key) = room.publisher else { return };
        if room
            .keyframe_requests
            .iter()
            .any(|(l, t)| *l == layer && now.duration_since(*t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(publisher) = state.peers.get_mut(&key) else {
            return;
        };
        if !publisher.connected {
            return;
        }
        let Some(mid) = publisher.mid_of(MediaKind::Video) else {
            return;
        };
        if let Some(mut writer) = publisher.rtc.writer(mid)
            && writer.is_request_keyframe_possible(KeyframeRequestKind::Pli)
            && writer
                .request_keyframe(layer, KeyframeRequestKind::Pli)
                .is_ok()
        {
            self.counters
                .keyframe_requests
                .fetch_add(1, Ordering::Relaxed);
            room.keyframe_requests.retain(|(l, _)| *l != layer);
            room.keyframe_requests.push((layer, now));
            Self::enqueue(state, key);
        }
    }

    /// Once a second: re-measure each publisher's layers, re-target every viewer from its
    /// bandwidth estimate, steer the estimators, and end rooms whose publisher never came back.
    fn tick(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut keyframes = Vec::new();
        let state = &mut self.state;
        state
            .closed
            .retain(|_, at| now.duration_since(*at) < CLOSED_ROOM_MEMORY);
        // Superseded timer entries are skipped when they come due; rebuild the heap if
        // they pile up (timers that moved far into the future).
        if state.timers.len() > 4 * state.peers.len() + 64 {
            state.timers = state
                .peers
                .iter()
                .filter_map(|(key, p)| p.armed.map(|at| Reverse((at, *key))))
                .collect();
        }
        for (key, peer) in &mut state.peers {
            let silent =
                peer.connected && now.duration_since(peer.last_heard) > PEER_SILENCE_TIMEOUT;
            let never_connected =
                !peer.connected && now.duration_since(peer.joined_at) > CONNECT_TIMEOUT;
            if silent || never_connected {
                tracing::info!(peer = %peer.id, silent, "dropping a dead transport");
                peer.rtc.disconnect();
                if !peer.queued {
                    peer.queued = true;
                    state.work.push(*key);
                }
            }
        }
        for (room_id, room) in &mut state.rooms {
            if room
                .orphaned_since
                .is_some_and(|since| now.duration_since(since) >= self.grace)
            {
                expired.push(room_id.clone());
                continue;
            }
            room.layers.tick(now);
            let active = room.layers.active(now);
            for &key in &room.subscribers {
                let Some(peer) = state.peers.get_mut(&key) else {
                    continue;
                };
                let Role::Subscriber(_, viewing) = &mut peer.role else {
                    continue;
                };
                if active.is_empty() {
                    continue;
                }
                let target = retarget(viewing.video.target, &active, viewing.estimate());
                viewing.video.target = target;
                if let Some(layer) = viewing.video.wants_keyframe_from()
                    && !keyframes.contains(&(room_id.clone(), layer))
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
                    if !peer.queued {
                        peer.queued = true;
                        state.work.push(key);
                    }
                }
            }
        }
        for (room, layer) in keyframes {
            self.request_keyframe(&room, layer);
        }
        for room_id in expired {
            if let Some(room) = self.state.rooms.get_mut(&room_id) {
                room.orphaned_since = None;
            }
            let _ = self.events.send(MediaEvent::PublisherLeft {
                room: room_id.to_string(),
                reason: "publisher did not reconnect".to_string(),
            });
            self.drop_room_if_empty(&room_id);
        }
    }

    /// Removes a peer; `reaped` means its transport ended on its own (or by a hang-up)
    /// rather than being replaced by the same participant's new transport.
    fn remove_peer(&mut self, key: PeerKey, reaped: bool) {
        let state = &mut self.state;
        let Some(mut peer) = state.peers.remove(&key) else {
            return;
        };
        peer.rtc.disconnect();
        self.owners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer.ufrag);
        state.by_addr.retain(|_, k| *k != key);
        if state.by_ufrag.get(&peer.ufrag) == Some(&key) {
            state.by_ufrag.remove(&peer.ufrag);
        }
        set_gauge(&self.counters.ingress_bps, &mut peer.bps_in, 0);
        set_gauge(&self.counters.egress_bps, &mut peer.bps_out, 0);
        if let Role::Subscriber(_, viewing) = &mut peer.role {
            set_gauge(
                &self.counters.egress_estimate_bps,
                &mut viewing.estimate_gauge,
                0,
            );
        }
        let room_id = peer.room.clone();
        if let Some(room) = state.rooms.get_mut(&room_id) {
            if peer.is_publisher() {
                if room.publisher == Some(key) {
                    room.publisher = None;
                    room.layers.reset();
                    if reaped && !peer.hung_up && !self.grace.is_zero() {
                        // Lost, not hung up: viewers stay while the camera reconnects.
                        room.orphaned_since = Some(Instant::now());
                        tracing::info!(room = %room_id, "publisher transport lost; waiting for it to reconnect");
                    } else if reaped {
                        let _ = self.events.send(MediaEvent::PublisherLeft {
                            room: room_id.to_string(),
                            reason: if peer.hung_up {
                                "publisher hung up".to_string()
                            } else {
                                "publisher disconnected".to_string()
                            },
                        });
                    }
                }
            } else {
                room.subscribers.retain(|k| *k != key);
                if reaped {
                    let _ = self.events.send(MediaEvent::SubscriberLeft {
                        room: room_id.to_string(),
                        participant: peer.id.clone(),
                    });
                }
            }
        }
        self.drop_room_if_empty(&room_id);
    }

    fn drop_room_if_empty(&mut self, room_id: &str) {
        if self.state.rooms.get(room_id).is_some_and(|r| {
            r.publisher.is_none() && r.subscribers.is_empty() && r.orphaned_since.is_none()
        }) {
            self.state.rooms.remove(room_id);
        }
    }
}

/// Replaces one peer's contribution to a process-wide gauge.
fn set_gauge(gauge: &AtomicU64, contribution: &mut u64, value: u64) {
    gauge.fetch_add(value, Ordering::Relaxed);
    gauge.fetch_sub(*contribution, Ordering::Relaxed);
    *contribution = value;
}

/// Polls one peer until it has nothing more to say right now.
fn drain(
    net: &Net,
    counters: &MediaCounters,
    key: PeerKey,
    peer: &mut Peer,
    happenings: &mut Vec<Happening>,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                peer.next_timeout = t;
                return;
            }
            Ok(Output::Transmit(t)) => {
                if net.send(t.proto, t.destination, &t.contents) {
                    counters.packets_out.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes_out
                        .fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                    peer.bytes_out += t.contents.len() as u64;
                }
            }
            Ok(Output::Event(event)) => on_event(counters, key, peer, event, happenings),
            Err(e) => {
                tracing::debug!(peer = %peer.id, error = %e, "peer failed");
                peer.rtc.disconnect();
                return;
            }
        }
    }
}

fn on_event(
    counters: &MediaCounters,
    key: PeerKey,
    peer: &mut Peer,
    event: Event,
    happenings: &mut Vec<Happening>,
) {
    match event {
        Event::Connected => {
            peer.connected = true;
            if peer.is_publisher() {
                happenings.push(Happening::PublisherConnected(peer.room.clone()));
            } else {
                // A new viewer needs a keyframe to start decoding.
                happenings.push(Happening::NeedsKeyframe(key));
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => peer.rtc.disconnect(),
        Event::MediaAdded(added) => peer.media.push((added.mid, added.kind)),
        Event::MediaEgressStats(st) => {
            let prev = peer
                .nack_totals
                .insert((st.mid, st.rid, true), st.nacks)
                .unwrap_or(0);
            counters
                .nacks_received
                .fetch_add(st.nacks.saturating_sub(prev), Ordering::Relaxed);
        }
        Event::MediaIngressStats(st) => {
            let prev = peer
                .nack_totals
                .insert((st.mid, st.rid, false), st.nacks)
                .unwrap_or(0);
            counters
                .nacks_sent
                .fetch_add(st.nacks.saturating_sub(prev), Ordering::Relaxed);
        }
        Event::PeerStats(st) => {
            if let Some((t, rx, tx)) = peer.last_peer_stats {
                let secs = st.timestamp.saturating_duration_since(t).as_secs_f64();
                if secs > 0.0 {
                    let bps_in = (st.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs) as u64;
                    let bps_out = (st.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs) as u64;
                    set_gauge(&counters.ingress_bps, &mut peer.bps_in, bps_in);
                    set_gauge(&counters.egress_bps, &mut peer.bps_out, bps_out);
                }
            }
            peer.last_peer_stats = Some((st.timestamp, st.peer_bytes_rx, st.peer_bytes_tx));
        }
        Event::EgressBitrateEstimate(estimate) => {
            if let Role::Subscriber(_, viewing) = &mut peer.role {
                match estimate {
                    BweKind::Twcc { estimate, .. } => viewing.twcc_bps = Some(estimate.as_u64()),
                    BweKind::Remb { estimate, .. } => viewing.remb_bps = Some(estimate.as_u64()),
                    _ => {}
                }
                let value = viewing.estimate().unwrap_or(0);
                set_gauge(
                    &counters.egress_estimate_bps,
                    &mut viewing.estimate_gauge,
                    value,
                );
            }
        }
        Event::MediaData(data) if peer.is_publisher() => {
            let kind = peer
                .media
                .iter()
                .find(|(m, _)| *m == data.mid)
                .map(|(_, k)| *k)
                .unwrap_or(MediaKind::Video);
            // One audio and one video track per camera: a second track of a kind (a
            // screen share, say) would otherwise be interleaved into the viewers' stream.
            if peer.mid_of(kind) != Some(data.mid) {
                return;
            }
            happenings.push(Happening::Forward(Forward {
                room: peer.room.clone(),
                source: key,
                kind,
                rid: data.rid,
                keyframe: kind == MediaKind::Video && data.is_keyframe(),
                params: data.params,
                time: data.time,
                network_time: data.network_time,
                data: data.data,
            }));
        }
        Event::KeyframeRequest(_) if !peer.is_publisher() => {
            happenings.push(Happening::NeedsKeyframe(key))
        }
        _ => {}
    }
}
