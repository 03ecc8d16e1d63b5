use serde_json::Value;

use crate::commands::model::{Command, CommandStatus, command_columns};
use crate::db::Db;
use crate::devices::model::{DEVICE_TOKEN_PREFIX, Device, DeviceStatus};
use crate::devices::service::require_client;
use crate::devices::service::{find_for_user, hash_device_token};
use crate::error::{DomainError, DomainResult, codes};
use crate::links;
use crate::pagination::{Page, PageQuery};
use crate::realtime::event;
use crate::state::AppState;
use crate::time;
use crate::{db_execute, db_fetch_all, db_fetch_optional, keyset_page};

fn command_not_found() -> DomainError {
    DomainError::not_found(codes::COMMAND_NOT_FOUND, "Command not found")
}

fn validate(command_type: &str, payload: &Value) -> DomainResult<()> {
    let len = command_type.chars().count();
    if len == 0
        || len > 64
        || command_type
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(DomainError::validation(
            "type must be 1-64 visible characters without spaces",
        ));
    }
    if !(payload.is_object() || payload.is_null()) {
        return Err(DomainError::validation(
            "payload must be a JSON object (or null)",
        ));
    }
    if payload.to_string().len() > 16 * 1024 {
        return Err(DomainError::validation(
            "payload must be at most 16 KiB of JSON",
        ));
    }
    Ok(())
}

/// A device token is refused once its device is disabled; a user naming a disabled
/// client as the sender is refused the same way.
fn require_active_sender(source: &Device) -> DomainResult<()> {
    if source.status == DeviceStatus::Active {
        Ok(())
    } else {
        Err(DomainError::conflict(
            codes::DEVICE_DISABLED,
            "The sending client is disabled",
        ))
    }
}

/// Checks that `source` (a client) may command `target_id` (a linked camera of the same user).
pub async fn authorise(db: &Db, source: &Device, target_id: &str) -> DomainResult<Device> {
    require_client(source)?;
    require_active_sender(source)?;
    let target = find_for_user(db, &source.user_id, target_id).await?;
    if !target.is_camera() {
        return Err(DomainError::invalid(
            codes::TARGET_NOT_CAMERA,
            "The target must be a camera device",
        ));
    }
    if target.status != DeviceStatus::Active {
        return Err(DomainError::conflict(
            codes::DEVICE_DISABLED,
            "The target camera is disabled",
        ));
    }
    if !links::service::are_linked(db, &target.id, &source.id).await? {
        return Err(DomainError::forbidden(
            codes::DEVICES_NOT_LINKED,
            "This client is not linked to that camera",
        ));
    }
    Ok(target)
}

/// Authorises and queues a command from `source` to `target_id`: the hot path of every
/// command. One statement checks the target (the caller's own active camera, linked to the
/// caller) and inserts, so a command costs one database round trip after the caller's own
/// lookup instead of three. Only when that statement inserts nothing are the checks run one
/// by one, to say which failed (in the order clients have always seen).
pub async fn authorise_and_create(
    state: &AppState,
    source: &Device,
    target_id: &str,
    command_type: String,
    payload: Value,
) -> DomainResult<Command> {
    require_client(source)?;
    require_active_sender(source)?;
    if validate(&command_type, &payload).is_ok() {
        let command = new_command(
            state,
            source.user_id.clone(),
            source.id.clone(),
            target_id,
            command_type,
            payload,
            None,
        );
        let inserted = insert(
            &state.db,
            "INSERT INTO commands (id, user_id, source_device_id, target_device_id, type, payload, status, created_at, updated_at, expires_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM devices t
             WHERE t.id = $4 AND t.user_id = $2 AND t.role = 'camera' AND t.status = 'active'
               AND EXISTS (SELECT 1 FROM device_links l WHERE l.camera_device_id = t.id AND l.client_device_id = $3)",
            &command,
        )
        .await?;
        if inserted == 1 {
            return deliver_new(state, command).await;
        }
        let target = authorise(&state.db, source, target_id).await?;
        // Allowed after all: a link or the camera changed between the two reads.
        return create(
            state,
            source,
            &target,
            command.command_type,
            command.payload,
            None,
        )
        .await;
    }
    let target = authorise(&state.db, source, target_id).await?;
    create(state, source, &target, command_type, payload, None).await
}

/// The owner and the client a device token names, as the one-statement insert returns them.
#[derive(sqlx::FromRow)]
struct InsertedFor {
    user_id: String,
    source_device_id: String,
}

