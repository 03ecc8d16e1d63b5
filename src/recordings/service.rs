//! Recording policy and the recordings' life: a camera's live stream starts a recording
//! when its mode says so, each segment the recorder closes is recorded and uploaded, and
//! the end (or a failure) is announced. Also the reads and deletes the API serves, the
//! crash recovery at boot and the retention sweep.

use std::path::{Path, PathBuf};
use std::time::Duration;

use watchpost_media::recorder::{self, ClosedSegment, Container, RecorderConfig, RecorderEvent};

use super::model::{
    Recording, RecordingDetail, RecordingReason, RecordingStatus, Segment, recording_columns,
};
use super::upload::{self, UploadJob};
use crate::config::{RecordingConfig, RecordingMode};
use crate::db::Db;
use crate::devices::model::Device;
use crate::error::{DomainError, DomainResult, codes};
use crate::pagination::{Page, PageQuery};
use crate::recording_runtime::ActiveRecording;
use crate::state::AppState;
use crate::storage::Presigned;
use crate::streams::model::SessionReason;
use crate::time::{self, Timestamp};
use crate::{
    db_execute, db_fetch_all, db_fetch_optional, devices, keyset_page, links, streams, tx_execute,
};

pub const RECORDING_STARTED: &str = "recording:started";
pub const RECORDING_COMPLETED: &str = "recording:completed";

fn recording_not_found() -> DomainError {
    DomainError::not_found(codes::RECORDING_NOT_FOUND, "Recording not found")
}

/// The mode a camera records in: its own, else the server's.
pub fn effective_mode(config: &RecordingConfig, camera: &Device) -> RecordingMode {
    camera.recording_mode.unwrap_or(config.mode)
}

/// Everything a running recording's driver needs to know.
#[derive(Clone)]
struct Context {
    recording_id: String,
    stream_id: String,
    user_id: String,
    camera_id: String,
    reason: RecordingReason,
    /// How far before motion a segment may start and still be kept (motion recordings).
    pre_roll: chrono::Duration,
}

/// A stream's camera is now publishing: record it if its mode says so. Errors are logged,
/// never raised: the live stream goes on regardless.
pub async fn on_publisher_connected(state: &AppState, stream_id: &str) {
    if let Err(e) = start_for_stream(state, stream_id).await {
        tracing::warn!(stream = %stream_id, error = %e, "could not start recording");
    }
}

async fn start_for_stream(state: &AppState, stream_id: &str) -> DomainResult<()> {
    let Some(sfu) = state.media.sfu() else {
        return Ok(());
    };
    if !recorder::AVAILABLE || state.recordings.is_recording(stream_id) {
        return Ok(());
    }
    let Some(session) = streams::service::find(&state.db, stream_id).await? else {
        return Ok(());
    };
    if !session.is_active() {
        return Ok(());
    }
    let camera =
        devices::service::find_for_user(&state.db, &session.user_id, &session.camera_device_id)
            .await?;
    let reason = match effective_mode(&state.config.recording, &camera) {
        RecordingMode::Off => return Ok(()),
        RecordingMode::Always => RecordingReason::Always,
        // The stream is recorded, but only segments that overlap motion are kept.
        RecordingMode::Motion => RecordingReason::Motion,
    };
    // Pre-roll: nothing before motion when the server opened the stream for it (there was
    // no picture before), else one segment, unless configured.
    let pre_roll_secs = state.config.recording.pre_roll_secs.unwrap_or(
        if session.reason == SessionReason::Recording {
            0
        } else {
            state.config.recording.segment_secs
        },
    );
    let max = state.config.recording.max_local_bytes;
    if state.recordings.backlog_bytes() >= max {
        state
            .recordings
            .counters()
            .segments_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            stream = %stream_id,
            backlog_bytes = state.recordings.backlog_bytes(),
            max_bytes = max,
            "recording refused: the local backlog of segments waiting for upload is full (RECORDING_MAX_LOCAL_BYTES)"
        );
        return Ok(());
    }
    let recording_id = crate::pagination::new_row_id();
    let dir = state.recordings.dir().join(&recording_id);
    let config = RecorderConfig::new(
        &dir,
        Duration::from_secs(state.config.recording.segment_secs),
    );
    let (recording, tap) = recorder::start(config)
        .map_err(|e| DomainError::invalid(codes::VALIDATION_ERROR, format!("recorder: {e}")))?;
    if !state.recordings.begin(
        stream_id,
        ActiveRecording {
            recording_id: recording_id.clone(),
            stats: recording.stats.clone(),
        },
    ) {
        return Ok(());
    }
    if let Err(e) = sfu.attach_recorder(stream_id, tap).await {
        state.recordings.end(stream_id, &recording_id);
        let _ = std::fs::remove_dir(&dir);
        tracing::info!(stream = %stream_id, error = %e, "stream ended before its recording started");
        return Ok(());
    }
    let context = Context {
        recording_id,
        stream_id: stream_id.to_string(),
        user_id: session.user_id.clone(),
        camera_id: camera.id.clone(),
        reason,
        pre_roll: chrono::Duration::seconds(pre_roll_secs as i64),
    };
    let driver_state = state.clone();
    state
        .recordings
        .tasks()
        .spawn(drive(driver_state, context, recording.events));
    Ok(())
}

