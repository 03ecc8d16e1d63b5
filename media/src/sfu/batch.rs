//! Batched UDP sends: a media loop gathers the datagrams one round of the core produces
//! (a published packet fans out to every viewer at once) and hands them to the kernel with
//! one `sendmmsg` per [`MAX_BATCH`] instead of one `sendto` each. The syscall, not the
//! copy, is what a datagram costs the kernel; fan-out makes many per packet.
//!
//! A round covers every camera packet that was waiting, and the core gives each viewer's
//! datagrams one after another, so a viewer gets a run of same-sized packets (a frame cut
//! at the camera's packet size). Such a run goes as one UDP GSO message (`UDP_SEGMENT`): the
//! kernel walks its stack once for the run and cuts it into datagrams at the end. Where GSO
//! is refused (no checksum offload: `EIO`), it is switched off for the process and every
//! datagram goes alone, as before.
//!
//! Semantics match `try_send_to` per datagram: a full socket buffer drops what is left of
//! the batch (UDP may lose packets; the media loop never waits on the socket), and a
//! datagram the kernel refuses (an unreachable address family, say) is skipped alone.

use std::net::SocketAddr;

use str0m::net::Transmit;
use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call. 256 covers a round's fan-out to a room of viewers in a
/// few calls and keeps the call's arrays on the stack (~50 KiB, of which only the used
/// entries are written).
pub(crate) const MAX_BATCH: usize = 256;

/// Segments in one GSO message: the kernel's `UDP_MAX_SEGMENTS` (64 before Linux 6.x).
#[cfg(target_os = "linux")]
const MAX_SEGMENTS: usize = 64;

/// Bytes in one GSO message: a UDP datagram's payload limit, less IPv6's header.
#[cfg(target_os = "linux")]
const MAX_GSO_BYTES: usize = 65_535 - 40 - 8;

/// Set once the kernel refuses GSO for good (`EIO`: a device without checksum offload).
#[cfg(target_os = "linux")]
static GSO_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What a flush put on the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// `sendmmsg` messages (a GSO run is one).
    pub messages: u64,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.messages += other.messages;
    }
}

/// Sends every datagram in `batch` (UDP only) and empties it; the buffer's capacity stays
/// for the next round.
pub(crate) fn flush(udp: &UdpSocket, batch: &mut Vec<Transmit>) -> Sent {
    let mut sent = Sent::default();
    for chunk in batch.chunks(MAX_BATCH) {
        sent.add(send_chunk(udp, chunk));
    }
    batch.clear();
    sent
}

/// The length of the GSO run starting at `chunk[0]`: datagrams to the same destination, all
/// of the first one's size except a shorter last one, within the kernel's limits.
#[cfg(target_os = "linux")]
fn gso_run(chunk: &[Transmit]) -> usize {
    let first = &chunk[0];
    let size = first.contents.len();
    if GSO_OFF.load(std::sync::atomic::Ordering::Relaxed) || size == 0 {
        return 1;
    }
    let limit = MAX_SEGMENTS.min(MAX_GSO_BYTES / size).min(chunk.len());
    let mut run = 1;
    while run < limit {
        let next = &chunk[run];
        if next.destination != first.destination || next.contents.len() > size {
            break;
        }
        run += 1;
        if next.contents.len() < size {
            // A shorter segment can only be the last.
            break;
        }
    }
    run
}

/// Room for one `UDP_SEGMENT` control message, aligned as `cmsghdr` wants.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentControl([u8; 32]);

