//! Media tokens: compact signed claims that let one device (or a viewer page) publish to,
//! subscribe to, or play back one stream session until they expire.
//!
//! Format: `wpm_<base64url(claims JSON)>.<base64url(HMAC-SHA256)>`. The key is derived
//! from the server secret for this purpose only, so no other signature can be replayed as
//! a media token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "wpm_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaRole {
    Publish,
    Subscribe,
    Playback,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stream session id.
    pub sid: String,
    pub role: MediaRole,
    /// The device the token was issued to (none for playback tokens given to a user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// That device's pairing when the token was issued (`devices::service::pairing`): a
    /// device disabled since, even if enabled again, no longer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed media token")]
    Malformed,
    #[error("media token signature does not match")]
    BadSignature,
    #[error("media token has expired")]
    Expired,
    #[error("media token is for another stream session")]
    WrongSession,
    #[error("media token does not allow this")]
    WrongRole,
}

fn key(secret: &[u8]) -> Hmac<Sha256> {
    let mut derive = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    derive.update(b"watchpost-media-token-v1");
    Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes()).expect("any key length")
}

pub fn issue(secret: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let mut mac = key(secret);
    mac.update(PREFIX.as_bytes());
    mac.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{PREFIX}{body}.{sig}")
}

/// Verifies signature and expiry (at `now`, Unix seconds) and returns the claims.
pub fn decode(secret: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let claims = decode_signed(secret, token)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Verifies the signature only and returns the claims, expired or not.
fn decode_signed(secret: &[u8], token: &str) -> Result<Claims, TokenError> {
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (body, sig) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = key(secret);
    mac.update(PREFIX.as_bytes());
    mac.update(body.as_bytes());
    let expected = mac.finalize().into_bytes();
    if !bool::from(expected.as_slice().ct_eq(&sig)) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// Full check for a media endpoint: valid, unexpired, for `session_id`, with one of `roles`.
pub fn verify(
    secret: &[u8],
    token: &str,
    session_id: &str,
    roles: &[MediaRole],
    now: i64,
) -> Result<Claims, TokenError> {
    check_scope(decode(secret, token, now)?, session_id, roles)
}

/// [`verify`] without the expiry, for hanging up a live transport: a WHIP/WHEP client
/// ends its resource with the token it opened it with (RFC 9725), and a camera that has
/// streamed past its token's lifetime must still be able to stop. Ending media grants
/// nothing, and the resource id is known only to the client that created it.
pub fn verify_to_hang_up(
    secret: &[u8],
    token: &str,
    session_id: &str,
    roles: &[MediaRole],
) -> Result<Claims, TokenError> {
    check_scope(decode_signed(secret, token)?, session_id, roles)
}

fn check_scope(
    claims: Claims,
    session_id: &str,
    roles: &[MediaRole],
) -> Result<Claims, TokenError> {
    if claims.sid != session_id {
        return Err(TokenError::WrongSession);
    }
    if !roles.contains(&claims.role) {
        return Err(TokenError::WrongRole);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any string presented as a media token is refused with a reason, never a panic;
        /// a real token with any byte changed is refused too.
        #[test]
        fn arbitrary_and_tampered_media_tokens_are_refused(
            junk in proptest::prelude::any::<String>(),
            at in proptest::prelude::any::<usize>(),
            byte in b'!'..=b'~',
        ) {
            let secret = b"media-secret";
            proptest::prop_assert!(decode(secret, &junk, 0).is_err());
            let prefixed = format!("{PREFIX}{junk}");
            proptest::prop_assert!(decode(secret, &prefixed, 0).is_err());
            let claims = Claims { sid: "s1".into(), role: MediaRole::Subscribe, dev: None, pair: None, exp: 2_000_000_000 };
            let token = issue(secret, &claims);
            let mut bytes = token.clone().into_bytes();
            let i = at % bytes.len();
            if bytes[i] != byte {
                bytes[i] = byte;
                let tampered = String::from_utf8(bytes).unwrap();
                proptest::prop_assert!(decode(secret, &tampered, 0).is_err(), "{} accepted", tampered);
            }
            proptest::prop_assert!(decode(secret, &token, 0).is_ok());
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(role: MediaRole, exp: i64) -> Claims {
        Claims {
            sid: "s1".into(),
            role,
            dev: Some("d1".into()),
            pair: Some("p1".into()),
            exp,
        }
    }

    #[test]
    fn an_expired_token_still_hangs_up_within_its_scope_only() {
        let t = issue(SECRET, &claims(MediaRole::Publish, 1_000));
        assert_eq!(
            verify(SECRET, &t, "s1", &[MediaRole::Publish], 5_000),
            Err(TokenError::Expired)
        );
        assert!(verify_to_hang_up(SECRET, &t, "s1", &[MediaRole::Publish]).is_ok());
        assert_eq!(
            verify_to_hang_up(SECRET, &t, "s2", &[MediaRole::Publish]),
            Err(TokenError::WrongSession)
        );
        assert_eq!(
            verify_to_hang_up(SECRET, &t, "s1", &[MediaRole::Subscribe]),
            Err(TokenError::WrongRole)
        );
        let forged = issue(b"another secret", &claims(MediaRole::Publish, 1_000));
        assert_eq!(
            verify_to_hang_up(SECRET, &forged, "s1", &[MediaRole::Publish]),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn issued_tokens_verify_for_their_scope_only() {
        let t = issue(SECRET, &claims(MediaRole::Publish, 2_000));
        assert!(t.starts_with(PREFIX));
        assert_eq!(
            verify(SECRET, &t, "s1", &[MediaRole::Publish], 1_000)
                .unwrap()
                .dev
                .as_deref(),
            Some("d1")
        );
        assert_eq!(
            verify(SECRET, &t, "s2", &[MediaRole::Publish], 1_000),
            Err(TokenError::WrongSession)
        );
        assert_eq!(
            verify(
                SECRET,
                &t,
                "s1",
                &[MediaRole::Subscribe, MediaRole::Playback],
                1_000
            ),
            Err(TokenError::WrongRole)
        );
        assert_eq!(
            verify(SECRET, &t, "s1", &[MediaRole::Publish], 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(
                b"another-secret-another-secret!!",
                &t,
                "s1",
                &[MediaRole::Publish],
                1_000
            ),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_claims_fail() {
        let t = issue(SECRET, &claims(MediaRole::Subscribe, 2_000));
        let (body, sig) = t.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        json["role"] = "publish".into();
        let forged = format!("{PREFIX}{}.{sig}", URL_SAFE_NO_PAD.encode(json.to_string()));
        assert_eq!(
            decode(SECRET, &forged, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            decode(SECRET, "wpm_garbage", 1_000),
            Err(TokenError::Malformed)
        );
        assert_eq!(decode(SECRET, "nope", 1_000), Err(TokenError::Malformed));
    }
}
