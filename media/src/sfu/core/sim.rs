//! An in-memory world for the core: str0m `Rtc` clients (cameras and viewers) wired to one
//! [`Core`] by a zero-latency link, on a simulated clock the test advances. No sockets, no
//! runtime, no sleeping: a simulated minute passes in milliseconds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::{Core, CoreConfig, Output, RouteUpdate};
use crate::limits::{Admission, MediaLimits};
use crate::sfu::{MediaCounters, MediaEvent, ParticipantInfo};

/// Where the core listens.
pub const SFU_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);

/// A frame a client received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: MediaKind,
    pub data: Arc<[u8]>,
    pub keyframe: bool,
}

/// An RTP header seen on the wire towards a client (SRTP leaves headers in the clear).
#[derive(Debug, Clone, Copy)]
pub struct RtpSeen {
    pub pt: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

pub struct Client {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    /// Packets cross the link only while it is up.
    pub link_up: bool,
    pub connected: bool,
    pub media: Vec<(Mid, MediaKind)>,
    pub frames: Vec<Frame>,
    /// Keyframe requests that reached this client (a camera), with the layer asked for.
    pub keyframe_requests: Vec<(Instant, Option<Rid>)>,
    pub rtp_in: Vec<RtpSeen>,
    timeout: Instant,
    /// Media clock of the frames this client writes (90 kHz video, 48 kHz audio), per layer.
    video_clock: Vec<(Option<Rid>, u64)>,
    audio_clock: u64,
}

impl Client {
    pub fn mid(&self, kind: MediaKind) -> Mid {
        self.media
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(m, _)| *m)
            .expect("media negotiated")
    }

    pub fn video_frames(&self) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| f.kind == MediaKind::Video)
            .collect()
    }

    pub fn audio_frames(&self) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| f.kind == MediaKind::Audio)
            .collect()
    }

    /// The RTP packets of the media stream (not RTX, not padding) with payload type `pt`.
    pub fn rtp_with_pt(&self, pt: u8) -> Vec<RtpSeen> {
        self.rtp_in.iter().filter(|r| r.pt == pt).copied().collect()
    }

    /// The payload type this client receives `codec` on.
    pub fn pt_of(&mut self, kind: MediaKind, codec: Codec) -> u8 {
        let mid = self.mid(kind);
        let writer = self.rtc.writer(mid).expect("alive");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .expect("codec negotiated")
            .pt();
        *pt
    }
}

pub struct Sim {
    pub now: Instant,
    pub(crate) core: Core,
    pub counters: Arc<MediaCounters>,
    pub clients: Vec<Client>,
    pub events: Vec<MediaEvent>,
    pub(crate) routes: Vec<RouteUpdate>,
    core_timeout: Instant,
}

pub type ClientId = usize;

/// A datagram a camera sent, held back from the core (see [`Sim::held_video`]).
pub struct HeldDatagram {
    pub at: Instant,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

impl Sim {
    pub fn new(grace: Duration) -> Self {
        Self::with_limits(grace, MediaLimits::server_wide(10, 10))
    }

    pub fn with_limits(grace: Duration, limits: MediaLimits) -> Self {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
        let now = Instant::now();
        let counters = Arc::new(MediaCounters::default());
        let admission = Arc::new(Admission::new(limits));
        let core = Core::new(
            now,
            CoreConfig {
                candidates: vec![SFU_ADDR],
                tcp_candidate: None,
                grace,
                dtls_cert: super::dtls::identity().expect("a DTLS certificate"),
                crypto: super::dtls::crypto_provider(),
            },
            admission,
            counters.clone(),
        );
        Sim {
            now,
            core,
            counters,
            clients: Vec::new(),
            events: Vec::new(),
            routes: Vec::new(),
            core_timeout: now,
        }
    }

