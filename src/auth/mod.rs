//! Accounts and sessions: a drop-in for Better Auth's email/password API.

pub mod extract;
pub mod model;
pub mod password;
pub mod routes;
pub mod service;
pub mod tokens;
