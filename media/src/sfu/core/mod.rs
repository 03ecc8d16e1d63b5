//! The SFU's media logic for one shard, free of I/O and of the clock, the way str0m
//! itself is built: time is an input and everything the core wants done in the world is an
//! output the driver ([`super::shard`]) executes.
//!
//! Inputs: [`Core::handle_datagram`], [`Core::handle_timeout`] and the commands
//! ([`Core::join`], [`Core::leave`], [`Core::close_room`], [`Core::describe`],
//! [`Core::shutdown`]), each given `now`. Outputs, drained with [`Core::poll_output`]:
//! datagrams to send, lifecycle events for the control plane, ufrag routing changes for the
//! packet router, and finally when to call again.
//!
//! A peer is polled only when something touched it (a datagram arrived, a frame was written
//! to it, a keyframe was asked of it, its timer fell due or a command reached it), so the
//! cost of a packet does not grow with the number of peers. Frames are `Arc<[u8]>`: fanning
//! out to N viewers clones a pointer, not the payload. Nothing here locks across rooms; the
//! only shared state is the process-wide admission counts (touched per join, never per
//! packet) and the atomic `/metrics` counters.
//!
//! The jobs live in their own files: [`setup`] builds a peer from an offer, [`rooms`] keeps
//! membership and the reconnect grace, [`fanout`] forwards frames, [`keyframes`] asks
//! publishers for keyframes, [`steer`] picks viewers' simulcast layers and [`stats`] keeps
//! the figures.

pub(crate) mod dtls;
mod fanout;
mod keyframes;
mod record;
mod rooms;
mod setup;
mod stats;
mod steer;

/// The core against real str0m peers in simulated time: for its tests and, with the `sim`
/// feature, the forwarding micro-benchmark.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Input, Output as RtcOutput, Rtc};

use super::forward::{Sequence, Timeline, VideoState};
use super::net::stun_local_ufrag;
use super::{MediaCounters, MediaEvent, Owner};
use crate::limits::{Admission, PublisherSlot, SubscriberSlot};

use fanout::Forward;

/// Rooms re-measure layers, re-target viewers and reap dead transports this often.
const ROOM_TICK: Duration = Duration::from_secs(1);

/// Fixed facts about the shard's place in the world.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// Host candidates every peer advertises (UDP). The first is where datagrams arrive.
    pub candidates: Vec<SocketAddr>,
    /// The passive ICE-TCP candidate, when the listener runs.
    pub tcp_candidate: Option<SocketAddr>,
    /// How long viewers wait for a publisher whose transport was lost.
    pub grace: Duration,
    /// The DTLS identity every peer's handshake presents ([`dtls::identity`]).
    pub dtls_cert: DtlsCert,
    /// The crypto backend, its DTLS endpoints made from one configuration ([`dtls`]).
    pub crypto: Arc<CryptoProvider>,
}

/// What the core asks its driver to do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Send a datagram (its `proto` says UDP or ICE-TCP).
    Transmit(Transmit),
    /// Tell the control plane.
    Event(MediaEvent),
    /// Tell the packet router which shard answers ICE checks for a ufrag.
    Route(RouteUpdate),
    /// Nothing more to do now: call [`Core::handle_timeout`] at this instant at the latest.
    Timeout(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteUpdate {
    /// ICE checks naming this local ufrag belong to this shard.
    Claim(String),
    /// The peer with this ufrag left.
    Release(String),
}

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
    audio_seq: Sequence,
    video_seq: Sequence,
    /// Publisher payload type → this viewer's, for the publisher named (see
    /// [`Viewing::pt_for`]).
    pts_of: Option<PeerKey>,
    pts: Vec<(str0m::media::Pt, Option<str0m::media::Pt>)>,
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
    /// The device holding this transport, as the control plane named it at join.
    device: Option<String>,
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
    /// Packets were written to it since its last timeout. str0m releases a written packet
    /// only once time moves (its timeout stamps the send queue), so [`Core::settle`] gives
    /// it the time before draining it, rather than through the timer heap and a second
    /// round: one timeout and one drain per viewer and round, and no round's delay.
    unstamped: bool,
    next_timeout: Instant,
    /// The deadline a timer-heap entry exists for.
    armed: Option<Instant>,
    stats: stats::PeerStats,
    /// The remote addresses routed to this transport, least recently checked first (at
    /// most [`MAX_BOUND_ADDRS`]).
    bound: VecDeque<(Protocol, SocketAddr)>,
}

