//! `/storage/{bucket}/{*key}`: the embedded store's presigned PUT/GET endpoints. Only
//! mounted when the embedded store is in use; S3 clients talk to S3 directly.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_RANGE, LAST_MODIFIED, RANGE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use utoipa::IntoParams;

use super::local::no_such_object;
use super::{LocalStore, MAX_OBJECT_BYTES, ObjectStore, StorageError};
use crate::error::{ApiError, ApiResult, codes};
use crate::http::extract::{Path, Query};
use crate::state::AppState;
use crate::videos;

/// Mounted directly (not through the OpenAPI router) because keys contain `/`, which needs
/// axum's `{*key}` wildcard; the operations are documented via `ApiDoc`'s `paths(...)`.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/storage/{bucket}/{*key}",
        axum::routing::get(get_object).put(put_object),
    )
}

#[derive(Deserialize, IntoParams)]
pub struct SignedQuery {
    /// Unix time after which the URL is refused.
    pub expires: i64,
    /// The most bytes a PUT may carry, when the URL was issued with a bound.
    pub max: Option<u64>,
    /// Hex HMAC over method, bucket/key, expiry and the bound.
    pub signature: String,
}

fn local(state: &AppState) -> ApiResult<&LocalStore> {
    match &state.storage {
        ObjectStore::Local(store) => Ok(store),
        ObjectStore::S3(_) => Err(ApiError::not_found("No such route")),
    }
}

fn verify(
    store: &LocalStore,
    method: &str,
    bucket: &str,
    key: &str,
    q: &SignedQuery,
) -> ApiResult<()> {
    store
        .verify(method, bucket, key, q.expires, q.max, &q.signature)
        .map_err(|reason| {
            ApiError::forbidden(codes::INVALID_SIGNATURE, format!("Access denied: {reason}"))
        })
}

fn content_type_for(key: &str) -> &'static str {
    let ext = key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "ts" => "video/mp2t",
        "mov" => "video/quicktime",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "json" => "application/json",
        "txt" | "log" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// What a `Range` header asks of an object of `size` bytes (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// Serve the whole object (200): no range, a unit other than bytes, a header that does
    /// not parse, or several ranges (which this store does not cut into a multipart body).
    Whole,
    /// This inclusive byte range (206).
    Part(u64, u64),
    /// A well-formed range of which no byte exists (416).
    Unsatisfiable,
}

/// A `1*DIGIT` position: `None` when it is not one; saturates when it overflows (a last
/// position past any file means its end, a first position past it is past the end).
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

fn parse_range(header: &str, size: u64) -> RangeAnswer {
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeAnswer::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    match (first, last) {
        ("", suffix) => match position(suffix) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part(size.saturating_sub(n), size - 1),
        },
        (first, last) => {
            let Some(first) = position(first) else {
                return RangeAnswer::Whole;
            };
            let last = if last.is_empty() {
                u64::MAX
            } else {
                match position(last) {
                    Some(last) if last >= first => last,
                    // `5-1`, `0-x`: invalid, so ignored.
                    _ => return RangeAnswer::Whole,
                }
            };
            if first >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part(first, last.min(size - 1))
            }
        }
    }
}

/// The object's validators: a strong ETag from its size and modification time (a rename
/// over it changes both or the latter), and its `Last-Modified`.
fn validators(meta: &std::fs::Metadata) -> (String, Option<String>) {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let nanos = modified.map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{nanos:x}\"", meta.len());
    let last_modified = modified
        .and_then(|d| chrono::DateTime::from_timestamp(d.as_secs() as i64, 0))
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    (etag, last_modified)
}

/// A `Last-Modified` date tells versions apart only once its second has passed: two
/// writes within one second share it (RFC 9110 §8.8.2.2).
fn date_is_strong(meta: &std::fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= std::time::Duration::from_secs(1))
}

/// `If-Range` holds when it names the object as it is now: its strong ETag, or exactly
/// its `Last-Modified` date (`last_modified` is given only when that date is strong).
/// Otherwise the whole object is sent: a resumed download must not join the bytes of two
/// versions.
fn if_range_holds(if_range: &str, etag: &str, last_modified: Option<&str>) -> bool {
    let if_range = if_range.trim();
    if if_range.starts_with('"') {
        if_range == etag
    } else {
        last_modified == Some(if_range)
    }
}

#[utoipa::path(
    get, path = "/storage/{bucket}/{key}", tag = "storage",
    params(("bucket" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("key" = String, Path, description = "Object key (may contain '/')", pattern = r"^[^\x00-\x1F\x7F]+$"), SignedQuery),
    responses(
        (status = 200, description = "The object's bytes"),
        (status = 206, description = "A byte range of the object"),
        (status = 403, body = crate::error::ErrorBody, description = "Bad signature or expired URL"),
        (status = 404, body = crate::error::ErrorBody, description = "No such object"),
        (status = 400, body = crate::error::ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, an invalid query parameter"),
    )
)]
pub async fn get_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let store = local(&state)?;
    verify(store, "GET", &bucket, &key, &q)?;
    let path = store.path_for(&key)?;
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if no_such_object(&e) => return Err(StorageError::NotFound.into()),
        Err(e) => return Err(StorageError::Io(e).into()),
    };
    let meta = file.metadata().await.map_err(StorageError::Io)?;
    // A folder of objects opens like a file on Linux, but it is not an object.
    if !meta.is_file() {
        return Err(StorageError::NotFound.into());
    }
    let size = meta.len();
    let (etag, last_modified) = validators(&meta);
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let range = match (header(RANGE), header(IF_RANGE)) {
        (None, _) => RangeAnswer::Whole,
        (Some(_), Some(cond))
            if !if_range_holds(
                cond,
                &etag,
                last_modified.as_deref().filter(|_| date_is_strong(&meta)),
            ) =>
        {
            RangeAnswer::Whole
        }
        (Some(range), _) => parse_range(range, size),
    };
    let (status, start, len) = match range {
        RangeAnswer::Whole => (StatusCode::OK, 0, size),
        RangeAnswer::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (CONTENT_RANGE, format!("bytes */{size}")),
                    (ACCEPT_RANGES, "bytes".to_string()),
                ],
            )
                .into_response());
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(StorageError::Io)?;
    }
    let stream = tokio_util::io::ReaderStream::new(file.take(len));
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(&key)),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Stored bytes are whatever a client uploaded: never let a browser render them as a
    // page of this origin (sniffed HTML, an SVG with script), only save them.
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CONTENT_DISPOSITION, attachment_for(&key));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, value);
    }
    if let Some(value) = last_modified.and_then(|d| HeaderValue::from_str(&d).ok()) {
        h.insert(LAST_MODIFIED, value);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", start + len - 1);
        h.insert(CONTENT_RANGE, HeaderValue::from_str(&value).expect("ASCII"));
    }
    Ok(response)
}

