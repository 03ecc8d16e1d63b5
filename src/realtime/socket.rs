//! Socket.IO connection handling: authentication, rooms, presence and the client events
//! `command:ack` and `webrtc:signal`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::auth::extract::session_token;
use crate::auth::service::find_session;
use crate::commands;
use crate::devices::model::{DEVICE_TOKEN_PREFIX, Device};
use crate::devices::service::{
    device_by_token, hash_device_token, require_camera, touch, touch_if_unchanged,
};
use crate::error::{ApiError, codes};
use crate::http::extract::bearer;
use crate::realtime::{SocketSession, close_socket, device_room, event, is_revoked, user_room};
use crate::state::AppState;
use crate::streams;

/// Who a socket belongs to; stored in the socket's extensions by the auth middleware.
#[derive(Clone)]
enum Identity {
    /// A device, with the hash of the token it presented.
    Device(Box<Device>, String),
    /// A user session, by user id.
    User(String),
}

#[derive(Debug)]
struct AuthError(&'static str);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

pub fn register(io: &SocketIo, state: AppState) {
    let for_auth = state.clone();
    let handler = move |socket: SocketRef| on_connect(state.clone(), socket);
    let middleware = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        authenticate(for_auth.clone(), socket, auth.ok())
    };
    io.ns("/", handler.with(middleware));
}

async fn authenticate(
    state: AppState,
    socket: SocketRef,
    auth: Option<Value>,
) -> Result<(), AuthError> {
    let headers = &socket.req_parts().headers;
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(|t| t.trim_start_matches("Bearer ").to_string())
        .or_else(|| bearer(headers).map(str::to_string));
    let identity = match token {
        Some(t) if t.starts_with(DEVICE_TOKEN_PREFIX) => match device_by_token(&state.db, &t).await
        {
            Ok(Some(device)) => Identity::Device(Box::new(device), hash_device_token(&t)),
            Ok(None) => return Err(AuthError("invalid or revoked device token")),
            Err(_) => return Err(AuthError("authentication is temporarily unavailable")),
        },
        other => {
            // A user session: bearer token in auth/header, or the session cookie.
            let secure = state.auth.cookies.secure;
            let session = match other {
                Some(t) => {
                    let mut h = axum::http::HeaderMap::new();
                    if let Ok(v) = format!("Bearer {t}").parse() {
                        h.insert(axum::http::header::AUTHORIZATION, v);
                    }
                    session_token(&h, &state.auth.secret, secure)
                }
                None => {
                    // The cookie is an ambient credential: only pages of trusted origins
                    // may use it to open a socket (cross-site WebSocket hijacking).
                    let origin = headers
                        .get(axum::http::header::ORIGIN)
                        .and_then(|v| v.to_str().ok());
                    if origin.is_some_and(|o| !state.auth.is_trusted_origin(o)) {
                        return Err(AuthError("origin not allowed for cookie authentication"));
                    }
                    session_token(headers, &state.auth.secret, secure)
                }
            };
            let Some(session) = session else {
                return Err(AuthError(
                    "authentication required: pass a device token as auth.token",
                ));
            };
            match find_session(&state.db, &session).await {
                Ok(Some((_, user))) => {
                    socket.extensions.insert(SocketSession(session));
                    Identity::User(user.id)
                }
                Ok(None) => return Err(AuthError("invalid or expired session")),
                Err(_) => return Err(AuthError("authentication is temporarily unavailable")),
            }
        }
    };
    // Presence starts here, before the client's CONNECT is acknowledged: a client that
    // sees itself connected must also be listed online. `on_connect` takes the claim over;
    // if it never runs (the CONNECT could not be sent), dropping the socket releases it.
    if let Identity::Device(device, _) = &identity {
        state.realtime.connected(&device.id);
        socket.extensions.insert(Arc::new(PresenceClaim {
            realtime: state.realtime.clone(),
            device_id: device.id.clone(),
            held: AtomicBool::new(true),
        }));
    }
    // Rooms are joined here too, before the CONNECT is acknowledged: an event emitted once
    // the client sees itself connected must reach it (the connect handler runs later, on a
    // task of its own).
    match &identity {
        Identity::User(user_id) => socket.join(user_room(user_id)),
        Identity::Device(device, _) => socket.join(device_room(&device.id)),
    }
    socket.extensions.insert(identity);
    Ok(())
}

/// A device's presence, taken in the middleware for one socket. It is given back once,
/// whichever comes first: the socket's disconnect handler, `on_connect` finding the socket
/// already closed, or the socket being dropped. A socket closing while its connect handler
/// runs reaches two of those; counting it twice would show another socket's device offline.
struct PresenceClaim {
    realtime: crate::realtime::Realtime,
    device_id: String,
    held: AtomicBool,
}

