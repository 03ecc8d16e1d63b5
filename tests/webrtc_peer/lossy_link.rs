//! A UDP relay in front of the SFU that drops packets one way, or everything both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::net::UdpSocket;

/// A UDP relay between a test peer and the SFU that drops every `drop_every`-th VP8 RTP
/// packet (payload type 96) travelling one way, so NACK recovery has real work to do.
#[derive(Clone, Copy, Debug)]
pub struct Loss {
    pub drop_every: u32,
    /// Drop on the way to the SFU (publisher leg) rather than from it (viewer leg).
    pub towards_sfu: bool,
}

/// The relay's counters and switch.
#[derive(Debug, Default)]
pub struct Link {
    /// Packets the relay dropped for loss.
    pub dropped: AtomicU32,
    /// Set: the relay drops everything both ways, as a dead network would.
    pub cut: AtomicBool,
    /// Set: the relay stops dropping. A NACK needs a later packet to reveal a gap, so a
    /// test heals the link before the camera stops: a lost last packet is unrepairable.
    pub healed: AtomicBool,
}

/// Starts the relay in front of `sfu`; returns its address.
async fn lossy_link(sfu: SocketAddr, loss: Loss, link: Arc<Link>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front_addr = front.local_addr().unwrap();
    let peer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let is_video_rtp = |b: &[u8]| b.len() > 12 && b[0] & 0xc0 == 0x80 && b[1] & 0x7f == 96;
    for towards_sfu in [true, false] {
        let (from, to) = if towards_sfu {
            (front.clone(), back.clone())
        } else {
            (back.clone(), front.clone())
        };
        let (peer, link) = (peer.clone(), link.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut seen = 0u32;
            while let Ok((n, source)) = from.recv_from(&mut buf).await {
                let packet = &buf[..n];
                if link.cut.load(Ordering::SeqCst) {
                    continue;
                }
                if loss.towards_sfu == towards_sfu
                    && is_video_rtp(packet)
                    && !link.healed.load(Ordering::SeqCst)
                {
                    seen += 1;
                    if seen.is_multiple_of(loss.drop_every) {
                        link.dropped.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                }
                let destination = if towards_sfu {
                    *peer.lock().unwrap() = Some(source);
                    Some(sfu)
                } else {
                    *peer.lock().unwrap()
                };
                if let Some(destination) = destination {
                    let _ = to.send_to(packet, destination).await;
                }
            }
        });
    }
    front_addr
}

/// Points the answer's UDP host candidate at a lossy relay and drops its TCP candidate.
pub(super) async fn through_lossy_link(answer: String, loss: Loss, link: Arc<Link>) -> String {
    let candidate = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.to_lowercase().contains(" udp "))
        .expect("a UDP candidate");
    let fields: Vec<&str> = candidate.split(' ').collect();
    let sfu: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().unwrap();
    let relay = lossy_link(sfu, loss, link).await;
    answer
        .split("\r\n")
        .filter(|l| !(l.starts_with("a=candidate:") && l.to_lowercase().contains(" tcp ")))
        .map(|l| {
            if l == candidate {
                l.replace(&format!(" {} ", sfu.port()), &format!(" {} ", relay.port()))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}
