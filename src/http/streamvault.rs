//! The StreamVault reference's common response behaviour, for the routes its clients call:
//! case-insensitive paths with an optional trailing slash, its CORS rule, security headers on
//! every response and weak ETags with `If-None-Match`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ALLOW, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, ORIGIN, UPGRADE, VARY,
};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha1::{Digest, Sha1};

/// A weak ETag in Express's format: `W/"<length hex>-<base64 SHA-1, 27 chars>"`.
pub fn weak_etag(body: &Bytes) -> String {
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(body));
    format!("W/\"{:x}-{}\"", body.len(), &digest[..27])
}

/// True when the request's `If-None-Match` names `etag` (weak comparison) or is `*`.
pub fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == strip(etag))
}

/// Sets the ETag header; the caller answers 304 when [`not_modified`] holds.
pub fn set_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, v);
    }
}

/// The fixed route prefixes StreamVault clients call. Express matched them case-insensitively
/// and with an optional trailing slash; clients written against it may rely on both.
const ROUTES: &[&str] = &[
    "/auth/google/social",
    "/auth/google",
    "/auth/callback",
    "/auth/refresh",
    "/api/tmdb",
    "/api/watchtogether/rooms",
    WEBSOCKET_ROUTE,
    "/health",
];

const WEBSOCKET_ROUTE: &str = "/ws/watchtogether";

/// The length of the StreamVault prefix `path` starts with (ASCII case-insensitively), if any.
/// A prefix only counts at a segment boundary.
fn streamvault_prefix(path: &str) -> Option<usize> {
    ROUTES.iter().find_map(|route| {
        let head = path.get(..route.len())?;
        let boundary = matches!(path.as_bytes().get(route.len()), None | Some(b'/'));
        (head.eq_ignore_ascii_case(route) && boundary).then_some(route.len())
    })
}

/// `path` as the router expects it: the StreamVault prefix lower-cased (the rest, such as a
/// room code or a TMDB path, keeps its case) and one trailing slash dropped. `None` when the
/// path is not a StreamVault route or is already in that form.
pub fn normalize_path(path: &str) -> Option<String> {
    let len = streamvault_prefix(path)?;
    // The WebSocket upgrade is not an Express route: its path is matched exactly, and a
    // trailing slash leaves an empty last segment (no room code).
    if is_websocket(path) || path[..len].eq_ignore_ascii_case(WEBSOCKET_ROUTE) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..len].to_ascii_lowercase());
    out.push_str(&path[len..]);
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    (out != path).then_some(out)
}

/// True for the routes StreamVault clients call (after [`normalize_path`]).
pub fn is_streamvault_route(path: &str) -> bool {
    path == "/" || streamvault_prefix(path).is_some()
}

/// The Watch Together upgrade: CORS never applies to it.
fn is_websocket(path: &str) -> bool {
    path.starts_with("/ws/")
}

/// The reference's CORS rule: no `Origin`, an empty list, or an exact (case-sensitive) entry.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(origin) => allowed.is_empty() || allowed.iter().any(|a| a == origin),
    }
}