impl PresenceClaim {
    fn release(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            self.realtime.disconnected(&self.device_id);
        }
    }
}

impl Drop for PresenceClaim {
    fn drop(&mut self) {
        self.release();
    }
}

/// How long a disconnect waits for its seen-at write before the device shows offline.
const PRESENCE_WRITE_WAIT: Duration = Duration::from_secs(2);

async fn on_connect(state: AppState, socket: SocketRef) {
    let Some(identity) = socket.extensions.get::<Identity>() else {
        // The middleware always sets it; refuse rather than run unauthenticated.
        close_socket(socket.clone());
        return;
    };
    match identity {
        // Its room was joined in the middleware.
        Identity::User(user_id) => {
            // A sign-out between the middleware's check and its joining the user's room
            // could not close this socket: look again, now that it is in the room.
            let session = socket.extensions.get::<SocketSession>();
            let current = match session {
                Some(session) => find_session(&state.db, &session.0)
                    .await
                    .map(|found| found.is_some_and(|(_, user)| user.id == user_id)),
                None => Ok(false),
            };
            if !matches!(current, Ok(true)) {
                tracing::debug!(user_id = %user_id, "closing a socket whose session ended while it connected");
                close_socket(socket.clone());
            }
        }
        Identity::Device(device, token_hash) => {
            let device = *device;
            let Some(claim) = socket.extensions.get::<Arc<PresenceClaim>>() else {
                close_socket(socket.clone());
                return;
            };
            // Handlers are registered before any await: events that arrive while this
            // function is suspended would otherwise be dropped, and a socket closing then
            // would never run its disconnect handler.
            let disconnect_state = state.clone();
            let disconnect_claim = claim.clone();
            let (device_id, owner_id) = (device.id.clone(), device.user_id.clone());
            socket.on_disconnect(move || {
                let state = disconnect_state.clone();
                let claim = disconnect_claim.clone();
                let (device_id, owner_id) = (device_id.clone(), owner_id.clone());
                async move {
                    // Seen-at is written before the device shows offline, so whoever sees it
                    // offline also sees when it was last there; a database that does not
                    // answer soon does not hold the presence change back.
                    let _ = tokio::time::timeout(PRESENCE_WRITE_WAIT, touch(&state.db, &device_id))
                        .await;
                    claim.release();
                    if !state.realtime.is_online(&device_id) {
                        announce_presence(&state, &owner_id, &device_id, false).await;
                    }
                }
            });

            let ack_state = state.clone();
            let ack_device = device.clone();
            socket.on(
                event::COMMAND_ACK,
                move |socket: SocketRef, TryData(body): TryData<AckEvent>, ack: AckSender| {
                    let state = ack_state.clone();
                    let device = ack_device.clone();
                    async move {
                        let reply = match body {
                            _ if is_revoked(&socket) => error_reply(&revoked()),
                            Err(e) => error_reply(&ApiError::validation(format!(
                                "Invalid command:ack payload: {e}"
                            ))),
                            Ok(body) => handle_ack(&state, &device, body).await,
                        };
                        let _ = ack.send(&reply);
                    }
                },
            );

            let signal_state = state.clone();
            let signal_device = device.clone();
            socket.on(
                event::WEBRTC_SIGNAL,
                move |socket: SocketRef, TryData(body): TryData<SignalEvent>, ack: AckSender| {
                    let state = signal_state.clone();
                    let device = signal_device.clone();
                    async move {
                        let reply = match body {
                            _ if is_revoked(&socket) => error_reply(&revoked()),
                            Err(e) => error_reply(&ApiError::validation(format!(
                                "Invalid webrtc:signal payload: {e}"
                            ))),
                            Ok(body) => match relay_signal(&state, &device, body).await {
                                Ok(()) => json!({ "ok": true }),
                                Err(e) => error_reply(&e),
                            },
                        };
                        let _ = ack.send(&reply);
                    }
                },
            );

            socket.on(
                event::HEARTBEAT,
                move |Data(_): Data<Value>, ack: AckSender| async move {
                    let _ = ack.send(
                        &json!({ "ok": true, "serverTime": crate::time::iso(&crate::time::now()) }),
                    );
                },
            );

            if !socket.connected() {
                // Closed before we got here: its disconnect handler may never run (it was
                // registered after the close), so this does its part. Seen-at is written
                // before the device shows offline, as a disconnect does.
                let _ =
                    tokio::time::timeout(PRESENCE_WRITE_WAIT, touch(&state.db, &device.id)).await;
                claim.release();
                return;
            }
            // A disable, deletion or role change between the middleware's check and its
            // joining the device's room could not close this socket: look again, now that
            // it is in the room (a change from here on closes it).
            match touch_if_unchanged(&state.db, &device, &token_hash).await {
                // Closed while the database answered: its disconnect handler has said (or
                // will say) it went, and an "online" now would come after that.
                Ok(true) if !socket.connected() => return,
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(device_id = %device.id, "closing a socket whose device changed while it connected");
                    close_socket(socket.clone());
                    return;
                }
                Err(e) => {
                    tracing::warn!(device_id = %device.id, error = ?e, "could not recheck a connecting device; closing its socket");
                    close_socket(socket.clone());
                    return;
                }
            }
            // What presence is now, in case the socket closed since the check above (its
            // handler then announces "offline" after this).
            let online = state.realtime.is_online(&device.id);
            announce_presence(&state, &device.user_id, &device.id, online).await;
            if device.is_camera()
                && let Err(e) = commands::service::deliver_pending(&state, &device.id).await
            {
                tracing::warn!(device_id = %device.id, error = ?e, "delivering pending commands failed");
            }
        }
    }
}

