use serde::Serialize;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

crate::text_enum! {
    /// `pending` until the upload is confirmed, then `uploaded`.
    pub enum VideoStatus {
        Pending = "pending",
        Uploaded = "uploaded",
    }
}

/// The `videos` columns a [`Video`] is read from, written once for every query.
macro_rules! video_columns {
    () => {
        "id, device_id, object_key, bucket, file_name, content_type, size, status, created_at, updated_at, uploaded_at"
    };
}
pub(crate) use video_columns;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Video {
    pub id: String,
    pub device_id: String,
    pub object_key: String,
    pub bucket: String,
    pub file_name: String,
    pub content_type: Option<String>,
    pub size: Option<i64>,
    /// `pending` until the upload is confirmed, then `uploaded`.
    #[schema(value_type = String)]
    pub status: VideoStatus,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub updated_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub uploaded_at: Option<Timestamp>,
}

impl Keyed for Video {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}