    /// A camera offering Opus and VP8 (with these simulcast layers, if any), connected.
    pub fn publisher(&mut self, room: &str, id: &str, layers: &[&str]) -> ClientId {
        let simulcast = (!layers.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for rid in layers {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let client = self.offer(room, id, true, simulcast);
        self.await_connected(client);
        client
    }

    /// A viewer receiving audio and video, connected.
    pub fn viewer(&mut self, room: &str, id: &str) -> ClientId {
        let client = self.offer(room, id, false, None);
        self.await_connected(client);
        client
    }

    fn offer(
        &mut self,
        room: &str,
        id: &str,
        publisher: bool,
        simulcast: Option<Simulcast>,
    ) -> ClientId {
        let index = self.clients.len();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1)), 4000);
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let dir = if publisher {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut change = rtc.sdp_api();
        // The offerer learns its mids here (MediaAdded is for media the remote side adds).
        let audio = change.add_media(MediaKind::Audio, dir, None, None, None);
        let video = change.add_media(MediaKind::Video, dir, None, None, simulcast);
        let (offer, pending) = change.apply().expect("an offer");
        let answer = self
            .core
            .join(
                self.now,
                room,
                id,
                owned_by(id),
                publisher,
                &offer.to_sdp_string(),
            )
            .expect("joined");
        let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        self.clients.push(Client {
            addr,
            rtc,
            link_up: true,
            connected: false,
            media: vec![(audio, MediaKind::Audio), (video, MediaKind::Video)],
            frames: Vec::new(),
            keyframe_requests: Vec::new(),
            rtp_in: Vec::new(),
            timeout: self.now,
            video_clock: Vec::new(),
            audio_clock: 0,
        });
        index
    }