/// The whole of a client's command in one database round trip: the statement resolves the
/// token to an active client and inserts only if the target is that user's active camera
/// linked to it. `None` means nothing was stored (a bad token, a refused or invalid
/// command); the caller then takes the ordinary path, which names the reason. Tokens are
/// resolved here rather than cached so that a revoked token or removed link counts at once.
pub async fn create_with_device_token(
    state: &AppState,
    token: &str,
    target_id: &str,
    command_type: &str,
    payload: &Value,
) -> DomainResult<Option<Command>> {
    if !token.starts_with(DEVICE_TOKEN_PREFIX) || validate(command_type, payload).is_err() {
        return Ok(None);
    }
    let mut command = new_command(
        state,
        String::new(),
        String::new(),
        target_id,
        command_type.to_string(),
        payload.clone(),
        None,
    );
    let stored = db_fetch_optional!(
        &state.db,
        InsertedFor,
        "INSERT INTO commands (id, user_id, source_device_id, target_device_id, type, payload, status, created_at, updated_at, expires_at)
         SELECT $1, s.user_id, s.id, t.id, $2, $3, $4, $5, $6, $7
         FROM devices s JOIN devices t ON t.user_id = s.user_id
         WHERE s.token_hash = $8 AND s.status = 'active' AND s.role = 'client'
           AND t.id = $9 AND t.role = 'camera' AND t.status = 'active'
           AND EXISTS (SELECT 1 FROM device_links l WHERE l.camera_device_id = t.id AND l.client_device_id = s.id)
         RETURNING user_id, source_device_id",
        [
            &command.id,
            &command.command_type,
            sqlx::types::Json(&command.payload),
            &command.status,
            command.created_at,
            command.updated_at,
            command.expires_at,
            hash_device_token(token),
            target_id
        ]
    )?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    command.user_id = stored.user_id;
    command.source_device_id = stored.source_device_id;
    deliver_new(state, command).await.map(Some)
}

/// A new command from `source_device_id` (of `user_id`) to `target_id`. A camera with a live socket gets it at once,
/// so it is stored directly as `dispatched` (one write instead of insert + update).
fn new_command(
    state: &AppState,
    user_id: String,
    source_device_id: String,
    target_id: &str,
    command_type: String,
    payload: Value,
    ttl_secs: Option<u64>,
) -> Command {
    let now = time::now();
    let ttl = chrono::Duration::seconds(ttl_secs.unwrap_or(state.config.command_ttl_secs) as i64);
    let online = state.realtime.is_online(target_id);
    Command {
        id: crate::pagination::new_row_id(),
        user_id,
        source_device_id,
        target_device_id: target_id.to_string(),
        command_type,
        payload,
        status: if online {
            CommandStatus::Dispatched
        } else {
            CommandStatus::Queued
        },
        reason: None,
        created_at: now,
        updated_at: now,
        expires_at: now + ttl,
    }
}

/// Queues a command (already authorised) and dispatches it if the camera is online.
pub async fn create(
    state: &AppState,
    source: &Device,
    target: &Device,
    command_type: String,
    payload: Value,
    ttl_secs: Option<u64>,
) -> DomainResult<Command> {
    validate(&command_type, &payload)?;
    let command = new_command(
        state,
        source.user_id.clone(),
        source.id.clone(),
        &target.id,
        command_type,
        payload,
        ttl_secs,
    );
    insert(
        &state.db,
        "INSERT INTO commands (id, user_id, source_device_id, target_device_id, type, payload, status, created_at, updated_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &command,
    )
    .await?;
    deliver_new(state, command).await
}

/// Runs an insert of `command` whose parameters $1–$10 are its columns in table order;
/// returns how many rows it stored.
async fn insert(db: &Db, sql: &'static str, command: &Command) -> DomainResult<u64> {
    Ok(db_execute!(
        db,
        sql,
        [
            &command.id,
            &command.user_id,
            &command.source_device_id,
            &command.target_device_id,
            &command.command_type,
            sqlx::types::Json(&command.payload),
            &command.status,
            command.created_at,
            command.updated_at,
            command.expires_at
        ]
    )?)
}