/// `attachment`, named after the key's last segment when that is a plain file name.
fn attachment_for(key: &str) -> HeaderValue {
    let name = key.rsplit('/').next().unwrap_or_default();
    let plain = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if plain {
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or(HeaderValue::from_static("attachment"))
    } else {
        HeaderValue::from_static("attachment")
    }
}

#[utoipa::path(
    put, path = "/storage/{bucket}/{key}", tag = "storage",
    params(("bucket" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("key" = String, Path, description = "Object key (may contain '/')", pattern = r"^[^\x00-\x1F\x7F]+$"), SignedQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The object's bytes"),
    responses(
        (status = 200, description = "Stored"),
        (status = 403, body = crate::error::ErrorBody, description = "Bad signature or expired URL"),
        (status = 413, body = crate::error::ErrorBody, description = "Object too large"),
        (status = 409, body = crate::error::ErrorBody, description = "UPLOAD_CLOSED: the upload this URL was issued for was completed or deleted"),
        (status = 400, body = crate::error::ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, an invalid query parameter"),
    )
)]
pub async fn put_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<SignedQuery>,
    request: Request,
) -> ApiResult<Response> {
    let store = local(&state)?;
    verify(store, "PUT", &bucket, &key, &q)?;
    if !videos::service::accepts_put(&state.db, &key).await? {
        return Err(upload_closed());
    }
    let limit = q.max.unwrap_or(MAX_OBJECT_BYTES).min(MAX_OBJECT_BYTES);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let temp = store.new_temp_path().await?;
    let result = write_body(&temp, request.into_body(), limit).await;
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    // The upload may have been completed or deleted while its body streamed in.
    let committed =
        videos::service::commit_put(&state.db, &key, store.commit_temp(&temp, &key)).await;
    let outcome = match committed {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(upload_closed()),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(e) => Err(ApiError::from(e)),
    };
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(e);
    }
    // The ETag a GET of this version will carry.
    let etag = match tokio::fs::metadata(store.path_for(&key)?).await {
        Ok(meta) => validators(&meta).0,
        Err(_) => format!("\"{written:x}\""),
    };
    Ok((StatusCode::OK, [(ETAG, etag)]).into_response())
}

fn upload_closed() -> ApiError {
    ApiError::conflict(
        codes::UPLOAD_CLOSED,
        "This upload was completed or deleted; ask for a new upload URL",
    )
}

fn too_large(limit: u64) -> ApiError {
    if limit == MAX_OBJECT_BYTES {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            "Object exceeds the 5 GiB limit",
        )
    } else {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("This upload URL allows at most {limit} bytes"),
        )
    }
}

/// Streams the body to `path`, flushed to disk before returning, so a rename after this
/// never exposes a partial object.
async fn write_body(path: &std::path::Path, body: Body, limit: u64) -> ApiResult<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(StorageError::Io)?;
    let mut body = body;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(
                codes::UPLOAD_INTERRUPTED,
                format!("Upload interrupted: {e}"),
            )
        })?;
        if let Ok(chunk) = frame.into_data() {
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large(limit));
            }
            file.write_all(&chunk).await.map_err(StorageError::Io)?;
        }
    }
    file.sync_all().await.map_err(StorageError::Io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::{RangeAnswer, if_range_holds, parse_range};

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), Part(50, 99));
        assert_eq!(parse_range("Bytes=1-1", 100), Part(1, 1));
        // A last position too long for any number means the end.
        assert_eq!(
            parse_range("bytes=0-99999999999999999999", 100),
            Part(0, 99)
        );
        // Well formed, but no byte of it exists: 416.
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 100),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
        // Not understood, invalid or several: ignored, the whole object is sent.
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=0-0,-1",
            "items=0-1",
            "bytes=abc",
            "bytes=-",
            "bytes=0-1-2",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes",
            "",
            "bytes=--1",
        ] {
            assert_eq!(parse_range(ignored, 100), Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_names_this_version_or_nothing() {
        let etag = "\"64-1\"";
        let date = "Tue, 01 Dec 2026 10:00:00 GMT";
        assert!(if_range_holds(etag, etag, Some(date)));
        assert!(if_range_holds(date, etag, Some(date)));
        assert!(!if_range_holds("\"64-2\"", etag, Some(date)));
        assert!(!if_range_holds("W/\"64-1\"", etag, Some(date)));
        assert!(!if_range_holds(
            "Tue, 01 Dec 2026 10:00:01 GMT",
            etag,
            Some(date)
        ));
        assert!(!if_range_holds(date, etag, None));
        assert!(!if_range_holds("anything", etag, Some(date)));
    }
}
