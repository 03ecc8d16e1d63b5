//! OAuth rules independent of HTTP: the server-issued single-use state with its PKCE
//! verifier, the desktop token blob, and finding or creating the user behind a provider
//! identity (Better Auth's `account` row with `providerId: "google"`).

use base64::Engine;
use chrono::Duration;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::model::User;
use crate::auth::service::{find_user, find_user_by_email, normalize_email};
use crate::auth::tokens;
use crate::db::Db;
use crate::error::{DomainError, DomainResult, is_unique_violation};
use crate::time::{self, Timestamp};
use crate::{db_execute, db_fetch_optional, tx_execute};

/// How long an issued state (and its PKCE verifier) can be redeemed.
pub const STATE_TTL: Duration = Duration::minutes(10);
pub const PROVIDER_ID: &str = "google";

/// Drive (`/auth/google`) and profile (`/auth/google/social`) scopes of the desktop flow.
pub const DRIVE_SCOPE: &str =
    "https://www.googleapis.com/auth/drive https://www.googleapis.com/auth/userinfo.email";
pub const SOCIAL_SCOPE: &str = "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile";
/// Better Auth's default Google scopes.
pub const WEB_SCOPE: &str = "openid email profile";

/// Characters `encodeURIComponent` leaves alone.
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

pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Desktop,
    Web,
}

impl Flow {
    fn as_str(self) -> &'static str {
        match self {
            Flow::Desktop => "desktop",
            Flow::Web => "web",
        }
    }
}

/// What a state carries besides the PKCE verifier.
#[derive(Debug, Clone, Default)]
pub struct StateData {
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub callback_url: Option<String>,
    pub error_callback_url: Option<String>,
    pub new_user_callback_url: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IssuedState {
    pub state: String,
    pub code_verifier: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub callback_url: Option<String>,
    pub error_callback_url: Option<String>,
    pub new_user_callback_url: Option<String>,
    pub expires_at: Timestamp,
}

/// A fresh state: the value to send to the provider and the S256 code challenge.
pub struct NewState {
    pub state: String,
    pub code_challenge: String,
}

/// RFC 7636: a 64-character verifier from the unreserved alphabet.
fn code_verifier() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let mut rng = rand::rngs::OsRng;
    (0..64)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Records a new single-use state (and drops expired ones).
pub async fn issue_state(db: &Db, flow: Flow, data: StateData) -> DomainResult<NewState> {
    let now = time::now();
    db_execute!(db, "DELETE FROM oauth_state WHERE expires_at < $1", [now])?;
    let state = tokens::generate_id();
    let verifier = code_verifier();
    db_execute!(
        db,
        "INSERT INTO oauth_state (state, flow, code_verifier, redirect_uri, client_state, callback_url,
                                  error_callback_url, new_user_callback_url, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            &state,
            flow.as_str(),
            &verifier,
            &data.redirect_uri,
            &data.client_state,
            &data.callback_url,
            &data.error_callback_url,
            &data.new_user_callback_url,
            now + STATE_TTL,
            now
        ]
    )?;
    Ok(NewState {
        state,
        code_challenge: code_challenge(&verifier),
    })
}

/// Redeems a state: it is deleted in the same statement, so it works once; a state of
/// another flow, an unknown one or an expired one gives `None`.
pub async fn consume_state(db: &Db, flow: Flow, state: &str) -> DomainResult<Option<IssuedState>> {
    if state.is_empty() || state.len() > 128 {
        return Ok(None);
    }
    let row = db_fetch_optional!(
        db,
        IssuedState,
        "DELETE FROM oauth_state WHERE state = $1 AND flow = $2
         RETURNING state, code_verifier, redirect_uri, client_state, callback_url,
                   error_callback_url, new_user_callback_url, expires_at",
        [state, flow.as_str()]
    )?;
    Ok(row.filter(|r| r.expires_at > time::now()))
}

/// `base?k=v&…` (or `&` when `base` has a query), form-encoded as URLSearchParams does.
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// Compact JSON holding `keys` of `map` in that order, absent keys left out.
pub fn pick(map: &Map<String, Value>, keys: &[&str]) -> String {
    let fields: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            map.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| format!("{}:{v}", Value::String(k.to_string())))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The desktop `tokens` blob: standard base64 (with `+`, `/`, `=`) of
