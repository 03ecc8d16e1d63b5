//! Batched UDP receives: one `recvmmsg` takes every datagram waiting on the media socket
//! (up to [`RECV_BATCH`]) where `recvfrom` took one, plus one more call to learn that the
//! queue was empty. A camera's frame arrives as a burst of ~10 datagrams, so the router's
//! wake-up costs one system call instead of eleven.
//!
//! Datagrams land in fixed slots of one shared allocation, each handed on as a [`Bytes`]
//! view of its slot: passing a packet to a shard costs a reference count, not a copy or an
//! allocation. A datagram larger than a slot is dropped (media stays under the path MTU;
//! ICE-TCP has its own framing).

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;

/// Room for one datagram: media and DTLS keep under ~1,500 bytes.
pub(crate) const SLOT: usize = 2048;

/// Datagrams one call takes at most: a few frames' worth of a camera, or a burst of RTCP.
pub(crate) const RECV_BATCH: usize = 32;

/// The shared allocation slots are cut from: 128 datagrams, freed once the last is dropped.
const CHUNK: usize = 128 * SLOT;

/// The receive side of the media socket: its slot buffer and, on Linux, `recvmmsg`.
pub(crate) struct Receiver {
    chunk: BytesMut,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub(crate) fn new() -> Self {
        Self {
            chunk: BytesMut::zeroed(CHUNK),
        }
    }

    /// Takes what is waiting on `udp` without blocking and hands each datagram to `each`.
    /// `Ok(n)` after `n >= 1` datagrams; `WouldBlock` when there were none, which (as for
    /// tokio's own `try_recv_from`) clears the socket's readiness until more arrive.
    pub(crate) fn try_recv(
        &mut self,
        udp: &UdpSocket,
        mut each: impl FnMut(SocketAddr, Bytes),
    ) -> io::Result<usize> {
        if self.chunk.len() < RECV_BATCH * SLOT {
            // The spent slots stay alive in the datagrams still held; this is a new area.
            self.chunk = BytesMut::zeroed(CHUNK);
        }
        let mut received = [(0usize, None::<SocketAddr>); RECV_BATCH];
        let n = recv_batch(udp, &mut self.chunk[..RECV_BATCH * SLOT], &mut received)?;
        for &(len, source) in &received[..n] {
            let mut slot = self.chunk.split_to(SLOT);
            if let Some(source) = source {
                slot.truncate(len);
                each(source, slot.freeze());
            }
        }
        Ok(n)
    }
}

/// Fills `received[i]` with slot `i`'s length and sender (`None`: dropped, as too large or
/// from an address family we do not serve) and returns how many slots were used.
#[cfg(target_os = "linux")]
fn recv_batch(
    udp: &UdpSocket,
    area: &mut [u8],
    received: &mut [(usize, Option<SocketAddr>); RECV_BATCH],
) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    debug_assert!(area.len() >= RECV_BATCH * SLOT);
    let mut addrs = [MaybeUninit::<libc::sockaddr_storage>::uninit(); RECV_BATCH];
    let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); RECV_BATCH];
    let mut msgs = [MaybeUninit::<libc::mmsghdr>::uninit(); RECV_BATCH];
    for (i, slot) in area.chunks_exact_mut(SLOT).take(RECV_BATCH).enumerate() {
        let iov = iovs[i].write(libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths, no flags).
        let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        msg.msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msgs[i].write(msg);
    }
    let fd = udp.as_raw_fd();
    let mut got = 0usize;
    let result = udp.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: every `msgs` entry was initialised above and points at `addrs`, `iovs`
        // and a slot of `area`, all alive for this call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr().cast::<libc::mmsghdr>(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        got = n as usize;
        if got < RECV_BATCH {
            // The queue was empty before the batch filled: report "would block" so tokio
            // clears the readiness now rather than after one more, empty, call. A datagram
            // arriving after this call raises a new edge-triggered event, so none is missed.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match result {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {}
        Err(e) => return Err(e),
    }
    for i in 0..got {
        // SAFETY: the kernel filled the first `got` messages and their addresses.
        let msg = unsafe { msgs[i].assume_init_ref() };
        let len = msg.msg_len as usize;
        let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: as above; the address was written by the kernel for this message.
        let source = unsafe { read_sockaddr(addrs[i].assume_init_ref()) };
        received[i] = (len, source.filter(|_| !truncated));
    }
    Ok(got)
}

