//! The sockets every peer shares and the router that hands each incoming datagram to the
//! shard owning its peer.
//!
//! One UDP socket serves all peers; ICE-TCP (RFC 4571 framing) on the same port number is
//! the fallback for networks that block UDP. Routing is by the STUN USERNAME's local ufrag
//! (every remote address must pass an ICE check before it may send media, so the router
//! learns each address from its first binding request) and then by source address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::core::MAX_BOUND_ADDRS;
use super::recv::Receiver;

/// One received packet on its way to a shard.
pub(crate) struct Datagram {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub data: Bytes,
}

/// A shard's two queues from the router. Media (RTP and RTCP) can queue up behind a busy
/// fan-out; control (STUN checks, DTLS handshakes, anything else) has its own lane, which the
/// shard serves first, so a viewer joining a busy room does not wait behind the media
/// queued ahead of its handshake.
#[derive(Clone)]
pub(crate) struct ShardInbox {
    pub media: mpsc::Sender<Datagram>,
    pub control: mpsc::Sender<Datagram>,
}

/// RTP and RTCP: first byte 128–191 (RFC 7983's demultiplexing). STUN is 0–3, DTLS 20–63.
pub(crate) fn is_media(packet: &[u8]) -> bool {
    matches!(packet.first(), Some(128..=191))
}

/// What travels in a shard's media lane: RTP and RTCP, and DTLS alerts (content type 21).
/// An alert ends a transport (a `close_notify` when a camera hangs up): taken ahead of the
/// media queued before it, it would close the transport before its last packets were
/// forwarded, and a viewer would lose the end of the stream.
pub(crate) fn in_media_lane(packet: &[u8]) -> bool {
    is_media(packet) || packet.first() == Some(&21)
}

/// Open ICE-TCP connections, keyed by the remote address: (connection number, send queue).
type TcpConnections = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>>>;

/// ICE-TCP connections served at once; more are refused.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Frames queued towards one ICE-TCP peer; beyond this (a reader that stopped reading)
/// packets are dropped, as a full socket buffer would drop them.
const TCP_SEND_QUEUE: usize = 1024;
/// An ICE-TCP connection that sends nothing for this long is closed (consent checks and
/// RTCP keep a live one busy).
const TCP_IDLE: Duration = Duration::from_secs(30);

/// What one remote may hold of the ICE-TCP listener, so a single host cannot fill it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections open at once from one IP address (a household behind one NAT needs a
    /// few: a camera and some viewers, each maybe reconnecting).
    pub per_ip: usize,
    /// A new connection must bring a STUN binding request naming a live transport (a
    /// local ufrag some shard owns) within this long, or it is closed; until then nothing
    /// it sends reaches a media loop.
    pub first_check: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            per_ip: 8,
            first_check: Duration::from_secs(5),
        }
    }
}

/// The network a client's connections are counted under: its IPv4 address, or its IPv6
/// /64 (a subscriber gets a whole /64, and any host in it may use any address there).
fn client_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Which shard owns each local ICE ufrag. Written when a peer joins or leaves, read only for
/// STUN from addresses the router has not seen, so the lock is off the media path.
pub(crate) type UfragOwners = Arc<RwLock<HashMap<String, usize>>>;

/// The send side, shared by all shards.
pub(crate) struct Net {
    pub udp: Arc<UdpSocket>,
    tcp: TcpConnections,
}

impl Net {
    pub fn send_tcp(&self, destination: SocketAddr, contents: &[u8]) -> bool {
        let conns = self.tcp.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, conn)) = conns.get(&destination) else {
            return false;
        };
        let Ok(len) = u16::try_from(contents.len()) else {
            return false;
        };
        let mut framed = Vec::with_capacity(contents.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(contents);
        conn.try_send(framed).is_ok()
    }
}

/// Socket buffers asked for the media UDP socket. One published packet becomes hundreds of
/// sends, and every viewer's RTCP (receiver reports, NACKs, congestion feedback) comes back
/// to this one socket: with the kernel's default 208 KiB, a burst while the loop is busy
/// sending overflows the receive queue and takes the camera's packets with it. The kernel
/// caps this at `net.core.rmem_max`/`wmem_max`.
const MEDIA_SOCKET_BUFFER: usize = 4 << 20;

