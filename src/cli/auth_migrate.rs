//! `watchpost auth-migrate`: give every user a Better Auth credential account.
//!
//! The old backend kept users in a `users` table (email, username, password hash). This
//! copies each of them into Better Auth's `user` table if missing and backfills the
//! `account` row (provider `credential`) that holds the password hash. Supported hashes
//! (argon2, Better Auth scrypt) verify at sign-in and are upgraded to argon2id then. Users
//! that have no hash anywhere are reported; they need a password reset.

use crate::auth::tokens::generate_id;
use crate::db::Db;
use crate::time;
use crate::{db_execute, db_fetch_all, db_fetch_optional};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub users_created: u64,
    pub accounts_created: u64,
    pub users_without_password: u64,
}

#[derive(sqlx::FromRow)]
struct LegacyUser {
    email: String,
    username: Option<String>,
    password: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UserId {
    id: String,
}

async fn legacy_table_exists(db: &Db) -> Result<bool, sqlx::Error> {
    let sql = match db {
        Db::Sqlite(_) => {
            "SELECT name AS id FROM sqlite_master WHERE type = 'table' AND name = 'users'"
        }
        Db::Postgres(_) => {
            "SELECT table_name::text AS id FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'users'"
        }
    };
    Ok(db_fetch_optional!(db, UserId, sql, [])?.is_some())
}

pub async fn run(db: &Db) -> Result<Report, sqlx::Error> {
    let mut report = Report::default();
    let now = time::now();
    if legacy_table_exists(db).await? {
        let legacy = db_fetch_all!(
            db,
            LegacyUser,
            "SELECT CAST(email AS TEXT) AS email, CAST(username AS TEXT) AS username, CAST(password AS TEXT) AS password FROM users",
            []
        )?;
        for old in legacy {
            let email = old.email.trim().to_lowercase();
            if email.is_empty() {
                continue;
            }
            let existing = db_fetch_optional!(
                db,
                UserId,
                r#"SELECT id FROM "user" WHERE email = $1"#,
                [&email]
            )?;
            let user_id = match existing {
                Some(u) => u.id,
                None => {
                    let id = generate_id();
                    let name = old
                        .username
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
                    db_execute!(
                        db,
                        r#"INSERT INTO "user" (id, name, email, email_verified, created_at, updated_at) VALUES ($1, $2, $3, FALSE, $4, $5)"#,
                        [&id, name, &email, now, now]
                    )?;
                    report.users_created += 1;
                    id
                }
            };
            if let Some(hash) = old.password.filter(|p| !p.is_empty()) {
                let inserted = db_execute!(
                    db,
                    "INSERT INTO account (id, account_id, provider_id, user_id, password, created_at, updated_at)
                     SELECT $1, $2, 'credential', $3, $4, $5, $6
                     WHERE NOT EXISTS (SELECT 1 FROM account WHERE user_id = $7 AND provider_id = 'credential')",
                    [generate_id(), &user_id, &user_id, hash, now, now, &user_id]
                )?;
                report.accounts_created += inserted;
            }
        }
    }
    let orphans = db_fetch_all!(
        db,
        UserId,
        r#"SELECT u.id FROM "user" u WHERE NOT EXISTS
           (SELECT 1 FROM account a WHERE a.user_id = u.id AND a.provider_id = 'credential' AND a.password IS NOT NULL)"#,
        []
    )?;
    report.users_without_password = orphans.len() as u64;
    Ok(report)
}