#[cfg(target_os = "linux")]
fn send_chunk(udp: &UdpSocket, chunk: &[Transmit]) -> Sent {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    debug_assert!(chunk.len() <= MAX_BATCH);
    // Left uninitialised: only the entries a chunk uses are written, each in full (zeroing
    // the arrays on every flush would cost more than filling the used part).
    let mut addrs = [MaybeUninit::<libc::sockaddr_storage>::uninit(); MAX_BATCH];
    let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); MAX_BATCH];
    let mut msgs = [MaybeUninit::<libc::mmsghdr>::uninit(); MAX_BATCH];
    let mut controls = [MaybeUninit::<SegmentControl>::uninit(); MAX_BATCH];
    // Per message: how many datagrams it carries (at most MAX_SEGMENTS); messages take
    // `chunk` in order, so where each starts follows from the ones before.
    let mut runs = [0u8; MAX_BATCH];
    let mut count = 0;
    let mut at = 0;
    while at < chunk.len() {
        let run = gso_run(&chunk[at..]);
        for (i, t) in chunk[at..at + run].iter().enumerate() {
            iovs[at + i].write(libc::iovec {
                // The kernel only reads the datagram; `iovec` is merely typed as mutable.
                iov_base: t.contents.as_ptr() as *mut libc::c_void,
                iov_len: t.contents.len(),
            });
        }
        let addr_len = write_sockaddr(&chunk[at].destination, &mut addrs[count]);
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths, no flags).
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = addrs[count].as_mut_ptr().cast();
        msg.msg_hdr.msg_namelen = addr_len;
        msg.msg_hdr.msg_iov = iovs[at].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = run;
        if run > 1 {
            let control = controls[count].write(SegmentControl([0; 32]));
            msg.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_hdr.msg_controllen =
                unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
            // SAFETY: the control buffer is aligned and holds CMSG_SPACE(2) bytes (24 <= 32).
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                libc::CMSG_DATA(cmsg)
                    .cast::<u16>()
                    .write_unaligned(chunk[at].contents.len() as u16);
            }
        }
        msgs[count].write(msg);
        runs[count] = run as u8;
        count += 1;
        at += run;
    }
    let fd = udp.as_raw_fd();
    let mut sent = Sent::default();
    let mut next = 0;
    // The first datagram of message `next`.
    let mut start = 0;
    while next < count {
        // Through tokio's readiness, so a full buffer is remembered as tokio's own
        // `try_send_to` would remember it.
        let result = udp.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: `msgs[next..count]` were initialised above and point at `addrs`,
            // `iovs`, `controls` and the datagrams in `chunk`, all alive for this call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[next..].as_mut_ptr().cast::<libc::mmsghdr>(),
                    (count - next) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match result {
            Ok(n) => {
                for &run in &runs[next..next + n] {
                    let run = usize::from(run);
                    sent.add(counted(&chunk[start..start + run]));
                    start += run;
                }
                next += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The socket buffer is full: the rest is dropped, as congestion drops it.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                let run = usize::from(runs[next]);
                if run > 1 {
                    // The kernel refused the run as one message: `EIO` means no GSO on this
                    // path at all; anything else (a segment beyond the path's MTU, say) is
                    // this run's alone. Its datagrams go one by one.
                    if e.raw_os_error() == Some(libc::EIO) {
                        GSO_OFF.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("UDP GSO refused by the kernel; sending datagrams singly");
                    }
                    for t in &chunk[start..start + run] {
                        if udp.try_send_to(&t.contents, t.destination).is_ok() {
                            sent.add(counted(std::slice::from_ref(t)));
                        }
                    }
                } else {
                    // The kernel refused this datagram alone; the others still go.
                    tracing::trace!(destination = %chunk[start].destination, error = %e, "datagram refused");
                }
                start += run;
                next += 1;
            }
        }
    }
    sent
}

/// One message's worth of datagrams, counted as sent.
#[cfg(target_os = "linux")]
fn counted(datagrams: &[Transmit]) -> Sent {
    Sent {
        packets: datagrams.len() as u64,
        bytes: datagrams.iter().map(|t| t.contents.len() as u64).sum(),
        messages: 1,
    }
}

