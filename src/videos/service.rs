//! Video logic: naming, ownership and state, independent of HTTP.

use std::time::Duration;

use crate::db::Db;
use crate::error::{DomainError, DomainResult, codes};
use crate::keyed_lock::KeyedLock;
use crate::pagination::{Page, PageQuery};
use crate::storage::{MAX_OBJECT_BYTES, ObjectStore, Presigned, SizeBound};
use crate::time;
use crate::videos::model::{Video, VideoStatus, video_columns};
use crate::{db_execute, db_fetch_all, db_fetch_one, db_fetch_optional, keyset_page};

const MAX_FILE_NAME: usize = 128;

/// Reduces a client-supplied file name to a safe single path segment: the last component
/// only, `[A-Za-z0-9._-]`, no leading dots, at most 128 characters.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    let mut out: String = trimmed.chars().take(MAX_FILE_NAME).collect();
    if out.is_empty() || out.chars().all(|c| c == '_') {
        out = "file".to_string();
    }
    out
}

/// A prefix is up to four `/`-separated segments, each sanitised like a file name; empty
/// segments, `.` and `..` are dropped.
pub fn sanitize_prefix(prefix: &str) -> Option<String> {
    let segments: Vec<String> = prefix
        .split(['/', '\\'])
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .take(4)
        .map(sanitize_file_name)
        .collect();
    (!segments.is_empty()).then(|| segments.join("/"))
}

pub fn user_namespace(user_id: &str) -> String {
    format!("users/{user_id}/")
}

fn valid_content_type(ct: &str) -> bool {
    let Some((kind, sub)) = ct.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    ct.len() <= 127 && token(kind) && token(sub.split(';').next().unwrap_or("").trim())
}

/// What households upload: clips, snapshots, sound. Anything else (an HTML page, a
/// script, an SVG that is `image/svg+xml` but runs script) would be served back from this
/// server's origin with the type it was stored under.
fn is_media_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or(("", ""));
    matches!(kind, "video" | "image" | "audio") && !sub.starts_with("svg")
}

pub struct UploadRequest {
    pub user_id: String,
    pub device_id: String,
    pub file_name: String,
    pub prefix: Option<String>,
    pub content_type: Option<String>,
    /// The bytes the client says it will send; bound into the URL when given.
    pub size: Option<u64>,
}

/// Uploads an account may have open (issued, not yet completed) at once. Each open one
/// is looked at in the store when the quota is checked, and a client that asks for URLs it
/// never uses must not grow that, or the table, without end.
pub const MAX_OPEN_UPLOADS: i64 = 256;

/// How long after its URL expires an upload never completed is deleted, object and row.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Quota checks and the writes they allow run one at a time per account: two completions
/// checked at once could each see the other's bytes as free.
static QUOTA: KeyedLock = KeyedLock::new();

/// Bytes an account's uploads take, `except` one: completed ones at their stored size; open
/// ones whose URL is still valid at their declared size (a reservation, so parallel uploads
/// cannot each see the whole quota free); and every other open one (no size declared, or
/// its URL expired) at the size of what is stored under its key, since it counts whether
/// or not the client ever completes it.
async fn bytes_used(
    db: &Db,
    store: &ObjectStore,
    user_id: &str,
    ttl: Duration,
    except_id: &str,
) -> DomainResult<u64> {
    let open_since = time::now() - chrono::Duration::from_std(ttl).unwrap_or_default();
    let (used,): (i64,) = db_fetch_one!(
        db,
        (i64,),
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'uploaded' THEN COALESCE(size, 0) \
                                      WHEN declared_size IS NOT NULL AND created_at > $2 THEN declared_size \
                                      ELSE 0 END), 0) AS BIGINT) \
         FROM videos WHERE user_id = $1 AND id <> $3",
        [user_id, open_since, except_id]
    )?;
    let measured = db_fetch_all!(
        db,
        KeyRow,
        "SELECT object_key FROM videos
          WHERE user_id = $1 AND status = 'pending' AND id <> $2
            AND (declared_size IS NULL OR created_at <= $3)",
        [user_id, except_id, open_since]
    )?;
    let mut used = used.max(0) as u64;
    for row in measured {
        if let Some(info) = store.head(&row.object_key).await? {
            used = used.saturating_add(info.size);
        }
    }
    Ok(used)
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    object_key: String,
}

