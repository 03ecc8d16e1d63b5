//! The SFU: rooms (one per stream session) sharded across media loops, one per core, all
//! sharing one UDP socket (and ICE-TCP on the same port).
//!
//! A router task reads the socket and hands each datagram to the shard that owns its peer
//! ([`net`]). Each shard is a sans-IO [`core`] that owns its rooms' str0m peers outright
//! and forwards frames between them ([`forward`] decides what each viewer gets), run by a
//! thin tokio driver ([`shard`]) that owns the clock and the I/O. The server drives it
//! through [`Sfu`], hears about lifecycle changes through [`MediaEvent`]s and stops it with
//! [`Sfu::shutdown`].

mod batch;
mod core;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub use core::sim;
mod forward;
mod hold;
mod net;
mod packets;
mod recv;
mod shard;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::limits::{Admission, AdmissionError};

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the UDP socket binds (e.g. `0.0.0.0:8189`).
    pub bind: SocketAddr,
    /// The addresses advertised as host candidates (`MEDIA_PUBLIC_IP`, one or more).
    pub public_ips: Vec<IpAddr>,
    /// Media loops to run (`MEDIA_SHARDS`, default one per core).
    pub shards: usize,
    /// How long viewers stay connected after a publisher's transport is lost, waiting for
    /// it to reconnect (`MEDIA_RECONNECT_GRACE_MS`). A hang-up ends the stream at once.
    pub reconnect_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("invalid SDP offer: {0}")]
    BadSdp(String),
    #[error("the offer has no audio or video this server can use (Opus, VP8 or H.264)")]
    NoUsableMedia,
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("this stream has ended")]
    RoomClosed,
    #[error("the media engine is not running")]
    Stopped,
    #[error("the SDP offer is larger than {max} bytes")]
    OfferTooLarge { max: usize },
    #[error("the SDP offer has more than {max} media sections")]
    TooManyMediaLines { max: usize },
}

/// Who a transport belongs to, in the control plane's own terms; the SFU only compares
/// these strings. `account` is whose fair share the transport counts against (the
/// per-account limits); `device` lets the server close every transport a device holds the
/// moment its access is revoked ([`Sfu::close_device`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub account: Option<String>,
    pub device: Option<String>,
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
    /// Measured over the last stats interval (bits/s).
    pub bitrate_in: u64,
    pub bitrate_out: u64,
    /// A viewer's bandwidth estimate (bits/s), from TWCC feedback or its REMB.
    pub estimated_bitrate: Option<u64>,
    /// The simulcast layer (RTP stream id) a viewer receives.
    pub layer: Option<String>,
    /// How often a viewer's layer changed.
    pub layer_switches: Option<u64>,
}

/// Process-wide media counters for `/metrics`.
#[derive(Default, Debug)]
pub struct MediaCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Messages handed to the kernel for `packets_out`: a GSO run of datagrams is one.
    pub send_messages: AtomicU64,
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
    /// Sum of the viewers' current bandwidth estimates (bits/s).
    pub egress_estimate_bps: AtomicU64,
}