/// Sizes the media socket's buffers (best effort: a refusal leaves the defaults).
fn size_buffers(udp: &UdpSocket) {
    let socket = socket2::SockRef::from(udp);
    if let Err(e) = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER) {
        tracing::warn!(error = %e, "media socket: cannot enlarge the receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER) {
        tracing::warn!(error = %e, "media socket: cannot enlarge the send buffer");
    }
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or_default(),
        send = socket.send_buffer_size().unwrap_or_default(),
        "media socket buffers"
    );
}

/// Binds the media UDP socket and the ICE-TCP listener on the same port. With port 0 the
/// kernel picks the UDP port, which a TCP socket (often some outgoing connection's
/// ephemeral port) may already hold: then another UDP port is tried, so an ephemeral bind
/// gets ICE-TCP too. A fixed port that TCP cannot have still serves UDP (a warning).
pub(crate) async fn bind_udp_and_tcp(
    bind: SocketAddr,
) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    const EPHEMERAL_ATTEMPTS: usize = 16;
    let attempts = if bind.port() == 0 {
        EPHEMERAL_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(bind).await?;
        size_buffers(&udp);
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(bind.ip(), port)).await {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) => last = Some((udp, e)),
        }
    }
    let (udp, error) = last.expect("at least one attempt");
    // Without ICE-TCP, UDP still works: a warning, not a startup error.
    tracing::warn!(port = udp.local_addr()?.port(), %error, "ICE-TCP disabled: cannot listen");
    Ok((udp, None))
}

/// Starts the ICE-TCP listener (if there is one) and the router; returns the send side,
/// whether ICE-TCP is available and the tasks, which end once `stop` turns true.
pub(crate) async fn start(
    udp: UdpSocket,
    tcp_listener: Option<TcpListener>,
    shards: Vec<ShardInbox>,
    owners: UfragOwners,
    stop: watch::Receiver<bool>,
) -> (Arc<Net>, bool, Vec<JoinHandle<()>>) {
    let udp = Arc::new(udp);
    let tcp: TcpConnections = Arc::new(Mutex::new(HashMap::new()));
    let (tcp_tx, tcp_rx) = mpsc::channel(1024);
    let mut tasks = Vec::with_capacity(2);
    let tcp_ok = match tcp_listener {
        Some(listener) => {
            tasks.push(tokio::spawn(accept_tcp(
                listener,
                tcp.clone(),
                tcp_tx,
                owners.clone(),
                TcpLimits::default(),
                stop.clone(),
            )));
            true
        }
        None => false,
    };
    let router = Router {
        shards,
        owners,
        by_addr: HashMap::new(),
        bound: HashMap::new(),
        last_prune: Instant::now(),
    };
    tasks.push(tokio::spawn(router.run(udp.clone(), tcp_rx, stop)));
    (Arc::new(Net { udp, tcp }), tcp_ok, tasks)
}

/// Resolves once `stop` is set (or its sender is gone: nobody can ask any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

struct Router {
    shards: Vec<ShardInbox>,
    owners: UfragOwners,
    /// Remote address → (shard, local ufrag) learned from STUN.
    by_addr: HashMap<(Protocol, SocketAddr), (usize, String)>,
    /// Local ufrag → the remote addresses routed to it, least recently checked first (at
    /// most [`MAX_BOUND_ADDRS`], as in the shard's own table).
    bound: HashMap<String, VecDeque<(Protocol, SocketAddr)>>,
    last_prune: Instant,
}

