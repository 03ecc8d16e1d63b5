//! HTTP plumbing shared by every route: JSON extraction, origin (CSRF) checks, the auth
//! rate limit and request metrics.

pub mod csrf;
pub mod extract;
pub mod json;
pub mod metrics;
