use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::time::Timestamp;

/// Prefix of device tokens; such bearer tokens are never user sessions.
pub const DEVICE_TOKEN_PREFIX: &str = "wpd_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Camera,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Camera => "camera",
            Role::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "camera" => Some(Role::Camera),
            "client" => Some(Role::Client),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// `camera` or `client`.
    pub role: String,
    pub platform: Option<String>,
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `active` or `disabled` (a disabled device's token no longer works).
    pub status: String,
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
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    pub fn is_camera(&self) -> bool {
        self.role() == Some(Role::Camera)
    }

    pub fn is_client(&self) -> bool {
        self.role() == Some(Role::Client)
    }
}
