//! On-demand live streams: a client requests, the camera accepts, both get media
//! credentials, either ends it.
//!
//! `requested` → `streaming` → `ended`; a request nobody accepts within the TTL becomes
//! `expired`.

pub mod media_token;
pub mod model;
pub mod routes;
pub mod service;