/// Follows one recording from its first keyframe to its end. The database row is
/// written with the first kept segment's recording start (at once for `always`; for
/// `motion` only once a segment overlaps motion).
async fn drive(
    state: AppState,
    context: Context,
    mut events: tokio::sync::mpsc::UnboundedReceiver<RecorderEvent>,
) {
    let mut recording: Option<Recording> = None;
    // Time zero of the recorder's timeline, its format and codecs (from `Started`).
    let mut started: Option<(Timestamp, Container, &'static str, Option<&'static str>)> = None;
    // A motion recording's last unkept segment, kept back as possible pre-roll.
    let mut held: Option<ClosedSegment> = None;
    while let Some(event) = events.recv().await {
        let result = match event {
            RecorderEvent::Started {
                video,
                audio,
                container,
            } => {
                started = Some((time::now(), container, video.name(), audio));
                if context.reason == RecordingReason::Always {
                    open_row(&state, &context, &mut recording, started, None).await
                } else {
                    Ok(())
                }
            }
            RecorderEvent::SegmentClosed(segment) => {
                let Some((t0, container, ..)) = started else {
                    continue;
                };
                let at =
                    |offset: Duration| t0 + chrono::Duration::from_std(offset).unwrap_or_default();
                let keep = context.reason == RecordingReason::Always
                    || state
                        .recordings
                        .motion_of(&context.camera_id)
                        .is_some_and(|w| {
                            w.covers(
                                at(segment.offset),
                                at(segment.offset + segment.duration),
                                context.pre_roll,
                            )
                        });
                if !keep {
                    // Not (yet) wanted: held back in case motion starts within the pre-roll.
                    if let Some(old) = held.replace(segment) {
                        let _ = tokio::fs::remove_file(&old.path).await;
                    }
                    continue;
                }
                let mut result = Ok(());
                if let Some(pre) = held.take() {
                    let wanted = state
                        .recordings
                        .motion_of(&context.camera_id)
                        .is_some_and(|w| {
                            w.covers(
                                at(pre.offset),
                                at(pre.offset + pre.duration),
                                context.pre_roll,
                            )
                        });
                    if wanted {
                        result = keep_segment(&state, &context, &mut recording, started, pre).await;
                    } else {
                        let _ = tokio::fs::remove_file(&pre.path).await;
                    }
                }
                let _ = container;
                result.and(keep_segment(&state, &context, &mut recording, started, segment).await)
            }
            RecorderEvent::Finished => {
                discard(held.take()).await;
                if recording.is_some() {
                    finish(&state, &context, RecordingStatus::Complete, None).await;
                }
                break;
            }
            RecorderEvent::Failed { error } => {
                discard(held.take()).await;
                state
                    .recordings
                    .counters()
                    .recordings_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(recording = %context.recording_id, %error, "recording pipeline failed; the live stream goes on");
                if recording.is_none() {
                    // Nothing kept yet: the failure is still on record.
                    let _ = open_row(&state, &context, &mut recording, started, None).await;
                }
                finish(&state, &context, RecordingStatus::Failed, Some(&error)).await;
                break;
            }
        };
        if let Err(e) = result {
            tracing::warn!(recording = %context.recording_id, error = %e, "recording bookkeeping failed");
        }
    }
    if recording.is_none() {
        let _ = tokio::fs::remove_dir(state.recordings.dir().join(&context.recording_id)).await;
    }
    state
        .recordings
        .end(&context.stream_id, &context.recording_id);
}

