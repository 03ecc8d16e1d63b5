//! One Watch Together room's protocol logic, free of sockets, tasks and clocks: every input
//! (a client message, a socket closing, a timer firing) takes `now` in Unix milliseconds and
//! returns the messages to send, by connection id. The room actor in `service` owns one
//! `Room` and does the I/O.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{SyncMode, WatchTogetherConfig};
use crate::watchtogether::model::{
    MAX_CLIENT_ID_CHARS, MAX_MEDIA_FIELD_BYTES, ParticipantSummary, PlayState, RoomSummary,
    js_number, js_position, js_string, loose_string, match_tokens, media_fields_fit, num,
    storable_scalar, truthy,
};

pub type ConnId = u64;

/// Who is on the other end of a socket.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub id: ConnId,
    pub ip: IpAddr,
    /// The signed-in account (session or device token), if the connection carried one.
    pub account_id: Option<String>,
    pub account_name: Option<String>,
}

impl ConnMeta {
    /// May this connection take over a slot `other` still holds? Only from the same client
    /// address or the same signed-in account.
    fn same_client_as(&self, other: &ConnMeta) -> bool {
        self.ip == other.ip
            || matches!((&self.account_id, &other.account_id), (Some(a), Some(b)) if a == b)
    }
}

#[derive(Debug)]
pub enum Out {
    Send(ConnId, Utf8Bytes),
    /// Close the socket with this code and reason.
    Close(ConnId, u16, &'static str),
}

/// What handling one input produced.
#[derive(Debug, Default)]
pub struct Effects {
    pub out: Vec<Out>,
    /// The room changed in a way worth persisting.
    pub persist: bool,
    /// The room is gone (empty, expired or closed).
    pub deleted: bool,
}

impl Effects {
    fn send(&mut self, to: ConnId, msg: &Value) {
        self.out
            .push(Out::Send(to, Utf8Bytes::from(msg.to_string())));
    }

    fn send_many(&mut self, to: impl IntoIterator<Item = ConnId>, msg: &Value) {
        let text = Utf8Bytes::from(msg.to_string());
        for id in to {
            self.out.push(Out::Send(id, text.clone()));
        }
    }

    fn error(&mut self, to: ConnId, message: &str) {
        self.send(to, &json!({"type": "error", "message": message}));
    }

    fn merge(&mut self, other: Effects) {
        self.out.extend(other.out);
        self.persist |= other.persist;
        self.deleted |= other.deleted;
    }
}

pub const ROOM_NOT_FOUND: &str = "Room not found";
pub const INVALID_FORMAT: &str = "Invalid message format";
const CREATE_REQUIRED: &str = "media_id, media_title, and nickname required";
const JOIN_REQUIRED: &str = "client_id and nickname are required to join";
const ONLY_HOST_STARTS: &str = "Only the host can start playback";
const NOT_ALL_READY: &str = "Cannot start until all participants are ready";
const SLOT_OWNED: &str = "This client_id belongs to another account";
const SLOT_TAKEN: &str = "This client_id is connected from another client; only the same address or account can take its place";
/// Within this long after a `sync`, only its sender's state reports correct the room.
const SYNC_AUTHORITY_MS: i64 = 12_000;
/// Drift beyond which a state report corrects the room.
const MAX_DRIFT_S: f64 = 0.45;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    pub nickname: String,
    pub is_host: bool,
    pub is_ready: bool,
    pub joined_at: i64,
    pub media_id: Value,
    pub duration: Value,
    pub rtt: Value,
    pub rtt_avg: f64,
    /// A number from `state_report`, or whatever `heartbeat.position` held.
    pub last_position: Value,
    pub last_paused: bool,
    pub last_state_report: Option<i64>,
    pub disconnected_at: Option<i64>,
    /// The account that holds this slot (the one that created or last took it). With
    /// `WATCH_TOGETHER_REQUIRE_AUTH` only that account may take the slot again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip)]
    pub conn: Option<ConnMeta>,
    /// Disconnected with a reconnect grace period running (recovered and REST-created
    /// slots wait without one).
    #[serde(skip)]
    pub in_grace: bool,
}

impl Participant {
    fn new(id: String, nickname: String, media_id: Value, now: i64) -> Participant {
        Participant {
            id,
            nickname,
            is_host: false,
            is_ready: false,
            joined_at: now,
            media_id,
            duration: Value::Null,
            rtt: json!(0),
            rtt_avg: 0.0,
            last_position: json!(0),
            last_paused: true,
            last_state_report: None,
            disconnected_at: None,
            account: None,
            conn: None,
            in_grace: false,
        }
    }

    /// With accounts required, a slot an account holds is that account's alone: a host
    /// slot waiting for its creator, or a participant's during its reconnect grace, cannot
    /// be claimed by whoever read its id from the room's summary.
    fn may_be_taken_by(&self, conn: &ConnMeta) -> bool {
        match &self.account {
            Some(owner) => conn.account_id.as_deref() == Some(owner.as_str()),
            None => true,
        }
    }

