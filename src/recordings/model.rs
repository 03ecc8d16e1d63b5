use serde::Serialize;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

crate::text_enum! {
    pub enum RecordingStatus {
        Recording = "recording",
        Complete = "complete",
        Failed = "failed",
    }
}

crate::text_enum! {
    /// Why the recording was made: the camera records every live stream, or motion.
    pub enum RecordingReason {
        Always = "always",
        Motion = "motion",
    }
}

macro_rules! recording_columns {
    () => {
        "id, user_id, camera_device_id, stream_session_id, status, reason, started_at, ended_at, duration_ms, size_bytes, video_codec, audio_codec, error, created_at, updated_at"
    };
}
pub(crate) use recording_columns;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub camera_device_id: String,
    pub stream_session_id: Option<String>,
    /// `recording`, `complete` or `failed`.
    #[schema(value_type = String)]
    pub status: RecordingStatus,
    /// `always` or `motion`.
    #[schema(value_type = String)]
    pub reason: RecordingReason,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub ended_at: Option<Timestamp>,
    /// Sum of the segments' durations.
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// `vp8` or `h264`.
    pub video_codec: Option<String>,
    /// `opus`, or null for a camera without audio.
    pub audio_codec: Option<String>,
    /// Why a `failed` recording stopped.
    pub error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
}

impl Keyed for Recording {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    #[serde(skip)]
    pub recording_id: String,
    pub seq: i64,
    pub object_key: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// `video/webm` or `video/mp4`.
    pub content_type: String,
    /// Null while the segment waits on the server's disk for the object store.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub uploaded_at: Option<Timestamp>,
}

/// `GET /recordings/{id}`: the recording, its segments in order, and the motion events
/// that overlap it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingDetail {
    #[serde(flatten)]
    pub recording: Recording,
    pub segments: Vec<Segment>,
    pub motion_event_ids: Vec<String>,
}
