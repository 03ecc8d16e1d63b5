//! The SFU: one task owns every peer connection and the one UDP socket they share.
//!
//! str0m is sans-IO, so this loop does all I/O: it reads datagrams, hands each to the peer
//! whose ICE state accepts it, drains every peer's output (transmits, events) and forwards
//! each published media frame to the room's subscribers. Frames are `Arc<[u8]>`: fanning out
//! to N subscribers clones a pointer, not the payload. Nothing here locks across rooms or
//! touches the database; the server hears about lifecycle changes through [`MediaEvent`]s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::limits::{Admission, AdmissionError, PublisherSlot, SubscriberSlot};

/// Keyframe requests to one publisher are spaced at least this far apart.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the UDP socket binds (e.g. `0.0.0.0:8189`).
    pub bind: SocketAddr,
    /// The address advertised as the host candidate (`MEDIA_PUBLIC_IP`).
    pub public_ip: IpAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("invalid SDP offer: {0}")]
    BadSdp(String),
    #[error("the offer has no audio or video this server can use (Opus, VP8 or H.264)")]
    NoUsableMedia,
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("the media engine is not running")]
    Stopped,
}

/// Lifecycle news for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    PublisherConnected { room: String },
    PublisherLeft { room: String, reason: String },
    SubscriberLeft { room: String, participant: String },
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: String,
    pub role: &'static str,
    pub connected: bool,
    pub tracks: Vec<String>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Process-wide media counters for `/metrics`.
#[derive(Default, Debug)]
pub struct MediaCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub frames_forwarded: AtomicU64,
    /// NACKs received from subscribers (answered from the send cache).
    pub nacks_received: AtomicU64,
    /// NACKs sent to publishers for lost packets.
    pub nacks_sent: AtomicU64,
    /// Current ingress bitrate from publishers (bits/s, from the last stats interval).
    pub ingress_bps: AtomicU64,
    /// Current egress bitrate to subscribers (bits/s, from the last stats interval).
    pub egress_bps: AtomicU64,
}

