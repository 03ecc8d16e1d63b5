//! Database access for both supported backends.
//!
//! Queries are written once, in the SQL subset both SQLite and PostgreSQL accept (`$1`
//! placeholders, `RETURNING`, `ON CONFLICT`), and run against whichever pool is configured
//! through the `db_*!` macros. Rows decode into the same typed structs on both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::DatabaseTarget;

pub mod text_enum;

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    pub async fn connect(target: &DatabaseTarget) -> Result<Db, sqlx::Error> {
        match target {
            DatabaseTarget::Sqlite(path) => {
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    // No request copies the log into the database file itself (that fsync
                    // stalled whichever write crossed the threshold): the `Checkpointer`
                    // does, from a background job.
                    .pragma("wal_autocheckpoint", "0")
                    // Reads from memory-mapped pages instead of a pread per page.
                    .pragma("mmap_size", "67108864");
                let pool = SqlitePoolOptions::new()
                    // One connection: SQLite runs one writer at a time anyway, and each
                    // connection is a worker thread that every query is handed to and back.
                    // One busy thread stays awake; with four, each query went to the one
                    // idle longest, asleep. Under the soak's load this took the share of
                    // `POST /commands` done within 1 ms from 81% to 95%. Nothing holds the
                    // connection across a wait: transactions are a few statements, and
                    // checkpoints (an fsync) have a connection of their own.
                    .max_connections(1)
                    // A pooled SQLite connection is a file handle that cannot go stale; the
                    // default ping before every checkout doubled each query's round trips to
                    // the connection's worker thread.
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Ok(Db::Sqlite(pool))
            }
            DatabaseTarget::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)?;
                // Short: while the server is down every request waits this long for a
                // connection, and a 503 in a few seconds beats a hung client.
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_with(options)
                    .await?;
                Ok(Db::Postgres(pool))
            }
        }
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Open connections in the pool and how many of them are idle (for `/metrics`).
    pub fn pool_connections(&self) -> (u32, usize) {
        match self {
            Db::Sqlite(pool) => (pool.size(), pool.num_idle()),
            Db::Postgres(pool) => (pool.size(), pool.num_idle()),
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        }
    }

    /// SQLite: a connection of its own for checkpoints. A checkpoint fsyncs the database
    /// file, which takes tens of milliseconds on a slow disk; on a pooled connection every
    /// request queued behind it would wait that long. PostgreSQL: `None` (nothing to do).
    pub async fn checkpointer(&self) -> Result<Option<Checkpointer>, sqlx::Error> {
        let Db::Sqlite(pool) = self else {
            return Ok(None);
        };
        let connection = sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
        Ok(Some(Checkpointer(connection)))
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The SQLite connection that copies the write-ahead log into the database file.
pub struct Checkpointer(sqlx::SqliteConnection);

impl Checkpointer {
    /// Copies the log into the database file without blocking readers or writers
    /// (`truncate` also empties the log, for shutdown). Returns the log's frames and how
    /// many of them are now in the database.
    pub async fn run(&mut self, truncate: bool) -> Result<(i64, i64), sqlx::Error> {
        let sql = if truncate {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        let (_busy, log, done): (i64, i64, i64) =
            sqlx::query_as(sql).fetch_one(&mut self.0).await?;
        Ok((log, done))
    }
}

/// `db_fetch_optional!(db, RowType, "SQL", [args...])` → `Result<Option<RowType>, sqlx::Error>`
#[macro_export]
macro_rules! db_fetch_optional {
    ($db:expr, $ty:ty, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(pool).await
            }
            $crate::db::Db::Postgres(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(pool).await
            }
        }
    };
}

/// `db_fetch_one!(db, RowType, "SQL", [args...])` → `Result<RowType, sqlx::Error>`
#[macro_export]
macro_rules! db_fetch_one {
    ($db:expr, $ty:ty, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_one(pool).await
            }
            $crate::db::Db::Postgres(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_one(pool).await
            }
        }
    };
}

/// `db_fetch_all!(db, RowType, "SQL", [args...])` → `Result<Vec<RowType>, sqlx::Error>`
#[macro_export]
macro_rules! db_fetch_all {
    ($db:expr, $ty:ty, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_all(pool).await
            }
            $crate::db::Db::Postgres(pool) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_all(pool).await
            }
        }
    };
}