/// Tells the owner's signed-in sessions (the web app's camera grid) that a device came or
/// went, so they need not poll `GET /devices`.
async fn announce_presence(state: &AppState, owner_id: &str, device_id: &str, online: bool) {
    let payload = json!({
        "deviceId": device_id,
        "online": online,
        "lastSeenAt": crate::time::iso(&crate::time::now()),
    });
    state
        .realtime
        .emit(owner_id, &[], event::DEVICE_PRESENCE, &payload)
        .await;
}

/// The answer to an event from a socket whose close is pending.
fn revoked() -> ApiError {
    ApiError::forbidden(
        codes::DEVICE_DISABLED,
        "This socket's device or session is no longer allowed; it is being closed",
    )
}

fn error_reply(e: &ApiError) -> Value {
    json!({ "ok": false, "code": e.code, "message": e.message })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckEvent {
    command_id: String,
    status: String,
    reason: Option<String>,
}

async fn handle_ack(state: &AppState, device: &Device, body: AckEvent) -> Value {
    if let Err(e) = require_camera(device) {
        return error_reply(&e.into());
    }
    match commands::service::acknowledge(state, device, &body.command_id, &body.status, body.reason)
        .await
    {
        Ok(command) => json!({ "ok": true, "command": command }),
        Err(e) => error_reply(&ApiError::from(e)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalEvent {
    stream_session_id: String,
    data: Value,
}

/// Legacy mode: relay WebRTC signalling between the two devices of a session.
async fn relay_signal(
    state: &AppState,
    device: &Device,
    body: SignalEvent,
) -> Result<(), ApiError> {
    if state.media.mode() != watchpost_media::MediaMode::Legacy {
        return Err(ApiError::conflict(
            codes::NOT_LEGACY_MODE,
            "Signalling relay is only available with MEDIA_MODE=legacy",
        ));
    }
    let mut session = streams::service::find(&state.db, &body.stream_session_id)
        .await?
        .filter(|s| {
            s.camera_device_id == device.id || s.requester_device_id.as_deref() == Some(&device.id)
        })
        .ok_or_else(|| ApiError::not_found("Stream session not found"))?;
    streams::service::require_session_active(&session)?;
    streams::service::require_call_linked(state, &mut session).await?;
    let peer = if session.camera_device_id == device.id {
        // A session the server opened has no device at the other end to relay to.
        session
            .requester_device_id
            .as_ref()
            .ok_or_else(|| ApiError::not_found("Stream session not found"))?
    } else {
        &session.camera_device_id
    };
    state
        .realtime
        .emit_to_device(
            peer,
            event::WEBRTC_SIGNAL,
            &json!({ "streamSessionId": session.id, "fromDeviceId": device.id, "data": body.data }),
        )
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that closes while its connect handler runs reaches two release paths (its
    /// disconnect handler and the handler's own check), then is dropped: the device's
    /// count goes down once, and its other socket keeps it online.
    #[test]
    fn a_presence_claim_is_given_back_once() {
        let (_layer, io) = SocketIo::new_layer();
        let realtime = crate::realtime::Realtime::new(io);
        realtime.connected("cam");
        realtime.connected("cam");
        let claim = Arc::new(PresenceClaim {
            realtime: realtime.clone(),
            device_id: "cam".into(),
            held: AtomicBool::new(true),
        });
        claim.release();
        claim.release();
        drop(claim);
        assert!(
            realtime.is_online("cam"),
            "the other socket's presence was taken"
        );
        // Dropped without any release: the claim still gives its presence back.
        drop(PresenceClaim {
            realtime: realtime.clone(),
            device_id: "cam".into(),
            held: AtomicBool::new(true),
        });
        assert!(!realtime.is_online("cam"));
    }
}
