//! StreamVault wire-protocol points (docs: /work/shared/specs/streamvault-protocol.md §1,
//! §2, §5) that the other suites leave out: unjoined sockets, ping/pong, the finer rules
//! of `sync` and `start`, title matching, `leave`, the transport, form bodies, `/health`'s
//! `configured` and how numbers are written.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use common::{Backend, TestServer};

const WAIT: Duration = Duration::from_secs(4);
/// How long a "nothing happens" check waits.
const QUIET: Duration = Duration::from_millis(300);

struct Client {
    ws: WebSocketStream<TcpStream>,
    closed: Option<Option<CloseFrame>>,
    /// The text of the last message read.
    last_raw: String,
}

/// Connects to `path`, offering `protocols` (a `Sec-WebSocket-Protocol` value) if given;
/// returns the client and the subprotocol the server chose.
async fn connect_full(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> (Client, Option<String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://127.0.0.1:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|e| panic!("{path}: websocket refused: {e}"));
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (
        Client {
            ws,
            closed: None,
            last_raw: String::new(),
        },
        chosen,
    )
}

async fn connect_path(server: &TestServer, path: &str) -> Client {
    connect_full(server.addr, path, None).await.0
}

async fn connect(server: &TestServer) -> Client {
    connect_path(server, "/ws/watchtogether").await
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn send_binary(&mut self, v: Value) {
        self.ws
            .send(Message::Binary(v.to_string().into_bytes().into()))
            .await
            .unwrap();
    }

    /// The next JSON message within `within`; `None` on timeout or close. The server sends
    /// text frames only (§5.1): a binary one fails the test.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    self.last_raw = t.to_string();
                    return Some(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(Message::Binary(b))) => {
                    panic!("the server sent a binary frame (§5.1: text frames only): {b:?}")
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(frame);
                    return None;
                }
                Some(Ok(_)) => continue,
                _ => {
                    self.closed.get_or_insert(None);
                    return None;
                }
            }
        }
    }

    /// The next message of type `ty`, skipping others (server pings, state updates).
    async fn expect(&mut self, ty: &str) -> Value {
        self.expect_within(ty, WAIT).await
    }

    async fn expect_within(&mut self, ty: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(m) if m["type"] == ty => return m,
                Some(_) => continue,
                None => panic!("no {ty} within {within:?} (closed: {:?})", self.closed),
            }
        }
    }

    /// Fails if a message of type `ty` arrives within `within`.
    async fn expect_no(&mut self, ty: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(m) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            assert_ne!(m["type"], ty, "unexpected {m}");
        }
        assert!(self.closed.is_none(), "socket closed: {:?}", self.closed);
    }

    /// Fails if any message arrives within `within`, or the socket closes.
    async fn expect_nothing(&mut self, within: Duration) {
        if let Some(m) = self.next(within).await {
            panic!("expected no message, got {m}");
        }
        assert!(self.closed.is_none(), "socket closed: {:?}", self.closed);
    }

    async fn expect_error(&mut self, text: &str) {
        let m = self.expect("error").await;
        assert_eq!(m["message"], text, "{m}");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A JSON integer (as JavaScript writes a whole number), not `10.0`.
fn is_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// A millisecond timestamp from the server clock: an integer within a minute of ours.
fn assert_ms_timestamp(v: &Value, what: &str) {
    assert!(is_int(v), "{what} is not an integer: {v}");
    let t = v.as_i64().unwrap();
    assert!((t - now_ms()).abs() < 60_000, "{what} far from now: {t}");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn create_msg(client_id: &str) -> Value {
    json!({"type": "create", "client_id": client_id, "nickname": "Host", "media_id": 424242,
        "media_title": "Big Film", "media_match_key": "file:abc"})
}

async fn create_room(server: &TestServer, client_id: &str) -> (Client, String) {
    let mut host = connect(server).await;
    host.send(create_msg(client_id)).await;
    let code = host.expect("room_created").await["room"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    (host, code)
}

async fn join(server: &TestServer, code: &str, client_id: &str, nickname: &str) -> Client {
    let mut c = connect(server).await;
    c.send(
        json!({"type": "join", "room_code": code, "client_id": client_id,
        "nickname": nickname, "media_id": 424242, "media_match_key": "file:abc"}),
    )
    .await;
    c.expect("room_joined").await;
    c
}

/// A host with a room and a guest in it: (host, guest, code).
async fn room_of_two(server: &TestServer) -> (Client, Client, String) {
    let (mut host, code) = create_room(server, "host-1").await;
    let guest = join(server, &code, "guest-1", "Guest").await;
    host.expect("participant_joined").await;
    (host, guest, code)
}

/// The room as `GET /api/watchtogether/rooms/<code>` shows it.
async fn rest_room(server: &TestServer, code: &str) -> Value {
    let r = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Both send `ready`; waits until each has seen everyone ready.
async fn both_ready(host: &mut Client, guest: &mut Client) {
    host.send(json!({"type": "ready", "duration": 3600})).await;
    guest.send(json!({"type": "ready", "duration": 3600})).await;
    for c in [host, guest] {
        loop {
            let s = c.expect("room_state").await;
            if s["room"]["participants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["is_ready"] == true)
            {
                break;
            }
        }
    }
}

/// §5.4: a socket bound to a room by its URL that has not joined gets `heartbeat_ack`
/// ("always, even before joining"), no `pong`, has its `ready`/`sync` ignored and its
/// `start` refused as a non-host's; it is no participant, so `playback_started` skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjoined_socket_gets_heartbeat_ack_but_no_pong_and_cannot_ready_start_or_sync() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_PING_MS", "60000")]).await;
    let (mut host, mut guest, code) = room_of_two(&server).await;
    let mut lurker = connect_path(&server, &format!("/ws/watchtogether/{code}")).await;

    lurker
        .send(json!({"type": "heartbeat", "position": 3}))
        .await;
    let ack = lurker.expect("heartbeat_ack").await;
    assert_eq!(keys(&ack), ["timestamp", "type"], "{ack}");
    assert_ms_timestamp(&ack["timestamp"], "heartbeat_ack.timestamp");
    lurker.send(json!({"type": "heartbeat"})).await;
    lurker.expect("heartbeat_ack").await;

    // ping: nothing at all (no pong, no error).
    lurker
        .send(json!({"type": "ping", "ping_id": "lurk-1"}))
        .await;
    lurker.expect_nothing(QUIET).await;

    // ready: ignored, nobody hears of it.
    lurker.send(json!({"type": "ready", "duration": 100})).await;
    lurker.expect_nothing(QUIET).await;
    host.expect_no("participant_ready", Duration::ZERO).await;
    guest.expect_no("participant_ready", Duration::ZERO).await;

    // start / start_playback: refused as from a non-host.
    lurker.send(json!({"type": "start", "position": 1})).await;
    lurker
        .expect_error("Only the host can start playback")
        .await;
    lurker.send(json!({"type": "start_playback"})).await;
    lurker
        .expect_error("Only the host can start playback")
        .await;

    // sync: ignored silently.
    lurker
        .send(json!({"type": "sync", "command": {"action": "play", "position": 50}}))
        .await;
    lurker.expect_nothing(QUIET).await;
    host.expect_no("sync", Duration::ZERO).await;
    guest.expect_no("sync", Duration::ZERO).await;
    host.expect_no("playback_started", Duration::ZERO).await;

    let room = rest_room(&server, &code).await;
    assert_eq!(room["state"], "waiting", "{room}");
    assert_eq!(room["current_position"], 0, "{room}");
    let participants = room["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 2, "{room}");
    assert!(
        participants.iter().all(|p| p["is_ready"] == false),
        "{room}"
    );

    // The two participants can start; the unjoined socket is not one of "all".
    both_ready(&mut host, &mut guest).await;
    host.send(json!({"type": "start", "position": 2})).await;
    host.expect("playback_started").await;
    guest.expect("playback_started").await;
    lurker.expect_nothing(QUIET).await;
}

/// §5.4 `ping` / §5.6 `pong`: the sender gets `pong` with its `ping_id` echoed (any JSON
/// value, and no `ping_id` key when it sent none), `server_time` and its own `your_rtt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_a_pong_echoing_ping_id_with_server_time_and_your_rtt() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_PING_MS", "60000")]).await;
    let (mut host, mut guest, _code) = room_of_two(&server).await;

    host.send(json!({"type": "ping", "ping_id": "abc-1"})).await;
    let pong = host.expect("pong").await;
    assert_eq!(
        keys(&pong),
        ["ping_id", "server_time", "type", "your_rtt"],
        "{pong}"
    );
    assert_eq!(pong["ping_id"], "abc-1");
    assert_ms_timestamp(&pong["server_time"], "pong.server_time");
    assert_eq!(pong["your_rtt"], 0, "{pong}");

    host.send(json!({"type": "ping"})).await;
    let pong = host.expect("pong").await;
    assert!(
        pong.get("ping_id").is_none(),
        "ping_id without one sent: {pong}"
    );
    assert_eq!(keys(&pong), ["server_time", "type", "your_rtt"], "{pong}");
    assert_ms_timestamp(&pong["server_time"], "pong.server_time");

    host.send(json!({"type": "ping", "ping_id": 42})).await;
    assert_eq!(host.expect("pong").await["ping_id"], 42);
    host.send(json!({"type": "ping", "ping_id": {"seq": 7}}))
        .await;
    assert_eq!(host.expect("pong").await["ping_id"], json!({"seq": 7}));

    // Only the sender gets its pong; your_rtt is the sender's own average.
    guest.expect_no("pong", Duration::ZERO).await;
    guest.send(json!({"type": "pong_report", "rtt": 120})).await;
    guest.send(json!({"type": "ping", "ping_id": "g"})).await;
    let pong = guest.expect("pong").await;
    assert_eq!(pong["ping_id"], "g");
    assert_eq!(pong["your_rtt"], 120, "{pong}");
    host.expect_no("pong", QUIET).await;
    host.send(json!({"type": "ping", "ping_id": "h"})).await;
    assert_eq!(host.expect("pong").await["your_rtt"], 0);
}

/// §5.4 `sync`: a missing command or an unknown action is dropped silently; `play` and
/// `pause` work from `waiting`; `seek` keeps the state; a missing position is the
/// authoritative one; the sender's copy is the echo; extra command fields are relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_ignores_bad_commands_keeps_state_on_seek_and_fills_in_the_position() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_PING_MS", "60000")]).await;
    let (mut host, mut guest, code) = room_of_two(&server).await;

    for bad in [
        json!({"type": "sync"}),
        json!({"type": "sync", "command": null}),
        json!({"type": "sync", "command": {"action": "rewind", "position": 5}}),
        json!({"type": "sync", "command": {"action": "stop"}}),
    ] {
        host.send(bad).await;
    }
    guest.expect_no("sync", QUIET).await;
    host.expect_no("sync", Duration::ZERO).await;
    let room = rest_room(&server, &code).await;
    assert_eq!(room["state"], "waiting", "{room}");
    assert_eq!(room["current_position"], 0, "{room}");

    // play from waiting (nobody ready), with extra fields kept.
    host.send(
        json!({"type": "sync", "command": {"action": "play", "position": 20,
        "note": "hi", "meta": {"k": [1, 2]}}}),
    )
    .await;
    let expected = json!({"action": "play", "position": 20, "note": "hi", "meta": {"k": [1, 2]}});
    // The first sync each side gets is this one: the dropped ones never arrived.
    let echo = host.expect("sync").await;
    assert_eq!(echo["is_echo"], true, "{echo}");
    assert_eq!(echo["from"], "host-1");
    assert_eq!(echo["command"], expected);
    assert_ms_timestamp(&echo["timestamp"], "sync.timestamp");
    assert_eq!(
        keys(&echo),
        ["command", "from", "is_echo", "timestamp", "type"]
    );
    let relay = guest.expect("sync").await;
    assert_eq!(relay["is_echo"], false, "{relay}");
    assert_eq!(relay["from"], "host-1");
    assert_eq!(relay["command"], expected);
    let room = rest_room(&server, &code).await;
    assert_eq!(room["state"], "playing", "{room}");
    assert_eq!(room["is_playing"], true, "{room}");
    assert!(room["current_position"].as_f64().unwrap() >= 20.0, "{room}");

    // seek keeps `playing`; the guest's own copy is the echo.
    guest
        .send(json!({"type": "sync", "command": {"action": "seek", "position": 30}}))
        .await;
    let relay = host.expect("sync").await;
    assert_eq!(
        (&relay["is_echo"], &relay["from"]),
        (&json!(false), &json!("guest-1"))
    );
    assert_eq!(relay["command"]["action"], "seek");
    assert_eq!(guest.expect("sync").await["is_echo"], true);
    let room = rest_room(&server, &code).await;
    assert_eq!(room["state"], "playing", "{room}");
    assert_eq!(room["is_playing"], true, "{room}");
    let at = room["current_position"].as_f64().unwrap();
    assert!((30.0..32.0).contains(&at), "{room}");

    // pause, then seek keeps `paused`.
    host.send(json!({"type": "sync", "command": {"action": "pause", "position": 40}}))
        .await;
    guest.expect("sync").await;
    host.send(json!({"type": "sync", "command": {"action": "seek", "position": 50}}))
        .await;
    assert_eq!(guest.expect("sync").await["command"]["position"], 50);
    for _ in 0..2 {
        assert_eq!(host.expect("sync").await["is_echo"], true);
    }
    let room = rest_room(&server, &code).await;
    assert_eq!(room["state"], "paused", "{room}");
    assert_eq!(room["is_playing"], false, "{room}");
    assert_eq!(room["current_position"], 50, "{room}");

    // No position: the authoritative one (paused: exactly 50; playing: it has moved on).
    guest
        .send(json!({"type": "sync", "command": {"action": "play"}}))
        .await;
    let relay = host.expect("sync").await;
    assert_eq!(relay["command"]["action"], "play");
    assert_eq!(relay["command"]["position"], 50, "{relay}");
    let played_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    guest
        .send(json!({"type": "sync", "command": {"action": "seek"}}))
        .await;
    let relay = host.expect("sync").await;
    let moved = played_at.elapsed().as_secs_f64();
    assert_eq!(relay["command"]["action"], "seek");
    for _ in 0..2 {
        assert_eq!(guest.expect("sync").await["is_echo"], true);
    }
    let p = relay["command"]["position"].as_f64().unwrap();
    assert!(
        p >= 50.3 && p <= 50.0 + moved + 0.5,
        "authoritative position {p} after {moved:.3}s of play from 50"
    );
    // Coercion of the position: null is 0, numeric strings are numbers, negatives clamp.
    for (sent, want) in [
        (json!(null), json!(0)),
        (json!("12.5"), json!(12.5)),
        (json!(-4), json!(0)),
    ] {
        host.send(json!({"type": "sync", "command": {"action": "seek", "position": sent}}))
            .await;
        let relay = guest.expect("sync").await;
        assert_eq!(relay["command"]["position"], want, "{sent}: {relay}");
    }

    // pause from waiting, in a fresh room (action trimmed and lowercased).
    let (mut solo, code2) = create_room(&server, "solo-1").await;
    solo.send(json!({"type": "sync", "command": {"action": " PAUSE ", "position": 12}}))
        .await;
    let echo = solo.expect("sync").await;
    assert_eq!(echo["is_echo"], true);
    assert_eq!(echo["command"], json!({"action": "pause", "position": 12}));
    let room = rest_room(&server, &code2).await;
    assert_eq!(room["state"], "paused", "{room}");
    assert_eq!(room["is_playing"], false, "{room}");
    assert_eq!(room["current_position"], 12, "{room}");
}

/// §5.4 `start`: host only, everyone (including a participant in its grace period) ready;
/// then repeatable in any state, `playback_started` with `position` and `timestamp` to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_is_repeatable_from_any_state_and_needs_everyone_ready() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_PING_MS", "60000")]).await;
    let (mut host, mut guest, code) = room_of_two(&server).await;

    // Only the host is ready.
    host.send(json!({"type": "ready"})).await;
    host.expect("room_state").await;
    guest.expect("room_state").await;
    host.send(json!({"type": "start", "position": 5})).await;
    host.expect_error("Cannot start until all participants are ready")
        .await;
    guest.expect_no("playback_started", QUIET).await;
    assert_eq!(rest_room(&server, &code).await["state"], "waiting");

    guest.send(json!({"type": "ready"})).await;
    for c in [&mut host, &mut guest] {
        loop {
            let s = c.expect("room_state").await;
            if s["room"]["participants"][1]["is_ready"] == true {
                break;
            }
        }
    }

    // start, then again while playing, then from paused.
    for (ty, sent, want) in [
        ("start", json!(5), json!(5)),
        ("start_playback", json!(20), json!(20)),
    ] {
        host.send(json!({"type": ty, "position": sent})).await;
        for c in [&mut host, &mut guest] {
            let m = c.expect("playback_started").await;
            assert_eq!(keys(&m), ["position", "timestamp", "type"], "{m}");
            assert_eq!(m["position"], want, "{m}");
            assert_ms_timestamp(&m["timestamp"], "playback_started.timestamp");
        }
        let room = rest_room(&server, &code).await;
        assert_eq!(room["state"], "playing", "{room}");
        assert!(room["current_position"].as_f64().unwrap() >= want.as_f64().unwrap());
    }
    host.send(json!({"type": "sync", "command": {"action": "pause", "position": 25}}))
        .await;
    guest.expect("sync").await;
    assert_eq!(rest_room(&server, &code).await["state"], "paused");
    for (sent, want) in [
        (Some(json!("7.5")), json!(7.5)),
        (None, json!(0)),
        (Some(json!(-3)), json!(0)),
    ] {
        let mut msg = json!({"type": "start"});
        if let Some(p) = &sent {
            msg["position"] = p.clone();
        }
        host.send(msg).await;
        for c in [&mut host, &mut guest] {
            let m = c.expect("playback_started").await;
            assert_eq!(m["position"], want, "{sent:?}: {m}");
        }
        let room = rest_room(&server, &code).await;
        assert_eq!(room["state"], "playing", "{room}");
        assert_eq!(room["is_playing"], true, "{room}");
    }

    // A newcomer who is not ready blocks start again, also while in its grace period.
    let third = join(&server, &code, "third-1", "Third").await;
    host.expect("participant_joined").await;
    host.send(json!({"type": "start", "position": 1})).await;
    host.expect_error("Cannot start until all participants are ready")
        .await;
    third.ws.into_inner().shutdown().await.ok();
    host.expect_no("participant_left", QUIET).await;
    host.send(json!({"type": "start", "position": 1})).await;
    host.expect_error("Cannot start until all participants are ready")
        .await;
    guest.expect_no("playback_started", QUIET).await;
}

/// §5.5 rule 2: with no match keys on one side, titles decide (trimmed, lowercased); the
/// refusal quotes the room's title as stored and its media_id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_without_match_keys_compares_titles_ignoring_case_and_spaces() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut host = connect(&server).await;
    host.send(
        json!({"type": "create", "client_id": "host-1", "nickname": "Host",
        "media_id": 424242, "media_title": "Big Film"}),
    )
    .await;
    let code = host.expect("room_created").await["room"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let refused =
        "This room is watching a different media item (\"Big Film\", room media_id: 424242)";

    let mut guest = connect(&server).await;
    guest
        .send(
            json!({"type": "join", "room_code": code, "client_id": "g1", "nickname": "G",
            "media_id": 424242, "media_title": "Small Film"}),
        )
        .await;
    guest.expect_error(refused).await;
    // Keys on the joining side only: rule 1 does not apply, the titles still differ.
    guest
        .send(
            json!({"type": "join", "room_code": code, "client_id": "g1", "nickname": "G",
            "media_id": 424242, "media_title": "Small Film", "media_match_key": "file:abc"}),
        )
        .await;
    guest.expect_error(refused).await;
    host.expect_no("participant_joined", QUIET).await;

    // The same title in another case and with spaces: accepted, even with another media_id
    // (rule 2 decides before rule 3).
    guest
        .send(
            json!({"type": "join", "room_code": code, "client_id": "g1", "nickname": "G",
            "media_id": 999, "media_title": "  bIG fiLM  "}),
        )
        .await;
    let joined = guest.expect("room_joined").await;
    assert_eq!(joined["room"]["code"], code.as_str());
    assert_eq!(
        host.expect("participant_joined").await["participant"]["id"],
        "g1"
    );

    // The error quotes the title as the room stored it, and a string media_id bare.
    let mut other = connect(&server).await;
    other
        .send(
            json!({"type": "create", "client_id": "h2", "nickname": "H2",
            "media_id": "tt-01", "media_title": "  Padded Title "}),
        )
        .await;
    let code2 = other.expect("room_created").await["room"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut g2 = connect(&server).await;
    g2.send(
        json!({"type": "join", "room_code": code2, "client_id": "g2", "nickname": "G2",
        "media_id": "tt-01", "media_title": "Other"}),
    )
    .await;
    g2.expect_error(
        "This room is watching a different media item (\"  Padded Title \", room media_id: tt-01)",
    )
    .await;
    g2.send(
        json!({"type": "join", "room_code": code2, "client_id": "g2", "nickname": "G2",
        "media_title": "PADDED TITLE"}),
    )
    .await;
    g2.expect("room_joined").await;
}

/// §5.8: the leave procedure. A leaving host hands over to the first remaining participant
/// in join order (even one in its grace period): `host_migrated` before `participant_left`.
/// The leaver's socket stays open and may join again; the last leave deletes the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_migrates_host_before_participant_left_keeps_the_socket_and_empties_the_room() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_PING_MS", "60000")]).await;
    let (mut host, mut guest, code) = room_of_two(&server).await;
    let mut third = join(&server, &code, "third-1", "Third").await;
    host.expect("participant_joined").await;
    guest.expect("participant_joined").await;

    // The guest drops (grace period); then the host leaves.
    guest.ws.into_inner().shutdown().await.ok();
    host.expect_no("participant_left", QUIET).await;
    host.send(json!({"type": "leave"})).await;

    let mut seen = Vec::new();
    while seen.last().map(|m: &Value| m["type"].clone()) != Some(json!("participant_left")) {
        let m = third
            .next(WAIT)
            .await
            .expect("host_migrated and participant_left");
        if m["type"] == "host_migrated" || m["type"] == "participant_left" {
            seen.push(m);
        }
    }
    let types: Vec<&Value> = seen.iter().map(|m| &m["type"]).collect();
    assert_eq!(types, ["host_migrated", "participant_left"], "{seen:?}");
    let migrated = &seen[0];
    assert_eq!(
        keys(migrated),
        [
            "new_host_id",
            "new_host_nickname",
            "old_host_id",
            "room",
            "type"
        ]
    );
    assert_eq!(migrated["old_host_id"], "host-1");
    assert_eq!(migrated["new_host_id"], "guest-1", "{migrated}");
    assert_eq!(migrated["new_host_nickname"], "Guest");
    let room = &migrated["room"];
    assert_eq!(room["code"], code.as_str());
    assert_eq!(room["host_id"], "guest-1");
    assert_eq!(room["state"], "waiting", "RoomSummary has state: {room}");
    let ids: Vec<&Value> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert_eq!(ids, ["guest-1", "third-1"], "{room}");
    assert_eq!(room["participants"][0]["is_host"], true, "{room}");
    let left = &seen[1];
    assert_eq!(left["participant_id"], "host-1");
    assert_eq!(left["room"]["host_id"], "guest-1");
    assert_eq!(left["room"]["participants"].as_array().unwrap().len(), 2);
    // The leaver hears nothing (no acknowledgement).
    host.expect_nothing(QUIET).await;
    assert_eq!(rest_room(&server, &code).await["host_id"], "guest-1");

    // Its socket is still open and bound to the room: it joins again, as a newcomer.
    host.send(
        json!({"type": "join", "client_id": "host-1", "nickname": "Back",
        "media_id": 424242, "media_match_key": "file:abc"}),
    )
    .await;
    let joined = host.expect("room_joined").await;
    assert_eq!(joined["room"]["host_id"], "guest-1");
    let pj = third.expect("participant_joined").await;
    assert_eq!(
        pj["participant"],
        json!({"id": "host-1", "nickname": "Back", "is_host": false, "is_ready": false})
    );

    // A non-host's leave: participant_left only.
    third.send(json!({"type": "leave"})).await;
    let left = host.expect("participant_left").await;
    assert_eq!(left["participant_id"], "third-1");
    host.expect_no("host_migrated", QUIET).await;

    // The last participant's leave deletes the room; its socket stays usable.
    let (mut solo, solo_code) = create_room(&server, "solo-1").await;
    let mut mate = join(&server, &solo_code, "mate-1", "Mate").await;
    solo.expect("participant_joined").await;
    mate.send(json!({"type": "leave"})).await;
    solo.expect("participant_left").await;
    solo.send(json!({"type": "leave"})).await;
    solo.expect_nothing(QUIET).await;
    let r = server
        .get(&format!("/api/watchtogether/rooms/{solo_code}"))
        .await;
    assert_eq!(
        (r.status, &r.json),
        (404, &json!({"error": "Room not found"}))
    );
    solo.send(
        json!({"type": "create", "client_id": "solo-1", "nickname": "Solo",
        "media_id": 1, "media_title": "Again"}),
    )
    .await;
    let again = solo.expect("room_created").await;
    assert_ne!(again["room"]["code"], solo_code.as_str());
}

/// §5.1: the first offered subprotocol is echoed; binary frames are read as JSON text;
/// the URL code is the last path segment without its query, uppercased, and an existing
/// URL room wins over a join's `room_code` (§5.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_echoes_the_subprotocol_reads_binary_frames_and_drops_the_url_query() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut c, chosen) = connect_full(
        server.addr,
        "/ws/watchtogether",
        Some("streamvault.v1, json"),
    )
    .await;
    assert_eq!(chosen.as_deref(), Some("streamvault.v1"));
    let (_plain, none) = connect_full(server.addr, "/ws/watchtogether", None).await;
    assert_eq!(none, None);

    // A binary frame holding JSON is handled as text; the answer is a text frame.
    c.send_binary(create_msg("bin-host")).await;
    let created = c.expect("room_created").await;
    assert_eq!(created["room"]["host_id"], "bin-host");
    let code = created["room"]["code"].as_str().unwrap().to_string();
    c.send_binary(json!({"type": "heartbeat"})).await;
    c.expect("heartbeat_ack").await;

    // `/ws/watchtogether/<code in lowercase>?x=1` binds the room: a join needs no room_code.
    let path = format!("/ws/watchtogether/{}?x=1", code.to_lowercase());
    let mut g = connect_path(&server, &path).await;
    g.send(json!({"type": "join", "client_id": "g1", "nickname": "G",
        "media_id": 424242, "media_match_key": "file:abc"}))
        .await;
    let joined = g.expect("room_joined").await;
    assert_eq!(joined["room"]["code"], code.as_str());
    assert_eq!(
        c.expect("participant_joined").await["participant"]["id"],
        "g1"
    );

    // The URL room wins over a join's room_code.
    let path = format!("/ws/watchtogether/{}?x=1&room=ZZZZZZ", code.to_lowercase());
    let mut h = connect_path(&server, &path).await;
    h.send(
        json!({"type": "join", "room_code": "ZZZZZZ", "client_id": "h1", "nickname": "H",
        "media_id": 424242, "media_match_key": "file:abc"}),
    )
    .await;
    assert_eq!(h.expect("room_joined").await["room"]["code"], code.as_str());
}