async fn discard(segment: Option<ClosedSegment>) {
    if let Some(segment) = segment {
        let _ = tokio::fs::remove_file(&segment.path).await;
    }
}

/// Writes the recording's row (once) and announces it.
async fn open_row(
    state: &AppState,
    context: &Context,
    recording: &mut Option<Recording>,
    started: Option<(Timestamp, Container, &'static str, Option<&'static str>)>,
    first_segment_at: Option<Timestamp>,
) -> DomainResult<()> {
    if recording.is_some() {
        return Ok(());
    }
    let (t0, _, video, audio) = started.ok_or_else(|| DomainError::validation("not started"))?;
    let row = insert(state, context, first_segment_at.unwrap_or(t0), video, audio).await?;
    announce(state, &row, RECORDING_STARTED).await;
    *recording = Some(row);
    Ok(())
}

async fn keep_segment(
    state: &AppState,
    context: &Context,
    recording: &mut Option<Recording>,
    started: Option<(Timestamp, Container, &'static str, Option<&'static str>)>,
    segment: ClosedSegment,
) -> DomainResult<()> {
    let Some((t0, container, ..)) = started else {
        return Ok(());
    };
    let at = t0 + chrono::Duration::from_std(segment.offset).unwrap_or_default();
    open_row(state, context, recording, started, Some(at)).await?;
    let Some(row) = recording.as_ref() else {
        return Ok(());
    };
    segment_closed(state, context, row, t0, container, segment).await
}

async fn insert(
    state: &AppState,
    context: &Context,
    started_at: Timestamp,
    video_codec: &str,
    audio_codec: Option<&str>,
) -> DomainResult<Recording> {
    let now = time::now();
    let row = Recording {
        id: context.recording_id.clone(),
        user_id: context.user_id.clone(),
        camera_device_id: context.camera_id.clone(),
        stream_session_id: Some(context.stream_id.clone()),
        status: RecordingStatus::Recording,
        reason: context.reason,
        started_at,
        ended_at: None,
        duration_ms: 0,
        size_bytes: 0,
        video_codec: Some(video_codec.to_string()),
        audio_codec: audio_codec.map(str::to_string),
        error: None,
        created_at: now,
        updated_at: now,
    };
    db_execute!(
        &state.db,
        "INSERT INTO recordings (id, user_id, camera_device_id, stream_session_id, status, reason, started_at, video_codec, audio_codec, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            &row.id,
            &row.user_id,
            &row.camera_device_id,
            &row.stream_session_id,
            row.status,
            row.reason,
            row.started_at,
            &row.video_codec,
            &row.audio_codec,
            now,
            now
        ]
    )?;
    Ok(row)
}

/// The object key of a segment: `recordings/<userId>/<cameraId>/<recordingId>/<seq>.<ext>`.
pub fn object_key(recording: &Recording, seq: u32, container: Container) -> String {
    format!(
        "recordings/{}/{}/{}/{seq:06}.{}",
        recording.user_id,
        recording.camera_device_id,
        recording.id,
        container.extension()
    )
}

/// A closed segment is recorded in the database and queued for upload.
async fn segment_closed(
    state: &AppState,
    context: &Context,
    recording: &Recording,
    t0: Timestamp,
    container: Container,
    segment: ClosedSegment,
) -> DomainResult<()> {
    let size = match tokio::fs::metadata(&segment.path).await {
        Ok(m) if m.len() > 0 => m.len(),
        _ => {
            let _ = tokio::fs::remove_file(&segment.path).await;
            return Ok(());
        }
    };
    let max = state.config.recording.max_local_bytes;
    if state.recordings.backlog_bytes() + size > max {
        // Nothing already recorded is touched; this new segment is not kept, and the
        // recording stops so no more are written until uploads catch up.
        state
            .recordings
            .counters()
            .segments_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            recording = %context.recording_id,
            backlog_bytes = state.recordings.backlog_bytes(),
            max_bytes = max,
            "segment refused: the local backlog waiting for upload is full (RECORDING_MAX_LOCAL_BYTES); recording stops"
        );
        let _ = tokio::fs::remove_file(&segment.path).await;
        if let Some(sfu) = state.media.sfu() {
            sfu.detach_recorder(&context.stream_id).await;
        }
        return Ok(());
    }
    let started_at = t0 + chrono::Duration::from_std(segment.offset).unwrap_or_default();
    let row = Segment {
        recording_id: recording.id.clone(),
        seq: i64::from(segment.index),
        object_key: object_key(recording, segment.index, container),
        started_at,
        duration_ms: segment.duration.as_millis() as i64,
        size_bytes: size as i64,
        content_type: container.content_type().to_string(),
        uploaded_at: None,
    };
    if let Err(e) = add_segment(&state.db, &row).await {
        // The recording was deleted (its camera with it) while this segment was being
        // cut: the file is not wanted.
        if matches!(find(&state.db, &recording.id).await, Ok(None)) {
            let _ = tokio::fs::remove_file(&segment.path).await;
            return Ok(());
        }
        return Err(e);
    }
    state
        .recordings
        .counters()
        .segments_written
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.recordings.add_backlog(size);
    spawn_upload(state, &row, segment.path);
    Ok(())
}