/// Remote addresses one transport keeps routed to it. A client checks from a handful
/// (host, reflexive and relayed candidates, IPv4 and IPv6); without a bound, checks from
/// ever more source addresses (its own, or spoofed) would grow the routing table for as
/// long as the transport lives.
pub(crate) const MAX_BOUND_ADDRS: usize = 16;

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
    layers: super::forward::Layers,
    /// The publisher offered simulcast.
    simulcast: bool,
    keyframe_requests: Vec<(Option<Rid>, Instant)>,
    /// Where the room's frames are recorded, while they are.
    recording: Option<record::Recording>,
    /// The highest video sequence number seen per layer of the current publisher (see
    /// [`Room::in_order`]).
    video_seq: Vec<(Option<Rid>, u64)>,
}

impl Room {
    /// Notes a video packet's sequence number; false when it comes after a later one (a
    /// repair or a reordered packet). A keyframe whose first packet arrives that late has
    /// had its other packets go by already, so no viewer can start on it.
    fn in_order(&mut self, rid: Option<Rid>, seq: u64) -> bool {
        match self.video_seq.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, highest)) if seq <= *highest => false,
            Some((_, highest)) => {
                *highest = seq;
                true
            }
            None => {
                self.video_seq.push((rid, seq));
                true
            }
        }
    }
}

/// What draining a peer produced beyond its own bookkeeping.
enum Happening {
    Forward(Forward),
    /// A viewer connected or asked for a keyframe.
    NeedsKeyframe(PeerKey),
    PublisherConnected(Arc<str>),
}

pub(crate) struct Core {
    config: CoreConfig,
    admission: Arc<Admission>,
    counters: Arc<MediaCounters>,
    /// The latest time given as input; str0m requires it never to go backwards.
    now: Instant,
    next_tick: Instant,
    /// Looked up once per viewer and packet: a cheap hash (see `Cargo.toml`).
    peers: FxHashMap<PeerKey, Peer>,
    rooms: HashMap<Arc<str>, Room>,
    by_addr: HashMap<(Protocol, SocketAddr), PeerKey>,
    by_ufrag: HashMap<String, PeerKey>,
    /// Rooms closed recently, so an offer racing the close cannot reopen them.
    closed: HashMap<Arc<str>, Instant>,
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    next_key: PeerKey,
    /// Peers to poll before handing out more outputs.
    work: Vec<PeerKey>,
    happenings: Vec<Happening>,
    /// Peers found dead while settling, removed once the work list is done.
    dead: Vec<PeerKey>,
    /// Kept across calls so its buffer is reused: no allocation per packet.
    outputs: VecDeque<Output>,
    /// After [`Core::shutdown`] every join is refused.
    stopped: bool,
}