/// `db_execute!(db, "SQL", [args...])` → `Result<u64 /* rows affected */, sqlx::Error>`
#[macro_export]
macro_rules! db_execute {
    ($db:expr, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                sqlx::query($sql)$(.bind($arg))*.execute(pool).await.map(|r| r.rows_affected())
            }
            $crate::db::Db::Postgres(pool) => {
                sqlx::query($sql)$(.bind($arg))*.execute(pool).await.map(|r| r.rows_affected())
            }
        }
    };
}

/// A transaction on either backend; `tx_execute!` runs statements inside it.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Db {
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// `tx_execute!(tx, "SQL", [args...])` → `Result<u64, sqlx::Error>`
#[macro_export]
macro_rules! tx_execute {
    ($tx:expr, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                sqlx::query($sql)$(.bind($arg))*.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            $crate::db::Tx::Postgres(tx) => {
                sqlx::query($sql)$(.bind($arg))*.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
        }
    };
}

/// `tx_fetch_optional!(tx, RowType, "SQL", [args...])` → `Result<Option<RowType>, sqlx::Error>`
#[macro_export]
macro_rules! tx_fetch_optional {
    ($tx:expr, $ty:ty, $sql:expr, [$($arg:expr),* $(,)?]) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **tx).await
            }
            $crate::db::Tx::Postgres(tx) => {
                sqlx::query_as::<_, $ty>($sql)$(.bind($arg))*.fetch_optional(&mut **tx).await
            }
        }
    };
}

/// Takes the row lock of each device in `ids`, in one order whatever the caller's, inside
/// `tx`: a statement run after it sees every change committed by whoever held a lock
/// before (PostgreSQL reads a fresh snapshot per statement), and two callers locking the
/// same pair cannot deadlock. SQLite runs one transaction at a time; there it is a no-op
/// write.
pub async fn lock_devices(tx: &mut Tx, ids: &[&str]) -> Result<(), sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        crate::tx_execute!(
            &mut *tx,
            "UPDATE devices SET updated_at = updated_at WHERE id = $1",
            [id]
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many writers on the pool's connections at once: each waits its turn for SQLite's
    /// single write lock, and none fails with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sqlite_writers_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseTarget::Sqlite(dir.path().join("w.db")))
            .await
            .unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        sqlx::query("CREATE TABLE w (v INTEGER)")
            .execute(pool)
            .await
            .unwrap();
        let writers = (0..16).map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for j in 0..50 {
                    // An explicit transaction holds the lock across two statements.
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("INSERT INTO w VALUES ($1)")
                        .bind(i * 1000 + j)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query("UPDATE w SET v = v WHERE v = $1")
                        .bind(i * 1000 + j)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        });
        for w in futures_util::future::join_all(writers).await {
            w.unwrap();
        }
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM w")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 800);
    }

    /// Requests never checkpoint SQLite's log themselves; the checkpointer copies all of
    /// it, on its own connection, and the shutdown round empties the file.
    #[tokio::test]
    async fn sqlite_checkpoints_happen_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&DatabaseTarget::Sqlite(path.clone()))
            .await
            .unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        let (auto,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(auto, 0);
        sqlx::query("CREATE TABLE t (v TEXT)")
            .execute(pool)
            .await
            .unwrap();
        // Past the default threshold (1,000 pages): nothing was copied on the way.
        for _ in 0..300 {
            sqlx::query("INSERT INTO t VALUES (randomblob(16000))")
                .execute(pool)
                .await
                .unwrap();
        }
        let wal = path.with_extension("db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 4_000_000);
        let mut checkpointer = db.checkpointer().await.unwrap().unwrap();
        // The checkpoint has a connection of its own: it runs while requests hold every
        // pooled one (and never makes them wait for its fsync).
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            held.push(pool.acquire().await.unwrap());
        }
        let (log, done) = tokio::time::timeout(Duration::from_secs(5), checkpointer.run(false))
            .await
            .expect("the checkpoint does not wait for a pooled connection")
            .unwrap();
        drop(held);
        assert!(log > 1000, "{log}");
        assert_eq!(log, done);
        checkpointer.run(true).await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(rows, 300);
    }
}