/// The segment row and the recording's running totals change together: a process killed
/// between the two writes used to leave a segment whose length the recording did not count.
async fn add_segment(db: &Db, row: &Segment) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    tx_execute!(
        &mut tx,
        "INSERT INTO recording_segments (recording_id, seq, object_key, started_at, duration_ms, size_bytes, content_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            &row.recording_id,
            row.seq,
            &row.object_key,
            row.started_at,
            row.duration_ms,
            row.size_bytes,
            &row.content_type
        ]
    )?;
    tx_execute!(
        &mut tx,
        "UPDATE recordings SET duration_ms = duration_ms + $1, size_bytes = size_bytes + $2, updated_at = $3 WHERE id = $4",
        [
            row.duration_ms,
            row.size_bytes,
            time::now(),
            &row.recording_id
        ]
    )?;
    tx.commit().await?;
    Ok(())
}

fn spawn_upload(state: &AppState, row: &Segment, path: PathBuf) {
    let job = UploadJob {
        recording_id: row.recording_id.clone(),
        seq: row.seq,
        key: row.object_key.clone(),
        content_type: row.content_type.clone(),
        size: row.size_bytes as u64,
        path,
    };
    state
        .recordings
        .tasks()
        .spawn(upload::upload_segment(state.clone(), job));
}

async fn finish(state: &AppState, context: &Context, status: RecordingStatus, error: Option<&str>) {
    // A database that fails for a moment gets a few tries over ~8 s; past that the hourly
    // janitor closes the row ([`close_orphaned`]).
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let now = time::now();
        let updated = db_execute!(
            &state.db,
            "UPDATE recordings SET status = $1, error = $2, ended_at = $3, updated_at = $4 WHERE id = $5 AND status = 'recording'",
            [status, error, now, now, &context.recording_id]
        );
        match updated {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                tracing::warn!(recording = %context.recording_id, attempt, error = %e, "could not close recording; will retry");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                tracing::warn!(recording = %context.recording_id, error = %e, "could not close recording; the janitor will");
                return;
            }
        }
    }
    if let Ok(Some(row)) = find(&state.db, &context.recording_id).await {
        announce(state, &row, RECORDING_COMPLETED).await;
    }
}

/// The camera's owner (all their sessions) and its linked clients hear about it.
async fn announce(state: &AppState, recording: &Recording, name: &str) {
    match links::service::clients_of(&state.db, &recording.camera_device_id).await {
        Ok(clients) => {
            let ids: Vec<&str> = clients.iter().map(String::as_str).collect();
            state
                .realtime
                .emit(&recording.user_id, &ids, name, recording)
                .await;
        }
        Err(e) => tracing::warn!(name, error = ?e, "could not announce recording"),
    }
}

async fn find(db: &Db, id: &str) -> DomainResult<Option<Recording>> {
    Ok(db_fetch_optional!(
        db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings WHERE id = $1"
        ),
        [id]
    )?)
}

async fn segments_of(db: &Db, recording_id: &str) -> DomainResult<Vec<Segment>> {
    Ok(db_fetch_all!(
        db,
        Segment,
        "SELECT recording_id, seq, object_key, started_at, duration_ms, size_bytes, content_type, uploaded_at
         FROM recording_segments WHERE recording_id = $1 ORDER BY seq",
        [recording_id]
    )?)
}