pub(crate) enum Command {
    Join {
        room: String,
        participant: String,
        owner: Owner,
        publisher: bool,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Leave {
        room: String,
        participant: String,
    },
    CloseRoom {
        room: String,
    },
    /// Hang up every transport this device holds (in `room`, or anywhere).
    CloseDevice {
        device: String,
        room: Option<String>,
    },
    Describe {
        room: String,
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    AttachRecorder {
        room: String,
        tap: crate::recorder::RecorderTap,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    DetachRecorder {
        room: String,
    },
    /// Close every peer and end the loop.
    Shutdown,
}

/// How long [`Sfu::shutdown`] waits for the loops to end before aborting them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// What [`Sfu::shutdown`] stops.
struct Lifecycle {
    /// Tells the router and the ICE-TCP tasks to end.
    stop: watch::Sender<bool>,
    /// Taken by the first shutdown, so a second one finds nothing to do.
    tasks: Mutex<Option<Tasks>>,
}

struct Tasks {
    shards: Vec<JoinHandle<()>>,
    /// The packet router and the ICE-TCP listener (which ends its connections' tasks).
    io: Vec<JoinHandle<()>>,
}

/// Handle to the running SFU. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    shards: Arc<[mpsc::Sender<Command>]>,
    events: broadcast::Sender<MediaEvent>,
    pub counters: Arc<MediaCounters>,
    local: SocketAddr,
    lifecycle: Arc<Lifecycle>,
}

impl Sfu {
    /// Binds the UDP socket (and ICE-TCP on the same port) and starts the media loops.
    pub(crate) async fn start(
        config: SfuConfig,
        admission: Arc<Admission>,
    ) -> std::io::Result<Sfu> {
        // Idempotent; selects the crypto backend compiled in (aws-lc-rs).
        str0m::crypto::from_feature_flags().install_process_default();
        let dtls_cert = core::dtls::identity()
            .ok_or_else(|| std::io::Error::other("cannot make the SFU's DTLS certificate"))?;
        let (socket, tcp_listener) = net::bind_udp_and_tcp(config.bind).await?;
        let port = socket.local_addr()?.port();
        let mut ips = config.public_ips.clone();
        if ips.is_empty() {
            ips.push(config.bind.ip());
        }
        let candidates: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let shard_count = config.shards.max(1);
        let owners: net::UfragOwners = Arc::new(RwLock::new(HashMap::new()));
        let (inbound_tx, inbound_rx): (Vec<_>, Vec<_>) = (0..shard_count)
            .map(|_| {
                let (media, media_rx) = mpsc::channel(4096);
                let (control, control_rx) = mpsc::channel(1024);
                (net::ShardInbox { media, control }, (media_rx, control_rx))
            })
            .unzip();
        let (stop, stop_rx) = watch::channel(false);
        let (net, tcp_ok, io) =
            net::start(socket, tcp_listener, inbound_tx, owners.clone(), stop_rx).await;
        // Large enough for every participant the limits allow to leave at once, so the
        // listener never misses a `PublisherLeft` even if it stalls for a moment.
        let (events, _) = broadcast::channel(4096);
        let counters = Arc::new(MediaCounters::default());
        let core_config = core::CoreConfig {
            candidates: candidates.clone(),
            tcp_candidate: tcp_ok.then_some(candidates[0]),
            grace: config.reconnect_grace,
            dtls_cert,
            crypto: core::dtls::crypto_provider(),
        };
        let mut shards = Vec::with_capacity(shard_count);
        let mut shard_tasks = Vec::with_capacity(shard_count);
        for (index, (inbound, control)) in inbound_rx.into_iter().enumerate() {
            let (tx, commands) = mpsc::channel(256);
            shards.push(tx);
            let shard = shard::Shard {
                index,
                core: core::Core::new(
                    Instant::now(),
                    core_config.clone(),
                    admission.clone(),
                    counters.clone(),
                ),
                net: net.clone(),
                owners: owners.clone(),
                counters: counters.clone(),
                events: events.clone(),
                commands,
                inbound,
                control,
                outgoing: Vec::with_capacity(shard::FLUSH_AT),
                hold: hold::Hold::default(),
            };
            shard_tasks.push(tokio::spawn(shard.run()));
        }
        Ok(Sfu {
            shards: shards.into(),
            events,
            counters,
            local: candidates[0],
            lifecycle: Arc::new(Lifecycle {
                stop,
                tasks: Mutex::new(Some(Tasks {
                    shards: shard_tasks,
                    io,
                })),
            }),
        })
    }

    /// Stops the SFU: every shard closes its peers (viewers and cameras get RTCP BYE and
    /// DTLS close_notify; rooms end with `PublisherLeft`), then the packet router, the
    /// ICE-TCP listener and its connections stop. Returns once all have ended, aborting
    /// whatever has not within 3 s. Later commands get [`SfuError::Stopped`]; a second
    /// call does nothing.
    pub async fn shutdown(&self) {
        let tasks = self
            .lifecycle
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(tasks) = tasks else { return };
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        // Shards first: their goodbye packets leave through sockets that are still open.
        for shard in self.shards.iter() {
            let _ = tokio::time::timeout_at(deadline, shard.send(Command::Shutdown)).await;
        }
        for task in tasks.shards {
            join_or_abort(task, deadline).await;
        }
        let _ = self.lifecycle.stop.send(true);
        for task in tasks.io {
            join_or_abort(task, deadline).await;
        }
    }

    /// The (first) advertised media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<MediaEvent> {
        self.events.subscribe()
    }

    /// The shard owning a room: a stable hash, so every command for the room meets its peers.
    fn shard(&self, room: &str) -> &mpsc::Sender<Command> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        &self.shards[(hasher.finish() % self.shards.len() as u64) as usize]
    }

