use serde_json::json;

use crate::commands;
use crate::db::Db;
use crate::devices::model::{Device, DeviceStatus};
use crate::devices::service::{require_camera, require_client};
use crate::error::{DomainError, DomainResult, codes};
use crate::keyed_lock::KeyedLock;
use crate::links;
use crate::pagination::{Page, PageQuery};
use crate::realtime::event;
use crate::state::AppState;
use crate::streams::media_token::{self, Claims, MediaRole};
use crate::streams::model::{
    IceServer, MediaCredentials, SessionReason, StreamSession, StreamStatus, stream_session_columns,
};
use crate::time::{self, Timestamp};
use crate::{db_execute, db_fetch_all, db_fetch_optional, keyset_page};

pub const MEDIA_TOKEN_TTL_SECS: i64 = 600;
pub const PLAYBACK_TOKEN_TTL_SECS: i64 = 300;

fn session_not_found() -> DomainError {
    DomainError::not_found(codes::STREAM_NOT_FOUND, "Stream session not found")
}

pub async fn find(db: &Db, id: &str) -> DomainResult<Option<StreamSession>> {
    // No session id holds a NUL, and PostgreSQL refuses one in a text parameter (a
    // Socket.IO payload reaches here without the HTTP extractors' checks).
    if id.contains('\0') {
        return Ok(None);
    }
    Ok(db_fetch_optional!(
        db,
        StreamSession,
        concat!(
            "SELECT ",
            stream_session_columns!(),
            "
         FROM stream_sessions WHERE id = $1"
        ),
        [id]
    )?)
}

/// A session of the caller's own user, or 404.
pub async fn find_for_user(db: &Db, user_id: &str, id: &str) -> DomainResult<StreamSession> {
    find(db, id)
        .await?
        .filter(|s| s.user_id == user_id)
        .ok_or_else(session_not_found)
}

/// Who hears about a session: requester, camera and every client linked to the camera.
async fn audience(db: &Db, session: &StreamSession) -> DomainResult<Vec<String>> {
    let mut ids = links::service::clients_of(db, &session.camera_device_id).await?;
    for id in [
        session.requester_device_id.as_ref(),
        Some(&session.camera_device_id),
    ]
    .into_iter()
    .flatten()
    {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    Ok(ids)
}

async fn announce(state: &AppState, session: &StreamSession, event: &str) -> DomainResult<()> {
    let ids = audience(&state.db, session).await?;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    state
        .realtime
        .emit(&session.user_id, &refs, event, session)
        .await;
    Ok(())
}

pub async fn request(
    state: &AppState,
    client: &Device,
    camera_id: &str,
) -> DomainResult<StreamSession> {
    require_client(client)?;
    let camera = commands::service::authorise(&state.db, client, camera_id).await?;
    let now = time::now();
    let session = StreamSession {
        id: crate::pagination::new_row_id(),
        user_id: client.user_id.clone(),
        camera_device_id: camera.id.clone(),
        requester_device_id: Some(client.id.clone()),
        requested_by_user_id: None,
        reason: SessionReason::View,
        status: StreamStatus::Requested,
        end_reason: None,
        created_at: now,
        updated_at: now,
        started_at: None,
        ended_at: None,
    };
    db_execute!(
        &state.db,
        "INSERT INTO stream_sessions (id, user_id, camera_device_id, requester_device_id, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            &session.id,
            &session.user_id,
            &session.camera_device_id,
            &session.requester_device_id,
            &session.status,
            now,
            now
        ]
    )?;
    announce(state, &session, event::STREAM_REQUESTED).await?;
    commands::service::create(
        state,
        client,
        &camera,
        "start_stream".to_string(),
        json!({ "streamSessionId": session.id }),
        // The command is pointless once the request has expired.
        Some(state.config.stream_request_ttl_secs),
    )
    .await?;
    Ok(session)
}

