//! Calls this server makes to third-party services (the OAuth provider, TMDB), and the
//! state that talking to them needs (TMDB's credential pool and response cache). Every
//! client here has timeouts; credentials are never put in an error or a log line.

pub mod oauth;
pub mod tmdb;

use std::time::Duration;

/// A client whose every request (connect, send, body) ends within `timeout`.
pub fn client(timeout: Duration, follow_redirects: bool) -> reqwest::Client {
    let policy = if follow_redirects {
        reqwest::redirect::Policy::limited(5)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(policy)
        .user_agent(concat!("watchpost/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with static settings always builds")
}

/// Describes a failed call without its URL (which may carry an `api_key`).
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        "request timed out".to_string()
    } else if error.is_connect() {
        "connection failed".to_string()
    } else if error.is_decode() || error.is_body() {
        "invalid response body".to_string()
    } else {
        error.to_string()
    }
}