/// Who is asking: the owner (all their cameras), or a client device (its linked cameras).
pub enum Reader<'a> {
    User(&'a str),
    Client(&'a Device),
}

impl Reader<'_> {
    fn user_id(&self) -> &str {
        match self {
            Reader::User(id) => id,
            Reader::Client(device) => &device.user_id,
        }
    }

    fn client_id(&self) -> Option<&str> {
        match self {
            Reader::User(_) => None,
            Reader::Client(device) => Some(&device.id),
        }
    }
}

/// A recording the reader may see, or 404.
async fn find_for(db: &Db, reader: &Reader<'_>, id: &str) -> DomainResult<Recording> {
    let recording = find(db, id)
        .await?
        .filter(|r| r.user_id == reader.user_id())
        .ok_or_else(recording_not_found)?;
    if let Some(client) = reader.client_id()
        && !links::service::are_linked(db, &recording.camera_device_id, client).await?
    {
        return Err(recording_not_found());
    }
    Ok(recording)
}

pub struct RecordingFilter {
    pub camera_device_id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub status: Option<String>,
}

pub async fn list(
    db: &Db,
    reader: &Reader<'_>,
    filter: &RecordingFilter,
    page: &PageQuery,
) -> DomainResult<Page<Recording>> {
    for t in [filter.from, filter.to].iter().flatten() {
        if !time::in_supported_range(t) {
            return Err(DomainError::validation(
                "from/to must be between 1970 and 9999",
            ));
        }
    }
    let status = filter
        .status
        .as_deref()
        .map(|s| {
            RecordingStatus::parse(s).ok_or_else(|| {
                DomainError::validation("status must be recording, complete or failed")
            })
        })
        .transpose()?;
    let keyset = page.keyset()?;
    let client = reader.client_id();
    let rows = db_fetch_all!(
        db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings
         WHERE user_id = $1
           AND ($2 IS NULL OR camera_device_id = $3)
           AND ($4 IS NULL OR started_at >= $5)
           AND ($6 IS NULL OR started_at < $7)
           AND ($8 IS NULL OR status = $9)
           AND ($10 IS NULL OR camera_device_id IN
                (SELECT camera_device_id FROM device_links WHERE client_device_id = $11))
           AND ",
            keyset_page!(12, 13, 14, 15)
        ),
        [
            reader.user_id(),
            &filter.camera_device_id,
            &filter.camera_device_id,
            filter.from,
            filter.from,
            filter.to,
            filter.to,
            status,
            status,
            client,
            client,
            keyset.at,
            keyset.at,
            &keyset.id,
            keyset.fetch
        ]
    )?;
    Ok(keyset.page(rows))
}

pub async fn detail(db: &Db, reader: &Reader<'_>, id: &str) -> DomainResult<RecordingDetail> {
    let recording = find_for(db, reader, id).await?;
    let segments = segments_of(db, &recording.id).await?;
    let until = recording.ended_at.unwrap_or_else(time::now);
    let motion_event_ids: Vec<(String,)> = db_fetch_all!(
        db,
        (String,),
        "SELECT id FROM motion_events
         WHERE camera_device_id = $1 AND started_at <= $2 AND (ended_at IS NULL OR ended_at >= $3)
         ORDER BY started_at",
        [&recording.camera_device_id, until, recording.started_at]
    )?;
    Ok(RecordingDetail {
        recording,
        segments,
        motion_event_ids: motion_event_ids.into_iter().map(|(id,)| id).collect(),
    })
}

pub async fn download_url(
    state: &AppState,
    reader: &Reader<'_>,
    id: &str,
    seq: i64,
) -> DomainResult<Presigned> {
    let recording = find_for(&state.db, reader, id).await?;
    let segment = segments_of(&state.db, &recording.id)
        .await?
        .into_iter()
        .find(|s| s.seq == seq)
        .ok_or_else(|| {
            DomainError::not_found(
                codes::SEGMENT_NOT_FOUND,
                "No such segment in this recording",
            )
        })?;
    if segment.uploaded_at.is_none() {
        return Err(DomainError::conflict(
            codes::SEGMENT_NOT_UPLOADED,
            "This segment is still waiting to be uploaded; try again shortly",
        ));
    }
    Ok(state
        .storage
        .presign_get(&segment.object_key, state.presign_ttl())
        .await?)
}

