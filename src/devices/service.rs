//! Device registration and management.

use chrono::Duration;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::RecordingMode;
use crate::db::Db;
use crate::devices::model::{DEVICE_TOKEN_PREFIX, Device, DeviceStatus, Role, device_columns};
use crate::error::{DomainError, DomainResult, codes};
use crate::pagination::{Page, PageQuery};
use crate::realtime::Realtime;
use crate::time;
use crate::{db_execute, db_fetch_all, db_fetch_optional, keyset_page, tx_execute};

/// A heartbeat within this window counts as online.
pub const ONLINE_WINDOW: Duration = Duration::seconds(60);

/// `wpd_` + 40 random alphanumerics. Shown once; only its SHA-256 is stored.
pub fn generate_device_token() -> String {
    let body: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{DEVICE_TOKEN_PREFIX}{body}")
}

/// Tokens carry 238 bits of entropy, so a fast unsalted hash is enough (nothing to brute force).
pub fn hash_device_token(token: &str) -> String {
    crate::crypto::hex(&Sha256::digest(token.as_bytes()))
}

/// A fingerprint of the device's current pairing (its token): it changes when the device
/// is disabled and again when it is re-enabled with a new token, so a credential tied to
/// it ends with the pairing it was issued under. `None` for a device that is gone.
pub async fn pairing(db: &Db, device_id: &str) -> DomainResult<Option<String>> {
    let row: Option<(String,)> = db_fetch_optional!(
        db,
        (String,),
        "SELECT token_hash FROM devices WHERE id = $1",
        [device_id]
    )?;
    Ok(row.map(|(hash,)| {
        let mut digest = Sha256::new();
        digest.update(b"watchpost-device-pairing:");
        digest.update(hash.as_bytes());
        crate::crypto::hex(&digest.finalize()[..12])
    }))
}

pub async fn device_by_token(db: &Db, token: &str) -> DomainResult<Option<Device>> {
    if !token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(db_fetch_optional!(
        db,
        Device,
        concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE token_hash = $1 AND status = 'active'"
        ),
        [hash_device_token(token)]
    )?)
}

pub fn device_not_found() -> DomainError {
    DomainError::not_found(codes::DEVICE_NOT_FOUND, "Device not found")
}

fn validate_name(name: &str) -> DomainResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DomainError::validation(
            "name must be 1-100 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

fn validate_metadata(metadata: &Value) -> DomainResult<()> {
    if !metadata.is_object() {
        return Err(DomainError::validation("metadata must be a JSON object"));
    }
    if metadata.to_string().len() > 16 * 1024 {
        return Err(DomainError::validation("metadata must be at most 16 KiB"));
    }
    Ok(())
}

pub fn parse_role(role: &str) -> DomainResult<Role> {
    Role::parse(role)
        .ok_or_else(|| DomainError::validation("role must be \"camera\" or \"client\""))
}

/// Fills in `online` from live sockets and recent heartbeats. A disabled device is never
/// online: its token no longer works, whatever its last heartbeat said.
pub fn with_presence(mut device: Device, realtime: &Realtime) -> Device {
    let recent = device
        .last_heartbeat_at
        .is_some_and(|t| time::now() - t <= ONLINE_WINDOW);
    device.online =
        device.status != DeviceStatus::Disabled && (realtime.is_online(&device.id) || recent);
    device
}

pub struct NewDevice {
    pub name: String,
    pub role: String,
    pub platform: Option<String>,
    pub metadata: Option<Value>,
}

pub async fn register(db: &Db, user_id: &str, new: NewDevice) -> DomainResult<(Device, String)> {
    let name = validate_name(&new.name)?;
    let role = parse_role(&new.role)?;
    let metadata = new
        .metadata
        .unwrap_or_else(|| Value::Object(Default::default()));
    validate_metadata(&metadata)?;
    if let Some(p) = &new.platform
        && (p.chars().count() > 50 || p.chars().any(char::is_control))
    {
        return Err(DomainError::validation(
            "platform must be at most 50 characters",
        ));
    }
    let token = generate_device_token();
    let now = time::now();
    let device = Device {
        id: crate::pagination::new_row_id(),
        user_id: user_id.to_string(),
        name,
        role,
        platform: new.platform,
        metadata,
        status: DeviceStatus::Active,
        recording_mode: None,
        online: false,
        last_seen_at: None,
        last_heartbeat_at: None,
        created_at: now,
        updated_at: now,
    };
    db_execute!(
        db,
        "INSERT INTO devices (id, user_id, name, role, platform, metadata, status, token_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            &device.id,
            &device.user_id,
            &device.name,
            &device.role,
            &device.platform,
            sqlx::types::Json(&device.metadata),
            &device.status,
            hash_device_token(&token),
            now,
            now
        ]
    )?;
    Ok((device, token))
}

