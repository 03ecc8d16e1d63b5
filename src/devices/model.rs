use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

/// Prefix of device tokens; such bearer tokens are never user sessions.
pub const DEVICE_TOKEN_PREFIX: &str = "wpd_";

crate::text_enum! {
    pub enum Role {
        Camera = "camera",
        Client = "client",
    }
}

crate::text_enum! {
    /// A disabled device's token no longer works.
    pub enum DeviceStatus {
        Active = "active",
        Disabled = "disabled",
    }
}

/// The `devices` columns a [`Device`] is read from, written once for every query.
macro_rules! device_columns {
    () => {
        "id, user_id, name, role, platform, metadata, status, recording_mode, last_seen_at, last_heartbeat_at, created_at, updated_at"
    };
}
pub(crate) use device_columns;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// `camera` or `client`.
    #[schema(value_type = String)]
    pub role: Role,
    pub platform: Option<String>,
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `active` or `disabled` (a disabled device's token no longer works).
    #[schema(value_type = String)]
    pub status: DeviceStatus,
    /// A camera's recording mode (`off`, `always`, `motion`); `null` follows the server's
    /// `RECORDING_MODE`.
    #[schema(value_type = Option<String>)]
    pub recording_mode: Option<crate::config::RecordingMode>,
    /// A live Socket.IO connection or a heartbeat within the last 60 s.
    #[sqlx(skip)]
    pub online: bool,
    /// Last heartbeat, socket connect or socket disconnect.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub last_seen_at: Option<Timestamp>,
    #[serde(skip)]
    pub last_heartbeat_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
}

impl Device {
    pub fn is_camera(&self) -> bool {
        self.role == Role::Camera
    }

    pub fn is_client(&self) -> bool {
        self.role == Role::Client
    }
}

impl Keyed for Device {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}