    fn await_connected(&mut self, client: ClientId) {
        for _ in 0..200 {
            if self.clients[client].connected {
                return;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("client {client} did not connect");
    }

    /// A joined participant the core did not answer: the offer is refused.
    pub fn join_error(&mut self, room: &str, id: &str) -> crate::sfu::SfuError {
        let mut rtc = Rtc::builder().build(self.now);
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = change.apply().expect("an offer");
        self.core
            .join(
                self.now,
                room,
                id,
                owned_by(id),
                true,
                &offer.to_sdp_string(),
            )
            .expect_err("join refused")
    }

    /// A viewer's offer (audio and video, receive only), from a str0m peer that is then
    /// dropped: for timing the join alone.
    pub fn viewer_offer(&self) -> String {
        let mut rtc = Rtc::builder().build(self.now);
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)), 4000);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _) = change.apply().expect("an offer");
        offer.to_sdp_string()
    }

    /// Joins a viewer from `offer` and returns the core's answer; nothing connects.
    pub fn answer_viewer(&mut self, room: &str, id: &str, offer: &str) -> String {
        self.core
            .join(self.now, room, id, owned_by(id), false, offer)
            .expect("joined")
    }

    /// A participant leaves; what the core says about it (routes, events) is dropped.
    pub fn leave(&mut self, room: &str, id: &str) {
        self.core.leave(self.now, room, id);
        while !matches!(self.core.poll_output(), Output::Timeout(_)) {}
    }

    pub fn describe(&self, room: &str) -> Vec<ParticipantInfo> {
        self.core.describe(room)
    }

    /// Writes one video frame from a camera, on a layer if it sends simulcast. The media
    /// clock advances 3000 ticks (33 ms at 90 kHz) per frame.
    pub fn send_video(&mut self, client: ClientId, rid: Option<&str>, data: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[client];
        let rid = rid.map(Rid::from);
        let mid = c.mid(MediaKind::Video);
        let clock = match c.video_clock.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, t)) => t,
            None => {
                c.video_clock.push((rid, 1_000));
                &mut c.video_clock.last_mut().expect("pushed").1
            }
        };
        let time = MediaTime::from_90khz(*clock);
        *clock += 3_000;
        let mut writer = c.rtc.writer(mid).expect("alive");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("VP8")
            .pt();
        if let Some(rid) = rid {
            writer = writer.rid(rid);
        }
        writer
            .write(pt, now, time, data.to_vec())
            .expect("frame written");
    }

    /// Writes one 20 ms Opus packet from a camera.
    pub fn send_audio(&mut self, client: ClientId, data: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Audio);
        let time = MediaTime::new(c.audio_clock, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        c.audio_clock += 960;
        let writer = c.rtc.writer(mid).expect("alive");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("Opus")
            .pt();
        writer
            .write(pt, now, time, data.to_vec())
            .expect("audio written");
    }

    /// A viewer asks for a keyframe (PLI), as a decoder does after a loss.
    pub fn viewer_requests_keyframe(&mut self, client: ClientId) {
        let c = &mut self.clients[client];
        let mid = c.mid(MediaKind::Video);
        let mut writer = c.rtc.writer(mid).expect("alive");
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .expect("PLI possible");
    }

    /// Advances the simulated clock by `d`, moving every packet and firing every timer due.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.exchange();
            let next = self
                .clients
                .iter()
                .filter(|c| c.rtc.is_alive())
                .map(|c| c.timeout)
                .chain([self.core_timeout])
                .min()
                .expect("the core has a timeout")
                // Timers due now were fired by the exchange; always step the clock.
                .max(self.now + Duration::from_millis(1));
            if next > until {
                self.now = until;
                self.fire_timers();
                self.exchange();
                return;
            }
            self.now = next;
            self.fire_timers();
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if self.core_timeout <= now {
            self.core.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.timeout <= now && c.rtc.is_alive() {
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
        }
    }

    /// Delivers packets both ways until nobody has anything more to send right now.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            loop {
                match self.core.poll_output() {
                    Output::Transmit(t) => {
                        moved = true;
                        let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination)
                        else {
                            continue;
                        };
                        if !c.link_up || !c.rtc.is_alive() {
                            continue;
                        }
                        if let Some(rtp) = rtp_header(&t.contents) {
                            c.rtp_in.push(rtp);
                        }
                        receive(c, self.now, &t);
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Route(r) => self.routes.push(r),
                    Output::Timeout(t) => {
                        self.core_timeout = t;
                        break;
                    }
                }
            }
            for c in &mut self.clients {
                while c.rtc.is_alive() {
                    match c.rtc.poll_output() {
                        Ok(RtcOutput::Timeout(t)) => {
                            c.timeout = t;
                            break;
                        }
                        Ok(RtcOutput::Transmit(t)) => {
                            moved = true;
                            if c.link_up {
                                self.core
                                    .handle_datagram(self.now, t.proto, t.source, &t.contents);
                            }
                        }
                        Ok(RtcOutput::Event(e)) => on_client_event(c, self.now, e),
                        Err(e) => panic!("client failed: {e}"),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Frames a camera writes (one packet each: `len` ≤ one MTU), as the datagrams it would
    /// send, held back from the core with the time each left. The clock advances 1 ms per
    /// frame.
    pub fn held_video(
        &mut self,
        client: ClientId,
        frames: usize,
        len: usize,
        number: &mut u32,
    ) -> Vec<HeldDatagram> {
        let mut held = Vec::with_capacity(frames);
        for _ in 0..frames {
            let frame = vp8_frame(false, 0, *number, len);
            *number += 1;
            held.extend(self.held_frame(client, &frame));
        }
        held
    }

    /// One frame a camera writes, as the datagrams it would send (one or more packets),
    /// held back from the core. The clock advances 1 ms.
    pub fn held_frame(&mut self, client: ClientId, frame: &[u8]) -> Vec<HeldDatagram> {
        let mut held = Vec::new();
        self.now += Duration::from_millis(1);
        let now = self.now;
        // The camera's own clock moves too, or its pacer holds the packet back.
        let _ = self.clients[client].rtc.handle_input(Input::Timeout(now));
        self.send_video(client, None, frame);
        let c = &mut self.clients[client];
        while let Ok(output) = c.rtc.poll_output() {
            match output {
                RtcOutput::Transmit(t) => held.push(HeldDatagram {
                    at: now,
                    source: t.source,
                    data: t.contents.to_vec(),
                }),
                RtcOutput::Timeout(t) if t <= now => {
                    let _ = c.rtc.handle_input(Input::Timeout(now));
                }
                RtcOutput::Timeout(t) => {
                    c.timeout = t;
                    break;
                }
                RtcOutput::Event(e) => on_client_event(c, now, e),
            }
        }
        held
    }

    /// Hands held datagrams to the core and keeps what it sends, undelivered: the forwarding
    /// work alone (the datagrams are moved out, not copied). Deliver them with
    /// [`Sim::deliver`] outside the timing.
    pub fn forward_only(&mut self, held: &[HeldDatagram], sent: &mut Vec<Transmit>) {
        for d in held {
            self.core.handle_timeout(d.at);
            self.core
                .handle_datagram(d.at, Protocol::Udp, d.source, &d.data);
            loop {
                match self.core.poll_output() {
                    Output::Transmit(t) => sent.push(t),
                    Output::Event(e) => self.events.push(e),
                    Output::Route(r) => self.routes.push(r),
                    // str0m hands a received frame on from its timer: due now, as a
                    // driver would see it.
                    Output::Timeout(t) if t <= d.at => self.core.handle_timeout(d.at),
                    Output::Timeout(t) => {
                        self.core_timeout = t;
                        break;
                    }
                }
            }
        }
    }

    /// Hands one held datagram to the core as a driver would (the time, then the datagram)
    /// and returns what the core puts out before it first asks for a wake-up, with that
    /// wake-up time: no timer is run for it.
    pub fn forward_one_round(&mut self, held: &HeldDatagram) -> (Vec<Transmit>, Instant) {
        self.core.handle_timeout(held.at);
        self.core
            .handle_datagram(held.at, Protocol::Udp, held.source, &held.data);
        let mut sent = Vec::new();
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) => sent.push(t),
                Output::Event(e) => self.events.push(e),
                Output::Route(r) => self.routes.push(r),
                Output::Timeout(t) => return (sent, t),
            }
        }
    }

    /// Delivers what [`Sim::forward_only`] kept to its clients, so they see no loss (a
    /// viewer that misses packets asks for a keyframe and is paused until one comes).
    pub fn deliver(&mut self, sent: &mut Vec<Transmit>) {
        let by_addr: std::collections::HashMap<SocketAddr, usize> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.addr, i))
            .collect();
        for t in sent.drain(..) {
            let Some(&i) = by_addr.get(&t.destination) else {
                continue;
            };
            let c = &mut self.clients[i];
            if !c.link_up || !c.rtc.is_alive() {
                continue;
            }
            receive(c, self.now, &t);
        }
    }

    pub fn events_left(&self) -> Vec<&MediaEvent> {
        self.events
            .iter()
            .filter(|e| matches!(e, MediaEvent::PublisherLeft { .. }))
            .collect()
    }
}

