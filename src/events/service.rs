use serde_json::Value;

use crate::db::Db;
use crate::devices::model::Device;
use crate::error::{DomainError, DomainResult, codes};
use crate::events::model::{MotionEvent, motion_event_columns};
use crate::links;
use crate::pagination::{Page, PageQuery};
use crate::realtime::event::{MOTION_DETECTED, MOTION_ENDED};
use crate::state::AppState;
use crate::time::{self, Timestamp};
use crate::{db_execute, db_fetch_all, db_fetch_optional, keyset_page};

fn event_not_found() -> DomainError {
    DomainError::not_found(codes::EVENT_NOT_FOUND, "Event not found")
}

/// Linked clients (and the owner's sessions) hear about the camera's event.
async fn announce(state: &AppState, event: &MotionEvent, name: &str) -> DomainResult<()> {
    match links::service::clients_of(&state.db, &event.camera_device_id).await {
        Ok(clients) => {
            let ids: Vec<&str> = clients.iter().map(String::as_str).collect();
            state.realtime.emit(&event.user_id, &ids, name, event).await;
        }
        Err(e) => tracing::warn!(name, error = ?e, "could not announce motion event"),
    }
    Ok(())
}

pub async fn start(
    state: &AppState,
    camera: &Device,
    started_at: Option<Timestamp>,
    score: Option<f64>,
    metadata: Option<Value>,
) -> DomainResult<MotionEvent> {
    let now = time::now();
    let started_at = started_at.unwrap_or(now);
    if !time::in_supported_range(&started_at) {
        return Err(DomainError::validation(
            "startedAt must be between 1970 and 9999",
        ));
    }
    if started_at > now + chrono::Duration::minutes(5) {
        return Err(DomainError::validation(
            "startedAt must not be in the future",
        ));
    }
    if let Some(s) = score
        && !s.is_finite()
    {
        return Err(DomainError::validation("score must be a finite number"));
    }
    let metadata = metadata.unwrap_or_else(|| Value::Object(Default::default()));
    if !metadata.is_object() || metadata.to_string().len() > 16 * 1024 {
        return Err(DomainError::validation(
            "metadata must be a JSON object of at most 16 KiB",
        ));
    }
    let event = MotionEvent {
        id: crate::pagination::new_row_id(),
        user_id: camera.user_id.clone(),
        camera_device_id: camera.id.clone(),
        started_at,
        ended_at: None,
        score,
        metadata,
        recording_ids: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    db_execute!(
        &state.db,
        "INSERT INTO motion_events (id, user_id, camera_device_id, started_at, score, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            &event.id,
            &event.user_id,
            &event.camera_device_id,
            event.started_at,
            event.score,
            sqlx::types::Json(&event.metadata),
            now,
            now
        ]
    )?;
    // A recording already running (`always`) covers it from its start.
    let mut event = event;
    event.recording_ids = recordings_overlapping(&state.db, &event).await?;
    announce(state, &event, MOTION_DETECTED).await?;
    Ok(event)
}

pub async fn end(state: &AppState, camera: &Device, event_id: &str) -> DomainResult<MotionEvent> {
    let mut event = db_fetch_optional!(
        &state.db,
        MotionEvent,
        concat!(
            "SELECT ",
            motion_event_columns!(),
            "
         FROM motion_events WHERE id = $1 AND camera_device_id = $2"
        ),
        [event_id, &camera.id]
    )?
    .ok_or_else(event_not_found)?;
    if event.ended_at.is_some() {
        return Err(DomainError::conflict(
            codes::EVENT_ALREADY_ENDED,
            "This motion event has already ended",
        ));
    }
    let now = time::now();
    // A camera's clock may run a little ahead of ours (its `startedAt` is taken up to five
    // minutes in the future): an event never ends before it started.
    let ended_at = now.max(event.started_at);
    let changed = db_execute!(
        &state.db,
        "UPDATE motion_events SET ended_at = $1, updated_at = $2 WHERE id = $3 AND ended_at IS NULL",
        [ended_at, now, &event.id]
    )?;
    if changed == 0 {
        return Err(DomainError::conflict(
            codes::EVENT_ALREADY_ENDED,
            "This motion event has already ended",
        ));
    }
    event.ended_at = Some(ended_at);
    event.updated_at = now;
    // The event as `GET /events` shows it: clients replace their copy with this one.
    event.recording_ids = recordings_overlapping(&state.db, &event).await?;
    announce(state, &event, MOTION_ENDED).await?;
    Ok(event)
}

/// Closes events left open longer than the configured maximum (a camera that crashed
/// mid-event), ending them at start + maximum.
pub async fn close_stale(state: &AppState) -> DomainResult<usize> {
    let max = chrono::Duration::seconds(state.config.motion_max_duration_secs as i64);
    let now = time::now();
    let stale = db_fetch_all!(
        &state.db,
        MotionEvent,
        concat!(
            "SELECT ",
            motion_event_columns!(),
            "
         FROM motion_events WHERE ended_at IS NULL AND started_at <= $1"
        ),
        [now - max]
    )?;
    let mut closed = 0;
    for mut event in stale {
        let ended_at = event.started_at + max;
        let changed = db_execute!(
            &state.db,
            "UPDATE motion_events SET ended_at = $1, updated_at = $2 WHERE id = $3 AND ended_at IS NULL",
            [ended_at, now, &event.id]
        )?;
        if changed == 1 {
            event.ended_at = Some(ended_at);
            event.updated_at = now;
            event.recording_ids = recordings_overlapping(&state.db, &event).await?;
            announce(state, &event, MOTION_ENDED).await?;
            closed += 1;
        }
    }
    Ok(closed)
}

pub struct EventFilter {
    pub camera_device_id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

pub async fn list(
    db: &Db,
    user_id: &str,
    filter: &EventFilter,
    page: &PageQuery,
) -> DomainResult<Page<MotionEvent>> {
    for t in [filter.from, filter.to].iter().flatten() {
        if !time::in_supported_range(t) {
            return Err(DomainError::validation(
                "from/to must be between 1970 and 9999",
            ));
        }
    }
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        MotionEvent,
        concat!(
            "SELECT ",
            motion_event_columns!(),
            "
         FROM motion_events
         WHERE user_id = $1
           AND ($2 IS NULL OR camera_device_id = $3)
           AND ($4 IS NULL OR started_at >= $5)
           AND ($6 IS NULL OR started_at < $7)
           AND ",
            keyset_page!(8, 9, 10, 11)
        ),
        [
            user_id,
            &filter.camera_device_id,
            &filter.camera_device_id,
            filter.from,
            filter.from,
            filter.to,
            filter.to,
            keyset.at,
            keyset.at,
            &keyset.id,
            keyset.fetch
        ]
    )?;
    let mut page = keyset.page(rows);
    for event in &mut page.items {
        event.recording_ids = recordings_overlapping(db, event).await?;
    }
    Ok(page)
}

/// The recordings of the event's camera that overlap it (an open event runs until now).
async fn recordings_overlapping(db: &Db, event: &MotionEvent) -> DomainResult<Vec<String>> {
    let until = event.ended_at.unwrap_or_else(time::now);
    let ids: Vec<(String,)> = db_fetch_all!(
        db,
        (String,),
        "SELECT id FROM recordings
         WHERE camera_device_id = $1 AND started_at <= $2 AND (ended_at IS NULL OR ended_at >= $3)
         ORDER BY started_at",
        [&event.camera_device_id, until, event.started_at]
    )?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}
