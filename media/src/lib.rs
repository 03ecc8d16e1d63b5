//! Watchpost media plane.
//!
//! This crate owns everything about live media: rooms (one per stream session), their
//! participants and the admission limits. It knows nothing of HTTP or the database; the
//! server drives it through [`MediaEngine`].

mod limits;
pub mod recorder;
pub mod sfu;

pub use limits::{AdmissionError, MediaLimits, PublisherSlot, SubscriberSlot};

use std::sync::Arc;

use serde::Serialize;

/// How the server handles media for stream sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaMode {
    /// Media flows through the in-process SFU.
    SingleServerSfu,
    /// Browsers stream peer-to-peer; the server only relays signalling.
    Legacy,
}

/// Point-in-time figures for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MediaStatus {
    pub mode: MediaMode,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub max_publishers: u32,
    pub max_subscribers_per_room: u32,
}

/// The handle the server holds. Cheap to clone.
#[derive(Clone)]
pub struct MediaEngine {
    mode: MediaMode,
    limits: Arc<limits::Admission>,
    sfu: Option<sfu::Sfu>,
}

impl MediaEngine {
    /// An engine without a running SFU (legacy mode, or unit tests of the limits).
    pub fn new(mode: MediaMode, limits: MediaLimits) -> Self {
        Self {
            mode,
            limits: Arc::new(limits::Admission::new(limits)),
            sfu: None,
        }
    }

    /// Starts the SFU (binding its UDP socket) when the mode needs one.
    pub async fn start(
        mode: MediaMode,
        limits: MediaLimits,
        config: sfu::SfuConfig,
    ) -> std::io::Result<Self> {
        let admission = Arc::new(limits::Admission::new(limits));
        let sfu = match mode {
            MediaMode::SingleServerSfu => Some(sfu::Sfu::start(config, admission.clone()).await?),
            MediaMode::Legacy => None,
        };
        Ok(Self {
            mode,
            limits: admission,
            sfu,
        })
    }

    /// The SFU, when this server routes media.
    pub fn sfu(&self) -> Option<&sfu::Sfu> {
        self.sfu.as_ref()
    }

    /// Stops the media plane: closes every peer, ends the media loops, the packet router
    /// and ICE-TCP (see [`sfu::Sfu::shutdown`]). Harmless to call twice, or without an SFU.
    pub async fn shutdown(&self) {
        if let Some(sfu) = &self.sfu {
            sfu.shutdown().await;
        }
    }

    pub fn mode(&self) -> MediaMode {
        self.mode
    }

    /// Reserves a publisher slot for `room` (of `account`, if it counts against one's fair
    /// share); the slot is released when dropped.
    pub fn admit_publisher(
        &self,
        account: Option<&str>,
        room: &str,
    ) -> Result<PublisherSlot, AdmissionError> {
        limits::Admission::admit_publisher(&self.limits, room, account)
    }

    /// Reserves a subscriber slot in `room` (of `account`); released when dropped.
    pub fn admit_subscriber(
        &self,
        account: Option<&str>,
        room: &str,
    ) -> Result<SubscriberSlot, AdmissionError> {
        limits::Admission::admit_subscriber(&self.limits, room, account)
    }

    pub fn status(&self) -> MediaStatus {
        let snapshot = self.limits.snapshot();
        MediaStatus {
            mode: self.mode,
            rooms: snapshot.rooms,
            publishers: snapshot.publishers,
            subscribers: snapshot.subscribers,
            max_publishers: self.limits.limits().max_publishers,
            max_subscribers_per_room: self.limits.limits().max_subscribers_per_room,
        }
    }
}