    fn summary(&self) -> ParticipantSummary {
        ParticipantSummary {
            id: self.id.clone(),
            nickname: self.nickname.clone(),
            is_host: self.is_host,
            is_ready: self.is_ready,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Room {
    pub code: String,
    pub media_id: Value,
    pub media_title: Value,
    pub media_match_key: String,
    pub host_id: String,
    pub state: PlayState,
    pub current_position: f64,
    pub is_paused: bool,
    pub position_updated_at: i64,
    pub sync_mode: SyncMode,
    pub participants: Vec<Participant>,
    pub created_at: i64,
    pub last_activity: i64,
    pub last_sync_from: Option<String>,
    pub last_sync_at: i64,
    /// The account that created the room, when it was created signed in. With
    /// `WATCH_TOGETHER_REQUIRE_AUTH` only it (or the current host's account) may close it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_account: Option<String>,
    /// Which participant each socket last joined or created as.
    #[serde(skip)]
    bindings: HashMap<ConnId, String>,
}

/// What `POST /api/watchtogether/rooms` could not do.
#[derive(Debug, PartialEq)]
pub enum RestCreateError {
    MissingFields,
    NicknameTooLong(usize),
    MediaFieldTooLong,
}

fn client_id_too_long() -> String {
    format!("client_id too long (limit: {MAX_CLIENT_ID_CHARS} characters)")
}

pub fn media_field_too_long() -> String {
    format!(
        "media_id, media_title and media_match_key are limited to {MAX_MEDIA_FIELD_BYTES} bytes each"
    )
}

fn nickname_too_long(limit: usize) -> String {
    format!("Nickname too long (limit: {limit} characters)")
}

impl Room {
    fn new(
        code: String,
        msg: &Value,
        host: Participant,
        now: i64,
        sync_mode: SyncMode,
        key_field: &str,
    ) -> Room {
        let mut host = host;
        host.is_host = true;
        let creator_account = host.account.clone();
        Room {
            code,
            media_id: msg["media_id"].clone(),
            media_title: msg["media_title"].clone(),
            media_match_key: loose_string(msg.get(key_field)).trim().to_lowercase(),
            host_id: host.id.clone(),
            state: PlayState::Waiting,
            current_position: 0.0,
            is_paused: true,
            position_updated_at: now,
            sync_mode,
            last_sync_from: Some(host.id.clone()),
            participants: vec![host],
            created_at: now,
            last_activity: now,
            last_sync_at: now,
            creator_account,
            bindings: HashMap::new(),
        }
    }

    /// A `create` message: the room (with the sender as host) and its `room_created`, or
    /// the error text for the sender.
    pub fn create(
        code: String,
        msg: &Value,
        conn: &ConnMeta,
        now: i64,
        cfg: &WatchTogetherConfig,
    ) -> Result<(Room, Effects), String> {
        if !(truthy(&msg["media_id"]) && truthy(&msg["media_title"]) && truthy(&msg["nickname"])) {
            return Err(CREATE_REQUIRED.into());
        }
        let nickname = conn
            .account_name
            .clone()
            .unwrap_or_else(|| js_string(&msg["nickname"]));
        if nickname.chars().count() > cfg.max_nickname_chars {
            return Err(nickname_too_long(cfg.max_nickname_chars));
        }
        if !media_fields_fit(msg) {
            return Err(media_field_too_long());
        }
        let host_id = if truthy(&msg["client_id"]) {
            js_string(&msg["client_id"])
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        if host_id.chars().count() > MAX_CLIENT_ID_CHARS {
            return Err(client_id_too_long());
        }
        let mut host = Participant::new(host_id, nickname, msg["media_id"].clone(), now);
        host.account = conn.account_id.clone();
        host.conn = Some(conn.clone());
        let mut room = Room::new(code, msg, host, now, cfg.sync_mode, "media_match_key");
        room.bindings.insert(conn.id, room.host_id.clone());
        let mut fx = Effects {
            persist: true,
            ..Effects::default()
        };
        let host = &room.participants[0];
        fx.send(
            conn.id,
            &json!({"type": "room_created", "room": {
                "code": room.code, "host_id": room.host_id, "media_id": room.media_id,
                "media_title": room.media_title, "is_playing": false, "current_position": 0,
                "participants": [host.summary()],
            }}),
        );
        Ok((room, fx))
    }

    /// `POST /api/watchtogether/rooms`: the host slot waits, socketless, for a `join` with
    /// `client_id = host_id`.
    pub fn create_rest(
        code: String,
        body: &Value,
        host_id: String,
        creator_account: Option<String>,
        now: i64,
        cfg: &WatchTogetherConfig,
    ) -> Result<Room, RestCreateError> {
        if !(truthy(&body["media_id"])
            && truthy(&body["media_title"])
            && truthy(&body["host_nickname"]))
        {
            return Err(RestCreateError::MissingFields);
        }
        let nickname = js_string(&body["host_nickname"]);
        if nickname.chars().count() > cfg.max_nickname_chars {
            return Err(RestCreateError::NicknameTooLong(cfg.max_nickname_chars));
        }
        if !media_fields_fit(body) {
            return Err(RestCreateError::MediaFieldTooLong);
        }
        let mut host = Participant::new(host_id, nickname, body["media_id"].clone(), now);
        host.account = creator_account;
        Ok(Room::new(
            code,
            body,
            host,
            now,
            cfg.sync_mode,
            "media_match_key",
        ))
    }

    /// May this account close the room (REST `DELETE`)? Anyone may, as in the reference,
    /// unless accounts are required: then the account that created it, or the current
    /// host's, may (a room created before accounts were recorded stays open to all).
    pub fn may_close(&self, account: Option<&str>, cfg: &WatchTogetherConfig) -> bool {
        if !cfg.require_auth {
            return true;
        }
        let Some(creator) = &self.creator_account else {
            return true;
        };
        let host = self
            .participants
            .iter()
            .find(|p| p.id == self.host_id)
            .and_then(|p| p.account.as_deref());
        account.is_some_and(|a| a == creator || Some(a) == host)
    }

    pub fn authoritative_position(&self, now: i64) -> f64 {
        if self.is_paused || self.state != PlayState::Playing {
            self.current_position
        } else {
            self.current_position + (now - self.position_updated_at) as f64 / 1000.0
        }
    }

    pub fn summary(&self, now: i64) -> RoomSummary {
        RoomSummary {
            code: self.code.clone(),
            media_id: self.media_id.clone(),
            media_title: self.media_title.clone(),
            host_id: self.host_id.clone(),
            state: self.state,
            is_playing: self.state == PlayState::Playing,
            current_position: self.authoritative_position(now),
            participants: self.participants.iter().map(Participant::summary).collect(),
        }
    }

    fn summary_value(&self, now: i64) -> Value {
        serde_json::to_value(self.summary(now)).unwrap_or(Value::Null)
    }

    /// Sockets of every participant whose socket is open.
    fn all(&self) -> Vec<ConnId> {
        self.participants
            .iter()
            .filter_map(|p| p.conn.as_ref().map(|c| c.id))
            .collect()
    }

    fn others(&self, except: usize) -> Vec<ConnId> {
        self.participants
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .filter_map(|(_, p)| p.conn.as_ref().map(|c| c.id))
            .collect()
    }

    /// The participant this socket joined as, while the socket is still theirs.
    fn sender(&self, conn: ConnId) -> Option<usize> {
        let id = self.bindings.get(&conn)?;
        self.participants
            .iter()
            .position(|p| &p.id == id && p.conn.as_ref().is_some_and(|c| c.id == conn))
    }

    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.bindings.contains_key(&conn)
    }

    /// One client message for this room (already resolved to it).
    pub fn handle(
        &mut self,
        conn: &ConnMeta,
        msg: &Value,
        now: i64,
        cfg: &WatchTogetherConfig,
    ) -> Effects {
        self.last_activity = now;
        let mut fx = Effects::default();
        match msg.get("type").and_then(Value::as_str).unwrap_or_default() {
            "join" => self.join(conn, msg, now, cfg, &mut fx),
            "ready" => self.ready(conn.id, msg, now, &mut fx),
            "start" | "start_playback" => self.start(conn.id, msg, now, &mut fx),
            "sync" => self.sync(conn.id, msg, now, &mut fx),
            "state_report" => self.state_report(conn.id, msg, now, &mut fx),
            "ping" => {
                if let Some(i) = self.sender(conn.id) {
                    let mut pong = Map::new();
                    pong.insert("type".into(), json!("pong"));
                    if let Some(id) = msg.get("ping_id") {
                        pong.insert("ping_id".into(), id.clone());
                    }
                    pong.insert("server_time".into(), json!(now));
                    pong.insert("your_rtt".into(), num(self.participants[i].rtt_avg));
                    fx.send(conn.id, &Value::Object(pong));
                }
            }
            "pong_report" => {
                if let Some(i) = self.sender(conn.id)
                    && let Some(rtt) = msg
                        .get("rtt")
                        .filter(|r| !r.is_null() && storable_scalar(r))
                {
                    let p = &mut self.participants[i];
                    p.rtt = rtt.clone();
                    // Stored as sent, but only a number moves the average.
                    if let Some(rtt) = js_number(rtt).filter(|r| r.is_finite()) {
                        p.rtt_avg = if p.rtt_avg == 0.0 {
                            rtt
                        } else {
                            0.85 * p.rtt_avg + 0.15 * rtt
                        };
                    }
                }
            }
            "heartbeat" => {
                if let Some(i) = self.sender(conn.id)
                    && let Some(position) = msg.get("position").filter(|v| storable_scalar(v))
                {
                    self.participants[i].last_position = position.clone();
                }
                fx.send(conn.id, &json!({"type": "heartbeat_ack", "timestamp": now}));
            }
            "leave" => {
                if let Some(i) = self.sender(conn.id) {
                    let id = self.participants[i].id.clone();
                    fx.merge(self.leave(&id, now));
                }
            }
            _ => {}
        }
        fx
    }

    fn media_mismatch(&self, msg: &Value) -> Option<String> {
        let room_keys = match_tokens(&self.media_match_key);
        let join_keys = match_tokens(&loose_string(msg.get("media_match_key")));
        let with_title = || {
            format!(
                "This room is watching a different media item (\"{}\", room media_id: {})",
                js_string(&self.media_title),
                js_string(&self.media_id)
            )
        };
        if !room_keys.is_empty() && !join_keys.is_empty() {
            let shared = join_keys.iter().any(|k| room_keys.contains(k));
            return (!shared).then(with_title);
        }
        let room_title = loose_string(Some(&self.media_title)).trim().to_lowercase();
        let join_title = loose_string(msg.get("media_title")).trim().to_lowercase();
        if !room_title.is_empty() && !join_title.is_empty() {
            return (room_title != join_title).then(with_title);
        }
        if let Some(join_id) = msg.get("media_id") {
            let same = matches!(
                (js_number(&self.media_id), js_number(join_id)),
                (Some(a), Some(b)) if a == b
            );
            if !same {
                return Some(format!(
                    "This room is watching a different media item (room media_id: {})",
                    js_string(&self.media_id)
                ));
            }
        }
        None
    }

    fn join(
        &mut self,
        conn: &ConnMeta,
        msg: &Value,
        now: i64,
        cfg: &WatchTogetherConfig,
        fx: &mut Effects,
    ) {
        // Stored trimmed, as the reference does on join (a create stores it as sent).
        let sent_nickname = loose_string(msg.get("nickname")).trim().to_string();
        let nickname = conn.account_name.clone().unwrap_or(sent_nickname);
        if !truthy(&msg["client_id"]) || nickname.trim().is_empty() {
            return fx.error(conn.id, JOIN_REQUIRED);
        }
        if nickname.chars().count() > cfg.max_nickname_chars {
            return fx.error(conn.id, &nickname_too_long(cfg.max_nickname_chars));
        }
        let client_id = js_string(&msg["client_id"]);
        if client_id.chars().count() > MAX_CLIENT_ID_CHARS {
            return fx.error(conn.id, &client_id_too_long());
        }
        if !media_fields_fit(msg) {
            return fx.error(conn.id, &media_field_too_long());
        }
        if let Some(text) = self.media_mismatch(msg) {
            return fx.error(conn.id, &text);
        }
        let existing = self.participants.iter().position(|p| p.id == client_id);
        // Refusals first: a join that fails leaves the socket where it was.
        match existing {
            Some(i) if cfg.require_auth && !self.participants[i].may_be_taken_by(conn) => {
                return fx.error(conn.id, SLOT_OWNED);
            }
            Some(i) => {
                if let Some(old) = &self.participants[i].conn
                    && old.id != conn.id
                    && !conn.same_client_as(old)
                {
                    return fx.error(conn.id, SLOT_TAKEN);
                }
            }
            None if self.participants.len() >= cfg.max_participants => {
                return fx.error(
                    conn.id,
                    &format!(
                        "Room is full (limit: {} participants)",
                        cfg.max_participants
                    ),
                );
            }
            None => {}
        }
        // A socket is one participant: joining as another leaves the slot it held to its
        // grace period, as if that socket had closed (so no socket gets a room's messages
        // once per slot it ever joined as).
        if let Some(previous) = self.bindings.get(&conn.id).filter(|id| **id != client_id) {
            let previous = previous.clone();
            self.detach(&previous, conn.id, now, fx);
        }
        match existing {
            Some(i) => {
                if let Some(old) = &self.participants[i].conn
                    && old.id != conn.id
                {
                    fx.out
                        .push(Out::Close(old.id, 1000, "Replaced by a new connection"));
                    self.bindings.remove(&old.id);
                }
                let p = &mut self.participants[i];
                p.conn = Some(conn.clone());
                p.account = conn.account_id.clone();
                p.disconnected_at = None;
                p.in_grace = false;
                p.nickname = nickname;
                self.bindings.insert(conn.id, client_id);
                self.send_room_joined(conn.id, now, fx);
                let state = json!({"type": "room_state", "room": self.summary_value(now)});
                fx.send_many(self.all(), &state);
            }
            None => {
                let mut p = Participant::new(
                    client_id.clone(),
                    nickname,
                    msg.get("media_id").cloned().unwrap_or(Value::Null),
                    now,
                );
                p.account = conn.account_id.clone();
                p.conn = Some(conn.clone());
                let summary = p.summary();
                self.participants.push(p);
                self.bindings.insert(conn.id, client_id);
                self.send_room_joined(conn.id, now, fx);
                let joined = json!({"type": "participant_joined", "participant": summary});
                fx.send_many(self.others(self.participants.len() - 1), &joined);
            }
        }
        fx.persist = true;
    }

    fn send_room_joined(&self, to: ConnId, now: i64, fx: &mut Effects) {
        let s = self.summary(now);
        fx.send(
            to,
            &json!({"type": "room_joined", "room": {
                "code": s.code, "media_id": s.media_id, "media_title": s.media_title,
                "host_id": s.host_id, "is_playing": s.is_playing,
                "current_position": num(s.current_position), "participants": s.participants,
            }}),
        );
    }

    fn ready(&mut self, conn: ConnId, msg: &Value, now: i64, fx: &mut Effects) {
        let Some(i) = self.sender(conn) else { return };
        let duration = msg
            .get("duration")
            .filter(|d| storable_scalar(d))
            .cloned()
            .unwrap_or(Value::Null);
        let p = &mut self.participants[i];
        p.is_ready = true;
        if !duration.is_null() {
            p.duration = duration.clone();
        }
        let id = p.id.clone();
        let shown = if truthy(&duration) {
            duration
        } else {
            json!(0)
        };
        let all = self.all();
        fx.send_many(
            all.clone(),
            &json!({"type": "participant_ready", "participant_id": id, "duration": shown}),
        );
        fx.send_many(
            all,
            &json!({"type": "room_state", "room": self.summary_value(now)}),
        );
        fx.persist = true;
    }

    fn start(&mut self, conn: ConnId, msg: &Value, now: i64, fx: &mut Effects) {
        let Some(i) = self
            .sender(conn)
            .filter(|&i| self.participants[i].id == self.host_id)
        else {
            return fx.error(conn, ONLY_HOST_STARTS);
        };
        if self.participants.iter().any(|p| !p.is_ready) {
            return fx.error(conn, NOT_ALL_READY);
        }
        let position = msg.get("position").and_then(js_position).unwrap_or(0.0);
        self.state = PlayState::Playing;
        self.is_paused = false;
        self.current_position = position;
        self.position_updated_at = now;
        self.last_sync_from = Some(self.participants[i].id.clone());
        self.last_sync_at = now;
        // The host's own state is the one it just started.
        let host = &mut self.participants[i];
        host.last_position = num(position);
        host.last_paused = false;
        host.last_state_report = Some(now);
        fx.send_many(
            self.all(),
            &json!({"type": "playback_started", "position": num(position), "timestamp": now}),
        );
        fx.persist = true;
    }

    fn sync(&mut self, conn: ConnId, msg: &Value, now: i64, fx: &mut Effects) {
        let Some(Value::Object(command)) = msg.get("command") else {
            return;
        };
        let Some(i) = self.sender(conn) else { return };
        let sender_id = self.participants[i].id.clone();
        if self.sync_mode == SyncMode::HostOnly && sender_id != self.host_id {
            return;
        }
        let Some(action) = command.get("action").and_then(Value::as_str) else {
            return;
        };
        let action = match action.trim().to_lowercase().as_str() {
            "play" | "resume" => "play",
            "pause" => "pause",
            "seek" => "seek",
            _ => return,
        };
        let position = command
            .get("position")
            .and_then(js_position)
            .unwrap_or_else(|| self.authoritative_position(now));
        self.current_position = position;
        self.position_updated_at = now;
        self.last_sync_from = Some(sender_id.clone());
        self.last_sync_at = now;
        let sender = &mut self.participants[i];
        sender.last_position = num(position);
        sender.last_state_report = Some(now);
        match action {
            "play" => {
                self.state = PlayState::Playing;
                self.is_paused = false;
                sender.last_paused = false;
            }
            "pause" => {
                self.state = PlayState::Paused;
                self.is_paused = true;
                sender.last_paused = true;
            }
            _ => {}
        }
        let mut command = command.clone();
        command.insert("action".into(), json!(action));
        command.insert("position".into(), num(position));
        let mut relay = json!({
            "type": "sync", "command": command, "from": sender_id, "timestamp": now,
            "is_echo": false,
        });
        fx.send_many(self.others(i), &relay);
        relay["is_echo"] = json!(true);
        fx.send(conn, &relay);
        fx.persist = true;
    }

    /// Whose state reports correct the room: the host's, or in collaborative mode the
    /// latest `sync` sender's for 12 s after it synced. With no sync source (it left), the
    /// host's, as in the reference.
    fn may_drive(&self, sender_id: &str, now: i64) -> bool {
        match (self.sync_mode, &self.last_sync_from) {
            (SyncMode::Collaborative, Some(from))
                if self.last_sync_at != 0 && now - self.last_sync_at <= SYNC_AUTHORITY_MS =>
            {
                from == sender_id
            }
            _ => sender_id == self.host_id,
        }
    }

    fn state_report(&mut self, conn: ConnId, msg: &Value, now: i64, fx: &mut Effects) {
        let Some(i) = self.sender(conn) else { return };
        let p = &mut self.participants[i];
        if let Some(position) = msg.get("position").and_then(js_position) {
            p.last_position = num(position);
        }
        if let Some(paused) = msg.get("paused") {
            p.last_paused = truthy(paused);
        }
        p.last_state_report = Some(now);
        // What a heartbeat stored raw counts only if it is a finite number too.
        let (reported, paused, id) = (js_position(&p.last_position), p.last_paused, p.id.clone());
        if !matches!(self.state, PlayState::Playing | PlayState::Paused)
            || !self.may_drive(&id, now)
        {
            return;
        }
        let Some(reported) = reported else { return };
        let drift = (self.authoritative_position(now) - reported).abs();
        if drift > MAX_DRIFT_S || paused != self.is_paused {
            self.current_position = reported;
            self.position_updated_at = now;
            self.is_paused = paused;
            self.state = if paused {
                PlayState::Paused
            } else {
                PlayState::Playing
            };
            fx.persist = true;
        }
    }

    /// Removes a participant (explicit `leave` or grace expiry), migrating the host.
    pub fn leave(&mut self, id: &str, now: i64) -> Effects {
        let mut fx = Effects::default();
        let Some(i) = self.participants.iter().position(|p| p.id == id) else {
            return fx;
        };
        self.participants.remove(i);
        self.bindings.retain(|_, pid| pid != id);
        self.last_activity = now;
        fx.persist = true;
        if self.last_sync_from.as_deref() == Some(id) {
            self.last_sync_from = None;
            self.last_sync_at = now;
        }
        if self.participants.is_empty() {
            fx.deleted = true;
            return fx;
        }
        if self.host_id == id {
            let new_host = &mut self.participants[0];
            new_host.is_host = true;
            let (new_id, new_nick) = (new_host.id.clone(), new_host.nickname.clone());
            self.host_id = new_id.clone();
            if self.last_sync_from.is_none() {
                self.last_sync_from = Some(new_id.clone());
            }
            fx.send_many(
                self.all(),
                &json!({"type": "host_migrated", "old_host_id": id, "new_host_id": new_id,
                    "new_host_nickname": new_nick, "room": self.summary_value(now)}),
            );
        }
        fx.send_many(
            self.all(),
            &json!({"type": "participant_left", "participant_id": id,
                "room": self.summary_value(now)}),
        );
        fx
    }

    /// Participant `id` loses socket `conn` (which now joins as someone else) and enters
    /// its grace period.
    fn detach(&mut self, id: &str, conn: ConnId, now: i64, fx: &mut Effects) {
        self.bindings.remove(&conn);
        if let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| p.id == id && p.conn.as_ref().is_some_and(|c| c.id == conn))
        {
            p.conn = None;
            p.disconnected_at = Some(now);
            p.in_grace = true;
            fx.persist = true;
        }
    }

    /// A socket closed: the participants it held enter the reconnect grace period.
    pub fn socket_closed(&mut self, conn: ConnId, now: i64) -> Effects {
        let mut fx = Effects::default();
        self.bindings.remove(&conn);
        for p in &mut self.participants {
            if p.conn.as_ref().is_some_and(|c| c.id == conn) {
                p.conn = None;
                p.disconnected_at = Some(now);
                p.in_grace = true;
                fx.persist = true;
            }
        }
        if fx.persist {
            self.last_activity = now;
        }
        fx
    }

    /// When the earliest running grace period ends.
    pub fn next_grace_deadline(&self, grace_ms: u64) -> Option<i64> {
        self.participants
            .iter()
            .filter(|p| p.in_grace)
            .filter_map(|p| p.disconnected_at)
            .min()
            .map(|t| t + grace_ms as i64)
    }

    /// Runs the leave procedure for everyone whose grace period has ended.
    pub fn expire_graces(&mut self, now: i64, grace_ms: u64) -> Effects {
        let due: Vec<String> = self
            .participants
            .iter()
            .filter(|p| {
                p.in_grace
                    && p.disconnected_at
                        .is_some_and(|t| t + grace_ms as i64 <= now)
            })
            .map(|p| p.id.clone())
            .collect();
        let mut fx = Effects::default();
        for id in due {
            fx.merge(self.leave(&id, now));
        }
        fx
    }

    /// The 500 ms `state_update` tick, while playing or paused; then re-bases the position.
    pub fn tick_state(&mut self, now: i64) -> Effects {
        let mut fx = Effects::default();
        if !matches!(self.state, PlayState::Playing | PlayState::Paused) {
            return fx;
        }
        let position = self.authoritative_position(now);
        let roster: Vec<Value> = self
            .participants
            .iter()
            .map(|p| {
                json!({"id": p.id, "nickname": p.nickname, "position": p.last_position,
                    "paused": p.last_paused, "rtt": num((p.rtt_avg + 0.5).floor())})
            })
            .collect();
        let roster = Value::Array(roster).to_string();
        let paused = self.is_paused;
        for p in &self.participants {
            let Some(conn) = &p.conn else { continue };
            let text = format!(
                r#"{{"type":"state_update","position":{},"paused":{paused},"server_time":{now},"your_rtt":{},"participants":{roster}}}"#,
                num(position + p.rtt_avg / 2000.0),
                num(p.rtt_avg),
            );
            fx.out.push(Out::Send(conn.id, Utf8Bytes::from(text)));
        }
        self.current_position = position;
        self.position_updated_at = now;
        fx
    }

    /// The 2 s server `ping` to every connected participant.
    pub fn tick_ping(&self, now: i64) -> Effects {
        let mut fx = Effects::default();
        for p in &self.participants {
            if let Some(conn) = &p.conn {
                fx.send(
                    conn.id,
                    &json!({"type": "ping", "ping_id": format!("{}-{now}", p.id), "server_time": now}),
                );
            }
        }
        fx
    }

    pub fn idle_for(&self, now: i64) -> i64 {
        now - self.last_activity
    }

    /// Closes every socket (`Room expired`, `Room closed`); the room is gone.
    pub fn close_all(&mut self, reason: &'static str) -> Effects {
        let mut fx = Effects {
            deleted: true,
            ..Effects::default()
        };
        for id in self.all() {
            fx.out.push(Out::Close(id, 1000, reason));
        }
        for p in &mut self.participants {
            p.conn = None;
        }
        self.bindings.clear();
        fx
    }

    /// The persisted form: the position extrapolated to `now`, sockets left out.
    pub fn snapshot(&self, now: i64) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["current_position"] = num(self.authoritative_position(now));
        v["position_updated_at"] = json!(now);
        v.to_string()
    }

    /// A room read back from its snapshot: nobody is connected and nobody is in grace.
    pub fn restore(snapshot: &str) -> Result<Room, serde_json::Error> {
        let mut room: Room = serde_json::from_str(snapshot)?;
        for p in &mut room.participants {
            p.in_grace = false;
            p.conn = None;
        }
        Ok(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    fn cfg() -> WatchTogetherConfig {
        crate::config::Config::from_vars(&Map::new())
            .unwrap()
            .watch_together
    }

    fn conn(id: ConnId, ip: [u8; 4]) -> ConnMeta {
        ConnMeta {
            id,
            ip: IpAddr::from(ip),
            account_id: None,
            account_name: None,
        }
    }

    /// Messages sent to `to`, parsed.
    fn to(fx: &Effects, to: ConnId) -> Vec<Value> {
        fx.out
            .iter()
            .filter_map(|o| match o {
                Out::Send(id, text) if *id == to => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn types(msgs: &[Value]) -> Vec<&str> {
        msgs.iter().map(|m| m["type"].as_str().unwrap()).collect()
    }

    fn room_with_guest() -> Room {
        let c = cfg();
        let (mut room, _) = Room::create(
            "ABCDEF".into(),
            &json!({"type": "create", "media_id": 1, "media_title": "Film", "nickname": "Host", "client_id": "h"}),
            &conn(1, [127, 0, 0, 1]),
            1_000,
            &c,
        )
        .unwrap();
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "g", "nickname": "Guest", "media_id": 1}),
            1_000,
            &c,
        );
        room
    }

    #[test]
    fn create_requires_truthy_fields() {
        let err = Room::create(
            "X".into(),
            &json!({"media_id": 0, "media_title": "t", "nickname": "n"}),
            &conn(1, [127, 0, 0, 1]),
            0,
            &cfg(),
        )
        .unwrap_err();
        assert_eq!(err, "media_id, media_title, and nickname required");
    }

    #[test]
    fn media_rules_apply_in_order() {
        let c = cfg();
        let mut room = room_with_guest();
        room.media_match_key = "file:a|title:b".into();
        let fx = room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "x", "nickname": "X", "media_match_key": "file:z"}),
            0,
            &c,
        );
        assert_eq!(
            to(&fx, 3)[0]["message"],
            "This room is watching a different media item (\"Film\", room media_id: 1)"
        );
        // Shared token: accepted although the title differs.
        let fx = room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "x", "nickname": "X", "media_match_key": "cloud:q|TITLE:B", "media_title": "Other"}),
            0,
            &c,
        );
        assert_eq!(types(&to(&fx, 3)), ["room_joined"]);
        room.media_match_key.clear();
        // Rule 3: identical non-numeric ids never match.
        room.media_id = json!("abc");
        room.media_title = json!("");
        let fx = room.handle(
            &conn(4, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "y", "nickname": "Y", "media_id": "abc"}),
            0,
            &c,
        );
        assert_eq!(
            to(&fx, 4)[0]["message"],
            "This room is watching a different media item (room media_id: abc)"
        );
    }

    #[test]
    fn sync_echoes_to_the_sender_and_relays_to_others() {
        let c = cfg();
        let mut room = room_with_guest();
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": " Resume ", "position": "12.5", "extra": 1}}),
            5_000,
            &c,
        );
        let host = to(&fx, 1);
        let guest = to(&fx, 2);
        assert_eq!(host[0]["is_echo"], false);
        assert_eq!(guest[0]["is_echo"], true);
        assert_eq!(
            host[0]["command"],
            json!({"action": "play", "position": 12.5, "extra": 1})
        );
        assert_eq!(host[0]["from"], "g");
        assert_eq!(room.state, PlayState::Playing);
        assert_eq!(room.last_sync_from.as_deref(), Some("g"));
    }

    #[test]
    fn host_only_drops_guest_sync() {
        let c = cfg();
        let mut room = room_with_guest();
        room.sync_mode = SyncMode::HostOnly;
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": "play"}}),
            5_000,
            &c,
        );
        assert!(fx.out.is_empty());
        assert_eq!(room.state, PlayState::Waiting);
    }

    #[test]
    fn state_reports_correct_only_from_the_authority() {
        let c = cfg();
        let mut room = room_with_guest();
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": "play", "position": 10}}),
            10_000,
            &c,
        );
        // The guest is not the latest sync source: no correction.
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 50, "paused": false}),
            10_000,
            &c,
        );
        assert_eq!(room.authoritative_position(10_000), 10.0);
        // The host is: small drift is ignored, large drift corrects.
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 10.3, "paused": false}),
            10_000,
            &c,
        );
        assert_eq!(room.authoritative_position(10_000), 10.0);
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 46, "paused": "false"}),
            11_000,
            &c,
        );
        // "false" is truthy: the room pauses at 46.
        assert_eq!(room.authoritative_position(20_000), 46.0);
        assert_eq!(room.state, PlayState::Paused);
        // After 12 s without a sync, the host (not the guest) drives again.
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 70, "paused": true}),
            30_000,
            &c,
        );
        assert_eq!(room.authoritative_position(30_000), 46.0);
    }

    #[test]
    fn leaving_host_migrates_to_the_next_in_join_order() {
        let c = cfg();
        let mut room = room_with_guest();
        let fx = room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "leave"}),
            2_000,
            &c,
        );
        assert_eq!(types(&to(&fx, 2)), ["host_migrated", "participant_left"]);
        assert_eq!(room.host_id, "g");
        assert!(room.participants[0].is_host);
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "leave"}),
            2_000,
            &c,
        );
        assert!(fx.deleted);
        assert!(fx.out.is_empty());
    }

    #[test]
    fn an_open_slot_is_taken_over_only_by_the_same_address_or_account() {
        let c = cfg();
        let mut room = room_with_guest();
        let join = json!({"type": "join", "client_id": "g", "nickname": "Guest", "media_id": 1});
        let fx = room.handle(&conn(9, [10, 0, 0, 9]), &join, 3_000, &c);
        assert_eq!(types(&to(&fx, 9)), ["error"]);
        assert!(room.sender(2).is_some());
        let mut same_account = conn(9, [10, 0, 0, 9]);
        same_account.account_id = Some("u1".into());
        room.participants[1].conn.as_mut().unwrap().account_id = Some("u1".into());
        let fx = room.handle(&same_account, &join, 3_000, &c);
        assert!(matches!(fx.out[0], Out::Close(2, 1000, _)));
        assert_eq!(types(&to(&fx, 9)), ["room_joined", "room_state"]);
        assert!(room.sender(2).is_none());
        // A slot in grace is free for a reconnect from anywhere.
        room.socket_closed(9, 4_000);
        let fx = room.handle(&conn(10, [10, 9, 9, 9]), &join, 5_000, &c);
        assert_eq!(types(&to(&fx, 10)), ["room_joined", "room_state"]);
    }

    #[test]
    fn grace_expiry_runs_the_leave_procedure() {
        let c = cfg();
        let mut room = room_with_guest();
        room.socket_closed(2, 1_000);
        assert_eq!(room.next_grace_deadline(20_000), Some(21_000));
        assert!(room.expire_graces(20_999, 20_000).out.is_empty());
        let fx = room.expire_graces(21_000, 20_000);
        assert_eq!(types(&to(&fx, 1)), ["participant_left"]);
        assert_eq!(room.participants.len(), 1);
        let _ = c;
    }

    #[test]
    fn state_updates_add_half_the_rtt_and_rebase() {
        let c = cfg();
        let mut room = room_with_guest();
        assert!(
            room.tick_state(0).out.is_empty(),
            "no updates while waiting"
        );
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "pong_report", "rtt": 100}),
            0,
            &c,
        );
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "pong_report", "rtt": 200}),
            0,
            &c,
        );
        assert!((room.participants[1].rtt_avg - 115.0).abs() < 1e-9);
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": "play", "position": 10}}),
            1_000,
            &c,
        );
        let fx = room.tick_state(2_000);
        let guest = &to(&fx, 2)[0];
        assert!((guest["position"].as_f64().unwrap() - (11.0 + 0.0575)).abs() < 1e-9);
        assert_eq!(guest["participants"][1]["rtt"], 115.0);
        assert_eq!(room.position_updated_at, 2_000);
        assert_eq!(room.current_position, 11.0);
    }

    #[test]
    fn snapshots_round_trip_without_sockets() {
        let room = room_with_guest();
        let back = Room::restore(&room.snapshot(1_000)).unwrap();
        assert_eq!(back.participants.len(), 2);
        assert!(back.participants.iter().all(|p| p.conn.is_none()));
        assert_eq!(back.host_id, "h");
    }

    /// Whole numbers go out as JavaScript writes them (`115`, not `115.0`): clients read
    /// RTTs and positions into integer types too.
    #[test]
    fn whole_numbers_go_out_without_a_fraction() {
        let c = cfg();
        let mut room = room_with_guest();
        for rtt in [30, 200] {
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "pong_report", "rtt": rtt}),
                0,
                &c,
            );
        }
        room.participants[1].rtt_avg = 115.0;
        room.participants.iter_mut().for_each(|p| p.is_ready = true);
        let fx = room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "start", "position": 10}),
            1_000,
            &c,
        );
        let Out::Send(_, started) = &fx.out[0] else {
            panic!("no playback_started")
        };
        assert!(started.contains(r#""position":10,"#), "{started}");
        let fx = room.tick_state(1_000);
        let text = fx
            .out
            .iter()
            .find_map(|o| match o {
                Out::Send(2, text) => Some(text.to_string()),
                _ => None,
            })
            .unwrap();
        assert!(text.contains(r#""your_rtt":115,"#), "{text}");
        assert!(text.contains(r#""rtt":115}"#), "{text}");
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "ping"}),
            1_000,
            &c,
        );
        let Out::Send(_, pong) = &fx.out[0] else {
            panic!("no pong")
        };
        assert!(pong.contains(r#""your_rtt":115"#), "{pong}");
        assert_eq!(num(0.5).to_string(), "0.5");
        assert_eq!(num(-0.0).to_string(), "0");
        assert_eq!(num(f64::INFINITY), Value::Null);
    }

    /// `"Infinity"` or `1e999` is not a position: it would go out as `null` and be stored
    /// as a position no snapshot can hold (the room would be lost at the next start).
    #[test]
    fn non_finite_positions_count_as_not_a_number() {
        let c = cfg();
        let mut room = room_with_guest();
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": "pause", "position": 42}}),
            1_000,
            &c,
        );
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 42, "paused": true}),
            1_000,
            &c,
        );
        for position in [json!("Infinity"), json!("-Infinity"), json!("1e999")] {
            let fx = room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "sync", "command": {"action": "seek", "position": position}}),
                2_000,
                &c,
            );
            assert_eq!(to(&fx, 1)[0]["command"]["position"], 42, "{position}");
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "state_report", "position": position, "paused": true}),
                2_000,
                &c,
            );
        }
        assert_eq!(room.current_position, 42.0);
        assert_eq!(room.participants[1].last_position, json!(42));
        // Nor does one a heartbeat stored raw, once a state report reads it back.
        for position in ["1e999", "Infinity"] {
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "heartbeat", "position": position}),
                2_500,
                &c,
            );
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "state_report", "paused": false}),
                2_500,
                &c,
            );
            assert!(room.current_position.is_finite(), "{position}");
        }
        let back = Room::restore(&room.snapshot(3_000)).unwrap();
        assert_eq!(back.current_position, 42.0);
    }

    /// What a room keeps from a client is bounded: long ids and media fields are refused,
    /// and positions, durations and RTTs that are not small scalars are not stored (they
    /// would be re-sent to every participant twice a second).
    #[test]
    fn what_a_room_stores_from_clients_is_bounded() {
        let c = cfg();
        let long = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        let err = Room::create(
            "ABCDEF".into(),
            &json!({"media_id": 1, "media_title": "Film", "nickname": "H", "client_id": long}),
            &conn(1, [127, 0, 0, 1]),
            0,
            &c,
        )
        .unwrap_err();
        assert_eq!(err, "client_id too long (limit: 128 characters)");
        let big = "y".repeat(MAX_MEDIA_FIELD_BYTES);
        for field in ["media_id", "media_title", "media_match_key"] {
            let mut msg = json!({"media_id": 1, "media_title": "Film", "nickname": "H"});
            msg[field] = json!(big);
            let err =
                Room::create("ABCDEF".into(), &msg, &conn(1, [127, 0, 0, 1]), 0, &c).unwrap_err();
            assert_eq!(err, media_field_too_long(), "{field}");
            let mut body = json!({"media_id": 1, "media_title": "Film", "host_nickname": "H"});
            body[field] = json!(big);
            assert_eq!(
                Room::create_rest("ABCDEF".into(), &body, "h".into(), None, 0, &c).unwrap_err(),
                RestCreateError::MediaFieldTooLong
            );
        }
        let mut room = room_with_guest();
        let fx = room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "z".repeat(MAX_CLIENT_ID_CHARS + 1), "nickname": "Z"}),
            0,
            &c,
        );
        assert_eq!(to(&fx, 3)[0]["message"], client_id_too_long());
        let fx = room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "z", "nickname": "Z", "media_title": big}),
            0,
            &c,
        );
        assert_eq!(to(&fx, 3)[0]["message"], media_field_too_long());
        assert_eq!(room.participants.len(), 2);
        let nested = json!({"a": [[[[{"b": 1}]]]]});
        let long_string = json!("p".repeat(65));
        for (kind, value) in [("heartbeat", &nested), ("heartbeat", &long_string)] {
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": kind, "position": value}),
                0,
                &c,
            );
            assert_eq!(room.participants[1].last_position, json!(0));
        }
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "heartbeat", "position": "12.5s"}),
            0,
            &c,
        );
        assert_eq!(room.participants[1].last_position, json!("12.5s"));
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "pong_report", "rtt": nested}),
            0,
            &c,
        );
        assert_eq!(room.participants[1].rtt, json!(0));
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "ready", "duration": long_string}),
            0,
            &c,
        );
        assert_eq!(to(&fx, 1)[0]["duration"], 0);
        assert_eq!(room.participants[1].duration, Value::Null);
    }

    /// A socket is one participant: joining as someone else leaves the slot it held to its
    /// grace period, so no socket gets every message once per slot it joined as.
    #[test]
    fn a_socket_that_joins_as_another_participant_leaves_its_slot() {
        let c = cfg();
        let mut room = room_with_guest();
        for id in ["g2", "g3", "g4"] {
            room.handle(
                &conn(2, [127, 0, 0, 1]),
                &json!({"type": "join", "client_id": id, "nickname": id}),
                5_000,
                &c,
            );
        }
        let held: Vec<&str> = room
            .participants
            .iter()
            .filter(|p| p.conn.as_ref().is_some_and(|c| c.id == 2))
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(held, ["g4"]);
        let graced: Vec<&str> = room
            .participants
            .iter()
            .filter(|p| p.in_grace)
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(graced, ["g", "g2", "g3"]);
        room.state = PlayState::Paused;
        let fx = room.tick_state(6_000);
        assert_eq!(to(&fx, 2).len(), 1, "one state_update for the socket");
        // Back to its first slot within the grace period: restored, the other in grace.
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "g", "nickname": "Guest"}),
            7_000,
            &c,
        );
        assert!(room.participants[1].conn.is_some() && !room.participants[1].in_grace);
        let fx = room.expire_graces(5_000 + c.reconnect_grace_ms as i64, c.reconnect_grace_ms);
        assert_eq!(
            room.participants.len(),
            3,
            "g2 and g3 left: {:?}",
            types(&to(&fx, 1))
        );
        // A join that is refused (a slot held from another address, a full room) leaves
        // the socket in the slot it has.
        room.handle(
            &conn(7, [127, 0, 0, 7]),
            &json!({"type": "join", "client_id": "far", "nickname": "Far"}),
            8_000,
            &c,
        );
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "far", "nickname": "Guest"}),
            8_000,
            &c,
        );
        assert_eq!(to(&fx, 2)[0]["message"], SLOT_TAKEN);
        let mut full = c.clone();
        full.max_participants = room.participants.len();
        let fx = room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "new", "nickname": "Guest"}),
            8_000,
            &full,
        );
        assert!(
            to(&fx, 2)[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("Room is full")
        );
        let guest = room.participants.iter().find(|p| p.id == "g").unwrap();
        assert!(guest.conn.as_ref().is_some_and(|c| c.id == 2) && !guest.in_grace);
    }

    /// Where the reference does more than the spec's text: a joining nickname is stored
    /// trimmed; `start` and `sync` set the sender's own reported state; with no sync source
    /// (it left) the host's state reports correct the room at once.
    #[test]
    fn follows_the_reference_where_the_spec_is_silent() {
        let c = cfg();
        let mut room = room_with_guest();
        room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "join", "client_id": "t", "nickname": "  Third  ", "media_id": 1}),
            1_000,
            &c,
        );
        assert_eq!(room.participants[2].nickname, "Third");
        room.participants.iter_mut().for_each(|p| p.is_ready = true);
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "start", "position": 5}),
            2_000,
            &c,
        );
        let host = &room.participants[0];
        assert_eq!((&host.last_position, host.last_paused), (&json!(5), false));
        assert_eq!(host.last_state_report, Some(2_000));
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "sync", "command": {"action": "pause", "position": 30}}),
            3_000,
            &c,
        );
        let guest = &room.participants[1];
        assert_eq!(
            (&guest.last_position, guest.last_paused),
            (&json!(30), true)
        );
        // The guest (the sync source) leaves: the host drives again at once.
        room.handle(
            &conn(2, [127, 0, 0, 1]),
            &json!({"type": "leave"}),
            4_000,
            &c,
        );
        assert_eq!(room.last_sync_from, None);
        room.handle(
            &conn(1, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 12, "paused": false}),
            4_500,
            &c,
        );
        assert_eq!((room.current_position, room.is_paused), (12.0, false));
        // A non-host cannot.
        room.handle(
            &conn(3, [127, 0, 0, 1]),
            &json!({"type": "state_report", "position": 99, "paused": true}),
            4_600,
            &c,
        );
        assert!(!room.is_paused);
    }
}