fn over_quota(needed: Option<u64>, used: u64, quota: u64) -> DomainError {
    let left = quota.saturating_sub(used);
    let message = match needed {
        Some(n) => format!(
            "Storage quota exceeded: this upload needs {n} bytes and {left} of {quota} bytes are left"
        ),
        None => format!("Storage quota exceeded: {used} of {quota} bytes are in use"),
    };
    DomainError::TooLarge {
        code: codes::STORAGE_QUOTA_EXCEEDED,
        message,
    }
}

/// Issues a presigned PUT for a new video. With a quota (`quota` > 0), the URL carries at
/// most what is left of it: exactly the declared size, or the remainder when no size was
/// declared (the embedded store enforces that; S3 is checked on completion).
pub async fn create_upload(
    db: &Db,
    store: &ObjectStore,
    ttl: Duration,
    quota: u64,
    req: UploadRequest,
) -> DomainResult<(Video, Presigned)> {
    if req.file_name.trim().is_empty() {
        return Err(DomainError::validation("fileName must not be empty"));
    }
    if req.size.is_some_and(|n| n > MAX_OBJECT_BYTES) {
        return Err(DomainError::validation(format!(
            "size must be at most {MAX_OBJECT_BYTES} bytes"
        )));
    }
    let _quota = QUOTA.lock(&req.user_id).await;
    let (open,): (i64,) = db_fetch_one!(
        db,
        (i64,),
        "SELECT COUNT(*) FROM videos WHERE user_id = $1 AND status = 'pending'",
        [&req.user_id]
    )?;
    if open >= MAX_OPEN_UPLOADS {
        return Err(DomainError::conflict(
            codes::TOO_MANY_OPEN_UPLOADS,
            format!(
                "{MAX_OPEN_UPLOADS} uploads are open; complete or delete some before asking for more"
            ),
        ));
    }
    let bound = if quota > 0 {
        let used = bytes_used(db, store, &req.user_id, ttl, "").await?;
        let left = quota.saturating_sub(used);
        if left == 0 || req.size.is_some_and(|n| n > left) {
            return Err(over_quota(req.size, used, quota));
        }
        req.size.map_or(SizeBound::AtMost(left), SizeBound::Exactly)
    } else {
        req.size.map_or(SizeBound::Any, SizeBound::Exactly)
    };
    if let Some(ct) = &req.content_type
        && !(valid_content_type(ct) && is_media_type(ct))
    {
        return Err(DomainError::validation(
            "contentType must be a video, image or audio MIME type such as video/mp4",
        ));
    }
    let file_name = sanitize_file_name(&req.file_name);
    let id = crate::pagination::new_row_id();
    let mut key = user_namespace(&req.user_id);
    if let Some(prefix) = req.prefix.as_deref().and_then(sanitize_prefix) {
        key.push_str(&prefix);
        key.push('/');
    }
    key.push_str(&format!("{id}-{file_name}"));
    let presigned = store
        .presign_put(&key, req.content_type.as_deref(), bound, ttl)
        .await?;
    let now = time::now();
    let video = Video {
        id,
        device_id: req.device_id,
        object_key: key,
        bucket: store.bucket().to_string(),
        file_name,
        content_type: req.content_type,
        size: None,
        status: VideoStatus::Pending,
        created_at: now,
        updated_at: now,
        uploaded_at: None,
    };
    db_execute!(
        db,
        "INSERT INTO videos (id, user_id, device_id, object_key, bucket, file_name, content_type, status, created_at, updated_at, declared_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            &video.id,
            &req.user_id,
            &video.device_id,
            &video.object_key,
            &video.bucket,
            &video.file_name,
            &video.content_type,
            &video.status,
            now,
            now,
            // Only a declared size is a reservation; an undeclared upload's bound is just
            // what was left when it was issued.
            req.size.map(|n| n as i64)
        ]
    )?;
    Ok((video, presigned))
}