impl Router {
    async fn run(
        mut self,
        udp: Arc<UdpSocket>,
        mut tcp: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut receiver = Receiver::new();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                ready = udp.readable() => {
                    if ready.is_err() {
                        continue;
                    }
                    // A would-block (readiness was stale) or a socket error (an ICMP
                    // unreachable reported on the socket, say) only ends this turn.
                    let _ = receiver.try_recv(&udp, |source, data| {
                        self.route(Datagram { proto: Protocol::Udp, source, data });
                    });
                }
                Some((source, packet)) = tcp.recv() => {
                    self.route(Datagram { proto: Protocol::Tcp, source, data: packet.into() });
                }
            }
        }
    }

    fn route(&mut self, datagram: Datagram) {
        let key = (datagram.proto, datagram.source);
        let shard = match stun_local_ufrag(&datagram.data) {
            Some(ufrag) => {
                let owner = self
                    .owners
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(ufrag)
                    .copied();
                if let Some(shard) = owner {
                    self.bind(key, shard, ufrag);
                }
                owner
            }
            None => self.by_addr.get(&key).map(|(shard, _)| *shard),
        };
        if let Some(shard) = shard {
            let inbox = &self.shards[shard];
            let lane = if in_media_lane(&datagram.data) {
                &inbox.media
            } else {
                &inbox.control
            };
            // A full shard queue drops the packet, as a full socket buffer would.
            let _ = lane.try_send(datagram);
        }
        if self.last_prune.elapsed() > Duration::from_secs(10) {
            self.last_prune = Instant::now();
            let owners = self.owners.read().unwrap_or_else(|p| p.into_inner());
            self.by_addr
                .retain(|_, (_, ufrag)| owners.contains_key(ufrag));
            self.bound.retain(|ufrag, _| owners.contains_key(ufrag));
        }
    }

    /// Routes `addr` to `ufrag`'s transport on `shard` on an ICE check naming it, as its
    /// most recently checked address; beyond [`MAX_BOUND_ADDRS`] the transport's least
    /// recently checked address stops being routed.
    fn bind(&mut self, addr: (Protocol, SocketAddr), shard: usize, ufrag: &str) {
        match self.by_addr.get(&addr) {
            Some((s, u)) if *s == shard && u == ufrag => {
                if let Some(list) = self.bound.get_mut(ufrag)
                    && let Some(i) = list.iter().position(|a| *a == addr)
                {
                    list.remove(i);
                    list.push_back(addr);
                }
                return;
            }
            Some((_, other)) => {
                if let Some(list) = self.bound.get_mut(other) {
                    list.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        self.by_addr.insert(addr, (shard, ufrag.to_string()));
        let list = self.bound.entry(ufrag.to_string()).or_default();
        list.push_back(addr);
        if list.len() > MAX_BOUND_ADDRS
            && let Some(oldest) = list.pop_front()
            && self.by_addr.get(&oldest).is_some_and(|(_, u)| u == ufrag)
        {
            self.by_addr.remove(&oldest);
        }
    }
}

/// For a STUN message, the local (first) part of its USERNAME attribute, which names the
/// receiving agent's ufrag (RFC 8445 §7.2.2).
pub(crate) fn stun_local_ufrag(packet: &[u8]) -> Option<&str> {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if packet.len() < 20 || packet[0] & 0xc0 != 0 || packet[4..8] != MAGIC_COOKIE {
        return None;
    }
    let mut at = 20;
    while at + 4 <= packet.len() {
        let kind = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let len = u16::from_be_bytes([packet[at + 2], packet[at + 3]]) as usize;
        let value = packet.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// An ICE connectivity check for a transport some shard owns (its USERNAME names our ufrag).
fn names_live_transport(packet: &[u8], owners: &UfragOwners) -> bool {
    stun_local_ufrag(packet).is_some_and(|ufrag| {
        owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ufrag)
    })
}

/// Accepts ICE-TCP connections and runs each one's framed reader and writer. On stop the
/// listener closes, readers end, writers send what is queued, and this returns once every
/// connection task has ended (dropping it aborts them).
async fn accept_tcp(
    listener: TcpListener,
    conns: TcpConnections,
    to_router: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    owners: UfragOwners,
    limits: TcpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_id = 0u64;
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
            // Finished connection tasks are collected as they end, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_SEND_QUEUE);
        {
            let mut open = conns.lock().unwrap_or_else(|p| p.into_inner());
            let network = client_network(remote.ip());
            let from_ip = open
                .keys()
                .filter(|a| client_network(a.ip()) == network)
                .count();
            if open.len() >= MAX_TCP_CONNECTIONS || from_ip >= limits.per_ip {
                continue; // dropping the stream closes it
            }
            open.insert(remote, (id, tx));
        }
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        connections.spawn(async move {
            // Ends once the connection's sender is dropped (it left, or on stop).
            while let Some(frame) = rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let conns = conns.clone();
        let to_router = to_router.clone();
        let owners = owners.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let check_by = tokio::time::Instant::now() + limits.first_check;
            let mut checked = false;
            // RFC 4571: each packet is preceded by its 16-bit big-endian length.
            loop {
                let deadline = if checked {
                    tokio::time::Instant::now() + TCP_IDLE
                } else {
                    check_by
                };
                let mut len = [0u8; 2];
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    read = tokio::time::timeout_at(deadline, reader.read_exact(&mut len)) => {
                        if !matches!(read, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                let read = tokio::time::timeout_at(deadline, reader.read_exact(&mut packet)).await;
                if !matches!(read, Ok(Ok(_))) {
                    break;
                }
                if !checked {
                    if !names_live_transport(&packet, &owners) {
                        continue; // dropped: the first-check deadline keeps running
                    }
                    checked = true;
                }
                if to_router.send((remote, packet)).await.is_err() {
                    break;
                }
            }
            // Only this connection's entry: the same address may have reconnected since.
            let mut open = conns.lock().unwrap_or_else(|p| p.into_inner());
            if open.get(&remote).is_some_and(|(owner, _)| *owner == id) {
                open.remove(&remote);
            }
        });
    }
    drop(listener);
    // Dropping the senders lets each writer flush its queue and end.
    conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_media_socket_gets_buffers_for_bursts() {
        let (udp, _tcp) = bind_udp_and_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let socket = socket2::SockRef::from(&udp);
        let cap = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(MEDIA_SOCKET_BUFFER)
        };
        // Linux doubles what it grants (for its bookkeeping) and caps the request at the
        // sysctl maximum.
        let want_recv = MEDIA_SOCKET_BUFFER.min(cap("rmem_max"));
        let want_send = MEDIA_SOCKET_BUFFER.min(cap("wmem_max"));
        assert!(socket.recv_buffer_size().unwrap() >= want_recv);
        assert!(socket.send_buffer_size().unwrap() >= want_send);
        assert!(
            socket.recv_buffer_size().unwrap() > 212_992,
            "above the kernel default"
        );
    }

    /// A STUN binding request with USERNAME `srvUfrag:cliUfrag`.
    fn binding_request() -> Vec<u8> {
        let username = b"srvUfrag:cliUfrag";
        let mut packet = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        packet.extend_from_slice(&[7; 12]);
        // A PRIORITY attribute first, then USERNAME (17 bytes, padded to 20).
        packet.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        packet.extend_from_slice(&[0x00, 0x06, 0x00, username.len() as u8]);
        packet.extend_from_slice(username);
        packet.extend_from_slice(&[0, 0, 0]);
        packet
    }

    #[test]
    fn reads_the_local_ufrag_from_a_binding_request() {
        let packet = binding_request();
        assert_eq!(stun_local_ufrag(&packet), Some("srvUfrag"));
        // RTP/DTLS are not STUN.
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&[22; 40]), None);
        assert_eq!(stun_local_ufrag(&packet[..30]), None);
    }

    #[test]
    fn handshakes_take_the_control_lane_and_media_its_own() {
        let (media, mut media_rx) = mpsc::channel(8);
        let (control, mut control_rx) = mpsc::channel(8);
        let mut router = Router {
            shards: vec![ShardInbox { media, control }],
            owners: Arc::new(RwLock::new(HashMap::from([("srvUfrag".to_string(), 0)]))),
            by_addr: HashMap::new(),
            bound: HashMap::new(),
            last_prune: Instant::now(),
        };
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let send = |router: &mut Router, data: &[u8]| {
            router.route(Datagram {
                proto: Protocol::Udp,
                source: peer,
                data: Bytes::copy_from_slice(data),
            })
        };
        // The ICE check binds the address; then a DTLS ClientHello (22), an RTP packet
        // (0x80), an RTCP receiver report (0x81, type 201), a DTLS record again and a
        // DTLS alert (21, a close_notify): the alert stays behind the media before it.
        send(&mut router, &binding_request());
        send(&mut router, &[22, 0xfe, 0xfd, 0, 0]);
        send(&mut router, &[0x80, 96, 0, 1]);
        send(&mut router, &[0x81, 201, 0, 7]);
        send(&mut router, &[23, 0xfe, 0xfd, 0, 1]);
        send(&mut router, &[21, 0xfe, 0xfd, 0, 1]);
        let firsts = |rx: &mut mpsc::Receiver<Datagram>| {
            std::iter::from_fn(|| rx.try_recv().ok().map(|d| d.data[0])).collect::<Vec<_>>()
        };
        assert_eq!(firsts(&mut control_rx), vec![0x00, 22, 23]);
        assert_eq!(firsts(&mut media_rx), vec![0x80, 0x81, 21]);
        // The edges of RFC 7983's ranges.
        assert!(is_media(&[128]) && is_media(&[191]));
        assert!(!is_media(&[127]) && !is_media(&[192]) && !is_media(&[]));
    }

    #[test]
    fn tcp_connections_are_counted_per_ipv4_address_or_ipv6_64() {
        let net = |s: &str| client_network(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2::1"), net("2001:db8:1:2:ffff::9"));
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:192.0.2.7"), net("192.0.2.7"));
        assert_ne!(net("192.0.2.7"), net("192.0.2.8"));
    }

    /// A transport keeps its most recently checked addresses routed and no more: checks
    /// naming it from ever more source addresses (spoofed, say) do not grow the table.
    #[test]
    fn checks_from_ever_more_addresses_keep_the_newest_routed() {
        let (media, _media_rx) = mpsc::channel(1024);
        let (control, _control_rx) = mpsc::channel(1024);
        let mut router = Router {
            shards: vec![ShardInbox { media, control }],
            owners: Arc::new(RwLock::new(HashMap::from([
                ("srvUfrag".to_string(), 0),
                ("othUfrag".to_string(), 0),
            ]))),
            by_addr: HashMap::new(),
            bound: HashMap::new(),
            last_prune: Instant::now(),
        };
        let addr = |n: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], 10_000 + n)) };
        let check = |router: &mut Router, n: u16, packet: &[u8]| {
            router.route(Datagram {
                proto: Protocol::Udp,
                source: addr(n),
                data: Bytes::copy_from_slice(packet),
            })
        };
        let ours = binding_request();
        let mut other = ours.clone();
        let at = other.windows(8).position(|w| w == b"srvUfrag").unwrap();
        other[at..at + 8].copy_from_slice(b"othUfrag");
        check(&mut router, 0, &ours);
        for n in 1..200 {
            check(&mut router, n, &ours);
            // The first address keeps checking: it stays routed throughout.
            check(&mut router, 0, &ours);
        }
        assert_eq!(router.by_addr.len(), MAX_BOUND_ADDRS);
        assert_eq!(router.bound["srvUfrag"].len(), MAX_BOUND_ADDRS);
        assert!(router.by_addr.contains_key(&(Protocol::Udp, addr(0))));
        assert!(router.by_addr.contains_key(&(Protocol::Udp, addr(199))));
        assert!(!router.by_addr.contains_key(&(Protocol::Udp, addr(150))));
        // An address that moves to another transport leaves the first one's list.
        check(&mut router, 199, &other);
        assert_eq!(router.bound["srvUfrag"].len(), MAX_BOUND_ADDRS - 1);
        assert_eq!(router.by_addr[&(Protocol::Udp, addr(199))].1, "othUfrag");
        // A transport that ended is pruned from both tables.
        router.owners.write().unwrap().remove("srvUfrag");
        router.last_prune = Instant::now() - Duration::from_secs(11);
        check(&mut router, 300, &other);
        assert_eq!(router.by_addr.len(), 2);
        assert!(!router.bound.contains_key("srvUfrag"));
    }

    #[tokio::test]
    async fn ephemeral_binds_get_udp_and_tcp_on_one_port() {
        // Hold many TCP ports so that a kernel-chosen UDP port is more likely to be one
        // of them; every bind still ends with both sockets on the same port.
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        }
        for _ in 0..32 {
            let (udp, tcp) = bind_udp_and_tcp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let tcp = tcp.expect("ICE-TCP on an ephemeral port");
            assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        }
    }

    #[tokio::test]
    async fn a_fixed_port_whose_tcp_side_is_taken_still_serves_udp() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        // The UDP side of that port may be in use by someone else; then the bind is an
        // error, which is the caller's to report. Otherwise UDP works without ICE-TCP.
        match bind_udp_and_tcp(addr).await {
            Ok((udp, tcp)) => {
                assert_eq!(udp.local_addr().unwrap(), addr);
                assert!(tcp.is_none());
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
        }
    }

    /// An ICE-TCP listener on loopback with `limits`, whose only live transport has ufrag
    /// `srvUfrag`; returns its address and what it hands the router.
    async fn listener(
        limits: TcpLimits,
    ) -> (
        SocketAddr,
        mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        watch::Sender<bool>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let owners: UfragOwners =
            Arc::new(RwLock::new(HashMap::from([("srvUfrag".to_string(), 0)])));
        let (to_router, routed) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_tcp(
            listener,
            Arc::new(Mutex::new(HashMap::new())),
            to_router,
            owners,
            limits,
            stop_rx,
        ));
        (addr, routed, stop)
    }

    /// True when the server closed `stream` within `within` (EOF or reset).
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    fn framed(packet: &[u8]) -> Vec<u8> {
        let mut out = (packet.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(packet);
        out
    }

    #[tokio::test]
    async fn ice_tcp_connections_are_capped_per_address() {
        let limits = TcpLimits {
            per_ip: 2,
            first_check: Duration::from_secs(30),
        };
        let (addr, _routed, _stop) = listener(limits).await;
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(2)).await,
            "a third connection from one address is refused"
        );
        for stream in [&mut first, &mut second] {
            assert!(!closed_within(stream, Duration::from_millis(200)).await);
        }
        // A slot freed is a slot available again.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(!closed_within(&mut again, Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn ice_tcp_connections_without_a_valid_check_are_closed() {
        let limits = TcpLimits {
            per_ip: 8,
            first_check: Duration::from_millis(300),
        };
        let (addr, mut routed, _stop) = listener(limits).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
        garbage.write_all(&framed(&[0x80; 40])).await.unwrap();
        let mut stranger = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut unknown = binding_request();
        unknown[32..40].copy_from_slice(b"notOurs!");
        stranger.write_all(&framed(&unknown)).await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        peer.write_all(&framed(&binding_request())).await.unwrap();

        let (from, packet) = tokio::time::timeout(Duration::from_secs(2), routed.recv())
            .await
            .expect("the valid check is routed")
            .unwrap();
        assert_eq!(from, peer.local_addr().unwrap());
        assert_eq!(packet, binding_request());
        for (what, stream) in [
            ("silent", &mut silent),
            ("garbage", &mut garbage),
            ("unknown ufrag", &mut stranger),
        ] {
            assert!(
                closed_within(stream, Duration::from_secs(2)).await,
                "{what} connection left open"
            );
        }
        // Checked in time: it stays open past the deadline, and media flows on.
        assert!(!closed_within(&mut peer, Duration::from_millis(500)).await);
        peer.write_all(&framed(&[0x80; 20])).await.unwrap();
        let (_, packet) = tokio::time::timeout(Duration::from_secs(2), routed.recv())
            .await
            .expect("later packets are routed")
            .unwrap();
        assert_eq!(packet, [0x80; 20]);
        // Nothing from the others reached the router.
        assert!(routed.try_recv().is_err());
    }
}
