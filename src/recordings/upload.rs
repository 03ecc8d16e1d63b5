//! Segment uploads: put the file, check the stored size, mark it uploaded, and only then
//! delete the local copy. Failures retry with capped exponential backoff for as long as
//! the process runs; what is left at exit is picked up by `recover` at the next start.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::devices::service::IdRow;
use crate::state::AppState;
use crate::time;
use crate::{db_execute, db_fetch_optional};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(15);

pub(super) struct UploadJob {
    pub recording_id: String,
    pub seq: i64,
    pub key: String,
    pub content_type: String,
    pub size: u64,
    pub path: PathBuf,
}

/// True only when the database says the segment's row is gone (an error is not proof).
async fn segment_is_gone(state: &AppState, job: &UploadJob) -> bool {
    matches!(
        db_fetch_optional!(
            &state.db,
            IdRow,
            "SELECT recording_id AS id FROM recording_segments WHERE recording_id = $1 AND seq = $2",
            [&job.recording_id, job.seq]
        ),
        Ok(None)
    )
}

/// Gives up a segment whose recording was deleted: whatever part of it reached the store or
/// stayed on disk goes, and its bytes leave the backlog.
async fn abandon(state: &AppState, job: &UploadJob) {
    let _ = state.storage.delete(&job.key).await;
    let _ = tokio::fs::remove_file(&job.path).await;
    if let Some(dir) = job.path.parent() {
        let _ = tokio::fs::remove_dir(dir).await;
    }
    state.recordings.remove_backlog(job.size);
    tracing::info!(key = %job.key, "segment upload dropped: its recording was deleted");
}

pub(super) async fn upload_segment(state: AppState, job: UploadJob) {
    let mut delay = FIRST_RETRY;
    let mut attempts = 0u32;
    loop {
        match put_and_verify(&state, &job).await {
            Ok(()) => break,
            Err(e) => {
                // Deleted meanwhile (its local file with it): nothing is left to upload, and
                // retrying for ever would hold its bytes in the backlog, which refuses new
                // recordings once full.
                if segment_is_gone(&state, &job).await {
                    abandon(&state, &job).await;
                    return;
                }
                attempts += 1;
                state
                    .recordings
                    .counters()
                    .upload_failures
                    .fetch_add(1, Ordering::Relaxed);
                // Loud at first, then quieter: an outage must not flood the log.
                if attempts <= 3 || attempts.is_power_of_two() {
                    tracing::warn!(key = %job.key, attempts, error = %e, retry_in = ?delay, "segment upload failed; will retry");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    }
    let mut delay = FIRST_RETRY;
    let marked = loop {
        match db_execute!(
            &state.db,
            "UPDATE recording_segments SET uploaded_at = $1 WHERE recording_id = $2 AND seq = $3",
            [time::now(), &job.recording_id, job.seq]
        ) {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(key = %job.key, error = %e, "could not mark a segment uploaded; will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    };
    if marked == 0 {
        // The recording was deleted meanwhile: do not leave its object behind.
        let _ = state.storage.delete(&job.key).await;
    }
    if let Err(e) = tokio::fs::remove_file(&job.path).await {
        tracing::warn!(file = %job.path.display(), error = %e, "could not remove an uploaded segment");
    }
    if let Some(dir) = job.path.parent() {
        // Gone once its last segment is uploaded (fails harmlessly while others remain).
        let _ = tokio::fs::remove_dir(dir).await;
    }
    state.recordings.remove_backlog(job.size);
    state
        .recordings
        .counters()
        .segments_uploaded
        .fetch_add(1, Ordering::Relaxed);
}

async fn put_and_verify(state: &AppState, job: &UploadJob) -> Result<(), String> {
    let _slot = state
        .recordings
        .upload_slots()
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    state
        .storage
        .put_file(&job.key, &job.path, &job.content_type)
        .await
        .map_err(|e| e.to_string())?;
    match state.storage.head(&job.key).await {
        Ok(Some(info)) if info.size == job.size => Ok(()),
        Ok(Some(info)) => Err(format!(
            "stored size {} differs from the file's {}",
            info.size, job.size
        )),
        Ok(None) => Err("the object is missing after upload".to_string()),
        Err(e) => Err(e.to_string()),
    }
}
