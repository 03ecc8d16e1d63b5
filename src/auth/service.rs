//! Account and session logic, independent of HTTP.

use chrono::Duration;

use crate::auth::model::{CredentialAccount, Session, User, user_columns};
use crate::auth::{password, tokens};
use crate::db::Db;
use crate::error::{DomainError, DomainResult, codes, is_unique_violation};
use crate::time::{self, Timestamp};
use crate::{db_execute, db_fetch_all, db_fetch_optional, tx_execute};

pub const SESSION_TTL: Duration = Duration::days(7);
/// A session is pushed forward at most once per this interval (sliding refresh).
pub const SESSION_UPDATE_AGE: Duration = Duration::days(1);
/// Sessions created with `rememberMe: false` live this long and are not extended.
pub const SHORT_SESSION_TTL: Duration = Duration::days(1);

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 128;

pub struct NewUser {
    pub name: String,
    pub email: String,
    pub password: String,
    pub image: Option<String>,
}

/// Where a session was created from, recorded for the user's benefit.
#[derive(Default, Clone)]
pub struct ClientInfo {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

pub fn invalid_credentials() -> DomainError {
    DomainError::unauthenticated(
        codes::INVALID_EMAIL_OR_PASSWORD,
        "Invalid email or password",
    )
}

/// Lowercases and validates an email address; the rules are deliberately close to the
/// `z.string().email()` check Better Auth applies.
pub fn normalize_email(email: &str) -> DomainResult<String> {
    let email = email.trim().to_lowercase();
    let invalid = || DomainError::invalid(codes::INVALID_EMAIL, "Invalid email");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| tld.chars().count() >= 2);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !local.contains('@')
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    if domain_ok && local_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

pub fn check_password_length(password: &str) -> DomainResult<()> {
    // JavaScript counts UTF-16 code units; match it so limits agree with Better Auth.
    let len = password.encode_utf16().count();
    if len < MIN_PASSWORD_LEN {
        return Err(DomainError::invalid(
            codes::PASSWORD_TOO_SHORT,
            "Password too short",
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(DomainError::invalid(
            codes::PASSWORD_TOO_LONG,
            "Password too long",
        ));
    }
    Ok(())
}

pub async fn find_user_by_email(db: &Db, email: &str) -> DomainResult<Option<User>> {
    Ok(db_fetch_optional!(
        db,
        User,
        concat!(
            r#"SELECT "#,
            user_columns!(),
            r#" FROM "user" WHERE email = $1"#
        ),
        [email]
    )?)
}

/// Every account, newest first (admin dashboard).
pub async fn list_users(db: &Db) -> DomainResult<Vec<User>> {
    Ok(db_fetch_all!(
        db,
        User,
        concat!(
            r#"SELECT "#,
            user_columns!(),
            r#" FROM "user" ORDER BY created_at DESC LIMIT 500"#
        ),
        []
    )?)
}

pub async fn find_user(db: &Db, id: &str) -> DomainResult<Option<User>> {
    Ok(db_fetch_optional!(
        db,
        User,
        concat!(
            r#"SELECT "#,
            user_columns!(),
            r#" FROM "user" WHERE id = $1"#
        ),
        [id]
    )?)
}

fn user_exists() -> DomainError {
    DomainError::unprocessable(
        codes::USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL,
        "User already exists. Use another email.",
    )
}

pub async fn sign_up(db: &Db, new: NewUser) -> DomainResult<User> {
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(DomainError::validation(
            "name must be 1-256 characters without control characters",
        ));
    }
    let email = normalize_email(&new.email)?;
    check_password_length(&new.password)?;
    if let Some(image) = &new.image
        && image.len() > 2048
    {
        return Err(DomainError::validation(
            "image must be at most 2048 characters",
        ));
    }
    if find_user_by_email(db, &email).await?.is_some() {
        return Err(user_exists());
    }
    let hash = password::hash(new.password).await;
    let now = time::now();
    let user = User {
        id: tokens::generate_id(),
        name,
        email,
        email_verified: false,
        image: new.image,
        created_at: now,
        updated_at: now,
    };
    let mut tx = db.begin().await?;
    let inserted = tx_execute!(
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
    );
    match inserted {
        Ok(_) => {}
        // Two sign-ups racing for one email: the loser sees the same error as if it came second.
        Err(e) if is_unique_violation(&e) => return Err(user_exists()),
        Err(e) => return Err(e.into()),
    }
    tx_execute!(
        &mut tx,
        r#"INSERT INTO account (id, account_id, provider_id, user_id, password, created_at, updated_at)
           VALUES ($1, $2, 'credential', $3, $4, $5, $6)"#,
        [tokens::generate_id(), &user.id, &user.id, hash, now, now]
    )?;
    tx.commit().await?;
    Ok(user)
}

/// Checks an email/password pair; unknown users and wrong passwords are indistinguishable,
/// in the response and in timing.
pub async fn verify_credentials(
    db: &Db,
    email: &str,
    password_attempt: String,
) -> DomainResult<User> {
    let Ok(email) = normalize_email(email) else {
        password::verify_dummy(password_attempt).await;
        return Err(invalid_credentials());
    };
    let Some(user) = find_user_by_email(db, &email).await? else {
        password::verify_dummy(password_attempt).await;
        return Err(invalid_credentials());
    };
    let account = db_fetch_optional!(
        db,
        CredentialAccount,
        "SELECT id, password FROM account WHERE user_id = $1 AND provider_id = 'credential'",
        [&user.id]
    )?;
    let Some(CredentialAccount {
        id: account_id,
        password: Some(stored),
    }) = account
    else {
        password::verify_dummy(password_attempt).await;
        return Err(invalid_credentials());
    };
    match password::verify(password_attempt.clone(), stored).await {
        password::Verified::No => Err(invalid_credentials()),
        password::Verified::Yes => Ok(user),
        password::Verified::YesNeedsUpgrade => {
            let upgraded = password::hash(password_attempt).await;
            db_execute!(
                db,
                "UPDATE account SET password = $1, updated_at = $2 WHERE id = $3",
                [upgraded, time::now(), account_id]
            )?;
            tracing::info!(user_id = %user.id, "upgraded legacy password hash to argon2id");
            Ok(user)
        }
    }
}

pub async fn create_session(
    db: &Db,
    user_id: &str,
    client: &ClientInfo,
    remember: bool,
) -> DomainResult<Session> {
    let now = time::now();
    let ttl = if remember {
        SESSION_TTL
    } else {
        SHORT_SESSION_TTL
    };
    let session = Session {
        id: tokens::generate_id(),
        token: tokens::generate_id(),
        user_id: user_id.to_string(),
        expires_at: now + ttl,
        created_at: now,
        updated_at: now,
        ip_address: client.ip_address.clone(),
        user_agent: client
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(512).collect()),
    };
    db_execute!(
        db,
        "INSERT INTO session (id, token, user_id, expires_at, created_at, updated_at, ip_address, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            &session.id,
            &session.token,
            &session.user_id,
            session.expires_at,
            session.created_at,
            session.updated_at,
            &session.ip_address,
            &session.user_agent
        ]
    )?;
    Ok(session)
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    #[sqlx(flatten)]
    session: Session,
    u_name: String,
    u_email: String,
    u_email_verified: bool,
    u_image: Option<String>,
    u_created_at: Timestamp,
    u_updated_at: Timestamp,
}

