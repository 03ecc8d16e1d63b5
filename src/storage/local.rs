//! The embedded object store: files under `<root>/<bucket>/<key>`, served by this process
//! on `/storage/<bucket>/<key>?expires=…&signature=…` so clients use the same presigned-URL
//! flow as with S3.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::crypto::hex;

use super::{ObjectInfo, ObjectPage, Presigned, StorageError, validate_key};

/// The error says there is no object file at that key: nothing there, a folder of objects,
/// a path through an object, or a name the file system cannot hold.
pub fn no_such_object(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{InvalidFilename, IsADirectory, NotADirectory, NotFound};
    matches!(
        e.kind(),
        NotFound | IsADirectory | NotADirectory | InvalidFilename
    )
}

#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    bucket: String,
    base_url: String,
    secret: Vec<u8>,
}

impl LocalStore {
    pub fn new(root: PathBuf, bucket: String, base_url: String, secret: &[u8]) -> Self {
        // A key derived from (not equal to) the session secret, so storage signatures and
        // session signatures can never be swapped for one another.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(b"watchpost-local-object-store");
        Self {
            inner: Arc::new(Inner {
                root,
                bucket,
                base_url,
                secret: mac.finalize().into_bytes().to_vec(),
            }),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    fn bucket_dir(&self) -> PathBuf {
        self.inner.root.join(&self.inner.bucket)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join(".tmp")
    }

    /// The file for a key; `validate_key` guarantees it stays inside the bucket directory.
    pub fn path_for(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.bucket_dir().join(key))
    }

    fn signature(&self, method: &str, key: &str, expires: i64, max_bytes: Option<u64>) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.secret).expect("any key length");
        mac.update(format!("{method}\n{}/{key}\n{expires}", self.inner.bucket).as_bytes());
        if let Some(max) = max_bytes {
            mac.update(format!("\n{max}").as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }

    /// A URL for `method` on `key` until `ttl` from now; a PUT may be bound to at most
    /// `max_bytes` (signed, so the holder cannot raise it).
    pub fn presign(
        &self,
        method: &str,
        key: &str,
        ttl: Duration,
        max_bytes: Option<u64>,
    ) -> Presigned {
        let expires_at = crate::time::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
        let expires = expires_at.timestamp();
        let signature = self.signature(method, key, expires, max_bytes);
        let max = max_bytes.map(|m| format!("&max={m}")).unwrap_or_default();
        Presigned {
            url: format!(
                "{}/storage/{}/{key}?expires={expires}{max}&signature={signature}",
                self.inner.base_url, self.inner.bucket
            ),
            expires_at,
        }
    }

    /// Checks a presigned request: right bucket, valid key, unexpired, signature matches
    /// (over the size bound too, when there is one).
    pub fn verify(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        expires: i64,
        max_bytes: Option<u64>,
        signature: &str,
    ) -> Result<(), &'static str> {
        if bucket != self.inner.bucket || validate_key(key).is_err() {
            return Err("unknown object");
        }
        let expected = self.signature(method, key, expires, max_bytes);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err("signature does not match");
        }
        if Utc::now().timestamp() > expires {
            return Err("the URL has expired");
        }
        Ok(())
    }

    /// Moves a fully written temporary file into place atomically. A key the file tree
    /// cannot hold (a path through an existing object, or onto a folder of objects, or a
    /// segment longer than a file name) is an invalid key, not a server fault.
    pub async fn commit_temp(&self, temp: &Path, key: &str) -> Result<(), StorageError> {
        let dest = self.path_for(key)?;
        let placed = async {
            // A delete of the folder's last object tidies the folder away: if that lands
            // between making the folder and the rename, make it again.
            let mut attempts = 0;
            loop {
                let placed = match dest.parent() {
                    Some(parent) => tokio::fs::create_dir_all(parent).await,
                    None => Ok(()),
                };
                let placed = match placed {
                    Ok(()) => tokio::fs::rename(temp, &dest).await,
                    Err(e) => Err(e),
                };
                match placed {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && attempts < 3
                            && temp_exists(temp).await =>
                    {
                        attempts += 1;
                    }
                    done => break done,
                }
            }
        };
        match placed.await {
            Ok(()) => Ok(()),
            Err(e) if no_such_object(&e) || e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StorageError::InvalidKey)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes temporary upload files older than `age`: what a crash or a client that
    /// vanished mid-upload left behind. Returns how many were removed.
    pub async fn sweep_temp(&self, age: Duration) -> Result<usize, StorageError> {
        let mut entries = match tokio::fs::read_dir(self.tmp_dir()).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            let stale = entry
                .metadata()
                .await
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if stale && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub async fn new_temp_path(&self) -> Result<PathBuf, StorageError> {
        let dir = self.tmp_dir();
        tokio::fs::create_dir_all(&dir).await?;
        Ok(dir.join(uuid::Uuid::new_v4().to_string()))
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path_for(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: meta.len(),
                last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
            })),
            Ok(_) => Ok(None),
            Err(e) if no_such_object(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_for(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            // Deleting what is not an object (nothing, or a folder of objects) is a no-op.
            Err(e) if no_such_object(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // Tidy empty parent directories, but never the bucket directory itself.
        let bucket_dir = self.bucket_dir();
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == bucket_dir || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    pub async fn put_file(&self, key: &str, source: &Path) -> Result<(), StorageError> {
        let temp = self.new_temp_path().await?;
        tokio::fs::copy(source, &temp).await?;
        self.commit_temp(&temp, key).await
    }

    pub async fn list(
        &self,
        prefix: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage, StorageError> {
        let dir = self.bucket_dir();
        let prefix = prefix.unwrap_or("").to_string();
        let cursor = cursor.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            walk(&dir, &dir, &mut all)?;
            all.sort_by(|a, b| a.key.cmp(&b.key));
            let mut objects: Vec<ObjectInfo> = all
                .into_iter()
                .filter(|o| o.key.starts_with(&prefix))
                .filter(|o| cursor.as_ref().is_none_or(|c| o.key.as_str() > c.as_str()))
                .take(limit + 1)
                .collect();
            let next_cursor = if objects.len() > limit {
                objects.truncate(limit);
                objects.last().map(|o| o.key.clone())
            } else {
                None
            };
            Ok(ObjectPage {
                objects,
                next_cursor,
            })
        })
        .await
        .map_err(|e| StorageError::Service(e.to_string()))?
    }

    pub async fn check(&self) -> Result<(), StorageError> {
        let dir = self.bucket_dir();
        tokio::fs::create_dir_all(&dir).await?;
        let probe = self
            .tmp_dir()
            .join(format!(".probe-{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(self.tmp_dir()).await?;
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await?;
        Ok(())
    }
}

async fn temp_exists(temp: &Path) -> bool {
    tokio::fs::try_exists(temp).await.unwrap_or(false)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // An object deleted while the listing walks past it is simply not listed.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file()
            && let Ok(rel) = path.strip_prefix(root)
            && let Some(key) = rel.to_str()
        {
            out.push(ObjectInfo {
                key: key.to_string(),
                size: meta.len(),
                last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a client puts in a presigned URL (bucket, key, expiry, size bound,
        /// signature), only what this store signed passes, and nothing panics.
        #[test]
        fn only_urls_this_store_signed_pass(
            bucket in proptest::prelude::any::<String>(),
            key in proptest::prelude::any::<String>(),
            expires in proptest::prelude::any::<i64>(),
            max in proptest::prelude::any::<Option<u64>>(),
            signature in proptest::prelude::any::<String>(),
        ) {
            let store = LocalStore::new(PathBuf::from("/nonexistent"), "b".into(), "http://x".into(), b"s");
            proptest::prop_assert!(store.verify("PUT", &bucket, &key, expires, max, &signature).is_err());
            let url = store.presign("PUT", "k/clip.mp4", Duration::from_secs(60), max).url;
            let query = url.split_once('?').unwrap().1;
            let field = |name: &str| query.split('&').find_map(|p| p.strip_prefix(name)).unwrap().to_string();
            let (exp, sig): (i64, String) = (field("expires=").parse().unwrap(), field("signature="));
            proptest::prop_assert!(store.verify("PUT", "b", "k/clip.mp4", exp, max, &sig).is_ok());
            // The signature covers the method, the key, the expiry and the bound.
            proptest::prop_assert!(store.verify("GET", "b", "k/clip.mp4", exp, max, &sig).is_err());
            proptest::prop_assert!(store.verify("PUT", "b", "k/other.mp4", exp, max, &sig).is_err());
            proptest::prop_assert!(store.verify("PUT", "b", "k/clip.mp4", exp + 1, max, &sig).is_err());
            let raised = max.map_or(Some(1), |m| if m == u64::MAX { None } else { Some(m + 1) });
            proptest::prop_assert!(store.verify("PUT", "b", "k/clip.mp4", exp, raised, &sig).is_err());
        }
    }

    /// An upload into a folder whose last object is being deleted (which tidies the folder
    /// away) still lands, and a listing that walks past a deleted object leaves it out
    /// rather than failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_and_listings_race_deletes_in_the_same_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().into(), "b".into(), "http://x".into(), b"s");
        let rounds = 300;
        let deleter = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..rounds {
                    let key = format!("f{i}/other");
                    let temp = store.new_temp_path().await.unwrap();
                    tokio::fs::write(&temp, b"x").await.unwrap();
                    store.commit_temp(&temp, &key).await.unwrap();
                    store.delete(&key).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let lister = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    store.list(None, None, 10_000).await.unwrap();
                }
            })
        };
        for i in 0..rounds {
            let temp = store.new_temp_path().await.unwrap();
            tokio::fs::write(&temp, b"kept").await.unwrap();
            store
                .commit_temp(&temp, &format!("f{i}/kept"))
                .await
                .unwrap();
        }
        deleter.await.unwrap();
        lister.await.unwrap();
        let page = store.list(None, None, 10_000).await.unwrap();
        assert_eq!(page.objects.len(), rounds);
        assert!(page.objects.iter().all(|o| o.key.ends_with("/kept")));
    }
}