enum Command {
    Join {
        room: String,
        participant: String,
        publisher: bool,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Leave {
        participant: String,
    },
    CloseRoom {
        room: String,
    },
    Describe {
        room: String,
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
}

/// Handle to the running SFU. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<MediaEvent>,
    pub counters: Arc<MediaCounters>,
    local: SocketAddr,
}

enum Slot {
    Publisher(#[allow(dead_code)] PublisherSlot),
    Subscriber(#[allow(dead_code)] SubscriberSlot),
}

struct Peer {
    id: String,
    room: String,
    publisher: bool,
    rtc: Rtc,
    _slot: Slot,
    media: Vec<(Mid, MediaKind)>,
    connected: bool,
    last_keyframe_request: Option<Instant>,
    /// For a simulcast publisher: the layer (RTP stream id) being forwarded. Layers are
    /// never mixed into one subscriber stream; a better layer takes over at its keyframe.
    layer: Option<str0m::media::Rid>,
    /// When str0m next needs `Input::Timeout`.
    next_timeout: Instant,
    /// Cumulative NACK counts per stream, to turn str0m's totals into counter increments.
    nack_totals: HashMap<(Mid, Option<str0m::media::Rid>, bool), u64>,
    /// Last PeerStats sample (time, bytes rx, bytes tx) and the bitrates derived from it.
    last_peer_stats: Option<(Instant, u64, u64)>,
    bps_in: u64,
    bps_out: u64,
    packets_in: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// A published frame on its way to the room's subscribers.
struct Forward {
    room: String,
    kind: MediaKind,
    params: str0m::format::PayloadParams,
    time: str0m::media::MediaTime,
    network_time: Instant,
    data: Arc<[u8]>,
}

impl Sfu {
    /// Binds the UDP socket and starts the media loop.
    pub(crate) async fn start(
        config: SfuConfig,
        admission: Arc<Admission>,
    ) -> std::io::Result<Sfu> {
        // Idempotent; selects the crypto backend compiled in (aws-lc-rs).
        str0m::crypto::from_feature_flags().install_process_default();
        let socket = UdpSocket::bind(config.bind).await?;
        let bound = socket.local_addr()?;
        let local = SocketAddr::new(config.public_ip, bound.port());
        let tcp: TcpConnections = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let (tcp_tx, tcp_in) = mpsc::channel(1024);
        // ICE-TCP listens on the same port number; without it UDP still works, so a
        // failure here is a warning, not a startup error.
        let local_tcp = match TcpListener::bind(SocketAddr::new(config.bind.ip(), bound.port()))
            .await
        {
            Ok(listener) => {
                tokio::spawn(accept_tcp(listener, tcp.clone(), tcp_tx));
                Some(SocketAddr::new(config.public_ip, bound.port()))
            }
            Err(e) => {
                tracing::warn!(port = bound.port(), error = %e, "ICE-TCP disabled: cannot listen");
                None
            }
        };
        let (tx, rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(256);
        let counters = Arc::new(MediaCounters::default());
        let engine = Loop {
            admission: admission.clone(),
            net: Net { udp: socket, tcp },
            tcp_in,
            local,
            local_tcp,
            peers: Vec::new(),
            commands: rx,
            events: events.clone(),
            counters: counters.clone(),
        };
        tokio::spawn(engine.run());
        Ok(Sfu {
            commands: tx,
            events,
            counters,
            local,
        })
    }

    /// The advertised media address (host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<MediaEvent> {
        self.events.subscribe()
    }

    async fn join(
        &self,
        room: &str,
        participant: &str,
        publisher: bool,
        offer: String,
    ) -> Result<String, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Join {
                room: room.to_string(),
                participant: participant.to_string(),
                publisher,
                offer,
                reply,
            })
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Adds the room's publisher from an SDP offer; returns the SDP answer. Limits are
    /// checked before any transport exists, so a refusal leaves nothing half-open.
    pub async fn publish(
        &self,
        room: &str,
        participant: &str,
        offer: String,
    ) -> Result<String, SfuError> {
        self.join(room, participant, true, offer).await
    }

    /// Adds a viewer from an SDP offer (recvonly audio/video); returns the SDP answer.
    pub async fn subscribe(
        &self,
        room: &str,
        participant: &str,
        offer: String,
    ) -> Result<String, SfuError> {
        self.join(room, participant, false, offer).await
    }

    pub async fn leave(&self, participant: &str) {
        let _ = self
            .commands
            .send(Command::Leave {
                participant: participant.to_string(),
            })
            .await;
    }

    pub async fn close_room(&self, room: &str) {
        let _ = self
            .commands
            .send(Command::CloseRoom {
                room: room.to_string(),
            })
            .await;
    }

    pub async fn describe(&self, room: &str) -> Vec<ParticipantInfo> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Describe {
                room: room.to_string(),
                reply,
            })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Open ICE-TCP connections (RFC 4571 framing), keyed by the remote address.
type TcpConnections = Arc<std::sync::Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>>;

/// The sockets every peer shares: one UDP socket and, as the fallback for networks that
/// block UDP, passive ICE-TCP connections on the same port number.
struct Net {
    udp: UdpSocket,
    tcp: TcpConnections,
}

impl Net {
    fn send(&self, proto: Protocol, destination: SocketAddr, contents: &[u8]) -> bool {
        match proto {
            Protocol::Udp => self.udp.try_send_to(contents, destination).is_ok(),
            Protocol::Tcp => {
                let conns = self.tcp.lock().unwrap_or_else(|p| p.into_inner());
                let Some(conn) = conns.get(&destination) else {
                    return false;
                };
                let Ok(len) = u16::try_from(contents.len()) else {
                    return false;
                };
                let mut framed = Vec::with_capacity(contents.len() + 2);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(contents);
                conn.send(framed).is_ok()
            }
            _ => false,
        }
    }
}

struct Loop {
    admission: Arc<Admission>,
    net: Net,
    tcp_in: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    local: SocketAddr,
    local_tcp: Option<SocketAddr>,
    peers: Vec<Peer>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<MediaEvent>,
    counters: Arc<MediaCounters>,
}

fn rtc_config() -> str0m::RtcConfig {
    Rtc::builder()
        // Per-second stats feed the NACK and bitrate figures in /metrics.
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
}

impl Loop {
    async fn run(mut self) {
        let mut buf = vec![0u8; 2000];
        loop {
            let deadline = self.drive();
            let sleep = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                received = self.net.udp.recv_from(&mut buf) => {
                    if let Ok((n, source)) = received {
                        self.receive(Protocol::Udp, &buf[..n], source);
                    }
                }
                Some((source, packet)) = self.tcp_in.recv() => {
                    self.receive(Protocol::Tcp, &packet, source);
                }
                _ = sleep => {
                    let now = Instant::now();
                    for peer in &mut self.peers {
                        let _ = peer.rtc.handle_input(Input::Timeout(now));
                    }
                }
            }
        }
    }

    fn receive(&mut self, proto: Protocol, datagram: &[u8], source: SocketAddr) {
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        let destination = match proto {
            Protocol::Tcp => match self.local_tcp {
                Some(addr) => addr,
                None => return,
            },
            _ => self.local,
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        if let Some(peer) = self.peers.iter_mut().find(|p| p.rtc.accepts(&input)) {
            self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_in
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
            peer.packets_in += 1;
            peer.bytes_in += datagram.len() as u64;
            if let Err(e) = peer.rtc.handle_input(input) {
                tracing::debug!(peer = %peer.id, error = %e, "dropping peer after input error");
                peer.rtc.disconnect();
            }
        }
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
            Command::Leave { participant } => {
                for peer in self.peers.iter_mut().filter(|p| p.id == participant) {
                    peer.rtc.disconnect();
                }
            }
            Command::CloseRoom { room } => {
                for peer in self.peers.iter_mut().filter(|p| p.room == room) {
                    peer.rtc.disconnect();
                }
            }
            Command::Describe { room, reply } => {
                let infos = self
                    .peers
                    .iter()
                    .filter(|p| p.room == room)
                    .map(|p| ParticipantInfo {
                        id: p.id.clone(),
                        role: if p.publisher {
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
                    })
                    .collect();
                let _ = reply.send(infos);
            }
        }
    }

    fn join(
        &mut self,
        room: String,
        participant: String,
        publisher: bool,
        offer: String,
    ) -> Result<String, SfuError> {
        let offer =
            SdpOffer::from_sdp_string(&offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // A reconnecting participant replaces its previous transport.
        if let Some(pos) = self.peers.iter().position(|p| p.id == participant) {
            let old = self.peers.swap_remove(pos);
            drop(old);
        }
        let admission = self.admission.clone();
        let slot = if publisher {
            Slot::Publisher(Admission::admit_publisher(&admission, &room)?)
        } else {
            Slot::Subscriber(Admission::admit_subscriber(&admission, &room)?)
        };
        let now = Instant::now();
        let mut rtc = rtc_config().build(now);
        let candidate =
            Candidate::host(self.local, "udp").map_err(|e| SfuError::BadSdp(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = self.local_tcp
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
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let peer = Peer {
            id: participant,
            room,
            publisher,
            rtc,
            _slot: slot,
            media: Vec::new(),
            connected: false,
            last_keyframe_request: None,
            layer: None,
            next_timeout: now,
            nack_totals: HashMap::new(),
            last_peer_stats: None,
            bps_in: 0,
            bps_out: 0,
            packets_in: 0,
            bytes_in: 0,
            bytes_out: 0,
        };
        let answer = answer.to_sdp_string();
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
        self.peers.push(peer);
        Ok(answer)
    }

    /// Drains every peer, forwards media, answers keyframe requests, drops dead peers.
    /// Returns when the next timer is due.
    fn drive(&mut self) -> Instant {
        let mut forwards = Vec::new();
        let mut keyframe_rooms: Vec<String> = Vec::new();
        for peer in &mut self.peers {
            drain(
                &self.net,
                &self.counters,
                peer,
                &mut forwards,
                &mut keyframe_rooms,
                &self.events,
            );
        }
        // Fan out: each subscriber gets the frame through its own writer (its own SSRC,
        // sequence numbers and payload type), so its stream stays continuous even when
        // the publisher's transport is replaced.
        if !forwards.is_empty() {
            for fwd in &forwards {
                for peer in self
                    .peers
                    .iter_mut()
                    .filter(|p| !p.publisher && p.connected && p.room == fwd.room)
                {
                    let Some(mid) = peer
                        .media
                        .iter()
                        .find(|(mid, kind)| {
                            *kind == fwd.kind
                                && peer
                                    .rtc
                                    .media(*mid)
                                    .is_some_and(|m| m.direction().is_sending())
                        })
                        .map(|(mid, _)| *mid)
                    else {
                        continue;
                    };
                    let Some(writer) = peer.rtc.writer(mid) else {
                        continue;
                    };
                    let Some(pt) = writer.match_params(fwd.params) else {
                        continue;
                    };
                    if writer
                        .write(pt, fwd.network_time, fwd.time, fwd.data.clone())
                        .is_ok()
                    {
                        self.counters
                            .frames_forwarded
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let mut more = Vec::new();
            for peer in self.peers.iter_mut().filter(|p| !p.publisher) {
                drain(
                    &self.net,
                    &self.counters,
                    peer,
                    &mut more,
                    &mut keyframe_rooms,
                    &self.events,
                );
            }
        }
        for room in keyframe_rooms {
            self.request_keyframe(&room);
        }
        // Everything mutated above must be polled before sleeping (str0m's rule).
        let mut unused_forwards = Vec::new();
        let mut unused_rooms = Vec::new();
        for peer in &mut self.peers {
            drain(
                &self.net,
                &self.counters,
                peer,
                &mut unused_forwards,
                &mut unused_rooms,
                &self.events,
            );
        }
        self.reap();
        let cap = Instant::now() + Duration::from_millis(100);
        self.peers
            .iter()
            .map(|p| p.next_timeout)
            .min()
            .unwrap_or(cap)
            .min(cap)
    }

    fn request_keyframe(&mut self, room: &str) {
        let now = Instant::now();
        let Some(publisher) = self
            .peers
            .iter_mut()
            .find(|p| p.publisher && p.room == room && p.connected)
        else {
            return;
        };
        if publisher
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let video: Vec<Mid> = publisher
            .media
            .iter()
            .filter(|(_, k)| *k == MediaKind::Video)
            .map(|(m, _)| *m)
            .collect();
        let layer = publisher.layer;
        for mid in video {
            if let Some(mut writer) = publisher.rtc.writer(mid)
                && writer.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                && writer
                    .request_keyframe(layer, KeyframeRequestKind::Pli)
                    .is_ok()
            {
                self.counters
                    .keyframe_requests
                    .fetch_add(1, Ordering::Relaxed);
                publisher.last_keyframe_request = Some(now);
            }
        }
    }

    fn reap(&mut self) {
        let mut i = 0;
        while i < self.peers.len() {
            if self.peers[i].rtc.is_alive() {
                i += 1;
                continue;
            }
            let mut peer = self.peers.swap_remove(i);
            set_gauge(&self.counters.ingress_bps, &mut peer.bps_in, 0);
            set_gauge(&self.counters.egress_bps, &mut peer.bps_out, 0);
            let event = if peer.publisher {
                MediaEvent::PublisherLeft {
                    room: peer.room.clone(),
                    reason: "publisher disconnected".to_string(),
                }
            } else {
                MediaEvent::SubscriberLeft {
                    room: peer.room.clone(),
                    participant: peer.id.clone(),
                }
            };
            let _ = self.events.send(event);
        }
    }
}

/// Replaces one peer's contribution to a process-wide gauge.
fn set_gauge(gauge: &AtomicU64, contribution: &mut u64, value: u64) {
    gauge.fetch_add(value, Ordering::Relaxed);
    gauge.fetch_sub(*contribution, Ordering::Relaxed);
    *contribution = value;
}

/// Simulcast layer preference by common RTP stream id names (higher is better).
fn layer_rank(rid: &str) -> u8 {
    match rid {
        "h" | "f" | "hi" | "high" | "full" | "2" => 3,
        "m" | "mid" | "half" | "1" => 2,
        "l" | "q" | "lo" | "low" | "quarter" | "0" => 1,
        _ => 0,
    }
}

/// Decides whether a publisher's frame is forwarded: frames without a layer always are;
/// of a simulcast publisher's layers only the chosen one is, switching to a better layer
/// only at one of its keyframes so subscribers' decoders never see a mid-GOP switch.
fn accept_layer(peer: &mut Peer, data: &str0m::media::MediaData) -> bool {
    let Some(rid) = data.rid else { return true };
    if peer.layer == Some(rid) {
        return true;
    }
    let better = peer
        .layer
        .is_none_or(|current| layer_rank(&rid) > layer_rank(&current));
    if better && data.is_keyframe() {
        peer.layer = Some(rid);
        return true;
    }
    false
}

/// Polls one peer until it has nothing more to say right now.
fn drain(
    net: &Net,
    counters: &MediaCounters,
    peer: &mut Peer,
    forwards: &mut Vec<Forward>,
    keyframe_rooms: &mut Vec<String>,
    events: &broadcast::Sender<MediaEvent>,
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
            Ok(Output::Event(event)) => match event {
                Event::Connected => {
                    peer.connected = true;
                    if peer.publisher {
                        let _ = events.send(MediaEvent::PublisherConnected {
                            room: peer.room.clone(),
                        });
                    } else {
                        // A new viewer needs a keyframe to start decoding.
                        keyframe_rooms.push(peer.room.clone());
                    }
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    peer.rtc.disconnect()
                }
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
                            let bps_in =
                                (st.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs) as u64;
                            let bps_out =
                                (st.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs) as u64;
                            set_gauge(&counters.ingress_bps, &mut peer.bps_in, bps_in);
                            set_gauge(&counters.egress_bps, &mut peer.bps_out, bps_out);
                        }
                    }
                    peer.last_peer_stats = Some((st.timestamp, st.peer_bytes_rx, st.peer_bytes_tx));
                }
                Event::MediaData(data) if peer.publisher && !accept_layer(peer, &data) => {}
                Event::MediaData(data) if peer.publisher => forwards.push(Forward {
                    room: peer.room.clone(),
                    kind: peer
                        .media
                        .iter()
                        .find(|(m, _)| *m == data.mid)
                        .map(|(_, k)| *k)
                        .unwrap_or(MediaKind::Video),
                    params: data.params,
                    time: data.time,
                    network_time: data.network_time,
                    data: data.data,
                }),
                Event::KeyframeRequest(_) if !peer.publisher => {
                    keyframe_rooms.push(peer.room.clone())
                }
                _ => {}
            },
            Err(e) => {
                tracing::debug!(peer = %peer.id, error = %e, "peer failed");
                peer.rtc.disconnect();
                return;
            }
        }
    }
}

/// Accepts ICE-TCP connections and runs each one's framed reader and writer.
async fn accept_tcp(
    listener: TcpListener,
    conns: TcpConnections,
    to_loop: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(remote, tx);
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let conns = conns.clone();
        let to_loop = to_loop.clone();
        tokio::spawn(async move {
            // RFC 4571: each packet is preceded by its 16-bit big-endian length.
            loop {
                let mut len = [0u8; 2];
                if reader.read_exact(&mut len).await.is_err() {
                    break;
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                if reader.read_exact(&mut packet).await.is_err()
                    || to_loop.send((remote, packet)).await.is_err()
                {
                    break;
                }
            }
            conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&remote);
        });
    }
}