/// Looks up a live session by its (unsigned) token. Expired sessions are deleted.
pub async fn find_session(db: &Db, token: &str) -> DomainResult<Option<(Session, User)>> {
    let row = db_fetch_optional!(
        db,
        SessionRow,
        r#"SELECT s.id, s.token, s.user_id, s.expires_at, s.created_at, s.updated_at, s.ip_address, s.user_agent,
                  u.name AS u_name, u.email AS u_email, u.email_verified AS u_email_verified,
                  u.image AS u_image, u.created_at AS u_created_at, u.updated_at AS u_updated_at
           FROM session s JOIN "user" u ON u.id = s.user_id
           WHERE s.token = $1"#,
        [token]
    )?;
    let Some(row) = row else { return Ok(None) };
    if row.session.expires_at <= time::now() {
        db_execute!(db, "DELETE FROM session WHERE id = $1", [&row.session.id])?;
        return Ok(None);
    }
    let user = User {
        id: row.session.user_id.clone(),
        name: row.u_name,
        email: row.u_email,
        email_verified: row.u_email_verified,
        image: row.u_image,
        created_at: row.u_created_at,
        updated_at: row.u_updated_at,
    };
    Ok(Some((row.session, user)))
}

/// Sliding expiry: once a day of use, push the session's expiry a full TTL ahead.
/// Returns true when the session was extended (so the cookie should be re-sent).
pub async fn refresh_if_due(db: &Db, session: &mut Session) -> DomainResult<bool> {
    let now = time::now();
    if now - session.updated_at < SESSION_UPDATE_AGE {
        return Ok(false);
    }
    let expires_at = now + SESSION_TTL;
    db_execute!(
        db,
        "UPDATE session SET expires_at = $1, updated_at = $2 WHERE id = $3",
        [expires_at, now, &session.id]
    )?;
    session.expires_at = expires_at;
    session.updated_at = now;
    Ok(true)
}

pub async fn delete_session(db: &Db, token: &str) -> DomainResult<()> {
    db_execute!(db, "DELETE FROM session WHERE token = $1", [token])?;
    Ok(())
}

/// Removes expired sessions; run periodically so the table does not grow without bound.
pub async fn purge_expired_sessions(db: &Db) -> DomainResult<u64> {
    Ok(db_execute!(
        db,
        "DELETE FROM session WHERE expires_at < $1",
        [time::now()]
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[test]
    fn email_rules() {
        assert_eq!(
            normalize_email(" Foo.Bar@Example.COM ").unwrap(),
            "foo.bar@example.com"
        );
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.de", "a@b..de", "a@-b.de", "a@@b.de", ".a@b.de",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn password_length_limits() {
        assert_eq!(
            ApiError::from(check_password_length("1234567").unwrap_err()).code,
            codes::PASSWORD_TOO_SHORT
        );
        assert!(check_password_length("12345678").is_ok());
        assert!(check_password_length(&"x".repeat(128)).is_ok());
        assert_eq!(
            ApiError::from(check_password_length(&"x".repeat(129)).unwrap_err()).code,
            codes::PASSWORD_TOO_LONG
        );
    }
}
