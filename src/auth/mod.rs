//! Accounts and sessions: a drop-in for Better Auth's email/password API.

pub mod cookies;
pub mod extract;
pub mod model;
pub mod password;
pub mod rate_limit;
pub mod routes;
pub mod service;
pub mod tokens;

pub use extract::{ClientIp, CurrentUser, MaybeUser};

use cookies::CookieSettings;
use rate_limit::RateLimiter;

/// Everything request handling needs to know about authentication.
pub struct AuthSettings {
    pub secret: Vec<u8>,
    /// Public origin of this server, e.g. `https://cams.example.net`.
    pub base_url: String,
    /// The base URL's origin plus `BETTER_AUTH_TRUSTED_ORIGINS`.
    pub trusted_origins: Vec<String>,
    pub cookies: CookieSettings,
    pub rate_limiter: RateLimiter,
}

impl AuthSettings {
    /// `scheme://host[:port]` of an absolute URL.
    pub fn origin_of(&self, url: &str) -> Option<String> {
        origin_of(url)
    }

    pub fn is_trusted_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.trusted_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}