    async fn join(
        &self,
        room: &str,
        participant: &str,
        owner: Owner,
        publisher: bool,
        offer: String,
    ) -> Result<String, SfuError> {
        // Bounded here, before the offer is queued for the media loop or parsed there.
        check_offer_size(&offer)?;
        let (reply, rx) = oneshot::channel();
        self.shard(room)
            .send(Command::Join {
                room: room.to_string(),
                participant: participant.to_string(),
                owner,
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
        owner: Owner,
        offer: String,
    ) -> Result<String, SfuError> {
        self.join(room, participant, owner, true, offer).await
    }

    /// Adds a viewer from an SDP offer (recvonly audio/video); returns the SDP answer.
    pub async fn subscribe(
        &self,
        room: &str,
        participant: &str,
        owner: Owner,
        offer: String,
    ) -> Result<String, SfuError> {
        self.join(room, participant, owner, false, offer).await
    }

    /// A participant hangs up. For the publisher this ends the room at once (no grace).
    pub async fn leave(&self, room: &str, participant: &str) {
        let _ = self
            .shard(room)
            .send(Command::Leave {
                room: room.to_string(),
                participant: participant.to_string(),
            })
            .await;
    }

    /// Hangs up every transport `device` holds, in `room` or (with `None`) in any room: its
    /// access was revoked. A publisher hanging up ends its room, as a WHIP `DELETE` does.
    /// Returns once every shard has taken the command.
    pub async fn close_device(&self, device: &str, room: Option<&str>) {
        let shards: Vec<&mpsc::Sender<Command>> = match room {
            Some(room) => vec![self.shard(room)],
            // Which rooms a device is in is not known here: every shard looks.
            None => self.shards.iter().collect(),
        };
        for shard in shards {
            let _ = shard
                .send(Command::CloseDevice {
                    device: device.to_string(),
                    room: room.map(str::to_string),
                })
                .await;
        }
    }

    pub async fn close_room(&self, room: &str) {
        let _ = self
            .shard(room)
            .send(Command::CloseRoom {
                room: room.to_string(),
            })
            .await;
    }

    /// Hands the room's published frames to a recorder from now on (see
    /// [`crate::recorder::start`]). The recording ends when the room does, or at
    /// [`Sfu::detach_recorder`].
    pub async fn attach_recorder(
        &self,
        room: &str,
        tap: crate::recorder::RecorderTap,
    ) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.shard(room)
            .send(Command::AttachRecorder {
                room: room.to_string(),
                tap,
                reply,
            })
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Stops recording the room; the recorder closes its last segment and finishes.
    pub async fn detach_recorder(&self, room: &str) {
        let _ = self
            .shard(room)
            .send(Command::DetachRecorder {
                room: room.to_string(),
            })
            .await;
    }

    pub async fn describe(&self, room: &str) -> Vec<ParticipantInfo> {
        let (reply, rx) = oneshot::channel();
        if self
            .shard(room)
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

/// Largest SDP offer accepted (real offers are a few KiB; str0m's parser would otherwise
/// work through whatever it is given on the media loop).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Most m-lines an offer may have: a camera sends one audio and one video (simulcast
/// layers share an m-line), so a handful leaves room and bounds the per-peer work.
pub const MAX_OFFER_MEDIA_LINES: usize = 8;

/// Refuses an offer too large to be worth parsing, before it reaches a media loop.
pub fn check_offer_size(offer: &str) -> Result<(), SfuError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(SfuError::OfferTooLarge {
            max: MAX_OFFER_BYTES,
        });
    }
    let media_lines = offer.lines().filter(|l| l.starts_with("m=")).count();
    if media_lines > MAX_OFFER_MEDIA_LINES {
        return Err(SfuError::TooManyMediaLines {
            max: MAX_OFFER_MEDIA_LINES,
        });
    }
    Ok(())
}

/// Waits for a task until `deadline`, then aborts it (and waits for the abort to land).
async fn join_or_abort(mut task: JoinHandle<()>, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_bounded_in_size_and_media_lines() {
        let line = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
        assert!(check_offer_size(&format!("v=0\r\n{}", line.repeat(8))).is_ok());
        assert!(matches!(
            check_offer_size(&format!("v=0\r\n{}", line.repeat(9))),
            Err(SfuError::TooManyMediaLines { max: 8 })
        ));
        let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_OFFER_BYTES / 5));
        assert!(matches!(
            check_offer_size(&huge),
            Err(SfuError::OfferTooLarge {
                max: MAX_OFFER_BYTES
            })
        ));
    }
}