/// Deletes a finished recording, its objects and any local files left of it.
pub async fn delete(state: &AppState, user_id: &str, id: &str) -> DomainResult<()> {
    let recording = find_for(&state.db, &Reader::User(user_id), id).await?;
    if recording.status == RecordingStatus::Recording {
        return Err(DomainError::conflict(
            codes::RECORDING_IN_PROGRESS,
            "This recording is still in progress; it can be deleted once the stream ends",
        ));
    }
    remove(state, &recording).await
}

/// A camera is being deleted: its recordings go first, objects and all (the database would
/// drop their rows with the camera and leave the objects behind, counted nowhere).
pub async fn remove_for_camera(state: &AppState, camera_id: &str) -> DomainResult<()> {
    let recordings = db_fetch_all!(
        &state.db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings WHERE camera_device_id = $1"
        ),
        [camera_id]
    )?;
    for recording in recordings {
        remove(state, &recording).await?;
    }
    Ok(())
}

async fn remove(state: &AppState, recording: &Recording) -> DomainResult<()> {
    let segments = segments_of(&state.db, &recording.id).await?;
    for segment in &segments {
        if segment.uploaded_at.is_some() {
            state.storage.delete(&segment.object_key).await?;
        }
    }
    // A segment still waiting for upload is dropped with it: an upload that marks it after
    // this finds no row and removes what it put, and one that fails gives up.
    db_execute!(
        &state.db,
        "DELETE FROM recordings WHERE id = $1",
        [&recording.id]
    )?;
    // One that was marked uploaded between the listing and the delete kept its object.
    for segment in segments.iter().filter(|s| s.uploaded_at.is_none()) {
        let _ = state.storage.delete(&segment.object_key).await;
    }
    let dir = state.recordings.dir().join(&recording.id);
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
        let _ = tokio::fs::remove_dir(&dir).await;
    }
    Ok(())
}

/// Retention: recordings older than `RECORDING_RETENTION_DAYS` go, objects first.
pub async fn purge_expired(state: &AppState) -> DomainResult<usize> {
    let days = state.config.recording.retention_days;
    if days == 0 {
        return Ok(0);
    }
    let cutoff = time::now() - chrono::Duration::days(days as i64);
    let expired = db_fetch_all!(
        &state.db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings WHERE started_at < $1 AND status <> 'recording' LIMIT 500"
        ),
        [cutoff]
    )?;
    let mut removed = 0;
    for recording in expired {
        match remove(state, &recording).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(recording = %recording.id, error = %e, "retention: could not delete recording")
            }
        }
    }
    Ok(removed)
}

/// At boot: what a crash or a stop left on disk is uploaded, a segment cut short is
/// finalised if it can be, and recordings left `recording` are closed.
pub async fn recover(state: &AppState) -> DomainResult<()> {
    let dir = state.recordings.dir().clone();
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "recordings directory is not usable");
        return Ok(());
    }
    let mut entries = tokio::fs::read_dir(&dir)
        .await
        .map_err(crate::storage::StorageError::Io)?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_dir() {
            continue;
        }
        // One directory that cannot be recovered now must not keep the rest (and the
        // closing of interrupted recordings below) from being done.
        let found = match find(&state.db, name).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "could not look up a recording's directory");
                continue;
            }
        };
        match found {
            Some(recording) => {
                if let Err(e) = recover_recording(state, &recording, &path).await {
                    tracing::warn!(recording = %recording.id, error = %e, "could not recover a recording's files");
                }
            }
            None if uuid::Uuid::parse_str(name).is_ok() => {
                // A motion recording that never kept a segment (its row is written with
                // the first one): what it held back was never wanted.
                remove_segment_files(&path).await;
            }
            None => {
                tracing::warn!(dir = %path.display(), "not a recording's directory; left alone");
            }
        }
    }
    // Whatever was still recording when the process stopped has ended.
    close_orphaned(state).await?;
    Ok(())
}

