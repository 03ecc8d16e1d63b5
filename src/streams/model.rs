use serde::Serialize;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

crate::text_enum! {
    /// `requested` → `streaming` → `ended`; a request nobody accepts becomes `expired`.
    pub enum StreamStatus {
        Requested = "requested",
        Streaming = "streaming",
        Ended = "ended",
        Expired = "expired",
    }
}

crate::text_enum! {
    /// Why a stream session exists.
    pub enum SessionReason {
        View = "view",
        Recording = "recording",
    }
}

/// The `stream_sessions` columns a [`StreamSession`] is read from, written once for every
/// query.
macro_rules! stream_session_columns {
    () => {
        "id, user_id, camera_device_id, requester_device_id, requested_by_user_id, reason, status, end_reason, created_at, updated_at, started_at, ended_at"
    };
}
pub(crate) use stream_session_columns;

/// Which side of a stream a media transport is on. On the wire a transport id is
/// `<prefix>-<uuid>` (`pub-…` for the camera, `sub-…` for a viewer); only this type writes
/// or reads that prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantKind {
    Publisher,
    Subscriber,
}

impl ParticipantKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ParticipantKind::Publisher => "pub",
            ParticipantKind::Subscriber => "sub",
        }
    }

    /// A fresh transport id of this kind.
    pub fn new_id(self) -> String {
        format!("{}-{}", self.prefix(), uuid::Uuid::new_v4())
    }

    /// The kind a transport id was issued as, if it is one of ours.
    pub fn of(id: &str) -> Option<ParticipantKind> {
        match id.split_once('-')?.0 {
            "pub" => Some(ParticipantKind::Publisher),
            "sub" => Some(ParticipantKind::Subscriber),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSession {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub camera_device_id: String,
    /// The client device that asked; null when the server opened the session itself.
    pub requester_device_id: Option<String>,
    /// The user who asked, when it was not a device (the owner, for a server-opened one).
    pub requested_by_user_id: Option<String>,
    /// `view` (someone asked to watch) or `recording` (the server records motion).
    #[schema(value_type = String)]
    pub reason: SessionReason,
    /// `requested`, `streaming`, `ended` or `expired`.
    #[schema(value_type = String)]
    pub status: StreamStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub ended_at: Option<Timestamp>,
}

impl StreamSession {
    pub fn is_active(&self) -> bool {
        matches!(
            self.status,
            StreamStatus::Requested | StreamStatus::Streaming
        )
    }
}

impl Keyed for StreamSession {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaCredentials {
    /// `single_server_sfu` or `legacy`.
    pub mode: String,
    pub provider: String,
    /// `publish` or `subscribe`.
    pub role: String,
    pub stream_session_id: String,
    pub token: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: Timestamp,
    pub ice_servers: Vec<IceServer>,
    /// Publish credentials: the absolute WHIP endpoint to `POST` the SDP offer to, with
    /// `token` as `Authorization: Bearer`. Absent when the server does not route media.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whip_url: Option<String>,
    /// Subscribe credentials: the absolute WHEP endpoint, used the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whep_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_ids_carry_their_kind() {
        for kind in [ParticipantKind::Publisher, ParticipantKind::Subscriber] {
            let id = kind.new_id();
            assert_eq!(ParticipantKind::of(&id), Some(kind));
        }
        assert!(ParticipantKind::Publisher.new_id().starts_with("pub-"));
        assert!(ParticipantKind::Subscriber.new_id().starts_with("sub-"));
        assert_eq!(ParticipantKind::of("pubx-1"), None);
        assert_eq!(ParticipantKind::of("pub"), None);
    }

    #[test]
    fn statuses_keep_their_stored_strings() {
        for status in StreamStatus::ALL {
            assert_eq!(StreamStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(StreamStatus::Streaming.as_str(), "streaming");
        assert_eq!(
            serde_json::to_value(StreamStatus::Expired).unwrap(),
            serde_json::json!("expired")
        );
        assert_eq!(StreamStatus::parse("Streaming"), None);
    }
}
