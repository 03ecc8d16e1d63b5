//! Watch Together for StreamVault clients: synchronized playback rooms over
//! `WS /ws/watchtogether[/<code>]`, plus their REST routes. Wire-compatible with the
//! StreamVault reference backend (docs: `README.md`, "Watch Together").
//!
//! `room` is the protocol (no I/O), `service` the registry and one actor task per room,
//! `socket` one connection, `routes` the HTTP surface.

pub mod model;
pub mod room;
pub mod routes;
pub mod service;
pub mod socket;