/// Hands a just-stored command to its camera if it is online.
async fn deliver_new(state: &AppState, mut command: Command) -> DomainResult<Command> {
    if command.status == CommandStatus::Dispatched {
        // As in `dispatch`: the camera's copy goes through the back-pressured device emit,
        // so a full socket buffer delays the command rather than losing it.
        state
            .realtime
            .emit(&command.user_id, &[], event::COMMAND_RECEIVED, &command)
            .await;
        state
            .realtime
            .emit_to_device(&command.target_device_id, event::COMMAND_RECEIVED, &command)
            .await;
        announce(state, &command).await;
    } else if state.realtime.is_online(&command.target_device_id) {
        // The camera connected between the presence check and the insert; its own
        // pending-command delivery may have missed this row, so dispatch now (the
        // conditional update makes a double dispatch impossible).
        dispatch(state, &mut command).await?;
    }
    Ok(command)
}

/// Sends a command to its camera. A queued command becomes `dispatched` (announced to the
/// source); an already dispatched one is simply re-sent (at-least-once delivery).
pub async fn dispatch(state: &AppState, command: &mut Command) -> DomainResult<()> {
    if command.status == CommandStatus::Queued {
        let now = time::now();
        let changed = db_execute!(
            &state.db,
            "UPDATE commands SET status = 'dispatched', updated_at = $1 WHERE id = $2 AND status = 'queued'",
            [now, &command.id]
        )?;
        if changed == 1 {
            command.status = CommandStatus::Dispatched;
            command.updated_at = now;
            // The camera's copy goes through the back-pressured device emit.
            state
                .realtime
                .emit(&command.user_id, &[], event::COMMAND_RECEIVED, command)
                .await;
            state
                .realtime
                .emit_to_device(&command.target_device_id, event::COMMAND_RECEIVED, command)
                .await;
            announce(state, command).await;
            return Ok(());
        }
    }
    if command.status == CommandStatus::Dispatched {
        state
            .realtime
            .emit_to_device(&command.target_device_id, event::COMMAND_RECEIVED, command)
            .await;
    }
    Ok(())
}

/// Tells the source client (and the owner's sessions) about a status change.
pub async fn announce(state: &AppState, command: &Command) {
    state
        .realtime
        .emit(
            &command.user_id,
            &[&command.source_device_id],
            event::COMMAND_STATUS,
            command,
        )
        .await;
}