/// Writes `addr` as the kernel's socket address; returns its length.
#[cfg(target_os = "linux")]
fn write_sockaddr(
    addr: &SocketAddr,
    storage: &mut std::mem::MaybeUninit<libc::sockaddr_storage>,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is large and aligned enough for any socket address.
            unsafe { storage.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe {
                storage
                    .as_mut_ptr()
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Elsewhere: one `try_send_to` per datagram.
#[cfg(not(target_os = "linux"))]
fn send_chunk(udp: &UdpSocket, chunk: &[Transmit]) -> Sent {
    let mut sent = Sent::default();
    for t in chunk {
        match udp.try_send_to(&t.contents, t.destination) {
            Ok(_) => {
                sent.packets += 1;
                sent.bytes += t.contents.len() as u64;
                sent.messages += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {}
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use str0m::net::Protocol;

    use super::*;

    fn transmit(from: SocketAddr, to: SocketAddr, contents: Vec<u8>) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            contents: contents.into(),
        }
    }

    /// A fresh socket's writability is known to tokio once its driver has seen it (the
    /// media socket's long before its first send).
    async fn sender(ip: std::net::IpAddr) -> std::io::Result<(UdpSocket, SocketAddr)> {
        let socket = UdpSocket::bind((ip, 0)).await?;
        socket.writable().await?;
        let addr = socket.local_addr()?;
        Ok((socket, addr))
    }

    /// A loopback receiver whose buffer holds a whole test batch (the default may not).
    fn receiver() -> UdpSocket {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        socket.set_recv_buffer_size(4 << 20).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        UdpSocket::from_std(socket.into()).unwrap()
    }

    async fn receive_all(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..count {
            let (n, _) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.recv_from(&mut buf),
            )
            .await
            .expect("the datagram arrives")
            .expect("recv");
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// More datagrams than one call takes, to two receivers, arrive whole and in order.
    #[tokio::test]
    async fn a_batch_reaches_each_destination_in_order() {
        let (sender, from) = sender(Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let (a, b) = (receiver(), receiver());
        let per_receiver = MAX_BATCH / 2 + 7;
        let mut batch = Vec::new();
        let mut expected_bytes = 0;
        for i in 0..per_receiver {
            for (n, to) in [(0u8, &a), (1u8, &b)] {
                let contents = vec![n; 100 + i];
                expected_bytes += contents.len() as u64;
                batch.push(transmit(from, to.local_addr().unwrap(), contents));
            }
        }
        let sent = flush(&sender, &mut batch);
        assert!(batch.is_empty(), "the batch is emptied");
        assert_eq!(
            sent,
            Sent {
                packets: 2 * per_receiver as u64,
                bytes: expected_bytes,
                // Sizes differ from one datagram to the next: no run, one message each.
                messages: 2 * per_receiver as u64,
            }
        );
        for (n, socket) in [(0u8, &a), (1u8, &b)] {
            let got = receive_all(socket, per_receiver).await;
            for (i, datagram) in got.iter().enumerate() {
                assert_eq!(datagram, &vec![n; 100 + i], "datagram {i} to receiver {n}");
            }
        }
    }

    /// A viewer's run of equal-sized datagrams (a frame cut at the packet size) goes as one
    /// GSO message and still arrives as the same datagrams in the same order; a larger
    /// datagram, one after a shorter one, another destination or the segment cap starts a
    /// new message.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn runs_go_as_one_message_and_arrive_as_the_same_datagrams() {
        let (sender, from) = sender(Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let (a, b) = (receiver(), receiver());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let datagram = |tag: u8, len: usize| -> Vec<u8> {
            (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
        };
        // To a: 5 × 1,200 + 700 | 1,200 + 1,200 + 300; to b: 3 × 1,100; to a again: 80 × 1,000
        // (over the segment cap).
        let mut for_a: Vec<Vec<u8>> = (0..5).map(|i| datagram(i, 1200)).collect();
        for_a.push(datagram(5, 700));
        for_a.extend((6..8).map(|i| datagram(i, 1200)));
        for_a.push(datagram(8, 300));
        let for_b: Vec<Vec<u8>> = (0..3).map(|i| datagram(100 + i, 1100)).collect();
        let long: Vec<Vec<u8>> = (0..80u8)
            .map(|i| datagram(i.wrapping_mul(3), 1000))
            .collect();
        let mut batch: Vec<Transmit> = for_a
            .iter()
            .map(|d| transmit(from, to_a, d.clone()))
            .chain(for_b.iter().map(|d| transmit(from, to_b, d.clone())))
            .chain(long.iter().map(|d| transmit(from, to_a, d.clone())))
            .collect();
        let runs: Vec<usize> = {
            let mut runs = Vec::new();
            let mut at = 0;
            while at < batch.len() {
                let run = gso_run(&batch[at..]);
                runs.push(run);
                at += run;
            }
            runs
        };
        assert_eq!(runs, [6, 3, 3, MAX_SEGMENTS, 80 - MAX_SEGMENTS]);
        let total = batch.len() as u64;
        let sent = flush(&sender, &mut batch);
        assert_eq!(sent.packets, total);
        assert_eq!(sent.messages, runs.len() as u64, "one message per run");
        let expected_a: Vec<Vec<u8>> = for_a.iter().chain(long.iter()).cloned().collect();
        assert_eq!(receive_all(&a, expected_a.len()).await, expected_a);
        assert_eq!(receive_all(&b, for_b.len()).await, for_b);
    }

    /// A datagram the kernel refuses (an IPv6 destination on an IPv4 socket) is skipped;
    /// the ones after it still go.
    #[tokio::test]
    async fn a_refused_datagram_does_not_stop_the_rest() {
        let (sender, from) = sender(Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let to = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let nowhere = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        let mut batch = vec![
            transmit(from, to.local_addr().unwrap(), b"first".to_vec()),
            transmit(from, nowhere, b"refused".to_vec()),
            transmit(from, to.local_addr().unwrap(), b"second".to_vec()),
        ];
        let sent = flush(&sender, &mut batch);
        assert_eq!(sent.packets, 2);
        assert_eq!(
            receive_all(&to, 2).await,
            [b"first".to_vec(), b"second".to_vec()]
        );
    }

    /// IPv6 destinations are written as `sockaddr_in6`.
    #[tokio::test]
    async fn ipv6_destinations_are_reached() {
        let Ok((sender, from)) = sender(Ipv6Addr::LOCALHOST.into()).await else {
            // No IPv6 loopback on this machine: nothing to send over.
            return;
        };
        let to = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let mut batch = vec![transmit(
            from,
            to.local_addr().unwrap(),
            b"over v6".to_vec(),
        )];
        assert_eq!(flush(&sender, &mut batch).packets, 1);
        assert_eq!(receive_all(&to, 1).await, [b"over v6".to_vec()]);
    }
}
