//! Object storage: one interface, two real backends.
//!
//! * [`S3Store`] talks to MinIO or any S3-compatible service (selected by `MINIO_ENDPOINT`).
//! * [`LocalStore`] keeps objects under `<data_dir>/objects` and serves them itself on
//!   `/storage/...` URLs carrying an HMAC signature and expiry.
//!
//! Either way clients receive presigned URLs and move bytes directly; the API handlers never
//! proxy uploads or downloads.

mod local;
pub mod routes;
mod s3;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

pub use local::LocalStore;
pub use s3::S3Store;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key")]
    InvalidKey,
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage service error: {0}")]
    Service(String),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(with = "crate::time::iso_millis_opt")]
    pub last_modified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub enum ObjectStore {
    Local(LocalStore),
    S3(S3Store),
}

/// The largest object anyone may store (S3's single-PUT limit).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// What a presigned PUT may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeBound {
    /// The size the client declared.
    Exactly(u64),
    /// Whatever is left of a quota.
    AtMost(u64),
    Any,
}

impl SizeBound {
    pub fn max_bytes(self) -> Option<u64> {
        match self {
            SizeBound::Exactly(n) | SizeBound::AtMost(n) => Some(n),
            SizeBound::Any => None,
        }
    }
}

/// Object keys are `/`-separated segments of safe characters; nothing can climb out of
/// the bucket or smuggle control characters into a path or URL.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() || key.len() > 1024 || key.starts_with('/') || key.ends_with('/') {
        return Err(StorageError::InvalidKey);
    }
    for segment in key.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(StorageError::InvalidKey);
        }
    }
    Ok(())
}

impl ObjectStore {
    pub fn backend(&self) -> &'static str {
        match self {
            ObjectStore::Local(_) => "local",
            ObjectStore::S3(_) => "s3",
        }
    }

    pub fn bucket(&self) -> &str {
        match self {
            ObjectStore::Local(s) => s.bucket(),
            ObjectStore::S3(s) => s.bucket(),
        }
    }

    /// A presigned PUT. `size` bounds what may be sent: the embedded store signs it as a
    /// maximum and refuses more; S3 gets an exact declared size as a signed
    /// `Content-Length` (it has no "at most"), so an unbounded S3 upload is checked when
    /// the client confirms it.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: Option<&str>,
        size: SizeBound,
        ttl: Duration,
    ) -> Result<Presigned, StorageError> {
        validate_key(key)?;
        match self {
            ObjectStore::Local(s) => Ok(s.presign("PUT", key, ttl, size.max_bytes())),
            ObjectStore::S3(s) => {
                let exact = match size {
                    SizeBound::Exactly(n) => Some(n),
                    SizeBound::AtMost(_) | SizeBound::Any => None,
                };
                s.presign_put(key, content_type, exact, ttl).await
            }
        }
    }

    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<Presigned, StorageError> {
        validate_key(key)?;
        match self {
            ObjectStore::Local(s) => Ok(s.presign("GET", key, ttl, None)),
            ObjectStore::S3(s) => s.presign_get(key, ttl).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        validate_key(key)?;
        match self {
            ObjectStore::Local(s) => s.head(key).await,
            ObjectStore::S3(s) => s.head(key).await,
        }
    }

    /// Deleting a missing object succeeds (idempotent).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match self {
            ObjectStore::Local(s) => s.delete(key).await,
            ObjectStore::S3(s) => s.delete(key).await,
        }
    }

    pub async fn list(
        &self,
        prefix: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage, StorageError> {
        match self {
            ObjectStore::Local(s) => s.list(prefix, cursor, limit).await,
            ObjectStore::S3(s) => s.list(prefix, cursor, limit).await,
        }
    }

    /// Server-side upload of a local file (used by the recorder).
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<(), StorageError> {
        validate_key(key)?;
        match self {
            ObjectStore::Local(s) => s.put_file(key, path).await,
            ObjectStore::S3(s) => s.put_file(key, path, content_type).await,
        }
    }

    /// Checks the store is usable (bucket reachable / directory writable).
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            ObjectStore::Local(s) => s.check().await,
            ObjectStore::S3(s) => s.check().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "a b",
            "é",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "users/u1/clips/1-a.mp4", "x.y_z-1"] {
            assert!(validate_key(good).is_ok(), "{good:?} refused");
        }
    }
}