/// A signed-in user asks to watch one of their own cameras (the web app: no device token).
/// The camera must be connected, since it hears of the request only over its socket
/// (`stream:requested` with no requesting device). A camera that is already streaming is
/// joined rather than asked again, so several viewers and the recorder share one upstream.
/// Returns the session and whether it was created now.
pub async fn request_by_user(
    state: &AppState,
    user_id: &str,
    camera_id: &str,
) -> DomainResult<(StreamSession, bool)> {
    let camera = crate::devices::service::find_for_user(&state.db, user_id, camera_id).await?;
    if !camera.is_camera() {
        return Err(DomainError::invalid(
            codes::TARGET_NOT_CAMERA,
            "The target must be a camera device",
        ));
    }
    if camera.status != DeviceStatus::Active {
        return Err(DomainError::conflict(
            codes::DEVICE_DISABLED,
            "The camera is disabled",
        ));
    }
    // Two requests at once (two tabs, a double click, motion) ask the camera once.
    let _opening = OPENING.lock(&camera.id).await;
    if let Some(mut session) = active_for_camera(&state.db, &camera.id).await? {
        if !publisher_lost(state, &session).await {
            return Ok((session, false));
        }
        // Left streaming by a server that died without ending it: replace it.
        match end_session(state, &mut session, "publisher_left").await {
            Ok(()) | Err(DomainError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if !state.realtime.is_online(&camera.id) {
        return Err(DomainError::conflict(
            codes::CAMERA_OFFLINE,
            "The camera is offline",
        ));
    }
    Ok((
        open_for_user(state, &camera, SessionReason::View).await?,
        true,
    ))
}

/// Opening a session for a camera the owner or the server asked for is checked against the
/// camera's active session and done one at a time per camera.
static OPENING: KeyedLock = KeyedLock::new();

/// The server records motion: a session is opened unless the camera already has one (it
/// is recorded then) or is offline (it could not hear the request). The camera's owner
/// is the requester, and the camera hears `stream:requested` like any request. The
/// session, if opened.
pub async fn open_for_recording_if_idle(
    state: &AppState,
    camera: &Device,
) -> DomainResult<Option<StreamSession>> {
    let _opening = OPENING.lock(&camera.id).await;
    if active_for_camera(&state.db, &camera.id).await?.is_some()
        || !state.realtime.is_online(&camera.id)
    {
        return Ok(None);
    }
    open_for_user(state, camera, SessionReason::Recording)
        .await
        .map(Some)
}

/// A streaming session whose camera has had time to publish but has no publisher in the
/// media plane: nobody can watch it, and joining it would wait forever.
async fn publisher_lost(state: &AppState, session: &StreamSession) -> bool {
    const PUBLISH_GRACE_SECS: i64 = 15;
    let Some(sfu) = state.media.sfu() else {
        return false;
    };
    let settled = session
        .started_at
        .is_some_and(|t| time::now() - t > chrono::Duration::seconds(PUBLISH_GRACE_SECS));
    settled
        && !sfu
            .describe(&session.id)
            .await
            .iter()
            .any(|p| p.role == "publisher")
}

/// A session the camera's owner opened (in the web app or through the recorder).
async fn open_for_user(
    state: &AppState,
    camera: &Device,
    reason: SessionReason,
) -> DomainResult<StreamSession> {
    let now = time::now();
    let session = StreamSession {
        id: crate::pagination::new_row_id(),
        user_id: camera.user_id.clone(),
        camera_device_id: camera.id.clone(),
        requester_device_id: None,
        requested_by_user_id: Some(camera.user_id.clone()),
        reason,
        status: StreamStatus::Requested,
        end_reason: None,
        created_at: now,
        updated_at: now,
        started_at: None,
        ended_at: None,
    };
    db_execute!(
        &state.db,
        "INSERT INTO stream_sessions (id, user_id, camera_device_id, requested_by_user_id, reason, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            &session.id,
            &session.user_id,
            &session.camera_device_id,
            &session.requested_by_user_id,
            session.reason,
            &session.status,
            now,
            now
        ]
    )?;
    announce(state, &session, event::STREAM_REQUESTED).await?;
    Ok(session)
}

/// The camera's active session, if it has one (requested or streaming).
pub async fn active_for_camera(db: &Db, camera_id: &str) -> DomainResult<Option<StreamSession>> {
    Ok(db_fetch_optional!(
        db,
        StreamSession,
        concat!(
            "SELECT ",
            stream_session_columns!(),
            " FROM stream_sessions WHERE camera_device_id = $1 AND status IN ('requested', 'streaming')
             ORDER BY created_at DESC LIMIT 1"
        ),
        [camera_id]
    )?)
}

pub async fn accept(state: &AppState, camera: &Device, id: &str) -> DomainResult<StreamSession> {
    require_camera(camera)?;
    let mut session = find(&state.db, id)
        .await?
        .filter(|s| s.camera_device_id == camera.id)
        .ok_or_else(session_not_found)?;
    let now = time::now();
    let changed = db_execute!(
        &state.db,
        "UPDATE stream_sessions SET status = 'streaming', started_at = $1, updated_at = $2 WHERE id = $3 AND status = 'requested'",
        [now, now, &session.id]
    )?;
    if changed == 0 {
        let current = find(&state.db, id).await?.ok_or_else(session_not_found)?;
        return Err(match current.status {
            StreamStatus::Streaming => DomainError::conflict(
                codes::STREAM_ALREADY_STARTED,
                "The stream is already streaming",
            ),
            StreamStatus::Expired => {
                DomainError::conflict(codes::STREAM_EXPIRED, "The stream request has expired")
            }
            _ => DomainError::conflict(codes::STREAM_NOT_ACTIVE, "The stream session has ended"),
        });
    }
    session.status = StreamStatus::Streaming;
    session.started_at = Some(now);
    session.updated_at = now;
    announce(state, &session, event::STREAM_STARTED).await?;
    Ok(session)
}

/// Ends an active session; `reason` is recorded (`ended_by_requester`, `ended_by_camera`,
/// `publisher_left`, …).
pub async fn end_session(
    state: &AppState,
    session: &mut StreamSession,
    reason: &str,
) -> DomainResult<()> {
    let now = time::now();
    let changed = db_execute!(
        &state.db,
        "UPDATE stream_sessions SET status = 'ended', end_reason = $1, ended_at = $2, updated_at = $3
         WHERE id = $4 AND status IN ('requested', 'streaming')",
        [reason, now, now, &session.id]
    )?;
    if changed == 0 {
        return Err(DomainError::conflict(
            codes::STREAM_ALREADY_ENDED,
            "The stream session has already ended",
        ));
    }
    if let Some(sfu) = state.media.sfu() {
        sfu.close_room(&session.id).await;
    }
    session.status = StreamStatus::Ended;
    session.end_reason = Some(reason.to_string());
    session.ended_at = Some(now);
    session.updated_at = now;
    announce(state, session, event::STREAM_ENDED).await
}

/// The signed-in owner ends one of their sessions (the web app closing a live view).
pub async fn end_by_user(state: &AppState, user_id: &str, id: &str) -> DomainResult<StreamSession> {
    let mut session = find_for_user(&state.db, user_id, id).await?;
    end_session(state, &mut session, "ended_by_user").await?;
    Ok(session)
}

pub async fn end_by_device(
    state: &AppState,
    device: &Device,
    id: &str,
) -> DomainResult<StreamSession> {
    let mut session = find(&state.db, id)
        .await?
        .filter(|s| {
            s.camera_device_id == device.id || s.requester_device_id.as_deref() == Some(&device.id)
        })
        .ok_or_else(session_not_found)?;
    let reason = if session.camera_device_id == device.id {
        "ended_by_camera"
    } else {
        "ended_by_requester"
    };
    end_session(state, &mut session, reason).await?;
    Ok(session)
}

/// Requests nobody accepted in time become `expired` (announced as `stream:ended`).
pub async fn expire_due(state: &AppState) -> DomainResult<usize> {
    let now = time::now();
    let cutoff = now - chrono::Duration::seconds(state.config.stream_request_ttl_secs as i64);
    let expired = db_fetch_all!(
        &state.db,
        StreamSession,
        concat!("UPDATE stream_sessions SET status = 'expired', end_reason = 'not_accepted', ended_at = $1, updated_at = $2
         WHERE status = 'requested' AND created_at <= $3
         RETURNING ", stream_session_columns!()),
        [now, now, cutoff]
    )?;
    for session in &expired {
        announce(state, session, event::STREAM_ENDED).await?;
    }
    Ok(expired.len())
}

pub async fn list_for_device(
    db: &Db,
    device: &Device,
    page: &PageQuery,
) -> DomainResult<Page<StreamSession>> {
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        StreamSession,
        concat!(
            "SELECT ",
            stream_session_columns!(),
            "
         FROM stream_sessions
         WHERE (camera_device_id = $1 OR requester_device_id = $2)
           AND ",
            keyset_page!(3, 4, 5, 6)
        ),
        [
            &device.id,
            &device.id,
            keyset.at,
            keyset.at,
            &keyset.id,
            keyset.fetch
        ]
    )?;
    Ok(keyset.page(rows))
}

/// Live sessions of every user (admin dashboard).
pub async fn list_live(db: &Db) -> DomainResult<Vec<StreamSession>> {
    Ok(db_fetch_all!(
        db,
        StreamSession,
        concat!("SELECT ", stream_session_columns!(), "
         FROM stream_sessions WHERE status IN ('requested', 'streaming') ORDER BY created_at DESC LIMIT 500"),
        []
    )?)
}

/// ICE servers for a WHIP/WHEP client whose media token expires at `token_expiry` (Unix s).
pub fn ice_servers(state: &AppState, token_expiry: i64) -> Vec<IceServer> {
    ice_servers_for(
        &state.config.turn,
        "watchpost",
        chrono::Utc::now().timestamp(),
        token_expiry,
    )
}

/// ICE servers for a client. With `TURN_SECRET`, credentials are ephemeral in the TURN REST
/// convention coturn's `use-auth-secret` accepts: username `<expiry>:<user>`, password
/// base64(HMAC-SHA1(secret, username)). They expire after `TURN_CREDENTIAL_TTL_SECS` or with
/// the media token that unlocked them (`token_expiry`, Unix seconds), whichever is first:
/// relaying must not outlive the right to the media. (Static `TURN_USERNAME` credentials
/// cannot expire; `TURN_SECRET` is the way to bound them.)
pub fn ice_servers_for(
    turn: &crate::config::TurnConfig,
    user: &str,
    now: i64,
    token_expiry: i64,
) -> Vec<IceServer> {
    if turn.urls.is_empty() {
        return Vec::new();
    }
    let (username, credential) = match &turn.secret {
        Some(secret) => {
            use base64::Engine;
            use hmac::Mac;
            let expiry = (now + turn.credential_ttl_secs as i64).min(token_expiry);
            let username = format!("{expiry}:{user}");
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
                .expect("any key length");
            mac.update(username.as_bytes());
            let password =
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            (Some(username), Some(password))
        }
        None => (turn.username.clone(), turn.credential.clone()),
    };
    vec![IceServer {
        urls: turn.urls.clone(),
        username,
        credential,
    }]
}

fn mode_name(state: &AppState) -> String {
    match state.media.mode() {
        watchpost_media::MediaMode::SingleServerSfu => "single_server_sfu",
        watchpost_media::MediaMode::Legacy => "legacy",
    }
    .to_string()
}

pub async fn issue_token(
    state: &AppState,
    session_id: &str,
    role: MediaRole,
    device: Option<&str>,
    ttl_secs: i64,
) -> DomainResult<(String, Timestamp)> {
    let pair = match device {
        Some(id) => Some(
            crate::devices::service::pairing(&state.db, id)
                .await?
                .ok_or_else(crate::devices::service::device_not_found)?,
        ),
        None => None,
    };
    let expires_at = time::now() + chrono::Duration::seconds(ttl_secs);
    let token = media_token::issue(
        &state.auth.secret,
        &Claims {
            sid: session_id.to_string(),
            role,
            dev: device.map(str::to_string),
            pair,
            exp: expires_at.timestamp(),
        },
    );
    Ok((token, expires_at))
}

/// May this device watch the session? Any client currently linked to the camera
/// (including the requester: unlinking revokes access to running streams too).
pub async fn may_view(db: &Db, device: &Device, session: &StreamSession) -> DomainResult<bool> {
    if device.user_id != session.user_id || !device.is_client() {
        return Ok(false);
    }
    links::service::are_linked(db, &session.camera_device_id, &device.id).await
}

fn require_active(session: &StreamSession) -> DomainResult<()> {
    if session.is_active() {
        Ok(())
    } else {
        Err(DomainError::conflict(
            codes::STREAM_NOT_ACTIVE,
            "The stream session is not active",
        ))
    }
}

/// Media credentials for a device: the camera publishes, a linked client views.
pub async fn credentials(
    state: &AppState,
    device: &Device,
    id: &str,
    role: MediaRole,
) -> DomainResult<MediaCredentials> {
    let session = find(&state.db, id)
        .await?
        .filter(|s| s.user_id == device.user_id)
        .ok_or_else(session_not_found)?;
    let allowed = match role {
        MediaRole::Publish => device.id == session.camera_device_id,
        _ => may_view(&state.db, device, &session).await?,
    };
    if !allowed {
        return Err(DomainError::forbidden(
            codes::NOT_A_PARTICIPANT,
            "This device may not join this stream in that role",
        ));
    }
    issue_credentials(state, session, role, Some(&device.id)).await
}

/// View credentials for the signed-in owner of the session's camera (the web app). The
/// token names no device: it is the account's, and lives only as long as any media token.
pub async fn credentials_for_user(
    state: &AppState,
    user_id: &str,
    id: &str,
) -> DomainResult<MediaCredentials> {
    let session = find_for_user(&state.db, user_id, id).await?;
    issue_credentials(state, session, MediaRole::Subscribe, None).await
}

async fn issue_credentials(
    state: &AppState,
    session: StreamSession,
    role: MediaRole,
    device_id: Option<&str>,
) -> DomainResult<MediaCredentials> {
    require_active(&session)?;
    let (token, expires_at) =
        issue_token(state, &session.id, role, device_id, MEDIA_TOKEN_TTL_SECS).await?;
    let endpoint = media_endpoint(state, role, &session.id);
    Ok(MediaCredentials {
        mode: mode_name(state),
        provider: state.config.media_provider.clone(),
        role: match role {
            MediaRole::Publish => "publish",
            MediaRole::Subscribe => "subscribe",
            MediaRole::Playback => "playback",
        }
        .to_string(),
        ice_servers: ice_servers_for(
            &state.config.turn,
            &session.user_id,
            chrono::Utc::now().timestamp(),
            expires_at.timestamp(),
        ),
        stream_session_id: session.id,
        token,
        expires_at,
        whip_url: endpoint.clone().filter(|_| role == MediaRole::Publish),
        whep_url: endpoint.filter(|_| role != MediaRole::Publish),
    })
}

/// The absolute WHIP (publish) or WHEP (view) URL of a session on this server's public base
/// URL (`BETTER_AUTH_BASE_URL`), or none when media does not flow through this server.
fn media_endpoint(state: &AppState, role: MediaRole, session_id: &str) -> Option<String> {
    state.media.sfu()?;
    let kind = if role == MediaRole::Publish {
        "whip"
    } else {
        "whep"
    };
    let base = state.auth.base_url.trim_end_matches('/');
    Some(format!("{base}/{kind}/{session_id}"))
}

pub fn require_session_active(session: &StreamSession) -> DomainResult<()> {
    require_active(session)
}

/// Legacy mode: a call lives only while its requester is linked to the camera. An unlink
/// ends the calls it finds; a call requested while it looked is ended here, at its next
/// signal, so the relay never carries a call between devices that are no longer linked.
pub async fn require_call_linked(
    state: &AppState,
    session: &mut StreamSession,
) -> DomainResult<()> {
    let Some(client) = session.requester_device_id.clone() else {
        return Ok(());
    };
    if links::service::are_linked(&state.db, &session.camera_device_id, &client).await? {
        return Ok(());
    }
    end_if_active(state, session, "unlinked").await?;
    Err(DomainError::conflict(
        codes::STREAM_NOT_ACTIVE,
        "The stream session is not active",
    ))
}

fn token_revoked(message: &str) -> DomainError {
    DomainError::forbidden(codes::MEDIA_TOKEN_REVOKED, message)
}

/// A media token is checked against the present whenever it is presented, not only when it
/// was issued: the device it names must still exist and be active, and still be the
/// session's camera (to publish) or linked to it (to view). Playback tokens issued to the
/// account's own session name no device and need no more than their signature.
pub async fn recheck_media_token(
    db: &Db,
    claims: &Claims,
    session: &StreamSession,
) -> DomainResult<()> {
    let Some(device_id) = &claims.dev else {
        return Ok(());
    };
    let device = match crate::devices::service::find_for_user(db, &session.user_id, device_id).await
    {
        Ok(device) => device,
        Err(DomainError::NotFound { .. }) => {
            return Err(token_revoked(
                "The device this media token was issued to has been deleted",
            ));
        }
        Err(e) => return Err(e),
    };
    if device.status != DeviceStatus::Active {
        return Err(token_revoked(
            "The device this media token was issued to is disabled",
        ));
    }
    // Disabled and enabled again since: the token belongs to the pairing that was revoked.
    if claims.pair.is_none()
        || crate::devices::service::pairing(db, device_id).await? != claims.pair
    {
        return Err(token_revoked(
            "The device this media token was issued to has been re-paired since",
        ));
    }
    let allowed = match claims.role {
        MediaRole::Publish => device.id == session.camera_device_id,
        MediaRole::Subscribe | MediaRole::Playback => may_view(db, &device, session).await?,
    };
    if !allowed {
        return Err(token_revoked(
            "The device this media token was issued to is no longer linked to this camera",
        ));
    }
    Ok(())
}

/// A device's transport may stay once it exists only while the device's token (as
/// presented again now) still names it, active, and it is still the session's camera (to
/// publish) or linked to it (to view): the check a join ran before it began, run again.
pub async fn recheck_device_transport(
    db: &Db,
    token: &str,
    device_id: &str,
    session: &StreamSession,
    publisher: bool,
) -> DomainResult<()> {
    let Some(device) = crate::devices::service::device_by_token(db, token)
        .await?
        .filter(|d| d.id == device_id)
    else {
        return Err(token_revoked(
            "This device was disabled, deleted or re-paired while it joined",
        ));
    };
    let allowed = if publisher {
        device.id == session.camera_device_id
    } else {
        may_view(db, &device, session).await?
    };
    if !allowed {
        return Err(token_revoked(
            "This device was unlinked from the camera while it joined",
        ));
    }
    Ok(())
}

/// Who a media transport belongs to, as the SFU is told at join: the session's account
/// (whose fair share it counts against) and the device holding it (closed on revocation).
pub fn media_owner(session: &StreamSession, device: Option<&str>) -> watchpost_media::sfu::Owner {
    watchpost_media::sfu::Owner {
        account: Some(session.user_id.clone()),
        device: device.map(str::to_string),
    }
}

/// Active sessions a device takes part in as camera or requester.
async fn active_sessions_of(db: &Db, device_id: &str) -> DomainResult<Vec<StreamSession>> {
    Ok(db_fetch_all!(
        db,
        StreamSession,
        concat!(
            "SELECT ",
            stream_session_columns!(),
            "
         FROM stream_sessions
         WHERE (camera_device_id = $1 OR requester_device_id = $2)
           AND status IN ('requested', 'streaming')"
        ),
        [device_id, device_id]
    )?)
}

/// A device lost its access (disabled, or about to be deleted): every media transport it
/// holds closes now rather than when its token expires, and the streams of a camera end
/// (with `stream:ended`, `reason` recorded). When `with_requested` is set (deletion, which
/// takes the device's sessions with it) the streams it requested end too, as they do in
/// legacy mode, where a session is the requester's own peer-to-peer call and the server
/// has no transport to close: only `stream:ended` tells the camera to hang up.
pub async fn revoke_device_media(
    state: &AppState,
    device_id: &str,
    reason: &str,
    with_requested: bool,
) -> DomainResult<()> {
    let with_requested = with_requested || is_legacy(state);
    for mut session in active_sessions_of(&state.db, device_id).await? {
        if session.camera_device_id == device_id || with_requested {
            end_if_active(state, &mut session, reason).await?;
        }
    }
    if let Some(sfu) = state.media.sfu() {
        sfu.close_device(device_id, None).await;
    }
    Ok(())
}

/// Ends `session` unless another end got there first (nothing left to do then).
async fn end_if_active(
    state: &AppState,
    session: &mut StreamSession,
    reason: &str,
) -> DomainResult<()> {
    match end_session(state, session, reason).await {
        Ok(()) | Err(DomainError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_legacy(state: &AppState) -> bool {
    state.media.mode() == watchpost_media::MediaMode::Legacy
}

/// A client was unlinked from a camera: it stops watching that camera's live streams now.
/// Through the SFU its transports close (the session may have other viewers); in legacy
/// mode the sessions it requested from that camera end (`unlinked`), which also stops the
/// signalling relay for them.
pub async fn revoke_viewer_media(
    state: &AppState,
    camera_id: &str,
    client_id: &str,
) -> DomainResult<()> {
    if is_legacy(state) {
        for mut session in active_sessions_of(&state.db, camera_id).await? {
            if session.camera_device_id == camera_id
                && session.requester_device_id.as_deref() == Some(client_id)
            {
                end_if_active(state, &mut session, "unlinked").await?;
            }
        }
        return Ok(());
    }
    let Some(sfu) = state.media.sfu() else {
        return Ok(());
    };
    for session in active_sessions_of(&state.db, camera_id).await? {
        if session.camera_device_id == camera_id {
            sfu.close_device(client_id, Some(&session.id)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials() {
        let turn = crate::config::TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: None,
            credential: None,
            secret: Some("north".into()),
            credential_ttl_secs: 3600,
        };
        let servers = ice_servers_for(&turn, "user1", 1_000_000, i64::MAX);
        assert_eq!(servers[0].username.as_deref(), Some("1003600:user1"));
        // base64(HMAC-SHA1("north", "1003600:user1")), computed independently with openssl.
        assert_eq!(servers[0].credential.as_deref(), Some(EXPECTED));
    }

    #[test]
    fn turn_credentials_never_outlive_the_media_token() {
        let turn = crate::config::TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: None,
            credential: None,
            secret: Some("north".into()),
            credential_ttl_secs: 86_400,
        };
        // A token that expires in 10 minutes caps the day-long TURN lifetime.
        let servers = ice_servers_for(&turn, "user1", 1_000_000, 1_000_600);
        assert_eq!(servers[0].username.as_deref(), Some("1000600:user1"));
        // A short TURN lifetime stays short.
        let turn = crate::config::TurnConfig {
            credential_ttl_secs: 60,
            ..turn
        };
        let servers = ice_servers_for(&turn, "user1", 1_000_000, 1_000_600);
        assert_eq!(servers[0].username.as_deref(), Some("1000060:user1"));
    }

    const EXPECTED: &str = "NPgA2YHzgVFDRpXE/fwdvZmbM60=";
}
