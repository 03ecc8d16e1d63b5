//! The generator's WebRTC peers (str0m) and how they reach each server.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::camera::answer_pt;
use crate::janus::JanusProcess;
use crate::{since_epoch, wall_to_epoch};

/// A str0m peer in RTP mode with its own UDP socket. Viewers only count packets (no frame
/// reassembly); the camera writes the packets its own packetiser cut.
pub(crate) struct Peer {
    pub(crate) rtc: Rtc,
    pub(crate) socket: UdpSocket,
    pub(crate) local: SocketAddr,
    /// When the datagram last fed to `rtc` reached the socket (kernel stamp, on the
    /// `since_epoch` scale), and when this process read it.
    pub(crate) arrived: Rc<Cell<(u64, u64)>>,
}

/// A camera's negotiated media: its mids and the payload types the answer chose.
pub(crate) struct Published {
    pub(crate) audio: Mid,
    pub(crate) video: Mid,
    pub(crate) opus: u8,
    pub(crate) vp8: u8,
}

impl Peer {
    pub(crate) async fn bind(ip: IpAddr) -> Result<Peer, String> {
        let socket = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        enable_arrival_stamps(&socket).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        Ok(Peer {
            rtc,
            socket,
            local,
            arrived: Rc::default(),
        })
    }

    /// Offers over WHIP (camera) or WHEP (viewer) and takes Watchpost's answer.
    pub(crate) async fn watchpost(
        http: &reqwest::Client,
        url: &str,
        token: &str,
        camera: bool,
    ) -> Result<(Peer, Published), String> {
        let mut peer = Peer::bind(Ipv4Addr::LOCALHOST.into()).await?;
        let dir = if camera {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut change = peer.rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, dir, None, None, None);
        let video = change.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = change.apply().ok_or("no offer")?;
        let response = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status != 201 {
            return Err(format!("{url}: {status} {body}"));
        }
        let published = Published {
            audio,
            video,
            opus: answer_pt(&body, "opus/").ok_or("no Opus in the answer")?,
            vp8: answer_pt(&body, "VP8/").ok_or("no VP8 in the answer")?,
        };
        let answer = SdpAnswer::from_sdp_string(&body).map_err(|e| e.to_string())?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        Ok((peer, published))
    }

    /// Watches Janus's mountpoint: Janus offers, the viewer answers (its HTTP API).
    pub(crate) async fn janus(
        http: &reqwest::Client,
        janus: &JanusProcess,
    ) -> Result<Peer, String> {
        let mut peer = Peer::bind(janus.ip).await?;
        let api = |path: String, body: serde_json::Value| async move {
            let v: serde_json::Value = http
                .post(format!("{}{path}", janus.base))
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match v["janus"].as_str() {
                Some("success" | "ack") => Ok(v),
                _ => Err(format!("janus {path}: {v}")),
            }
        };
        let session = api(
            "/janus".into(),
            serde_json::json!({"janus": "create", "transaction": "c"}),
        )
        .await?["data"]["id"]
            .as_u64()
            .ok_or("no session")?;
        let handle = api(
            format!("/janus/{session}"),
            serde_json::json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}),
        )
        .await?["data"]["id"]
            .as_u64()
            .ok_or("no handle")?;
        api(
            format!("/janus/{session}/{handle}"),
            serde_json::json!({"janus": "message", "transaction": "w", "body": {"request": "watch", "id": 1}}),
        )
        .await?;
        let offer = loop {
            let event: serde_json::Value = http
                .get(format!("{}/janus/{session}?maxev=1", janus.base))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if let Some(sdp) = event["jsep"]["sdp"].as_str() {
                break sdp.to_string();
            }
            if event["janus"] == "event" && event["plugindata"]["data"]["error"].is_string() {
                return Err(format!("janus watch: {event}"));
            }
        };
        let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| e.to_string())?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        api(
            format!("/janus/{session}/{handle}"),
            serde_json::json!({
                "janus": "message", "transaction": "s",
                "body": {"request": "start"},
                "jsep": {"type": "answer", "sdp": answer.to_sdp_string()},
            }),
        )
        .await?;
        Ok(peer)
    }

    /// Sends what the peer has to send and hands out its events; returns its next timeout.
    pub(crate) fn drain(&mut self, on_event: &mut impl FnMut(Event)) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Some(at),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => on_event(e),
                Err(_) => return None,
            }
        }
    }

    /// Feeds every datagram waiting on the socket to the peer, draining it after each: in
    /// RTP mode str0m holds one received packet at a time for its next event.
    pub(crate) fn receive_waiting(&mut self, buf: &mut [u8], on_event: &mut impl FnMut(Event)) {
        while let Ok((n, source, stamp)) = recv_stamped(&self.socket, buf) {
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let now = Instant::now();
            let read = since_epoch(now);
            self.arrived
                .set((stamp.map_or(read, wall_to_epoch).min(read), read));
            let _ = self.rtc.handle_input(Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            ));
            self.drain(on_event);
        }
    }

    /// Waits for a datagram or `until`, whichever comes first.
    pub(crate) async fn wait(
        &mut self,
        until: Instant,
        buf: &mut [u8],
        on_event: &mut impl FnMut(Event),
    ) {
        let sleep = tokio::time::sleep_until(until.into());
        tokio::select! {
            ready = self.socket.readable() => {
                if ready.is_ok() {
                    self.receive_waiting(buf, on_event);
                }
            }
            _ = sleep => {}
        }
        let now = Instant::now();
        if now >= until {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
    }
}

/// Asks the kernel to stamp each datagram's arrival at the socket (wall clock, ns).
fn enable_arrival_stamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Room for the `SCM_TIMESTAMPNS` control message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct StampControl([u8; 64]);

/// One datagram, its source and the kernel's arrival stamp (wall clock, ns) if it gave one.
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u64>)> {
    socket.try_io(Interest::READABLE, || {
        // SAFETY: every pointer in `msg` points at a live local of the size given; the
        // kernel writes at most those sizes, and the control messages are walked with
        // the CMSG macros within `msg_controllen`.
        unsafe {
            let mut name: libc::sockaddr_storage = std::mem::zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut control = StampControl([0; 64]);
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = control.0.len() as _;
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut stamp = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let source = match i32::from(name.ss_family) {
                libc::AF_INET => {
                    let v4 = &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                    SocketAddr::new(
                        Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into(),
                        u16::from_be(v4.sin_port),
                    )
                }
                libc::AF_INET6 => {
                    let v6 =
                        &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                    SocketAddr::new(
                        Ipv6Addr::from(v6.sin6_addr.s6_addr).into(),
                        u16::from_be(v6.sin6_port),
                    )
                }
                _ => return Err(io::Error::other("a datagram from no IP address")),
            };
            Ok((n as usize, source, stamp))
        }
    })
}
