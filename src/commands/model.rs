use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

crate::text_enum! {
    /// `queued` → `dispatched` → `acknowledged` | `rejected` | `expired`.
    pub enum CommandStatus {
        Queued = "queued",
        Dispatched = "dispatched",
        Acknowledged = "acknowledged",
        Rejected = "rejected",
        Expired = "expired",
    }
}

impl CommandStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Acknowledged | CommandStatus::Rejected | CommandStatus::Expired
        )
    }
}

/// The `commands` columns a [`Command`] is read from, written once for every query.
macro_rules! command_columns {
    () => {
        "id, user_id, source_device_id, target_device_id, type, payload, status, reason, created_at, updated_at, expires_at"
    };
}
pub(crate) use command_columns;

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
    /// What the command was created with; `null` when it was sent without one.
    #[sqlx(json)]
    #[schema(value_type = Option<Object>)]
    pub payload: Value,
    /// `queued`, `dispatched`, `acknowledged`, `rejected` or `expired`.
    #[schema(value_type = String)]
    pub status: CommandStatus,
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
        self.status.is_final()
    }
}

impl Keyed for Command {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}
