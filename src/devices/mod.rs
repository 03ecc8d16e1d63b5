//! Devices (cameras and clients), their tokens, and the callers they authenticate.

pub mod extract;
pub mod model;
pub mod routes;
pub mod service;