/// Everything a camera should (still) act on, oldest first. A command whose sender was
/// unlinked from the camera or disabled since is not delivered: the sender lost the right
/// to command it, and the command expires unsent.
pub async fn pending_for(db: &Db, camera_id: &str) -> DomainResult<Vec<Command>> {
    Ok(db_fetch_all!(
        db,
        Command,
        concat!("SELECT ", command_columns!(), "
         FROM commands WHERE target_device_id = $1 AND status IN ('queued', 'dispatched') AND expires_at > $2
           AND EXISTS (SELECT 1 FROM device_links l
                       WHERE l.camera_device_id = commands.target_device_id
                         AND l.client_device_id = commands.source_device_id)
           AND EXISTS (SELECT 1 FROM devices d
                       WHERE d.id = commands.source_device_id AND d.status = 'active')
         ORDER BY created_at, id"),
        [camera_id, time::now()]
    )?)
}

pub async fn deliver_pending(state: &AppState, camera_id: &str) -> DomainResult<usize> {
    let pending = pending_for(&state.db, camera_id).await?;
    let n = pending.len();
    for mut command in pending {
        dispatch(state, &mut command).await?;
    }
    Ok(n)
}

async fn find(db: &Db, id: &str) -> DomainResult<Option<Command>> {
    Ok(db_fetch_optional!(
        db,
        Command,
        concat!(
            "SELECT ",
            command_columns!(),
            "
         FROM commands WHERE id = $1"
        ),
        [id]
    )?)
}

/// The camera's answer (socket `command:ack` or `POST /commands/:id/ack`).
pub async fn acknowledge(
    state: &AppState,
    camera: &Device,
    command_id: &str,
    status: &str,
    reason: Option<String>,
) -> DomainResult<Command> {
    let status = match CommandStatus::parse(status) {
        Some(s @ (CommandStatus::Acknowledged | CommandStatus::Rejected)) => s,
        _ => {
            return Err(DomainError::validation(
                "status must be \"acknowledged\" or \"rejected\"",
            ));
        }
    };
    if let Some(r) = &reason
        && r.chars().count() > 500
    {
        return Err(DomainError::validation(
            "reason must be at most 500 characters",
        ));
    }
    // Socket.IO payloads reach here without the HTTP body's NUL check; PostgreSQL text
    // cannot hold a NUL, and no command id has one.
    if reason.as_deref().is_some_and(|r| r.contains('\0')) {
        return Err(DomainError::validation(
            "reason must not contain NUL characters",
        ));
    }
    if command_id.contains('\0') {
        return Err(command_not_found());
    }
    // The usual case in one round trip: a live command of this camera takes the answer.
    let now = time::now();
    if let Some(command) = db_fetch_optional!(
        &state.db,
        Command,
        concat!(
            "UPDATE commands SET status = $1, reason = $2, updated_at = $3
             WHERE id = $4 AND target_device_id = $5 AND status IN ('queued', 'dispatched') AND expires_at > $3
             RETURNING ",
            command_columns!()
        ),
        [status, &reason, now, command_id, &camera.id]
    )? {
        announce(state, &command).await;
        return Ok(command);
    }
    // Otherwise find out why: unknown, another camera's, final, or past its expiry.
    let mut command = find(&state.db, command_id)
        .await?
        .filter(|c| c.target_device_id == camera.id)
        .ok_or_else(command_not_found)?;
    if command.is_final() {
        return Err(final_error(&command));
    }
    let now = time::now();
    if command.expires_at <= now {
        expire(state, &mut command).await?;
        return Err(final_error(&command));
    }
    let changed = db_execute!(
        &state.db,
        "UPDATE commands SET status = $1, reason = $2, updated_at = $3 WHERE id = $4 AND status IN ('queued', 'dispatched')",
        [status, &reason, now, &command.id]
    )?;
    if changed == 0 {
        // Lost a race with expiry or a concurrent ack: report the state that won.
        let current = find(&state.db, command_id)
            .await?
            .ok_or_else(command_not_found)?;
        return Err(final_error(&current));
    }
    command.status = status;
    command.reason = reason;
    command.updated_at = now;
    announce(state, &command).await;
    Ok(command)
}

fn final_error(command: &Command) -> DomainError {
    if command.status == CommandStatus::Expired {
        DomainError::conflict(codes::COMMAND_EXPIRED, "The command has expired")
    } else {
        DomainError::conflict(
            codes::COMMAND_ALREADY_FINAL,
            format!("The command is already {}", command.status),
        )
    }
}

async fn expire(state: &AppState, command: &mut Command) -> DomainResult<()> {
    let now = time::now();
    let changed = db_execute!(
        &state.db,
        "UPDATE commands SET status = 'expired', updated_at = $1 WHERE id = $2 AND status IN ('queued', 'dispatched')",
        [now, &command.id]
    )?;
    if changed == 1 {
        command.status = CommandStatus::Expired;
        command.updated_at = now;
        announce(state, command).await;
    }
    Ok(())
}

/// Expires every open command past its TTL; run by the housekeeping loop.
pub async fn expire_due(state: &AppState) -> DomainResult<usize> {
    let now = time::now();
    let expired = db_fetch_all!(
        &state.db,
        Command,
        concat!(
            "UPDATE commands SET status = 'expired', updated_at = $1
         WHERE status IN ('queued', 'dispatched') AND expires_at <= $2
         RETURNING ",
            command_columns!()
        ),
        [now, now]
    )?;
    for command in &expired {
        announce(state, command).await;
    }
    Ok(expired.len())
}

pub struct ListFilter {
    pub device_id: Option<String>,
    pub status: Option<String>,
}

pub async fn list(
    db: &Db,
    user_id: &str,
    filter: &ListFilter,
    page: &PageQuery,
) -> DomainResult<Page<Command>> {
    let status = filter
        .status
        .as_deref()
        .map(|s| {
            CommandStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = CommandStatus::ALL.iter().map(|s| s.as_str()).collect();
                DomainError::validation(format!("status must be one of {}", all.join(", ")))
            })
        })
        .transpose()?;
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        Command,
        concat!(
            "SELECT ",
            command_columns!(),
            "
         FROM commands
         WHERE user_id = $1
           AND ($2 IS NULL OR source_device_id = $3 OR target_device_id = $4)
           AND ($5 IS NULL OR status = $6)
           AND ",
            keyset_page!(7, 8, 9, 10)
        ),
        [
            user_id,
            &filter.device_id,
            &filter.device_id,
            &filter.device_id,
            status,
            status,
            keyset.at,
            keyset.at,
            &keyset.id,
            keyset.fetch
        ]
    )?;
    Ok(keyset.page(rows))
}
