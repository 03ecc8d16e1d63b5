//! Socket.IO (protocol v5) for devices and user sessions.
//!
//! Every device socket joins `device:<id>`; every user socket joins `user:<id>`. Events for
//! a device also go to its owner's user room, so a signed-in app sees all its devices'
//! activity. Emits are best-effort: a closed socket never fails the HTTP request that
//! caused the event (state lives in the database and is redelivered on reconnect).

pub mod event;
pub mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::{SendError, SocketError};

/// How long an emit to a device waits for room in a full socket buffer.
const DEVICE_EMIT_PATIENCE: Duration = Duration::from_secs(5);

pub fn device_room(device_id: &str) -> String {
    format!("device:{device_id}")
}

pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The session token a user's socket authenticated with (kept in the socket's extensions),
/// so signing that session out can close the socket.
#[derive(Clone)]
pub(crate) struct SocketSession(pub(crate) String);

/// Marks a socket whose close is pending (see [`close_socket`]): its events are refused.
#[derive(Clone)]
pub(crate) struct Revoked;

/// How long a pending close keeps trying before the Engine.IO heartbeat is left to end it.
const CLOSE_PATIENCE: Duration = Duration::from_secs(60);

/// Closes a socket whose right to be open has ended. socketioxide refuses to close one whose
/// send buffer is full (a client that stopped reading), leaving it open: such a socket
/// leaves every room at once, so nothing more reaches it, is marked [`Revoked`], so its
/// events are refused, and the close is tried again until it lands.
pub(crate) fn close_socket(socket: socketioxide::extract::SocketRef) {
    if socket.clone().disconnect().is_ok() {
        return;
    }
    socket.leave_all();
    socket.extensions.insert(Revoked);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + CLOSE_PATIENCE;
        while socket.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if socket.clone().disconnect().is_ok() {
                return;
            }
        }
    });
}

/// Whether a socket's close is pending ([`close_socket`]).
pub(crate) fn is_revoked(socket: &socketioxide::extract::SocketRef) -> bool {
    socket.extensions.get::<Revoked>().is_some()
}

#[derive(Clone)]
pub struct Realtime {
    io: SocketIo,
    /// Live socket count per device.
    presence: Arc<Mutex<HashMap<String, usize>>>,
}

impl Realtime {
    pub fn new(io: SocketIo) -> Self {
        Self {
            io,
            presence: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Disconnects every socket with the "server shutting down" reason (their disconnect
    /// handlers run), so clients reconnect elsewhere instead of timing out.
    pub async fn close(&self) {
        self.io.close().await;
    }

    /// The root namespace, or `None` once [`Realtime::close`] removed it: events raised
    /// while the server shuts down (a stream ended by the media plane's hang-up) have no
    /// one to reach, and socketioxide's `io.to` would panic on the missing namespace.
    fn root(&self) -> Option<socketioxide::operators::BroadcastOperators> {
        self.io.of("/")
    }

    pub fn is_online(&self, device_id: &str) -> bool {
        self.presence().get(device_id).is_some_and(|n| *n > 0)
    }

    pub fn connected_devices(&self) -> usize {
        self.presence().len()
    }

    pub(crate) fn connected(&self, device_id: &str) {
        *self.presence().entry(device_id.to_string()).or_default() += 1;
    }

    pub(crate) fn disconnected(&self, device_id: &str) {
        let mut presence = self.presence();
        if let Some(n) = presence.get_mut(device_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                presence.remove(device_id);
            }
        }
    }

    /// Emits `event` to the given devices and to their owner's user sessions.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        device_ids: &[&str],
        event: &str,
        payload: &T,
    ) {
        let mut rooms: Vec<String> = device_ids.iter().map(|d| device_room(d)).collect();
        rooms.push(user_room(user_id));
        let Some(root) = self.root() else { return };
        if let Err(e) = root.to(rooms).emit(event, payload).await {
            tracing::debug!(event, error = %e, "realtime emit failed");
        }
    }

    /// Emits only to one device's sockets (e.g. a command, relayed signalling). A socket
    /// whose send buffer is full (a backlog of queued commands delivered on reconnect
    /// outruns it) is waited for, up to `DEVICE_EMIT_PATIENCE`, rather than skipped: a
    /// skipped command would only arrive on the device's next reconnect. Each socket is
    /// sent to on its own, so only the full one is retried: the device's other sockets get
    /// the event once, never again (a repeated SDP or ICE message breaks a negotiation).
    pub async fn emit_to_device<T: Serialize + ?Sized>(
        &self,
        device_id: &str,
        event: &str,
        payload: &T,
    ) {
        let Some(root) = self.root() else { return };
        let mut waiting = root.to(device_room(device_id)).sockets();
        let deadline = tokio::time::Instant::now() + DEVICE_EMIT_PATIENCE;
        loop {
            waiting.retain(|socket| match socket.emit(event, payload) {
                Ok(()) => false,
                Err(SendError::Socket(SocketError::InternalChannelFull)) => true,
                Err(e) => {
                    tracing::debug!(event, error = %e, "realtime emit failed");
                    false
                }
            });
            if waiting.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(event, sockets = waiting.len(), "device socket stayed full");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes the sockets opened with a session token that was just signed out.
    pub fn disconnect_session(&self, user_id: &str, session_token: &str) {
        let Some(root) = self.root() else { return };
        close_session_sockets(root.to(user_room(user_id)).sockets(), session_token);
    }

    /// Closes every socket of the user's sessions (all of them just ended).
    pub fn disconnect_user(&self, user_id: &str) {
        let Some(root) = self.root() else { return };
        for socket in root.to(user_room(user_id)).sockets() {
            close_socket(socket);
        }
    }

    /// The session token of every open user socket, each once.
    pub fn session_tokens(&self) -> Vec<String> {
        let Some(root) = self.root() else {
            return Vec::new();
        };
        let mut tokens: Vec<String> = root
            .sockets()
            .iter()
            .filter_map(|socket| socket.extensions.get::<SocketSession>().map(|s| s.0))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    /// Closes every user socket opened with `session_token` (a session that has ended).
    pub fn disconnect_session_token(&self, session_token: &str) {
        let Some(root) = self.root() else { return };
        close_session_sockets(root.sockets(), session_token);
    }

    pub async fn disconnect_device(&self, device_id: &str) {
        let Some(root) = self.root() else { return };
        for socket in root.to(device_room(device_id)).sockets() {
            close_socket(socket);
        }
    }
}

/// Closes those of `sockets` that were opened with `session_token`.
fn close_session_sockets(sockets: Vec<socketioxide::extract::SocketRef>, session_token: &str) {
    for socket in sockets {
        if socket
            .extensions
            .get::<SocketSession>()
            .is_some_and(|s| s.0 == session_token)
        {
            close_socket(socket);
        }
    }
}