/// The user's device, or 404 (also for other users' devices: no existence leak).
pub async fn find_for_user(db: &Db, user_id: &str, device_id: &str) -> DomainResult<Device> {
    db_fetch_optional!(
        db,
        Device,
        concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id = $1 AND user_id = $2"
        ),
        [device_id, user_id]
    )?
    .ok_or_else(device_not_found)
}

pub async fn list(db: &Db, user_id: &str, page: &PageQuery) -> DomainResult<Page<Device>> {
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        Device,
        concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE user_id = $1 AND ",
            keyset_page!(2, 3, 4, 5)
        ),
        [user_id, keyset.at, keyset.at, &keyset.id, keyset.fetch]
    )?;
    Ok(keyset.page(rows))
}

/// Every user's devices, newest first (admin dashboard).
pub async fn list_all(db: &Db) -> DomainResult<Vec<Device>> {
    Ok(db_fetch_all!(
        db,
        Device,
        concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices ORDER BY created_at DESC LIMIT 1000"
        ),
        []
    )?)
}

pub struct DevicePatch {
    pub name: Option<String>,
    pub role: Option<String>,
    pub metadata: Option<Value>,
    pub status: Option<String>,
    /// `Some(None)` sets it back to the server default.
    pub recording_mode: Option<Option<String>>,
}

/// The result of an update; `new_token` is set when a disabled device was re-enabled
/// (its old token stays revoked for good).
pub struct Updated {
    pub device: Device,
    pub new_token: Option<String>,
    /// The role changed: what the device's open sockets may do changed with it.
    pub role_changed: bool,
}