/// The kernel's socket address as a `SocketAddr` (IPv4 and IPv6 only).
#[cfg(target_os = "linux")]
fn read_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a `sockaddr_in`.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a `sockaddr_in6`.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Elsewhere: one `try_recv_from` per datagram, until the queue is empty or a batch is full.
#[cfg(not(target_os = "linux"))]
fn recv_batch(
    udp: &UdpSocket,
    area: &mut [u8],
    received: &mut [(usize, Option<SocketAddr>); RECV_BATCH],
) -> io::Result<usize> {
    let mut got = 0;
    for slot in area.chunks_exact_mut(SLOT).take(RECV_BATCH) {
        match udp.try_recv_from(slot) {
            Ok((len, source)) => {
                received[got] = (len, Some(source));
                got += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn pair() -> (UdpSocket, std::net::UdpSocket) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(udp.local_addr().unwrap()).unwrap();
        (udp, sender)
    }

    /// Waits for the socket to be readable and takes one batch.
    async fn next_batch(rx: &mut Receiver, udp: &UdpSocket) -> Vec<(SocketAddr, Bytes)> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                udp.readable().await.unwrap();
                match rx.try_recv(udp, |source, data| got.push((source, data))) {
                    Ok(_) => return,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await
        .expect("a datagram within 2 s");
        got
    }

    #[tokio::test]
    async fn a_burst_is_taken_in_batches_in_order_with_its_sources() {
        let (udp, sender) = pair().await;
        let from = sender.local_addr().unwrap();
        let count = RECV_BATCH + 7;
        for i in 0..count {
            let datagram = vec![i as u8; 100 + i * 30];
            sender.send(&datagram).unwrap();
        }
        let mut rx = Receiver::new();
        let mut all = Vec::new();
        while all.len() < count {
            let batch = next_batch(&mut rx, &udp).await;
            assert!(batch.len() <= RECV_BATCH);
            all.extend(batch);
        }
        assert_eq!(all.len(), count);
        for (i, (source, data)) in all.iter().enumerate() {
            assert_eq!(*source, from);
            assert_eq!(data.len(), 100 + i * 30, "datagram {i}");
            assert!(data.iter().all(|&b| b == i as u8), "datagram {i}");
        }
        // Nothing more is waiting.
        assert_eq!(
            rx.try_recv(&udp, |_, _| panic!("no datagram"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[tokio::test]
    async fn a_datagram_after_a_partial_batch_still_wakes_the_reader() {
        let (udp, sender) = pair().await;
        let mut rx = Receiver::new();
        sender.send(b"first").unwrap();
        let batch = next_batch(&mut rx, &udp).await;
        assert_eq!(batch.len(), 1);
        // The partial batch cleared the readiness; the next datagram must raise it again.
        sender.send(b"second").unwrap();
        let batch = next_batch(&mut rx, &udp).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch[0].1[..], b"second");
    }

    #[tokio::test]
    async fn oversized_datagrams_are_dropped_and_the_rest_kept() {
        let (udp, sender) = pair().await;
        sender.send(&[1u8; 100]).unwrap();
        sender.send(&vec![2u8; SLOT + 500]).unwrap();
        sender.send(&[3u8; SLOT]).unwrap();
        let mut rx = Receiver::new();
        let batch = next_batch(&mut rx, &udp).await;
        let sizes: Vec<(usize, u8)> = batch.iter().map(|(_, d)| (d.len(), d[0])).collect();
        assert_eq!(sizes, vec![(100, 1), (SLOT, 3)]);
    }

    #[tokio::test]
    async fn datagrams_outlive_the_area_they_were_read_into() {
        let (udp, sender) = pair().await;
        let mut rx = Receiver::new();
        let mut kept = Vec::new();
        // Enough batches to use up several chunks while the first datagrams are still held.
        for round in 0..(3 * CHUNK / (RECV_BATCH * SLOT)) {
            for i in 0..RECV_BATCH {
                sender.send(&[(round * RECV_BATCH + i) as u8; 64]).unwrap();
            }
            let mut got = 0;
            while got < RECV_BATCH {
                let batch = next_batch(&mut rx, &udp).await;
                got += batch.len();
                kept.extend(batch.into_iter().map(|(_, d)| d));
            }
        }
        for (i, data) in kept.iter().enumerate() {
            assert!(data.iter().all(|&b| b == i as u8), "datagram {i}");
        }
    }
}
