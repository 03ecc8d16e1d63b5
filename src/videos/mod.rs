//! Video objects: presigned uploads and downloads, namespaced per user.

pub mod model;
pub mod routes;
pub mod service;
