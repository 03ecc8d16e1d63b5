use serde::Serialize;
use utoipa::ToSchema;

use crate::time::Timestamp;

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
    pub status: String,
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
