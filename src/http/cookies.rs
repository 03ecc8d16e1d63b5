//! Better Auth's cookie names and formats.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::crypto;

/// Characters `encodeURIComponent` leaves alone; everything else is escaped.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

pub const SESSION_TOKEN: &str = "better-auth.session_token";
pub const SESSION_DATA: &str = "better-auth.session_data";
pub const DONT_REMEMBER: &str = "better-auth.dont_remember";
pub const SECURE_PREFIX: &str = "__Secure-";

#[derive(Clone)]
pub struct CookieSettings {
    /// Set when the public base URL is https.
    pub secure: bool,
}

impl CookieSettings {
    pub fn name(&self, base: &str) -> String {
        if self.secure {
            format!("{SECURE_PREFIX}{base}")
        } else {
            base.to_string()
        }
    }

    fn attributes(&self) -> &'static str {
        if self.secure {
            "Path=/; HttpOnly; Secure; SameSite=Lax"
        } else {
            "Path=/; HttpOnly; SameSite=Lax"
        }
    }

    /// `Set-Cookie` value for a session; `max_age` is `None` for a browser-session cookie.
    pub fn session_cookie(&self, secret: &[u8], token: &str, max_age: Option<i64>) -> String {
        let value =
            utf8_percent_encode(&crypto::signed_token(secret, token), URI_COMPONENT).to_string();
        let name = self.name(SESSION_TOKEN);
        match max_age {
            Some(age) => format!("{name}={value}; Max-Age={age}; {}", self.attributes()),
            None => format!("{name}={value}; {}", self.attributes()),
        }
    }

    pub fn dont_remember_cookie(&self, secret: &[u8]) -> String {
        let value =
            utf8_percent_encode(&crypto::signed_token(secret, "true"), URI_COMPONENT).to_string();
        format!(
            "{}={value}; {}",
            self.name(DONT_REMEMBER),
            self.attributes()
        )
    }

    /// The cookies a sign-out clears.
    pub fn expired_cookies(&self) -> Vec<String> {
        [SESSION_TOKEN, SESSION_DATA, DONT_REMEMBER]
            .iter()
            .map(|base| format!("{}=; Max-Age=0; {}", self.name(base), self.attributes()))
            .collect()
    }
}

/// The raw (still URL-encoded) value of a cookie in the request, if present.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session token from the signed session cookie, if its signature holds. Only the name
/// matching the deployment is read: with an https base URL an unprefixed cookie (which a
/// network attacker or sibling subdomain could plant) is ignored.
pub fn session_token_from_cookie(
    headers: &HeaderMap,
    secret: &[u8],
    secure: bool,
) -> Option<String> {
    let name = if secure {
        format!("{SECURE_PREFIX}{SESSION_TOKEN}")
    } else {
        SESSION_TOKEN.to_string()
    };
    let raw = read_cookie(headers, &name)?;
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    crypto::verify_signed(secret, &decoded)
}

pub fn has_signed_flag(headers: &HeaderMap, secret: &[u8], base: &str, secure: bool) -> bool {
    let name = if secure {
        format!("{SECURE_PREFIX}{base}")
    } else {
        base.to_string()
    };
    read_cookie(headers, &name)
        .into_iter()
        .filter_map(|raw| percent_decode_str(raw).decode_utf8().ok())
        .any(|v| crypto::verify_signed(secret, &v).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any bytes in `Cookie` headers: no panic, and no session unless it was signed.
        #[test]
        fn arbitrary_cookie_headers_never_yield_an_unsigned_session(
            values in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..4)
        ) {
            let mut headers = HeaderMap::new();
            for v in values {
                if let Ok(value) = axum::http::HeaderValue::from_bytes(&v) {
                    headers.append(COOKIE, value);
                }
            }
            for secure in [false, true] {
                proptest::prop_assert_eq!(session_token_from_cookie(&headers, b"secret", secure), None);
                proptest::prop_assert!(!has_signed_flag(&headers, b"secret", "flag", secure));
            }
        }
    }
    use axum::http::HeaderValue;

    #[test]
    fn session_cookie_round_trip() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let settings = CookieSettings { secure: false };
        let set = settings.session_cookie(secret, "tok", Some(604800));
        assert!(set.starts_with("better-auth.session_token=tok."));
        assert!(set.ends_with("; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax"));
        let value = set.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {value}")).unwrap(),
        );
        assert_eq!(
            session_token_from_cookie(&headers, secret, false).as_deref(),
            Some("tok")
        );
        assert!(
            session_token_from_cookie(&headers, b"another-secret-another-secret", false).is_none()
        );
    }

    #[test]
    fn secure_cookies_use_the_prefix() {
        let settings = CookieSettings { secure: true };
        let set = settings.session_cookie(b"k", "t", None);
        assert!(set.starts_with("__Secure-better-auth.session_token="));
        assert!(set.contains("Secure; SameSite=Lax"));
        assert!(!set.contains("Max-Age"));
    }
}
