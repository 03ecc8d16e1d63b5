//! The Watch Together registry and room actors.
//!
//! Every room is one tokio task owning its [`Room`]: client messages, socket closes and its
//! timers (`state_update`, `ping`, reconnect grace, inactivity expiry) all run there, so a
//! message never waits on another room. The registry maps codes to the actors' channels; it
//! is locked only to create, find (a socket caches its room's handle after the first
//! message) and remove rooms. Snapshots go to one database writer task that coalesces them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::WatchTogetherConfig;
use crate::db::Db;
use crate::http::rate_limit::client_key;
use crate::watchtogether::model::{CreatedRoom, RoomSummary, random_code};
use crate::watchtogether::room::{
    ConnId, ConnMeta, Effects, Out, ROOM_NOT_FOUND, RestCreateError, Room,
};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a socket's writer is asked to send.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// One WebSocket connection as rooms see it.
pub struct Conn {
    pub meta: ConnMeta,
    pub tx: mpsc::Sender<Outbound>,
    /// Cancelled when the socket must go (its queue overflowed).
    pub kill: CancellationToken,
    /// Bytes queued for the writer and not written yet.
    pub queued_bytes: AtomicUsize,
}

/// Messages a socket may queue before it counts as too slow and is closed.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Bytes a socket may have queued before it counts as too slow and is closed: a count of
/// messages alone would let a reader that stopped reading pin a thousand rosters.
pub const OUTBOUND_QUEUE_BYTES: usize = 4 << 20;

impl Conn {
    pub fn new(meta: ConnMeta, tx: mpsc::Sender<Outbound>, kill: CancellationToken) -> Conn {
        Conn {
            meta,
            tx,
            kill,
            queued_bytes: AtomicUsize::new(0),
        }
    }

    fn deliver(&self, out: Outbound) {
        let len = match &out {
            Outbound::Text(text) => text.len(),
            Outbound::Close(..) => 0,
        };
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > OUTBOUND_QUEUE_BYTES || self.tx.try_send(out).is_err() {
            self.kill.cancel();
        }
    }

    /// The writer sent `len` queued bytes.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    pub fn error(&self, message: &str) {
        self.deliver(Outbound::Text(Utf8Bytes::from(
            json!({"type": "error", "message": message}).to_string(),
        )));
    }
}

pub enum RoomCmd {
    Msg {
        conn: Arc<Conn>,
        msg: Value,
    },
    Closed(ConnId),
    Summary(oneshot::Sender<RoomSummary>),
    /// REST `DELETE` by this account (if signed in): close every socket with `Room
    /// closed`, when the account may ([`Room::may_close`]). Answers whether it was closed.
    Close {
        account: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    /// Server shutdown: persist, close the sockets, stop (the room stays stored).
    Shutdown(oneshot::Sender<()>),
}

/// What a REST `DELETE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    NotFound,
    /// Accounts are required and this one neither created the room nor hosts it.
    NotAllowed,
}

/// A room actor's mailbox.
#[derive(Clone)]
pub struct RoomHandle {
    pub code: Arc<str>,
    generation: u64,
    tx: mpsc::Sender<RoomCmd>,
}

impl RoomHandle {
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    pub fn same_room(&self, other: &RoomHandle) -> bool {
        self.generation == other.generation
    }

