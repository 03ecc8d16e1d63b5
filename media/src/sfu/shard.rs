//! One media loop: the tokio driver around a [`Core`]. It owns the clock and the I/O and
//! nothing else: datagrams and commands go in with the time they arrived, and the core's
//! outputs come out as socket sends, events, ufrag routes and the next wake-up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::net::{Protocol, Transmit};
use tokio::sync::{broadcast, mpsc};

use super::batch;
use super::core::{Core, Output, RouteUpdate};
use super::hold::Hold;
use super::net::{Datagram, Net, UfragOwners};
use super::{Command, MediaCounters, MediaEvent};

/// Datagrams waiting in the inbound queue that one round takes in before its outputs go
/// out: a camera's packets that arrived together leave together, so each viewer gets them
/// as one run ([`batch`] sends a run as one GSO message) and the loop wakes once for them.
/// The datagram that woke the loop goes alone first unless it may wait ([`Hold`]). Small,
/// because each viewer holds a copy of a round's packets until its turn to send comes.
const ROUND_INPUTS: usize = 8;

/// Outgoing datagrams gathered before a flush mid-round: one `sendmmsg`'s worth. The core
/// gives each viewer's datagrams together, so only a run at the edge is cut in two.
pub(crate) const FLUSH_AT: usize = batch::MAX_BATCH;

/// Control datagrams (ICE checks, DTLS handshakes) taken ahead of each media round. A busy
/// room's media queue holds milliseconds of fan-out, and a joining viewer's handshake needs
/// several round trips: behind the queue each would wait its turn. Bounded, so a peer
/// sending a flood of non-media datagrams cannot starve the room's media.
const CONTROL_PER_ROUND: usize = 8;

pub(crate) struct Shard {
    pub index: usize,
    pub core: Core,
    pub net: Arc<Net>,
    pub owners: UfragOwners,
    pub counters: Arc<MediaCounters>,
    pub events: broadcast::Sender<MediaEvent>,
    pub commands: mpsc::Receiver<Command>,
    /// RTP and RTCP from the router.
    pub inbound: mpsc::Receiver<Datagram>,
    /// STUN, DTLS and the rest: served before queued media (see [`CONTROL_PER_ROUND`]).
    pub control: mpsc::Receiver<Datagram>,
    /// UDP datagrams of the current round, sent together ([`batch`]).
    pub outgoing: Vec<Transmit>,
    /// Whether the outputs of what came in may wait for what is behind it.
    pub hold: Hold,
}

