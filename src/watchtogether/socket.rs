//! One Watch Together WebSocket: frames in (limits, JSON, room resolution), queued
//! messages out, WebSocket ping frames to find dead peers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::watchtogether::room::{ConnMeta, INVALID_FORMAT, ROOM_NOT_FOUND};
use crate::watchtogether::service::{
    Conn, OUTBOUND_QUEUE, Outbound, RoomCmd, RoomHandle, WatchTogether,
};

/// Per-socket state for resolving rooms (reference §5.3).
struct Session {
    wt: WatchTogether,
    conn: Arc<Conn>,
    /// The URL code, or the code of the last create/join.
    code: Option<String>,
    /// The room this socket last resolved; used without touching the registry.
    last: Option<RoomHandle>,
    /// Every room this socket sent to, told when it closes.
    touched: Vec<RoomHandle>,
    window_start: Instant,
    window_count: u32,
}

impl Session {
    fn error(&self, message: &str) {
        self.conn.error(message);
    }

    /// Counts a message against the per-second limit; `false` drops it (an `error` is sent
    /// for the first dropped message in each second).
    fn admit(&mut self) -> bool {
        let limit = self.wt.config().max_messages_per_sec;
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_count = 0;
        }
        self.window_count += 1;
        if self.window_count == limit + 1 {
            self.error(&format!("Too many messages (limit: {limit} per second)"));
        }
        self.window_count <= limit
    }

    fn remember(&mut self, handle: &RoomHandle) {
        if !self.touched.iter().any(|h| h.same_room(handle)) {
            self.touched.retain(RoomHandle::is_alive);
            self.touched.push(handle.clone());
        }
        self.last = Some(handle.clone());
    }

    fn resolve(&mut self, msg: &Value) -> Result<Option<RoomHandle>, ()> {
        // 1. The connection's code (the cached handle when it is that room's).
        if let Some(code) = &self.code {
            if let Some(last) = &self.last
                && *last.code == **code
                && last.is_alive()
            {
                return Ok(Some(last.clone()));
            }
            if let Some(handle) = self.wt.lookup(code) {
                return Ok(Some(handle));
            }
        }
        // 2. The room this socket last resolved.
        if let Some(last) = self.last.as_ref().filter(|h| h.is_alive()) {
            return Ok(Some(last.clone()));
        }
        // 3. A join's room_code, which becomes the connection's code.
        if msg.get("type").and_then(Value::as_str) == Some("join") {
            match msg.get("room_code") {
                // As `room_code?.toUpperCase()`: absent or null is no code, and anything
                // but a string (even `false`) is an invalid message.
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => {
                    let code = s.to_uppercase();
                    let found = self.wt.lookup(&code);
                    self.code = Some(code);
                    return Ok(found);
                }
                Some(_) => return Err(()),
            }
        }
        Ok(None)
    }

    async fn on_text(&mut self, text: &str) {
        let cfg = self.wt.config();
        if text.len() > cfg.max_message_bytes {
            let limit = cfg.max_message_bytes;
            return self.error(&format!("Message too large (limit: {limit} bytes)"));
        }
        if !self.admit() {
            return;
        }
        let msg: Value = match serde_json::from_str(text) {
            Ok(Value::Null) | Err(_) => return self.error(INVALID_FORMAT),
            Ok(v) => v,
        };
        if msg.get("type").and_then(Value::as_str) == Some("create") {
            match self.wt.create_room(&self.conn, &msg) {
                Ok(handle) => {
                    self.code = Some(handle.code.to_string());
                    self.remember(&handle);
                }
                Err(e) => self.error(&e.text()),
            }
            return;
        }
        let handle = match self.resolve(&msg) {
            Err(()) => return self.error(INVALID_FORMAT),
            Ok(None) => return self.error(ROOM_NOT_FOUND),
            Ok(Some(handle)) => handle,
        };
        let delivered = handle
            .send(RoomCmd::Msg {
                conn: self.conn.clone(),
                msg,
            })
            .await;
        if delivered {
            self.remember(&handle);
        } else {
            self.error(ROOM_NOT_FOUND);
        }
    }
}

/// How long one frame may take to leave: a peer that stops reading would otherwise hold
/// the writer (and everything queued behind it) for good.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one frame; false when the socket failed or the peer did not take it in time.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// How long a socket closed for an oversized frame stays open, so its close frame is read
/// before the connection is reset.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Whether a read failed on the size cap (tungstenite's capacity error, which axum
/// passes on only as an opaque error).
fn is_too_big(e: &axum::Error) -> bool {
    e.to_string().contains("Space limit exceeded")
}

/// Serves one upgraded socket until it closes.
pub async fn serve(wt: WatchTogether, mut socket: WebSocket, meta: ConnMeta, code: Option<String>) {
    let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
    let kill = CancellationToken::new();
    let conn = Arc::new(Conn::new(meta, tx, kill.clone()));
    let ping_every = Duration::from_millis(wt.config().ws_ping_ms);
    let mut session = Session {
        wt,
        conn,
        code,
        last: None,
        touched: Vec::new(),
        window_start: Instant::now(),
        window_count: 0,
    };
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };
    loop {
        tokio::select! {
            frame = socket.recv() => {
                last_seen = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => session.on_text(text.as_str()).await,
                    Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => session.on_text(text).await,
                        Err(_) => session.error(INVALID_FORMAT),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        // A frame over the transport's cap closes with 1009, as the
                        // reference's does past its own; other read errors just end.
                        if is_too_big(&e) {
                            send(&mut socket, close(1009, "Message too big")).await;
                            // Closing with the rest of the frame unread would reset the
                            // connection, and the peer could lose the close frame with it.
                            tokio::time::sleep(CLOSE_LINGER).await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(text)) => {
                    let len = text.len();
                    let sent = send(&mut socket, Message::Text(text)).await;
                    session.conn.written(len);
                    if !sent {
                        break;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    send(&mut socket, close(code, reason)).await;
                    break;
                }
                None => break,
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > ping_every * 2 {
                    send(&mut socket, close(1001, "No answer to pings")).await;
                    break;
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    break;
                }
            }
            _ = kill.cancelled() => {
                send(&mut socket, close(1008, "Too many queued messages")).await;
                break;
            }
        }
    }
    let id = session.conn.meta.id;
    for handle in session.touched {
        handle.send(RoomCmd::Closed(id)).await;
    }
}