/// An operator upload under `admin/`, outside every user's namespace (no video row).
pub async fn create_admin_upload(
    store: &ObjectStore,
    ttl: Duration,
    file_name: &str,
    prefix: Option<&str>,
    content_type: Option<&str>,
) -> DomainResult<(String, Presigned)> {
    if file_name.trim().is_empty() {
        return Err(DomainError::validation("fileName must not be empty"));
    }
    let mut key = String::from("admin/");
    if let Some(prefix) = prefix.and_then(sanitize_prefix) {
        key.push_str(&prefix);
        key.push('/');
    }
    key.push_str(&format!(
        "{}-{}",
        uuid::Uuid::new_v4(),
        sanitize_file_name(file_name)
    ));
    let presigned = store
        .presign_put(&key, content_type, SizeBound::Any, ttl)
        .await?;
    Ok((key, presigned))
}

pub async fn find_by_key(db: &Db, user_id: &str, key: &str) -> DomainResult<Option<Video>> {
    Ok(db_fetch_optional!(
        db,
        Video,
        concat!(
            "SELECT ",
            video_columns!(),
            "
         FROM videos WHERE user_id = $1 AND object_key = $2"
        ),
        [user_id, key]
    )?)
}

pub async fn find_by_id(db: &Db, user_id: &str, id: &str) -> DomainResult<Option<Video>> {
    Ok(db_fetch_optional!(
        db,
        Video,
        concat!(
            "SELECT ",
            video_columns!(),
            "
         FROM videos WHERE user_id = $1 AND id = $2"
        ),
        [user_id, id]
    )?)
}

pub async fn list(db: &Db, user_id: &str, page: &PageQuery) -> DomainResult<Page<Video>> {
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        Video,
        concat!(
            "SELECT ",
            video_columns!(),
            "
         FROM videos WHERE user_id = $1 AND ",
            keyset_page!(2, 3, 4, 5)
        ),
        [user_id, keyset.at, keyset.at, &keyset.id, keyset.fetch]
    )?;
    Ok(keyset.page(rows))
}

/// Confirms an upload by looking at the stored object; records its size. An object that
/// would take the account over its quota (`quota` > 0) is deleted and refused.
pub async fn complete(
    db: &Db,
    store: &ObjectStore,
    quota: u64,
    ttl: Duration,
    user_id: &str,
    id: &str,
) -> DomainResult<Video> {
    let _quota = QUOTA.lock(user_id).await;
    let mut video = find_by_id(db, user_id, id)
        .await?
        .ok_or_else(|| DomainError::not_found(codes::NOT_FOUND, "Video not found"))?;
    let Some(info) = store.head(&video.object_key).await? else {
        return Err(DomainError::conflict(
            codes::UPLOAD_NOT_FOUND,
            "The object has not been uploaded yet",
        ));
    };
    if quota > 0 && video.status == VideoStatus::Pending {
        let used = bytes_used(db, store, user_id, ttl, &video.id).await?;
        if used.saturating_add(info.size) > quota {
            store.delete(&video.object_key).await?;
            db_execute!(db, "DELETE FROM videos WHERE id = $1", [&video.id])?;
            return Err(over_quota(Some(info.size), used, quota));
        }
    }
    let now = time::now();
    let size = info.size as i64;
    db_execute!(
        db,
        "UPDATE videos SET status = 'uploaded', size = $1, uploaded_at = $2, updated_at = $3 WHERE id = $4",
        [size, now, now, &video.id]
    )?;
    video.status = VideoStatus::Uploaded;
    video.size = Some(size);
    video.uploaded_at = Some(now);
    video.updated_at = now;
    Ok(video)
}