fn on_client_event(c: &mut Client, now: Instant, event: Event) {
    match event {
        Event::Connected => c.connected = true,
        Event::MediaData(data) => {
            let kind = c
                .media
                .iter()
                .find(|(m, _)| *m == data.mid)
                .map(|(_, k)| *k)
                .expect("known mid");
            c.frames.push(Frame {
                kind,
                keyframe: data.is_keyframe(),
                data: data.data,
            });
        }
        Event::KeyframeRequest(req) => c.keyframe_requests.push((now, req.rid)),
        _ => {}
    }
}

/// The header of an RTP packet (not RTCP, DTLS or STUN).
fn rtp_header(packet: &[u8]) -> Option<RtpSeen> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let pt = packet[1] & 0x7f;
    // RTCP packet types 192..=223 show as 64..=95 once the marker bit is masked (RFC 5761).
    if (64..=95).contains(&pt) {
        return None;
    }
    Some(RtpSeen {
        pt,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    })
}

/// A VP8 frame as the depacketizer sees it: the first byte's P bit (bit 0) is clear on a
/// keyframe. The rest names the layer and the frame number and pads to `len`.
/// Each simulated participant is held by a device named like it, in one account.
/// A datagram from the core reaches a client.
fn receive(c: &mut Client, now: Instant, t: &Transmit) {
    let input = Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: t.source,
            destination: t.destination,
            contents: (&t.contents[..]).try_into().expect("datagram"),
        },
    );
    let _ = c.rtc.handle_input(input);
}

pub fn owned_by(id: &str) -> crate::sfu::Owner {
    crate::sfu::Owner {
        account: Some("household".into()),
        device: Some(id.into()),
    }
}

pub fn vp8_frame(keyframe: bool, layer: u8, number: u32, len: usize) -> Vec<u8> {
    let mut frame = vec![if keyframe { 0x10 } else { 0x11 }, layer];
    frame.extend_from_slice(&number.to_be_bytes());
    let mut x = number.wrapping_mul(2_654_435_761) ^ u32::from(layer);
    while frame.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        frame.push(x as u8);
    }
    frame
}

/// The layer byte and frame number of a frame made by [`vp8_frame`].
pub fn frame_id(data: &[u8]) -> (u8, u32) {
    (
        data[1],
        u32::from_be_bytes([data[2], data[3], data[4], data[5]]),
    )
}
