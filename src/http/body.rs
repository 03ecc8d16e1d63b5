//! Response bodies more than one domain answers with.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct OkBody {
    pub ok: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DeleteResponse {
    /// False when the object was already gone.
    pub deleted: bool,
}