/// Deletes the user's object and its row. Deleting again is fine; a key outside the
/// user's namespace (someone else's) is "not found".
pub async fn delete(db: &Db, store: &ObjectStore, user_id: &str, key: &str) -> DomainResult<bool> {
    // One at a time with a PUT's commit, a completion and the sweep of this account: a
    // PUT that was accepted cannot land after the delete and leave an object with no row.
    let _quota = QUOTA.lock(user_id).await;
    match find_by_key(db, user_id, key).await? {
        Some(video) => {
            store.delete(&video.object_key).await?;
            // Of two deletes racing, only the one that removed the row says it deleted.
            let removed = db_execute!(db, "DELETE FROM videos WHERE id = $1", [&video.id])?;
            Ok(removed == 1)
        }
        None if key.starts_with(&user_namespace(user_id)) => {
            // No video by that key, but an S3 URL still valid may have put an object there
            // after the video was deleted: it goes too.
            store.delete(key).await?;
            Ok(false)
        }
        None => Err(DomainError::not_found(codes::NOT_FOUND, "Video not found")),
    }
}

/// The account whose namespace a key is in (`users/<id>/…`).
fn key_owner(key: &str) -> Option<&str> {
    key.strip_prefix("users/")?.split('/').next()
}

/// Puts an uploaded object in place with `commit` if its upload is still open, as one step
/// against a delete, a completion or the sweep of the same account (which hold the same
/// lock): the check at the PUT's start was made before its body streamed in, and the
/// upload may have been completed or deleted since. `false` (nothing committed) if not.
pub async fn commit_put<F, E>(db: &Db, key: &str, commit: F) -> DomainResult<Result<bool, E>>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let _quota = match key_owner(key) {
        Some(owner) => Some(QUOTA.lock(owner).await),
        None => None,
    };
    if !accepts_put(db, key).await? {
        return Ok(Ok(false));
    }
    Ok(commit.await.map(|()| true))
}

/// Whether the embedded store may take a PUT to `key` under a URL it signed: a user's key
/// only while its upload is open. A URL stays valid for its whole lifetime, and must not
/// overwrite a completed video (past what completion checked) or bring back a deleted one.
pub async fn accepts_put(db: &Db, key: &str) -> DomainResult<bool> {
    if !key.starts_with("users/") {
        return Ok(true);
    }
    Ok(db_fetch_optional!(
        db,
        KeyRow,
        "SELECT object_key FROM videos WHERE object_key = $1 AND status = 'pending'",
        [key]
    )?
    .is_some())
}

/// Uploads never completed, a while after their URL expired: what the client put is
/// deleted with the row (it counted against the quota until now). Returns how many went.
pub async fn sweep_abandoned(db: &Db, store: &ObjectStore, ttl: Duration) -> DomainResult<usize> {
    let cutoff =
        time::now() - chrono::Duration::from_std(ttl + ABANDONED_AFTER).unwrap_or_default();
    let abandoned = db_fetch_all!(
        db,
        Video,
        concat!(
            "SELECT ",
            video_columns!(),
            " FROM videos WHERE status = 'pending' AND created_at < $1 LIMIT 500"
        ),
        [cutoff]
    )?;
    let mut removed = 0;
    for video in abandoned {
        match sweep_one(db, store, &video).await {
            Ok(gone) => removed += gone as usize,
            // One upload the store will not delete now must not hold up the rest.
            Err(e) => {
                tracing::warn!(key = %video.object_key, error = %e, "could not sweep an abandoned upload")
            }
        }
    }
    Ok(removed)
}