/// `CORS_ALLOWED_ORIGINS`: split on commas, semicolons and newlines, trimmed, empties dropped.
pub fn parse_origins(raw: &str) -> Vec<String> {
    raw.split([',', ';', '\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs before routing: puts StreamVault paths in the router's form and applies the
/// reference's CORS (`CORS_ALLOWED_ORIGINS`) to its routes instead of the API's credentialed
/// CORS (desktop apps send origins such as `tauri://localhost`).
pub async fn front(
    State(allowed): State<Arc<Vec<String>>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(path) = normalize_path(request.uri().path()) {
        let rebuilt = match request.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(pq) = PathAndQuery::try_from(rebuilt) {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    let path = request.uri().path();
    if !is_streamvault_route(path) {
        return next.run(request).await;
    }
    // CORS and ETags are for plain HTTP; the WebSocket upgrade only gets the headers.
    let http = !is_websocket(path);
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A disallowed origin is not rejected: served normally, just without CORS headers.
    let allowed = http && origin_allowed(&allowed, origin.as_deref());
    // Every OPTIONS from an allowed origin is a preflight (as the reference's `cors` answers
    // it); from a disallowed one it is the framework's own OPTIONS answer: 200 with `Allow`.
    let options = http && request.method() == Method::OPTIONS;
    let preflight = allowed && options;
    let automatic_options = options && !preflight;
    if automatic_options {
        // Not a preflight to the API's CORS layer either: the router answers it.
        request.headers_mut().remove(ACCESS_CONTROL_REQUEST_METHOD);
    }
    let conditional = (http && matches!(*request.method(), Method::GET | Method::HEAD))
        .then(|| request.headers().clone());
    // HEAD is answered by the GET route, body and all, so its ETag is the GET body's; hyper
    // leaves the body off the wire for a HEAD request.
    if http && request.method() == Method::HEAD {
        *request.method_mut() = Method::GET;
    }
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(asked) = request.headers().get(ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        r
    } else {
        let mut r = next.run(request).await;
        if http {
            strip_cors(r.headers_mut());
        }
        if automatic_options {
            r = allow_answer(r);
        }
        r
    };
    let h = response.headers_mut();
    if allowed {
        if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    match conditional {
        Some(request_headers) => with_etag(&request_headers, response).await,
        None => response,
    }
}

/// Express's default: a successful body gets a weak ETag; a matching `If-None-Match` turns
/// the answer into 304. Responses that set their own ETag (the TMDB proxy) are left alone.
async fn with_etag(request: &HeaderMap, response: Response) -> Response {
    if !response.status().is_success()
        || response.headers().contains_key(ETAG)
        || response.headers().contains_key(UPGRADE)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Only the small JSON answers of these routes pass here (the proxy sets its own ETag).
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let etag = weak_etag(&bytes);
    set_etag(&mut parts.headers, &etag);
    if not_modified(request, &etag) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.remove(CONTENT_TYPE);
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Drops what the API's own CORS layer added, so a StreamVault route shows one policy:
/// its allow-* headers and its `Vary` on the origin and preflight headers (a route's own
/// `Vary`, such as the root's on `Accept`, stays).
fn strip_cors(headers: &mut HeaderMap) {
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    ] {
        headers.remove(name);
    }
    let own: Vec<HeaderValue> = headers
        .get_all(VARY)
        .iter()
        .filter(|v| {
            let v = v.to_str().unwrap_or_default().to_ascii_lowercase();
            !(v.contains("origin") || v.contains("access-control-"))
        })
        .cloned()
        .collect();
    headers.remove(VARY);
    for v in own {
        headers.append(VARY, v);
    }
}

/// Express's automatic `OPTIONS` answer for a route without an `OPTIONS` handler: 200,
/// the route's methods in `Allow` and as the body. The router said which methods (its 405
/// carries `Allow`); anything else (a 404, say) stands.
fn allow_answer(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let Some(allow) = response.headers().get(ALLOW).cloned() else {
        return response;
    };
    let mut answer = (StatusCode::OK, Bytes::copy_from_slice(allow.as_bytes())).into_response();
    let h = answer.headers_mut();
    h.insert(ALLOW, allow);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_case_insensitively_at_segment_boundaries() {
        assert_eq!(normalize_path("/HEALTH"), Some("/health".into()));
        assert_eq!(normalize_path("/health/"), Some("/health".into()));
        assert_eq!(normalize_path("/health"), None);
        assert_eq!(normalize_path("/healthz"), None);
        assert_eq!(
            normalize_path("/Auth/Google/Social/"),
            Some("/auth/google/social".into())
        );
        assert_eq!(
            normalize_path("/API/TMDB/movie/550"),
            Some("/api/tmdb/movie/550".into())
        );
        assert_eq!(
            normalize_path("/api/WatchTogether/rooms/AbC123/"),
            Some("/api/watchtogether/rooms/AbC123".into())
        );
        assert_eq!(normalize_path("/devices/"), None);
        // The upgrade path is exact: no case folding, the trailing slash kept.
        assert_eq!(normalize_path("/WS/WatchTogether"), None);
        assert_eq!(normalize_path("/ws/watchtogether/abc/"), None);
    }

    #[test]
    fn cors_rule_and_list_parsing() {
        let list = parse_origins(" tauri://localhost ;http://a.example,\n\n");
        assert_eq!(list, vec!["tauri://localhost", "http://a.example"]);
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&list, Some("http://a.example")));
        assert!(!origin_allowed(&list, Some("http://A.example")));
        assert!(origin_allowed(&[], Some("http://anything")));
        assert!(is_streamvault_route("/api/TMDB/x"));
        assert!(is_streamvault_route("/ws/watchtogether/ABC"));
        assert!(is_websocket("/ws/watchtogether/ABC"));
        assert!(!is_websocket("/health"));
        assert!(!is_streamvault_route("/devices"));
    }
}
