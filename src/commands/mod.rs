//! Commands from client devices to cameras, delivered over Socket.IO.
//!
//! Lifecycle: `queued` → `dispatched` (sent to the camera as `command:received`) →
//! `acknowledged` | `rejected` | `expired`. Delivery is at-least-once: a camera that
//! (re)connects receives every unexpired command it has not answered, so cameras treat
//! `command:received` idempotently by `id`.

pub mod model;
pub mod routes;
pub mod service;
