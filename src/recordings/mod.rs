//! Recordings: what the server records of cameras' live streams, where the segments are,
//! and who may see them. The recorder itself is in the media crate; this domain decides
//! what is recorded, uploads the segments and serves them back.

pub mod model;
pub mod routes;
pub mod service;
mod upload;