impl Core {
    pub fn new(
        now: Instant,
        config: CoreConfig,
        admission: Arc<Admission>,
        counters: Arc<MediaCounters>,
    ) -> Self {
        Self {
            config,
            admission,
            counters,
            now,
            next_tick: now + ROOM_TICK,
            peers: FxHashMap::default(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            closed: HashMap::new(),
            timers: BinaryHeap::new(),
            next_key: 0,
            work: Vec::new(),
            happenings: Vec::new(),
            dead: Vec::new(),
            outputs: VecDeque::new(),
            stopped: false,
        }
    }

    fn advance(&mut self, now: Instant) {
        // A driver's clock may step back by a hair across threads; str0m must not see that.
        self.now = self.now.max(now);
    }

    /// A datagram arrived from `source` over `proto`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) {
        self.advance(now);
        let now = self.now;
        let Ok(contents) = data.try_into() else {
            return;
        };
        let destination = match proto {
            Protocol::Tcp => match self.config.tcp_candidate {
                Some(addr) => addr,
                None => return,
            },
            _ => self.config.candidates[0],
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let addr = (proto, source);
        // ICE checks name their transport (the USERNAME's local ufrag), so a remote address
        // that moves to a new transport is re-bound at its first check; everything else
        // comes from an address some check has bound.
        let key = match stun_local_ufrag(data) {
            Some(ufrag) => {
                let Some(&key) = self.by_ufrag.get(ufrag) else {
                    return;
                };
                self.bind(addr, key);
                key
            }
            None => match self.by_addr.get(&addr) {
                Some(&key) => key,
                None => return,
            },
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.rtc.accepts(&input) {
            return;
        }
        let len = data.len() as u64;
        self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_in.fetch_add(len, Ordering::Relaxed);
        peer.stats.packets_in += 1;
        peer.stats.bytes_in += len;
        peer.last_heard = now;
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = %peer.id, error = %e, "dropping peer after input error");
            peer.rtc.disconnect();
        }
        // In RTP mode str0m holds one received packet at a time for its next event: take
        // a publisher's now, before its next datagram replaces it. Viewers send only RTCP
        // and are drained once, when the work list is settled: draining each of their
        // datagrams on arrival would walk their timers twice.
        if peer.is_publisher() {
            drain(
                &mut self.outputs,
                &self.counters,
                key,
                peer,
                &mut self.happenings,
            );
        }
        self.enqueue(key);
    }

    /// Routes `addr` to transport `key` on an ICE check naming it, as its most recently
    /// checked address; the transport's least recently checked address beyond
    /// [`MAX_BOUND_ADDRS`] stops being routed.
    fn bind(&mut self, addr: (Protocol, SocketAddr), key: PeerKey) {
        let previous = self.by_addr.insert(addr, key);
        if let Some(old) = previous
            && old != key
            && let Some(peer) = self.peers.get_mut(&old)
        {
            peer.bound.retain(|a| *a != addr);
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if previous == Some(key) {
            peer.bound.retain(|a| *a != addr);
        }
        peer.bound.push_back(addr);
        if peer.bound.len() > MAX_BOUND_ADDRS
            && let Some(oldest) = peer.bound.pop_front()
            && self.by_addr.get(&oldest) == Some(&key)
        {
            self.by_addr.remove(&oldest);
        }
    }

    /// Time passed: fires the peers' due timers and, once a second, the room tick.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Stale entries (the peer's timer moved or it left) are skipped.
            if let Some(peer) = self.peers.get_mut(&key)
                && peer.armed == Some(at)
            {
                peer.armed = None;
                let _ = peer.rtc.handle_input(Input::Timeout(now));
                self.enqueue(key);
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + ROOM_TICK;
            self.tick(now);
        }
    }

    /// The next thing to do. Ends with [`Output::Timeout`] once nothing is pending.
    pub fn poll_output(&mut self) -> Output {
        if self.outputs.is_empty() {
            self.settle(Settle::UntilOutput);
        }
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
        Output::Timeout(next_timer.map_or(self.next_tick, |t| t.min(self.next_tick)))
    }

    /// Once a second: end what is dead, re-measure layers and re-target viewers.
    fn tick(&mut self, now: Instant) {
        // Superseded timer entries are skipped when they come due; rebuild the heap if
        // they pile up (timers that moved far into the future).
        if self.timers.len() > 4 * self.peers.len() + 64 {
            self.timers = self
                .peers
                .iter()
                .filter_map(|(key, p)| p.armed.map(|at| Reverse((at, *key))))
                .collect();
        }
        self.reap(now);
        self.steer(now);
        self.expire_grace(now);
    }