impl Shard {
    pub async fn run(mut self) {
        loop {
            let deadline = match self.hold.may_wait(Instant::now()) {
                // Timers wait with the outputs, by a millisecond at most.
                Some(until) => until,
                None => self.execute_outputs(),
            };
            tokio::select! {
                cmd = self.commands.recv() => {
                    // Every handle gone counts as a shutdown too.
                    let cmd = cmd.unwrap_or(Command::Shutdown);
                    if self.command(cmd) {
                        // The goodbyes (RTCP BYE, DTLS close_notify) and PublisherLeft
                        // events go out before the loop ends.
                        self.execute_outputs();
                        return;
                    }
                }
                // Control traffic goes out when the loop next flushes (at once, unless a
                // frame's wait is under way, which it joins: see `hold`).
                Some(datagram) = self.control.recv() => {
                    self.datagram(datagram);
                    self.take_control(CONTROL_PER_ROUND - 1);
                }
                Some(datagram) = self.inbound.recv() => {
                    // Control first, its answers before this round's fan-out.
                    if self.take_control(CONTROL_PER_ROUND)
                        && self.hold.may_wait(Instant::now()).is_none()
                    {
                        self.core.handle_timeout(Instant::now());
                        self.execute_outputs();
                    }
                    // What must go (a frame's start or end, audio, anything not RTP) goes
                    // out at once, so a frame's start is never held back; what queued behind
                    // it goes out as one round. A packet inside a frame waits for the rest.
                    if !self.datagram(datagram) {
                        self.core.handle_timeout(Instant::now());
                        self.execute_outputs();
                    }
                    // The round closes at the first datagram that must go: a frame's start
                    // taken behind other traffic would otherwise wait for the whole round's
                    // fan-out (8 packets to every viewer), the benchmark's p99 at 100 viewers.
                    for _ in 0..ROUND_INPUTS {
                        let Ok(datagram) = self.inbound.try_recv() else { break };
                        if !self.datagram(datagram) {
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.core.handle_timeout(Instant::now());
        }
    }

    /// Takes a datagram in; true while the round's outputs may wait for what is behind it.
    fn datagram(&mut self, datagram: Datagram) -> bool {
        let now = Instant::now();
        self.core
            .handle_datagram(now, datagram.proto, datagram.source, &datagram.data);
        self.hold.take(now, &datagram.data);
        self.hold.may_wait(now).is_some()
    }

    /// Takes up to `max` control datagrams that are waiting; true if there were any.
    fn take_control(&mut self, max: usize) -> bool {
        let mut taken = false;
        for _ in 0..max {
            let Ok(datagram) = self.control.try_recv() else {
                break;
            };
            self.datagram(datagram);
            taken = true;
        }
        taken
    }

    /// Runs one command; true when it stops the loop.
    fn command(&mut self, cmd: Command) -> bool {
        let now = Instant::now();
        match cmd {
            Command::Join {
                room,
                participant,
                owner,
                publisher,
                offer,
                reply,
            } => {
                let answer = self
                    .core
                    .join(now, &room, &participant, owner, publisher, &offer);
                // The new ufrag's route is in place before the answer can reach the client,
                // so its first ICE check is never dropped by the router.
                self.execute_outputs();
                let _ = reply.send(answer);
            }
            Command::Leave { room, participant } => self.core.leave(now, &room, &participant),
            Command::CloseRoom { room } => self.core.close_room(now, &room),
            Command::CloseDevice { device, room } => {
                self.core.close_device(now, &device, room.as_deref())
            }
            Command::Describe { room, reply } => {
                let _ = reply.send(self.core.describe(&room));
            }
            Command::AttachRecorder { room, tap, reply } => {
                let _ = reply.send(self.core.attach_recorder(now, &room, tap));
            }
            Command::DetachRecorder { room } => self.core.detach_recorder(&room),
            Command::Shutdown => {
                self.core.shutdown(now);
                return true;
            }
        }
        false
    }

    /// Does what the core asks until it only has a wake-up time left, and returns that.
    fn execute_outputs(&mut self) -> Instant {
        self.hold.flushed();
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) if t.proto == Protocol::Udp => {
                    self.outgoing.push(t);
                    if self.outgoing.len() >= FLUSH_AT {
                        self.send_outgoing();
                    }
                }
                // ICE-TCP (RFC 6544 framing); str0m emits no other transport here.
                Output::Transmit(t) => {
                    if t.proto == Protocol::Tcp && self.net.send_tcp(t.destination, &t.contents) {
                        self.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                        self.counters.send_messages.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .bytes_out
                            .fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                    }
                }
                Output::Event(event) => {
                    let _ = self.events.send(event);
                }
                Output::Route(update) => {
                    // Joins and leaves only: the lock is off the media path.
                    let mut owners = self.owners.write().unwrap_or_else(|p| p.into_inner());
                    match update {
                        RouteUpdate::Claim(ufrag) => {
                            owners.insert(ufrag, self.index);
                        }
                        RouteUpdate::Release(ufrag) => {
                            owners.remove(&ufrag);
                        }
                    }
                }
                Output::Timeout(at) => {
                    self.send_outgoing();
                    return at;
                }
            }
        }
    }

    fn send_outgoing(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let sent = batch::flush(&self.net.udp, &mut self.outgoing);
        self.counters
            .packets_out
            .fetch_add(sent.packets, Ordering::Relaxed);
        self.counters
            .bytes_out
            .fetch_add(sent.bytes, Ordering::Relaxed);
        self.counters
            .send_messages
            .fetch_add(sent.messages, Ordering::Relaxed);
    }
}