/// Closes recordings left `recording` that no recorder drives any more: at boot, those the
/// process was recording when it stopped; hourly, any whose end the database did not take
/// (see [`finish`]), so none stays undeletable and out of retention's reach. Returns how
/// many it closed.
pub async fn close_orphaned(state: &AppState) -> DomainResult<usize> {
    // Rows first, then the recorders: one that ends in between has closed its own row.
    let open = db_fetch_all!(
        &state.db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings WHERE status = 'recording'"
        ),
        []
    )?;
    let active = state.recordings.active_recording_ids();
    let mut closed = 0;
    for recording in open.into_iter().filter(|r| !active.contains(&r.id)) {
        let ended_at = recording.started_at + chrono::Duration::milliseconds(recording.duration_ms);
        closed += db_execute!(
            &state.db,
            "UPDATE recordings SET status = 'complete', ended_at = $1, updated_at = $2 WHERE id = $3 AND status = 'recording'",
            [ended_at, time::now(), &recording.id]
        )? as usize;
        tracing::info!(recording = %recording.id, "closed a recording its recorder no longer drives");
    }
    Ok(closed)
}

async fn recover_recording(
    state: &AppState,
    recording: &Recording,
    dir: &Path,
) -> DomainResult<()> {
    let known = segments_of(&state.db, &recording.id).await?;
    let mut files: Vec<(u32, PathBuf, Container)> = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(crate::storage::StorageError::Io)?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".fixing") {
            let _ = tokio::fs::remove_file(&path).await;
            continue;
        }
        let seq = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok());
        match (seq, Container::from_path(&path)) {
            (Some(seq), Some(container)) => files.push((seq, path, container)),
            _ => {
                tracing::warn!(file = %path.display(), "unexpected file in a recording directory; left alone")
            }
        }
    }
    files.sort_by_key(|f| f.0);
    for (seq, path, container) in files {
        if let Some(segment) = known.iter().find(|s| s.seq == i64::from(seq)) {
            if segment.uploaded_at.is_some() {
                // Uploaded and recorded; only the local delete was missed.
                let _ = tokio::fs::remove_file(&path).await;
            } else {
                state.recordings.add_backlog(segment.size_bytes as u64);
                spawn_upload(state, segment, path);
            }
            continue;
        }
        if recording.reason == RecordingReason::Motion {
            // The open segment of a motion recording may not even overlap motion: only
            // segments kept while the server ran are uploaded.
            let _ = tokio::fs::remove_file(&path).await;
            continue;
        }
        // The segment that was open when the process died.
        let fix = path.clone();
        let finalised = tokio::task::spawn_blocking(move || recorder::finalise_segment(&fix))
            .await
            .map_err(|e| DomainError::validation(e.to_string()))?;
        let duration = match finalised {
            Ok(d) if !d.is_zero() => d,
            outcome => {
                tracing::warn!(file = %path.display(), ?outcome, "an unfinished segment could not be recovered; removed");
                let _ = tokio::fs::remove_file(&path).await;
                continue;
            }
        };
        let size = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let offset: i64 = segments_of(&state.db, &recording.id)
            .await?
            .iter()
            .map(|s| s.duration_ms)
            .sum();
        let row = Segment {
            recording_id: recording.id.clone(),
            seq: i64::from(seq),
            object_key: object_key(recording, seq, container),
            started_at: recording.started_at + chrono::Duration::milliseconds(offset),
            duration_ms: duration.as_millis() as i64,
            size_bytes: size as i64,
            content_type: container.content_type().to_string(),
            uploaded_at: None,
        };
        add_segment(&state.db, &row).await?;
        tracing::info!(recording = %recording.id, seq, "recovered an unfinished segment");
        state.recordings.add_backlog(size);
        spawn_upload(state, &row, path);
    }
    Ok(())
}

/// Motion started on a camera: a `motion` camera's window opens (or stays open), and if the
/// camera is online but not streaming the server opens a stream session to record it.
pub async fn on_motion_start(state: &AppState, camera: &Device, event_id: &str, at: Timestamp) {
    if effective_mode(&state.config.recording, camera) != RecordingMode::Motion
        || !recorder::AVAILABLE
        || state.media.sfu().is_none()
    {
        return;
    }
    state.recordings.with_motion(&camera.id, |w| {
        let expired = w.open_events.is_empty() && w.until.is_none_or(|u| u < at);
        if expired {
            w.since = Some(at);
        } else {
            w.since = Some(w.since.map_or(at, |s| s.min(at)));
        }
        w.open_events.push(event_id.to_string());
        w.until = None;
    });
    if !state
        .recordings
        .with_motion(&camera.id, |w| !std::mem::replace(&mut w.opening, true))
    {
        return;
    }
    // Released however this ends (a request whose client left is dropped mid-way).
    let mut opening = MotionOpening {
        state,
        camera_id: &camera.id,
        session_id: None,
    };
    opening.session_id = open_motion_stream(state, camera).await;
}

