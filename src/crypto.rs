//! Byte encodings and HMAC signatures shared by sessions, device tokens and storage URLs.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Lowercase hex, without a per-byte allocation.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Padded standard base64 of HMAC-SHA256(secret, value).
pub fn sign(secret: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(value.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `<token>.<signature>` (Better Auth's signed-token format).
pub fn signed_token(secret: &[u8], token: &str) -> String {
    format!("{token}.{}", sign(secret, token))
}

/// Splits `<token>.<signature>` and returns the token if the signature is valid.
pub fn verify_signed(secret: &[u8], signed: &str) -> Option<String> {
    let (token, signature) = signed.rsplit_once('.')?;
    if token.is_empty() {
        return None;
    }
    let expected = sign(secret, token);
    let ok: bool = expected.as_bytes().ct_eq(signature.as_bytes()).into();
    ok.then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a client sends as `<token>.<signature>`, only what this server signed
        /// verifies, and nothing panics.
        #[test]
        fn only_what_was_signed_verifies(token in "[A-Za-z0-9]{1,40}", junk in proptest::prelude::any::<String>()) {
            let secret = b"property-secret";
            proptest::prop_assert_eq!(verify_signed(secret, &signed_token(secret, &token)), Some(token.clone()));
            proptest::prop_assert_eq!(verify_signed(b"another-secret", &signed_token(secret, &token)), None);
            let forged = format!("{token}.{junk}");
            if junk != sign(secret, &token) {
                proptest::prop_assert_eq!(verify_signed(secret, &forged), None);
            }
            let _ = verify_signed(secret, &junk);
        }
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let signed = signed_token(secret, "abc");
        assert_eq!(verify_signed(secret, &signed).as_deref(), Some("abc"));
        assert!(verify_signed(secret, &signed.replace("abc", "abd")).is_none());
        assert!(verify_signed(b"other-secret-other-secret", &signed).is_none());
        assert!(verify_signed(secret, "abc").is_none());
        // Known vector: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign(b"key", "The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
