use serde::Serialize;
use utoipa::ToSchema;

use crate::time::Timestamp;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamSession {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub camera_device_id: String,
    pub requester_device_id: String,
    /// `requested`, `streaming`, `ended` or `expired`.
    pub status: String,
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
        matches!(self.status.as_str(), "requested" | "streaming")
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
}