/// The claim on opening a camera's motion stream; given back on drop, with the session's
/// id once there is one.
struct MotionOpening<'a> {
    state: &'a AppState,
    camera_id: &'a str,
    session_id: Option<String>,
}

impl Drop for MotionOpening<'_> {
    fn drop(&mut self) {
        let opened = self.session_id.take();
        self.state.recordings.with_motion(self.camera_id, |w| {
            w.opening = false;
            if opened.is_some() {
                w.session_id = opened;
            }
        });
    }
}

/// Asks an online camera that is not streaming for a stream to record its motion; the
/// session's id when one was opened.
async fn open_motion_stream(state: &AppState, camera: &Device) -> Option<String> {
    match streams::service::open_for_recording_if_idle(state, camera).await {
        Ok(None) => None,
        Ok(Some(session)) => {
            tracing::info!(camera = %camera.id, stream = %session.id, "motion: requested the camera's stream to record it");
            Some(session.id)
        }
        Err(e) => {
            tracing::warn!(camera = %camera.id, error = %e, "motion recording: could not open a stream");
            None
        }
    }
}

/// Motion ended: once no motion is open on the camera, its window closes after the
/// post-roll.
pub fn on_motion_end(state: &AppState, camera: &Device, event_id: &str, at: Timestamp) {
    let post_roll = chrono::Duration::seconds(state.config.recording.post_roll_secs as i64);
    let _ = state.recordings.motion_of(&camera.id).map(|_| {
        state.recordings.with_motion(&camera.id, |w| {
            w.open_events.retain(|e| e != event_id);
            if w.open_events.is_empty() {
                w.until = Some(at + post_roll);
            }
        })
    });
}

/// Ends the stream sessions the server opened for motion whose post-roll is over. Motion
/// events that ended without the camera saying so (closed as stale by the sweeper, or the
/// camera deleted) close their windows here too, so no server-opened stream runs forever.
pub async fn end_finished_motion_sessions(state: &AppState) -> DomainResult<usize> {
    let post_roll = chrono::Duration::seconds(state.config.recording.post_roll_secs as i64);
    for (camera, event_id) in state.recordings.open_motion_events() {
        let ended: Option<(Option<Timestamp>,)> = db_fetch_optional!(
            &state.db,
            (Option<Timestamp>,),
            "SELECT ended_at FROM motion_events WHERE id = $1",
            [&event_id]
        )?;
        let ended_at = match ended {
            Some((Some(at),)) => at,
            Some((None,)) => continue,
            None => time::now(),
        };
        state.recordings.with_motion(&camera, |w| {
            w.open_events.retain(|e| *e != event_id);
            if w.open_events.is_empty() {
                w.until = Some(ended_at + post_roll);
            }
        });
    }
    let mut ended = 0;
    for id in state.recordings.motion_sessions_to_end(time::now()) {
        if let Some(mut session) = streams::service::find(&state.db, &id).await?
            && session.is_active()
        {
            match streams::service::end_session(state, &mut session, "recording_complete").await {
                Ok(()) => ended += 1,
                Err(e) => tracing::debug!(stream = %id, error = %e, "ending a motion stream"),
            }
        }
    }
    Ok(ended)
}

/// Removes the segment files (and `.fixing` leftovers) of a directory, then the directory
/// if that emptied it.
async fn remove_segment_files(dir: &Path) {
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if Container::from_path(&path).is_some() || name.ends_with(".fixing") {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
    let _ = tokio::fs::remove_dir(dir).await;
}

/// The latest recordings of every user, for the operator's dashboard.
pub async fn list_all(db: &Db) -> DomainResult<Vec<Recording>> {
    Ok(db_fetch_all!(
        db,
        Recording,
        concat!(
            "SELECT ",
            recording_columns!(),
            " FROM recordings ORDER BY created_at DESC LIMIT 200"
        ),
        []
    )?)
}
