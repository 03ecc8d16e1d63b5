use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

/// The `motion_events` columns a [`MotionEvent`] is read from, written once for every query.
macro_rules! motion_event_columns {
    () => {
        "id, user_id, camera_device_id, started_at, ended_at, score, metadata, created_at, updated_at"
    };
}
pub(crate) use motion_event_columns;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MotionEvent {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub camera_device_id: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub ended_at: Option<Timestamp>,
    pub score: Option<f64>,
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Recordings that overlap the event (its clip), oldest first.
    #[sqlx(skip)]
    pub recording_ids: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
}

impl Keyed for MotionEvent {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}
