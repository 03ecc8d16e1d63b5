//! Headers for the standalone HTML pages (`/sim`, `/watch/{id}`, `/admin`). They run inline
//! scripts, so their policy cannot hold scripts to this origin as the web app's does; it
//! still keeps them out of other sites' frames (a framed admin page is one click from a
//! delete), out of `Referer` headers (the watch page's URL carried tokens) and from
//! plugins and a foreign `<base>`.

use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};

const POLICY: &str = "frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// An HTML page's headers; `cache` is its `Cache-Control`.
pub fn standalone_headers(cache: &'static str) -> [(HeaderName, HeaderValue); 6] {
    [
        (
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (CACHE_CONTROL, HeaderValue::from_static(cache)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}
