//! Command-line maintenance tasks.

pub mod auth_migrate;
