//! The media plane's HTTP face: WHIP (RFC 9725) and WHEP ingest/egress and the seed's
//! `/streams/{id}/sfu/*` signalling endpoints.

pub mod join;
pub mod routes;
pub mod trickle;

pub use routes::{router, whip_router};