/// `{access_token, refresh_token, expires_in, token_type}`.
pub fn token_blob(tokens: &Map<String, Value>) -> String {
    let json = pick(
        tokens,
        &["access_token", "refresh_token", "expires_in", "token_type"],
    );
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// The text of a provider error field, as JavaScript's string conversion would give it.
pub fn error_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Profile {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
}

impl Profile {
    /// From OpenID Connect userinfo claims; `None` without `sub` or `email`.
    pub fn from_claims(claims: &Map<String, Value>) -> Option<Profile> {
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let subject = text("sub").or_else(|| {
            claims
                .get("sub")
                .and_then(Value::as_i64)
                .map(|n| n.to_string())
        })?;
        Some(Profile {
            subject,
            email: text("email")?,
            email_verified: matches!(claims.get("email_verified"), Some(Value::Bool(true)))
                || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true"),
            name: text("name"),
            picture: text("picture"),
        })
    }
}

pub fn account_not_linked() -> DomainError {
    DomainError::forbidden(
        "ACCOUNT_NOT_LINKED",
        "An account with this email exists; the provider has not verified the email, so it was not linked",
    )
}

#[derive(sqlx::FromRow)]
struct LinkedUser {
    user_id: String,
}

/// Who a provider sign-in is.
pub struct SocialUser {
    pub user: User,
    /// A new user was created for it.
    pub created: bool,
    /// Every session of the user was ended: linking took over an account nobody had
    /// verified (their sockets are to be closed).
    pub sessions_ended: bool,
}

/// The user behind `profile`: the one already linked to this provider identity, else the
/// user with the same email (linked now, only when the provider verified the email), else
/// a new user.
///
/// Linking to an account whose email was never verified ends its password and its
/// sessions: whoever made that account never showed they own the address (it may have
/// been made ahead of its owner, to be shared with them once they sign in with the
/// provider); the provider's verified sign-in is the first proof.
pub async fn find_or_create_user(db: &Db, profile: &Profile) -> DomainResult<SocialUser> {
    let email = normalize_email(&profile.email)?;
    for _ in 0..2 {
        if let Some(linked) = db_fetch_optional!(
            db,
            LinkedUser,
            "SELECT user_id FROM account WHERE provider_id = $1 AND account_id = $2",
            [PROVIDER_ID, &profile.subject]
        )? && let Some(user) = find_user(db, &linked.user_id).await?
        {
            return Ok(SocialUser {
                user,
                created: false,
                sessions_ended: false,
            });
        }
        let now = time::now();
        if let Some(mut user) = find_user_by_email(db, &email).await? {
            if !profile.email_verified {
                return Err(account_not_linked());
            }
            let sessions_ended = !user.email_verified;
            let mut tx = db.begin().await?;
            match tx_execute!(
                &mut tx,
                "INSERT INTO account (id, account_id, provider_id, user_id, scope, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [tokens::generate_id(), &profile.subject, PROVIDER_ID, &user.id, WEB_SCOPE, now, now]
            ) {
                Ok(_) => {}
                // Linked concurrently: look again.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            if !user.email_verified {
                tx_execute!(
                    &mut tx,
                    "DELETE FROM account WHERE user_id = $1 AND provider_id = 'credential'",
                    [&user.id]
                )?;
                tx_execute!(
                    &mut tx,
                    "DELETE FROM session WHERE user_id = $1",
                    [&user.id]
                )?;
                tx_execute!(
                    &mut tx,
                    r#"UPDATE "user" SET email_verified = $1, updated_at = $2 WHERE id = $3"#,
                    [true, now, &user.id]
                )?;
                user.email_verified = true;
                user.updated_at = now;
            }
            tx.commit().await?;
            return Ok(SocialUser {
                user,
                created: false,
                sessions_ended,
            });
        }
        let name = profile
            .name
            .clone()
            .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
        let user = User {
            id: tokens::generate_id(),
            name: name.chars().take(256).collect(),
            email: email.clone(),
            email_verified: profile.email_verified,
            image: profile.picture.clone().filter(|p| p.len() <= 2048),
            created_at: now,
            updated_at: now,
        };
        let mut tx = db.begin().await?;
        match tx_execute!(
            &mut tx,
            r#"INSERT INTO "user" (id, name, email, email_verified, image, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
            [
                &user.id,
                &user.name,
                &user.email,
                user.email_verified,
                &user.image,
                now,
                now
            ]
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        match tx_execute!(
            &mut tx,
            "INSERT INTO account (id, account_id, provider_id, user_id, scope, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [tokens::generate_id(), &profile.subject, PROVIDER_ID, &user.id, WEB_SCOPE, now, now]
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        return Ok(SocialUser {
            user,
            created: true,
            sessions_ended: false,
        });
    }
    Err(DomainError::conflict(
        "ACCOUNT_CONFLICT",
        "The account changed during sign-in; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pkce_challenge_is_rfc7636_s256() {
        // S256: unpadded base64url of SHA-256 (FIPS 180-2's "abc" vector).
        assert_eq!(
            code_challenge("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        let v = code_verifier();
        assert_eq!(v.len(), 64);
        assert_ne!(v, code_verifier());
    }

    #[test]
    fn token_blob_keeps_key_order_and_drops_the_rest() {
        let tokens = json!({"token_type": "Bearer", "scope": "x", "id_token": "i",
                            "expires_in": 3599, "access_token": "a+/="});
        let blob = token_blob(tokens.as_object().unwrap());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&blob)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            r#"{"access_token":"a+/=","expires_in":3599,"token_type":"Bearer"}"#
        );
    }

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(
            with_query("https://p/auth", &[("scope", "a b"), ("x", "&=")]),
            "https://p/auth?scope=a+b&x=%26%3D"
        );
        assert_eq!(
            with_query("https://p/auth?hd=1", &[("a", "b")]),
            "https://p/auth?hd=1&a=b"
        );
        assert_eq!(encode_component("a b/+"), "a%20b%2F%2B");
    }
}
