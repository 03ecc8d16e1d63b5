//! Batched UDP sends: a media loop gathers the datagrams one round of the core produces
//! (a published packet fans out to every viewer at once) and hands them to the kernel with
//! one `sendmmsg` per [`MAX_BATCH`] instead of one `sendto` each. The syscall, not the
//! copy, is what a datagram costs the kernel; fan-out makes many per packet.
//!
//! Semantics match `try_send_to` per datagram: a full socket buffer drops what is left of
//! the batch (UDP may lose packets; the media loop never waits on the socket), and a
//! datagram the kernel refuses (an unreachable address family, say) is skipped alone.

use std::net::SocketAddr;

use str0m::net::Transmit;
use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call; the kernel takes up to 1,024 (`UIO_MAXIOV`). 64 covers a
/// packet's fan-out to a room of viewers and keeps the call's arrays on the stack (13 KiB,
/// of which only the used entries are written).
pub(crate) const MAX_BATCH: usize = 64;

/// What a flush put on the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub packets: u64,
    pub bytes: u64,
}

/// Sends every datagram in `batch` (UDP only) and empties it; the buffer's capacity stays
/// for the next round.
pub(crate) fn flush(udp: &UdpSocket, batch: &mut Vec<Transmit>) -> Sent {
    let mut sent = Sent::default();
    for chunk in batch.chunks(MAX_BATCH) {
        let done = send_chunk(udp, chunk);
        sent.packets += done.packets;
        sent.bytes += done.bytes;
    }
    batch.clear();
    sent
}

#[cfg(target_os = "linux")]
fn send_chunk(udp: &UdpSocket, chunk: &[Transmit]) -> Sent {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    debug_assert!(chunk.len() <= MAX_BATCH);
    // Left uninitialised: only the entries a chunk uses are written, each in full (zeroing
    // all three arrays on every flush would cost more than filling the used part).
    let mut addrs = [MaybeUninit::<libc::sockaddr_storage>::uninit(); MAX_BATCH];
    let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); MAX_BATCH];
    let mut msgs = [MaybeUninit::<libc::mmsghdr>::uninit(); MAX_BATCH];
    for (i, t) in chunk.iter().enumerate() {
        let addr_len = write_sockaddr(&t.destination, &mut addrs[i]);
        iovs[i].write(libc::iovec {
            // The kernel only reads the datagram; `iovec` is merely typed as mutable.
            iov_base: t.contents.as_ptr() as *mut libc::c_void,
            iov_len: t.contents.len(),
        });
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths, no flags).
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
        msg.msg_hdr.msg_namelen = addr_len;
        msg.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        msg.msg_hdr.msg_iovlen = 1;
        msgs[i].write(msg);
    }
    let fd = udp.as_raw_fd();
    let mut sent = Sent::default();
    let mut next = 0;
    while next < chunk.len() {
        // Through tokio's readiness, so a full buffer is remembered as tokio's own
        // `try_send_to` would remember it.
        let result = udp.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: `msgs[next..chunk.len()]` were initialised above and point at
            // `addrs`, `iovs` and the datagrams in `chunk`, all alive for this call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[next..].as_mut_ptr().cast::<libc::mmsghdr>(),
                    (chunk.len() - next) as libc::c_uint,
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
                for t in &chunk[next..next + n] {
                    sent.packets += 1;
                    sent.bytes += t.contents.len() as u64;
                }
                next += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The socket buffer is full: the rest is dropped, as congestion drops it.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // The kernel refused the datagram at `next` alone; the others still go.
            Err(e) => {
                tracing::trace!(destination = %chunk[next].destination, error = %e, "datagram refused");
                next += 1;
            }
        }
    }
    sent
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
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let per_receiver = MAX_BATCH + 7;
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
                bytes: expected_bytes
            }
        );
        for (n, socket) in [(0u8, &a), (1u8, &b)] {
            let got = receive_all(socket, per_receiver).await;
            for (i, datagram) in got.iter().enumerate() {
                assert_eq!(datagram, &vec![n; 100 + i], "datagram {i} to receiver {n}");
            }
        }
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