    fn enqueue(&mut self, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            enqueue_peer(&mut self.work, key, peer);
        }
    }

    /// Polls touched peers, forwarding media as it appears, until all are quiet or, with
    /// [`Settle::UntilOutput`], until one has something to hand out. Pausing there lets the
    /// driver send a big round's datagrams in batches while later viewers are still being
    /// polled: the first viewers' copies leave sooner, and the round's datagrams are not
    /// all held at once (~750 KB at 200 viewers).
    fn settle(&mut self, until: Settle) {
        let now = self.now;
        let pause = until == Settle::UntilOutput;
        loop {
            while let Some(key) = self.work.pop() {
                let Some(peer) = self.peers.get_mut(&key) else {
                    continue;
                };
                peer.queued = false;
                if std::mem::take(&mut peer.unstamped)
                    && let Err(e) = peer.rtc.handle_input(Input::Timeout(now))
                {
                    tracing::debug!(peer = %peer.id, error = %e, "peer failed on timeout");
                    peer.rtc.disconnect();
                }
                drain(
                    &mut self.outputs,
                    &self.counters,
                    key,
                    peer,
                    &mut self.happenings,
                );
                if !peer.rtc.is_alive() {
                    self.dead.push(key);
                } else if peer.armed != Some(peer.next_timeout) {
                    peer.armed = Some(peer.next_timeout);
                    self.timers.push(Reverse((peer.next_timeout, key)));
                }
                if pause && !self.outputs.is_empty() {
                    return;
                }
            }
            if self.happenings.is_empty() {
                break;
            }
            // Taken and put back, so the buffer's capacity serves the next round.
            let mut happenings = std::mem::take(&mut self.happenings);
            for happening in happenings.drain(..) {
                match happening {
                    Happening::Forward(fwd) => self.forward(&fwd),
                    Happening::NeedsKeyframe(viewer) => self.viewer_needs_keyframe(viewer),
                    Happening::PublisherConnected(room) => {
                        self.announce_tracks(&room);
                        self.outputs
                            .push_back(Output::Event(MediaEvent::PublisherConnected {
                                room: room.to_string(),
                            }));
                    }
                }
            }
            self.happenings = happenings;
            if pause && !self.outputs.is_empty() {
                return;
            }
        }
        while let Some(key) = self.dead.pop() {
            self.remove_peer(key, true);
        }
    }
}

/// How far [`Core::settle`] goes before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Until some output is ready (or all is quiet).
    UntilOutput,
    /// Until every touched peer is quiet.
    Quiet,
}

/// Puts a peer on the work list once.
fn enqueue_peer(work: &mut Vec<PeerKey>, key: PeerKey, peer: &mut Peer) {
    if !peer.queued {
        peer.queued = true;
        work.push(key);
    }
}

/// Polls one peer until it has nothing more to say right now.
fn drain(
    outputs: &mut VecDeque<Output>,
    counters: &MediaCounters,
    key: PeerKey,
    peer: &mut Peer,
    happenings: &mut Vec<Happening>,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(RtcOutput::Timeout(t)) => {
                peer.next_timeout = t;
                return;
            }
            Ok(RtcOutput::Transmit(t)) => {
                peer.stats.bytes_out += t.contents.len() as u64;
                outputs.push_back(Output::Transmit(t));
            }
            Ok(RtcOutput::Event(event)) => on_event(counters, key, peer, event, happenings),
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
    event: str0m::Event,
    happenings: &mut Vec<Happening>,
) {
    use str0m::{Event, IceConnectionState};
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
        Event::RtpPacket(packet) if peer.is_publisher() => {
            if let Some(fwd) = Forward::from_publisher(key, peer, packet) {
                happenings.push(Happening::Forward(fwd));
            }
        }
        Event::KeyframeRequest(_) if !peer.is_publisher() => {
            happenings.push(Happening::NeedsKeyframe(key))
        }
        other => stats::on_event(counters, peer, other),
    }
}