/// §1 / §5.9: a form-encoded body creates a REST room; malformed JSON on a StreamVault POST
/// route is a 400. The reference answers that 400 with Express's HTML page; the README
/// documents Watchpost's deliberate difference ("Where the reference answered with
/// Express's HTML pages (… a malformed body) … Watchpost answers JSON with the right
/// 4xx"), so a JSON `{"error": …}` body is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_create_takes_a_form_body_and_malformed_json_gets_a_json_400() {
    let server = TestServer::start(Backend::Sqlite).await;
    let r = server
        .http
        .post(server.url("/api/watchtogether/rooms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("media_id=7&media_title=Film+Night%21&host_nickname=Ann")
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(r).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let host_id = r.json["host_id"].as_str().expect("host_id").to_string();
    // Form values are strings, echoed as such.
    assert_eq!(r.json["media_id"], "7");
    assert_eq!(r.json["media_title"], "Film Night!");
    assert_eq!(
        r.json["participants"],
        json!([{"id": host_id, "nickname": "Ann", "is_host": true, "is_ready": false}])
    );
    let code = r.json["code"].as_str().unwrap().to_string();
    let room = rest_room(&server, &code).await;
    assert_eq!(room["media_title"], "Film Night!");
    assert_eq!(room["host_id"], host_id.as_str());

    // A form missing a field: the reference's 400.
    let r = server
        .http
        .post(server.url("/api/watchtogether/rooms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("media_id=7&media_title=Film")
        .send()
        .await
        .unwrap();
    let r = common::Reply::from(r).await;
    assert_eq!(
        (r.status, &r.json),
        (
            400,
            &json!({"error": "media_id, media_title, and host_nickname required"})
        )
    );

    for path in ["/api/watchtogether/rooms", "/auth/refresh"] {
        let r = server
            .http
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(r#"{"media_id": 1, "media_title": "#)
            .send()
            .await
            .unwrap();
        let r = common::Reply::from(r).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{path}: {:?}",
            r.header("content-type")
        );
        assert!(!r.text.trim_start().starts_with('<'), "{path}: {}", r.text);
        assert_eq!(keys(&r.json), ["error"], "{path}: {}", r.text);
        assert!(
            r.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {}",
            r.text
        );
    }
}

/// §2: `configured` is true only with both GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET
/// non-empty; `timestamp` is ISO-8601 UTC with milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_google_configuration_and_an_iso_timestamp_with_ms() {
    let cases: [(&[(&str, &str)], bool); 5] = [
        (
            &[
                ("GOOGLE_CLIENT_ID", "id.apps.example"),
                ("GOOGLE_CLIENT_SECRET", "shh-secret"),
            ],
            true,
        ),
        (&[("GOOGLE_CLIENT_ID", "id.apps.example")], false),
        (&[("GOOGLE_CLIENT_SECRET", "shh-secret")], false),
        (
            &[
                ("GOOGLE_CLIENT_ID", "id.apps.example"),
                ("GOOGLE_CLIENT_SECRET", ""),
            ],
            false,
        ),
        (&[], false),
    ];
    for (vars, configured) in cases {
        let server = TestServer::start_with(Backend::Sqlite, vars).await;
        let before = chrono::Utc::now();
        let r = server.get("/health").await;
        let after = chrono::Utc::now();
        assert_eq!(r.status, 200, "{vars:?}");
        assert_eq!(
            keys(&r.json),
            ["configured", "status", "timestamp"],
            "{}",
            r.text
        );
        assert_eq!(r.json["status"], "ok");
        assert_eq!(r.json["configured"], configured, "{vars:?}: {}", r.text);
        let ts = r.json["timestamp"].as_str().expect("timestamp string");
        // YYYY-MM-DDTHH:MM:SS.mmmZ, exactly as Date#toISOString writes it.
        let shape = ts.len() == 24
            && ts.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'.',
                23 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        assert!(shape, "not ISO-8601 UTC with ms: {ts}");
        let at = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
        let at = at.with_timezone(&chrono::Utc);
        assert!(
            at >= before - chrono::Duration::milliseconds(1)
                && at <= after + chrono::Duration::milliseconds(1),
            "{ts} not between {before} and {after}"
        );
        server.stop().await;
    }
}

/// §5.6 (and the README: "Whole numbers go out as JavaScript writes them (`115`, not
/// `115.0`)"): RTTs, positions and the REST room's `current_position` are JSON integers
/// when whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_go_out_as_javascript_writes_them() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[("WT_STATE_UPDATE_MS", "100"), ("WT_PING_MS", "60000")],
    )
    .await;
    let (mut host, code) = create_room(&server, "host-1").await;
    assert!(
        host.last_raw.contains(r#""current_position":0,"#)
            || host.last_raw.contains(r#""current_position":0}"#),
        "room_created: {}",
        host.last_raw
    );
    let mut guest = connect(&server).await;
    guest
        .send(
            json!({"type": "join", "room_code": code, "client_id": "guest-1",
            "nickname": "Guest", "media_id": 424242, "media_match_key": "file:abc"}),
        )
        .await;
    let joined = guest.expect("room_joined").await;
    assert!(
        is_int(&joined["room"]["current_position"]),
        "room_joined: {}",
        guest.last_raw
    );
    host.expect("participant_joined").await;

    guest.send(json!({"type": "pong_report", "rtt": 100})).await;
    guest.send(json!({"type": "ping", "ping_id": "n"})).await;
    let pong = guest.expect("pong").await;
    assert!(is_int(&pong["your_rtt"]), "pong: {}", guest.last_raw);
    assert_eq!(pong["your_rtt"], 100);

    both_ready(&mut host, &mut guest).await;
    host.send(json!({"type": "start", "position": 10})).await;
    let started = guest.expect("playback_started").await;
    assert!(
        guest.last_raw.contains(r#""position":10,"#)
            || guest.last_raw.contains(r#""position":10}"#),
        "playback_started: {}",
        guest.last_raw
    );
    assert!(is_int(&started["position"]));

    let update = guest.expect("state_update").await;
    let raw = guest.last_raw.clone();
    assert!(is_int(&update["your_rtt"]), "state_update: {raw}");
    assert_eq!(update["your_rtt"], 100, "{raw}");
    assert!(is_int(&update["server_time"]), "{raw}");
    let entry = |u: &Value, id: &str| {
        u["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {u}"))
            .clone()
    };
    let g = entry(&update, "guest-1");
    assert!(is_int(&g["rtt"]), "guest rtt: {raw}");
    assert_eq!(g["rtt"], 100, "{raw}");
    // The guest's lastPosition is still its initial 0.
    assert!(is_int(&g["position"]), "guest position: {raw}");
    let h = entry(&update, "host-1");
    assert!(is_int(&h["rtt"]), "host rtt: {raw}");
    assert_eq!(h["rtt"], 0, "{raw}");

    // A fractional average goes out unrounded as your_rtt, rounded as rtt.
    guest.send(json!({"type": "pong_report", "rtt": 50})).await;
    let avg = 0.85 * 100.0 + 0.15 * 50.0;
    let deadline = Instant::now() + WAIT;
    let update = loop {
        let u = guest
            .expect_within(
                "state_update",
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        if u["your_rtt"] != 100 {
            break u;
        }
    };
    assert_eq!(update["your_rtt"].as_f64(), Some(avg), "{update}");
    let g = entry(&update, "guest-1");
    assert!(is_int(&g["rtt"]), "{update}");
    assert_eq!(g["rtt"], avg.round() as i64, "{update}");

    // Relayed positions and the REST room's current_position.
    host.send(json!({"type": "sync", "command": {"action": "pause", "position": "10"}}))
        .await;
    let relay = guest.expect("sync").await;
    assert!(
        is_int(&relay["command"]["position"]),
        "sync: {}",
        guest.last_raw
    );
    assert_eq!(relay["command"]["position"], 10);
    let r = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(r.status, 200);
    assert!(is_int(&r.json["current_position"]), "REST: {}", r.text);
    assert_eq!(r.json["current_position"], 10, "{}", r.text);
    assert!(r.text.contains(r#""current_position":10"#), "{}", r.text);
    host.send(json!({"type": "sync", "command": {"action": "seek", "position": 10.5}}))
        .await;
    guest.expect("sync").await;
    assert_eq!(rest_room(&server, &code).await["current_position"], 10.5);
}