    /// Queues a command; `false` when the room is gone.
    pub async fn send(&self, cmd: RoomCmd) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

enum PersistOp {
    Upsert {
        code: String,
        snapshot: String,
        creator: Option<IpAddr>,
        last_activity: i64,
    },
    Delete(String),
    Flush(oneshot::Sender<()>),
}

struct RoomEntry {
    handle: RoomHandle,
    creator: Option<IpAddr>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<String, RoomEntry>,
    per_address: HashMap<IpAddr, usize>,
}

struct Inner {
    cfg: WatchTogetherConfig,
    registry: Mutex<Registry>,
    persist: mpsc::UnboundedSender<PersistOp>,
    next_id: AtomicU64,
}

/// Handle to every Watch Together room; cheap to clone.
#[derive(Clone)]
pub struct WatchTogether {
    inner: Arc<Inner>,
}

/// Why a room could not be created.
#[derive(Debug, PartialEq)]
pub enum CreateError {
    /// The text of the `error` message (or REST validation failure).
    Invalid(RestCreateError),
    Message(String),
    TooManyRooms(usize),
    NoFreeCode,
}

impl CreateError {
    pub fn text(&self) -> String {
        match self {
            CreateError::Message(m) => m.clone(),
            CreateError::TooManyRooms(n) => {
                format!("Too many rooms from this address (limit: {n})")
            }
            CreateError::NoFreeCode => "Failed to create room".into(),
            CreateError::Invalid(RestCreateError::MissingFields) => {
                "media_id, media_title, and host_nickname required".into()
            }
            CreateError::Invalid(RestCreateError::NicknameTooLong(n)) => {
                format!("Nickname too long (limit: {n} characters)")
            }
            CreateError::Invalid(RestCreateError::MediaFieldTooLong) => {
                crate::watchtogether::room::media_field_too_long()
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct StoredRoom {
    code: String,
    snapshot: String,
    creator_ip: Option<String>,
}

impl WatchTogether {
    /// Starts the snapshot writer and every stored room that has not expired.
    pub async fn start(db: Db, cfg: WatchTogetherConfig) -> Result<WatchTogether, sqlx::Error> {
        let (persist, rx) = mpsc::unbounded_channel();
        let rows = crate::db_fetch_all!(
            &db,
            StoredRoom,
            "SELECT code, snapshot, creator_ip FROM watchtogether_rooms",
            []
        )?;
        tokio::spawn(write_snapshots(db, rx));
        let wt = WatchTogether {
            inner: Arc::new(Inner {
                cfg,
                registry: Mutex::new(Registry::default()),
                persist,
                next_id: AtomicU64::new(1),
            }),
        };
        let now = now_ms();
        for row in rows {
            let room = match Room::restore(&row.snapshot) {
                Ok(room) if room.idle_for(now) <= wt.inner.cfg.room_idle_ms as i64 => room,
                Ok(_) => {
                    let _ = wt.inner.persist.send(PersistOp::Delete(row.code));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(code = %row.code, error = %e, "dropping unreadable Watch Together room");
                    let _ = wt.inner.persist.send(PersistOp::Delete(row.code));
                    continue;
                }
            };
            let creator = row.creator_ip.and_then(|ip| ip.parse().ok());
            let mut reg = wt.registry();
            if let Some(ip) = creator {
                *reg.per_address.entry(ip).or_default() += 1;
            }
            let handle = wt.spawn_room(room, creator, false, None);
            reg.rooms.insert(row.code, RoomEntry { handle, creator });
        }
        Ok(wt)
    }

    pub fn config(&self) -> &WatchTogetherConfig {
        &self.inner.cfg
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn lookup(&self, code: &str) -> Option<RoomHandle> {
        self.registry().rooms.get(code).map(|e| e.handle.clone())
    }

    pub fn room_count(&self) -> usize {
        self.registry().rooms.len()
    }

    /// Reserves a fresh code and the creator's room quota, builds the room with it and
    /// starts its actor (which first sends the creation's messages to `first`).
    fn create_with(
        &self,
        creator: IpAddr,
        first: Option<Arc<Conn>>,
        build: impl FnOnce(String) -> Result<(Room, Effects), CreateError>,
    ) -> Result<RoomHandle, CreateError> {
        // Counted per network, as the rate limits are: an IPv6 host has a whole /64.
        let creator = client_key(creator);
        let limit = self.inner.cfg.max_rooms_per_address;
        let mut reg = self.registry();
        if reg.per_address.get(&creator).copied().unwrap_or(0) >= limit {
            return Err(CreateError::TooManyRooms(limit));
        }
        let code = (0..50)
            .map(|_| random_code())
            .find(|c| !reg.rooms.contains_key(c))
            .ok_or(CreateError::NoFreeCode)?;
        let (room, fx) = build(code.clone())?;
        let handle = self.spawn_room(room, Some(creator), true, first.map(|c| (c, fx)));
        *reg.per_address.entry(creator).or_default() += 1;
        reg.rooms.insert(
            code,
            RoomEntry {
                handle: handle.clone(),
                creator: Some(creator),
            },
        );
        Ok(handle)
    }

    /// A `create` message from `conn`; the actor sends `room_created`.
    pub fn create_room(&self, conn: &Arc<Conn>, msg: &Value) -> Result<RoomHandle, CreateError> {
        let cfg = &self.inner.cfg;
        self.create_with(conn.meta.ip, Some(conn.clone()), |code| {
            Room::create(code, msg, &conn.meta, now_ms(), cfg).map_err(CreateError::Message)
        })
    }

    /// `POST /api/watchtogether/rooms`.
    pub fn create_rest(
        &self,
        creator: IpAddr,
        account: Option<String>,
        body: &Value,
    ) -> Result<CreatedRoom, CreateError> {
        let cfg = &self.inner.cfg;
        let mut created = None;
        self.create_with(creator, None, |code| {
            let host_id = uuid::Uuid::new_v4().to_string();
            let room = Room::create_rest(code, body, host_id, account, now_ms(), cfg)
                .map_err(CreateError::Invalid)?;
            let s = room.summary(now_ms());
            created = Some(CreatedRoom {
                code: s.code,
                host_id: s.host_id,
                media_id: s.media_id,
                media_title: s.media_title,
                participants: s.participants,
            });
            Ok((room, Effects::default()))
        })?;
        created.ok_or(CreateError::NoFreeCode)
    }

    pub async fn summary(&self, code: &str) -> Option<RoomSummary> {
        let handle = self.lookup(code)?;
        let (tx, rx) = oneshot::channel();
        handle.send(RoomCmd::Summary(tx)).await;
        rx.await.ok()
    }

    /// REST `DELETE`: `false` when there was no such room. (The reference also deletes a
    /// missing room from its store; here every stored room is live in memory from start-up
    /// until its own delete is queued, so a miss has nothing stored to delete, and queueing
    /// one per request would let any caller grow the writer's queue.)
    pub async fn close(&self, code: &str, account: Option<String>) -> CloseOutcome {
        let Some(handle) = self.lookup(code) else {
            return CloseOutcome::NotFound;
        };
        let (reply, rx) = oneshot::channel();
        if !handle.send(RoomCmd::Close { account, reply }).await {
            return CloseOutcome::NotFound;
        }
        match rx.await {
            Ok(true) => CloseOutcome::Closed,
            Ok(false) => CloseOutcome::NotAllowed,
            Err(_) => CloseOutcome::NotFound,
        }
    }

    /// Persists every room, closes their sockets and waits until the database has it all.
    pub async fn shutdown(&self) {
        let handles: Vec<RoomHandle> = self
            .registry()
            .rooms
            .drain()
            .map(|(_, e)| e.handle)
            .collect();
        for handle in handles {
            let (tx, rx) = oneshot::channel();
            if handle.send(RoomCmd::Shutdown(tx)).await {
                let _ = rx.await;
            }
        }
        let (tx, rx) = oneshot::channel();
        if self.inner.persist.send(PersistOp::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn spawn_room(
        &self,
        room: Room,
        creator: Option<IpAddr>,
        fresh: bool,
        first: Option<(Arc<Conn>, Effects)>,
    ) -> RoomHandle {
        let (tx, rx) = mpsc::channel(256);
        let handle = RoomHandle {
            code: Arc::from(room.code.as_str()),
            generation: self.next_conn_id(),
            tx,
        };
        if fresh {
            let _ = self.inner.persist.send(PersistOp::Upsert {
                code: room.code.clone(),
                snapshot: room.snapshot(now_ms()),
                creator,
                last_activity: room.last_activity,
            });
        }
        let mut actor = Actor {
            wt: self.clone(),
            room,
            creator,
            generation: handle.generation,
            conns: HashMap::new(),
        };
        if let Some((conn, fx)) = first {
            actor.conns.insert(conn.meta.id, conn);
            actor.deliver(&fx);
        }
        tokio::spawn(actor.run(rx));
        handle
    }

    /// Drops a room from the registry (if `generation` is still the one registered).
    fn unregister(&self, code: &str, generation: u64) {
        let mut reg = self.registry();
        if reg
            .rooms
            .get(code)
            .is_some_and(|e| e.handle.generation == generation)
            && let Some(entry) = reg.rooms.remove(code)
            && let Some(ip) = entry.creator
            && let Some(n) = reg.per_address.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                reg.per_address.remove(&ip);
            }
        }
    }
}

struct Actor {
    wt: WatchTogether,
    room: Room,
    creator: Option<IpAddr>,
    generation: u64,
    /// Sockets the room may send to: its participants' (and, while a message is handled,
    /// the sender's).
    conns: HashMap<ConnId, Arc<Conn>>,
}

fn instant_at(ms: i64) -> Instant {
    let delta = ms - now_ms();
    Instant::now() + Duration::from_millis(delta.max(0) as u64)
}

fn every(ms: u64) -> tokio::time::Interval {
    let period = Duration::from_millis(ms);
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

/// How soon after a change the room's snapshot is written (changes in between coalesce).
/// A clean shutdown writes every room at once; a crash loses at most this much, and the
/// stored position is an anchor that is extrapolated on restore anyway.
const PERSIST_DELAY: Duration = Duration::from_millis(1000);

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        let cfg = self.wt.inner.cfg.clone();
        let mut state_tick = every(cfg.state_update_ms);
        let mut ping_tick = every(cfg.ping_ms);
        let mut sweep = every(cfg.expiry_sweep_ms);
        let mut persist_at: Option<Instant> = None;
        loop {
            let grace = self
                .room
                .next_grace_deadline(cfg.reconnect_grace_ms)
                .map(instant_at);
            let fx = tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(RoomCmd::Msg { conn, msg }) => {
                        let id = conn.meta.id;
                        self.conns.insert(id, conn.clone());
                        let fx = self.room.handle(&conn.meta, &msg, now_ms(), &cfg);
                        self.deliver(&fx);
                        if !self.room.is_connected(id) {
                            self.conns.remove(&id);
                        }
                        fx
                    }
                    Some(RoomCmd::Closed(id)) => {
                        let fx = self.room.socket_closed(id, now_ms());
                        self.conns.remove(&id);
                        fx
                    }
                    Some(RoomCmd::Summary(reply)) => {
                        let _ = reply.send(self.room.summary(now_ms()));
                        continue;
                    }
                    Some(RoomCmd::Close { account, reply }) => {
                        if !self.room.may_close(account.as_deref(), &self.wt.inner.cfg) {
                            let _ = reply.send(false);
                            continue;
                        }
                        let fx = self.room.close_all("Room closed");
                        self.deliver(&fx);
                        let _ = reply.send(true);
                        fx
                    }
                    Some(RoomCmd::Shutdown(reply)) => {
                        self.save();
                        for conn in self.conns.values() {
                            conn.deliver(Outbound::Close(1001, "Server shutting down"));
                        }
                        let _ = reply.send(());
                        return;
                    }
                },
                _ = state_tick.tick() => {
                    let fx = self.room.tick_state(now_ms());
                    self.deliver(&fx);
                    fx
                }
                _ = ping_tick.tick() => {
                    let fx = self.room.tick_ping(now_ms());
                    self.deliver(&fx);
                    fx
                }
                _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                    let fx = self.room.expire_graces(now_ms(), cfg.reconnect_grace_ms);
                    self.deliver(&fx);
                    fx
                }
                _ = sweep.tick() => {
                    if self.room.idle_for(now_ms()) > cfg.room_idle_ms as i64 {
                        let fx = self.room.close_all("Room expired");
                        self.deliver(&fx);
                        fx
                    } else {
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(persist_at.unwrap_or_else(Instant::now)), if persist_at.is_some() => {
                    persist_at = None;
                    self.save();
                    continue;
                }
            };
            if fx.deleted {
                self.wt.unregister(&self.room.code, self.generation);
                let _ = self
                    .wt
                    .inner
                    .persist
                    .send(PersistOp::Delete(self.room.code.clone()));
                // Whatever was already queued finds the room gone.
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        RoomCmd::Msg { conn, .. } => conn.error(ROOM_NOT_FOUND),
                        // Queued behind what ended the room: it is closed, as asked.
                        RoomCmd::Close { reply, .. } => {
                            let _ = reply.send(true);
                        }
                        RoomCmd::Shutdown(reply) => {
                            let _ = reply.send(());
                        }
                        RoomCmd::Closed(_) | RoomCmd::Summary(_) => {}
                    }
                }
                return;
            }
            if fx.persist && persist_at.is_none() {
                persist_at = Some(Instant::now() + PERSIST_DELAY);
            }
        }
    }

    fn deliver(&self, fx: &Effects) {
        for out in &fx.out {
            match out {
                Out::Send(id, text) => {
                    if let Some(conn) = self.conns.get(id) {
                        conn.deliver(Outbound::Text(text.clone()));
                    }
                }
                Out::Close(id, code, reason) => {
                    if let Some(conn) = self.conns.get(id) {
                        conn.deliver(Outbound::Close(*code, reason));
                    }
                }
            }
        }
    }

    fn save(&self) {
        let _ = self.wt.inner.persist.send(PersistOp::Upsert {
            code: self.room.code.clone(),
            snapshot: self.room.snapshot(now_ms()),
            creator: self.creator,
            last_activity: self.room.last_activity,
        });
    }
}

/// Writes one drained batch in a single transaction: at 1,000 busy rooms that is one
/// commit instead of a thousand a second.
async fn write_batch(
    db: &Db,
    pending: HashMap<String, Option<(String, Option<IpAddr>, i64)>>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for (code, op) in pending {
        match op {
            Some((snapshot, creator, last_activity)) => crate::tx_execute!(
                &mut tx,
                "INSERT INTO watchtogether_rooms (code, snapshot, creator_ip, last_activity_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO UPDATE SET \
                 snapshot = excluded.snapshot, last_activity_ms = excluded.last_activity_ms",
                [
                    &code,
                    snapshot,
                    creator.map(|ip| ip.to_string()),
                    last_activity
                ]
            )?,
            None => crate::tx_execute!(
                &mut tx,
                "DELETE FROM watchtogether_rooms WHERE code = $1",
                [&code]
            )?,
        };
    }
    tx.commit().await
}

/// The one database writer: drains what is queued, keeps the latest operation per room,
/// writes, repeats.
async fn write_snapshots(db: Db, mut rx: mpsc::UnboundedReceiver<PersistOp>) {
    type Pending = HashMap<String, Option<(String, Option<IpAddr>, i64)>>;
    while let Some(first) = rx.recv().await {
        let mut pending: Pending = HashMap::new();
        let mut flushes = Vec::new();
        let mut apply = |op: PersistOp| match op {
            PersistOp::Upsert {
                code,
                snapshot,
                creator,
                last_activity,
            } => {
                pending.insert(code, Some((snapshot, creator, last_activity)));
            }
            PersistOp::Delete(code) => {
                pending.insert(code, None);
            }
            PersistOp::Flush(reply) => flushes.push(reply),
        };
        apply(first);
        while let Ok(op) = rx.try_recv() {
            apply(op);
        }
        if let Err(e) = write_batch(&db, pending).await {
            tracing::warn!(error = %e, "saving Watch Together rooms failed");
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(queue: usize) -> (Conn, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue);
        let meta = ConnMeta {
            id: 1,
            ip: IpAddr::from([127, 0, 0, 1]),
            account_id: None,
            account_name: None,
        };
        (Conn::new(meta, tx, CancellationToken::new()), rx)
    }

    /// A reader that stops reading is cut off by what it has queued in bytes, not only in
    /// messages: a few large rosters are enough; what the writer sends is given back.
    #[test]
    fn a_socket_that_stops_reading_is_cut_off_by_queued_bytes() {
        let (c, mut rx) = conn(OUTBOUND_QUEUE);
        let roster = Utf8Bytes::from("r".repeat(1 << 20));
        for _ in 0..4 {
            c.deliver(Outbound::Text(roster.clone()));
        }
        assert!(!c.kill.is_cancelled(), "4 MiB queued is within the limit");
        // The writer sends one; the next one fits again.
        let Some(Outbound::Text(sent)) = rx.try_recv().ok() else {
            panic!("nothing queued")
        };
        c.written(sent.len());
        c.deliver(Outbound::Text(roster.clone()));
        assert!(!c.kill.is_cancelled());
        c.deliver(Outbound::Text(Utf8Bytes::from("one byte too many")));
        assert!(c.kill.is_cancelled(), "over 4 MiB queued: the socket goes");

        // Small messages still count: the message limit holds as before.
        let (c, _rx) = conn(4);
        for _ in 0..4 {
            c.deliver(Outbound::Text(Utf8Bytes::from("{}")));
        }
        assert!(!c.kill.is_cancelled());
        c.deliver(Outbound::Text(Utf8Bytes::from("{}")));
        assert!(c.kill.is_cancelled());
    }
}