/// Removes one abandoned upload, unless it was completed (or deleted) since it was listed:
/// under its account's lock, so a late completion or a PUT's commit is either before (and
/// the upload is kept) or after (and finds it closed).
async fn sweep_one(db: &Db, store: &ObjectStore, video: &Video) -> DomainResult<bool> {
    let _quota = match key_owner(&video.object_key) {
        Some(owner) => Some(QUOTA.lock(owner).await),
        None => None,
    };
    if !accepts_put(db, &video.object_key).await? {
        return Ok(false);
    }
    store.delete(&video.object_key).await?;
    let removed = db_execute!(
        db,
        "DELETE FROM videos WHERE id = $1 AND status = 'pending'",
        [&video.id]
    )?;
    Ok(removed == 1)
}

/// Completed uploads whose URL has expired since: what is stored now is final (an S3 URL
/// can put new bytes over a completed video until it expires, past what completion
/// checked), so its size is looked at once more and recorded. Returns how many changed.
pub async fn settle_sizes(db: &Db, store: &ObjectStore, ttl: Duration) -> DomainResult<usize> {
    let cutoff = time::now() - chrono::Duration::from_std(ttl).unwrap_or_default();
    let open = db_fetch_all!(
        db,
        Video,
        concat!(
            "SELECT ",
            video_columns!(),
            " FROM videos WHERE status = 'uploaded' AND NOT size_settled AND created_at < $1 LIMIT 500"
        ),
        [cutoff]
    )?;
    let mut changed = 0;
    for video in open {
        let size = store
            .head(&video.object_key)
            .await?
            .map(|info| info.size as i64);
        let size = size.unwrap_or(0);
        if Some(size) != video.size {
            changed += 1;
        }
        db_execute!(
            db,
            "UPDATE videos SET size = $1, size_settled = TRUE WHERE id = $2",
            [size, &video.id]
        )?;
    }
    Ok(changed)
}

/// Deletes any object in the bucket (operator). Returns whether it existed.
pub async fn delete_any_object(db: &Db, store: &ObjectStore, key: &str) -> DomainResult<bool> {
    // A recording's segment goes with its recording (its row, its totals, the playlist):
    // deleting the object alone would leave a segment that plays as a 404.
    let segment: Option<(String,)> = db_fetch_optional!(
        db,
        (String,),
        "SELECT recording_id FROM recording_segments WHERE object_key = $1 LIMIT 1",
        [key]
    )?;
    if let Some((recording,)) = segment {
        return Err(DomainError::conflict(
            codes::RECORDING_SEGMENT,
            format!(
                "This object is a segment of recording {recording}; delete the recording instead"
            ),
        ));
    }
    let existed = store.head(key).await?.is_some();
    store.delete(key).await?;
    // A user's video row must not outlive its object.
    db_execute!(db, "DELETE FROM videos WHERE object_key = $1", [key])?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_neutralised() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("/abs/path/clip.mp4"), "clip.mp4");
        assert_eq!(sanitize_file_name("C:\\Users\\me\\clip.mp4"), "clip.mp4");
        assert_eq!(sanitize_file_name("a\0b.mp4"), "ab.mp4");
        assert_eq!(sanitize_file_name(".."), "file");
        assert_eq!(sanitize_file_name("..."), "file");
        assert_eq!(sanitize_file_name(".hidden"), "hidden");
        assert_eq!(sanitize_file_name("my clip (1).mp4"), "my_clip__1_.mp4");
        assert_eq!(sanitize_file_name(&"x".repeat(500)).len(), 128);
        assert_eq!(sanitize_prefix("../a/./b//c"), Some("a/b/c".to_string()));
        assert_eq!(sanitize_prefix("../.."), None);
    }

    #[test]
    fn content_types() {
        assert!(valid_content_type("video/mp4"));
        assert!(valid_content_type("text/plain; charset=utf-8"));
        assert!(!valid_content_type("video"));
        assert!(!valid_content_type("video/mp4\r\nX: y"));
        assert!(is_media_type("video/mp4"));
        assert!(is_media_type("Image/JPEG"));
        assert!(is_media_type("audio/ogg; codecs=opus"));
        assert!(!is_media_type("text/html"));
        assert!(!is_media_type("application/javascript"));
        assert!(!is_media_type("image/svg+xml"));
    }
}
