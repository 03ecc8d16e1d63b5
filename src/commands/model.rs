use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::time::Timestamp;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub source_device_id: String,
    pub target_device_id: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub command_type: String,
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `queued`, `dispatched`, `acknowledged`, `rejected` or `expired`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub expires_at: Timestamp,
}

impl Command {
    pub fn is_final(&self) -> bool {
        matches!(
            self.status.as_str(),
            "acknowledged" | "rejected" | "expired"
        )
    }
}
