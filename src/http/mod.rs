//! HTTP plumbing shared by every route: JSON extraction, cookies, origin (CSRF) checks,
//! the auth rate limit, request metrics and the small response bodies several domains share.

pub mod body;
pub mod cookies;
pub mod csrf;
pub mod extract;
pub mod json;
pub mod metrics;
pub mod page;
pub mod rate_limit;
pub mod serve;
pub mod streamvault;
