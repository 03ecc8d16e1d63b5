//! Origin checks for state-changing requests, following Better Auth's rules.
//!
//! Credentials a browser attaches by itself (cookies; HTTP Basic inside a browser) make
//! cross-site request forgery possible, so such requests must come from this server's own origin or a trusted
//! one. Bearer-token clients (apps, devices) are not affected. Sign-in and sign-up are also
//! checked whenever the request looks like it came from a browser (`Sec-Fetch-*`, `Origin`
//! or `Referer` present), which stops login CSRF.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, ORIGIN, REFERER};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, codes};
use crate::http::extract::ClientIp;
use crate::state::{AppState, origin_of};

/// Paths authorised by their own signed URLs or tokens, meant to be called cross-origin.
const EXEMPT_PREFIXES: &[&str] = &["/storage/", "/whip/", "/whep/", "/socket.io"];

fn is_login(path: &str) -> bool {
    path == "/api/auth/sign-in/email" || path == "/api/auth/sign-up/email"
}

fn has_sec_fetch(headers: &HeaderMap) -> bool {
    ["sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

fn header(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decides whether a request must pass the origin check, and whether it passes.
pub fn check(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return Ok(());
    }
    // StreamVault's routes never refuse an origin (the reference serves any; desktop apps
    // send their own). None of them reads a cookie, except the Watch Together rooms when
    // they require an account: only those keep the check, answered in their own shape.
    let cookie_authenticated =
        path.starts_with("/api/watchtogether/") && state.watchtogether.config().require_auth;
    if crate::http::streamvault::is_streamvault_route(path) && !cookie_authenticated {
        return Ok(());
    }
    let has_cookie = headers.contains_key(COOKIE);
    let has_basic = header(headers, AUTHORIZATION)
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    let browser_like =
        has_sec_fetch(headers) || headers.contains_key(ORIGIN) || headers.contains_key(REFERER);
    // Basic credentials are only ambient inside a browser, which always identifies itself
    // with Sec-Fetch-* or Origin; scripts (curl) using Basic auth are not at risk.
    let must_check = has_cookie
        || (has_basic && browser_like)
        || (is_login(path) && browser_like)
        || (path.starts_with("/api/auth/") && has_sec_fetch(headers));
    if !must_check {
        return Ok(());
    }
    if is_login(path)
        && header(headers, "sec-fetch-site") == Some("cross-site")
        && header(headers, "sec-fetch-mode") == Some("navigate")
    {
        return Err(ApiError::forbidden(
            codes::CROSS_SITE_NAVIGATION_LOGIN_BLOCKED,
            "Cross-site navigation login blocked. This request appears to be a CSRF attack.",
        ));
    }
    let origin = match header(headers, ORIGIN) {
        Some("null") if header(headers, "sec-fetch-site") == Some("same-origin") => return Ok(()),
        Some(o) => Some(o.to_string()),
        None => header(headers, REFERER).and_then(origin_of),
    };
    match origin.as_deref() {
        None | Some("") | Some("null") => Err(ApiError::forbidden(
            codes::MISSING_OR_NULL_ORIGIN,
            "Missing or null Origin",
        )),
        Some(o) if state.auth.is_trusted_origin(o) => Ok(()),
        Some(_) => Err(ApiError::forbidden(codes::INVALID_ORIGIN, "Invalid origin")),
    }
}

pub async fn origin_check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(
        &state,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(e) if crate::http::streamvault::is_streamvault_route(request.uri().path()) => {
            ApiError::plain(e.status, e.message).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Limits sign-in and sign-up attempts per client (before the body is even parsed, so
/// malformed attempts count too).
pub async fn auth_rate_limit(
    State(state): State<AppState>,
    ip: ClientIp,
    request: Request,
    next: Next,
) -> Response {
    let (limiter, bucket, streamvault) = match (request.method(), request.uri().path()) {
        (&Method::POST, "/api/auth/sign-in/email") => {
            (&state.auth.rate_limiter, "/sign-in/email", false)
        }
        (&Method::POST, "/api/auth/sign-up/email") => {
            (&state.auth.rate_limiter, "/sign-up/email", false)
        }
        // Starting a Google sign-in stores a state: one bucket for the web and desktop ways.
        (&Method::POST, "/api/auth/sign-in/social") => {
            (&state.auth.oauth_starts, "/oauth/start", false)
        }
        (&Method::GET | &Method::HEAD, "/auth/google" | "/auth/google/social") => {
            (&state.auth.oauth_starts, "/oauth/start", true)
        }
        _ => return next.run(request).await,
    };
    let retry = match limiter.check(ip.0, bucket) {
        Ok(()) => return next.run(request).await,
        Err(retry) => retry.0.to_string(),
    };
    let retry = retry.parse().expect("digits are a valid header value");
    if streamvault {
        return ApiError::plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Please try again later.",
        )
        .with_header(axum::http::header::RETRY_AFTER, retry)
        .into_response();
    }
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        codes::TOO_MANY_REQUESTS,
        "Too many requests. Please try again later.",
    )
    .with_header(axum::http::HeaderName::from_static("x-retry-after"), retry)
    .into_response()
}
