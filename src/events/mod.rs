//! Motion events: a camera starts and ends them; linked clients hear about both at once.

pub mod model;
pub mod routes;
pub mod service;
