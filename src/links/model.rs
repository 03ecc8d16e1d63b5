use serde::Serialize;
use utoipa::ToSchema;

use crate::pagination::Keyed;
use crate::time::Timestamp;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub id: String,
    pub camera_device_id: String,
    pub client_device_id: String,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "crate::time::iso_millis")]
    pub created_at: Timestamp,
}

impl Keyed for Link {
    fn created_at(&self) -> Timestamp {
        self.created_at
    }

    fn id(&self) -> &str {
        &self.id
    }
}