/// Applies only the fields given, each as its own conditional statement, so concurrent
/// updates never write back stale values (a rename cannot undo a disable).
pub async fn update(
    db: &Db,
    user_id: &str,
    device_id: &str,
    patch: DevicePatch,
) -> DomainResult<Updated> {
    let current = find_for_user(db, user_id, device_id).await?;
    let name = patch.name.as_deref().map(validate_name).transpose()?;
    let role = patch.role.as_deref().map(parse_role).transpose()?;
    if let Some(metadata) = &patch.metadata {
        validate_metadata(metadata)?;
    }
    let status = patch
        .status
        .as_deref()
        .map(|s| {
            DeviceStatus::parse(s)
                .ok_or_else(|| DomainError::validation("status must be \"active\" or \"disabled\""))
        })
        .transpose()?;
    let recording_mode = patch
        .recording_mode
        .map(|mode| {
            mode.map(|m| {
                RecordingMode::parse(&m).ok_or_else(|| {
                    DomainError::validation(
                        "recordingMode must be \"off\", \"always\", \"motion\" or null",
                    )
                })
            })
            .transpose()
        })
        .transpose()?;
    let now = time::now();
    let mut role_changed = false;
    if let Some(role) = role
        && role != current.role
    {
        role_changed = true;
        // The device's row is locked before the links are looked for, as creating a link
        // locks both of its devices first: whichever comes second sees what the first did.
        let mut tx = db.begin().await?;
        crate::db::lock_devices(&mut tx, &[&current.id]).await?;
        let changed = tx_execute!(
            &mut tx,
            "UPDATE devices SET role = $1, updated_at = $2 WHERE id = $3
               AND NOT EXISTS (SELECT 1 FROM device_links WHERE camera_device_id = $4 OR client_device_id = $5)",
            [role, now, &current.id, &current.id, &current.id]
        )?;
        if changed == 0 {
            return Err(DomainError::conflict(
                codes::DEVICE_HAS_LINKS,
                "Remove this device's links before changing its role",
            ));
        }
        tx.commit().await?;
    }
    if let Some(name) = name {
        db_execute!(
            db,
            "UPDATE devices SET name = $1, updated_at = $2 WHERE id = $3",
            [name, now, &current.id]
        )?;
    }
    if let Some(metadata) = &patch.metadata {
        db_execute!(
            db,
            "UPDATE devices SET metadata = $1, updated_at = $2 WHERE id = $3",
            [sqlx::types::Json(metadata), now, &current.id]
        )?;
    }
    if let Some(mode) = recording_mode {
        db_execute!(
            db,
            "UPDATE devices SET recording_mode = $1, updated_at = $2 WHERE id = $3",
            [mode, now, &current.id]
        )?;
    }
    let mut new_token = None;
    match status {
        Some(DeviceStatus::Disabled) => {
            // Revoke: the stored hash no longer matches any token ever issued.
            db_execute!(
                db,
                "UPDATE devices SET status = 'disabled', token_hash = $1, updated_at = $2 WHERE id = $3",
                [
                    format!("revoked:{}", uuid::Uuid::new_v4()),
                    now,
                    &current.id
                ]
            )?;
        }
        Some(DeviceStatus::Active) if current.status == DeviceStatus::Disabled => {
            let token = generate_device_token();
            let changed = db_execute!(
                db,
                "UPDATE devices SET status = 'active', token_hash = $1, updated_at = $2 WHERE id = $3 AND status = 'disabled'",
                [hash_device_token(&token), now, &current.id]
            )?;
            if changed == 1 {
                new_token = Some(token);
            }
        }
        _ => {}
    }
    let device = find_for_user(db, user_id, device_id).await?;
    Ok(Updated {
        device,
        new_token,
        role_changed,
    })
}

pub async fn delete(db: &Db, user_id: &str, device_id: &str) -> DomainResult<()> {
    let removed = db_execute!(
        db,
        "DELETE FROM devices WHERE id = $1 AND user_id = $2",
        [device_id, user_id]
    )?;
    if removed == 0 {
        return Err(device_not_found());
    }
    Ok(())
}

/// Records that the device was seen (socket connect/disconnect).
pub async fn touch(db: &Db, device_id: &str) -> DomainResult<crate::time::Timestamp> {
    let now = time::now();
    db_execute!(
        db,
        "UPDATE devices SET last_seen_at = $1 WHERE id = $2",
        [now, device_id]
    )?;
    Ok(now)
}

/// Records that the device was seen, if its token, status and role are still the ones a
/// socket of it was admitted with. False means the socket must close: the device was
/// disabled, deleted or given another role (or token) since, possibly before the socket
/// had joined the room such a change closes.
pub async fn touch_if_unchanged(db: &Db, device: &Device, token_hash: &str) -> DomainResult<bool> {
    let changed = db_execute!(
        db,
        "UPDATE devices SET last_seen_at = $1
          WHERE id = $2 AND token_hash = $3 AND status = 'active' AND role = $4",
        [time::now(), &device.id, token_hash, device.role]
    )?;
    Ok(changed == 1)
}

/// A heartbeat: seen now, and online for the next minute even without a socket.
pub async fn heartbeat(db: &Db, device_id: &str) -> DomainResult<crate::time::Timestamp> {
    let now = time::now();
    db_execute!(
        db,
        "UPDATE devices SET last_seen_at = $1, last_heartbeat_at = $2 WHERE id = $3",
        [now, now, device_id]
    )?;
    Ok(now)
}

#[derive(sqlx::FromRow)]
pub struct IdRow {
    pub id: String,
}

/// Requires the camera role.
pub fn require_camera(device: &Device) -> DomainResult<()> {
    if device.is_camera() {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            codes::CAMERA_ONLY,
            "Only a camera device can do this",
        ))
    }
}

/// Requires the client role.
pub fn require_client(device: &Device) -> DomainResult<()> {
    if device.is_client() {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            codes::CLIENT_ONLY,
            "Only a client device can do this",
        ))
    }
}
