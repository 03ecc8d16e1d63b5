//! Camera–client links: which client devices may command and watch which cameras.

pub mod model;
pub mod routes;
pub mod service;
