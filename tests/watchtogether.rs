//! Watch Together (StreamVault) over real WebSockets against the real server: the
//! reference protocol (spec §5/§6), the deliberate differences (persistence, takeover rule,
//! limits, optional auth) and the REST routes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use common::{Backend, TestServer};

const WAIT: Duration = Duration::from_secs(4);

struct Client {
    ws: WebSocketStream<TcpStream>,
    closed: Option<Option<CloseFrame>>,
}

/// Connects from `local` (any 127.0.0.0/8 address works on Linux loopback).
async fn connect_with(
    addr: SocketAddr,
    path: &str,
    local: [u8; 4],
    bearer: Option<&str>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback address");
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://127.0.0.1:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(Client { ws, closed: None })
}

async fn connect(server: &TestServer) -> Client {
    connect_with(server.addr, "/ws/watchtogether", [127, 0, 0, 1], None)
        .await
        .expect("websocket connects")
}

impl Client {
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn send_raw(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next JSON message within `within`; `None` on timeout or close.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
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
    }

    async fn expect_error(&mut self, text: &str) {
        let m = self.expect("error").await;
        assert_eq!(m["message"], text, "{m}");
    }

    /// Waits for the server to close the socket; returns (code, reason).
    async fn expect_close(&mut self) -> (u16, String) {
        while self.next(WAIT).await.is_some() {}
        let frame = self
            .closed
            .clone()
            .expect("socket closed")
            .expect("close frame");
        (u16::from(frame.code), frame.reason.to_string())
    }
}

fn create_msg(client_id: &str, key: &str) -> Value {
    json!({"type": "create", "client_id": client_id, "nickname": "Host", "media_id": 424242,
        "media_title": "Big Film", "media_match_key": key})
}

/// A host with a room and a guest in it: (host, guest, code).
async fn room_of_two(server: &TestServer) -> (Client, Client, String) {
    let mut host = connect(server).await;
    host.send(create_msg("host-1", "file:abc")).await;
    let code = host.expect("room_created").await["room"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut guest = connect(server).await;
    guest
        .send(
            json!({"type": "join", "room_code": code, "client_id": "guest-1",
            "nickname": "Guest", "media_id": 424242, "media_match_key": "file:abc"}),
        )
        .await;
    guest.expect("room_joined").await;
    host.expect("participant_joined").await;
    (host, guest, code)
}

fn positions(update: &Value) -> f64 {
    update["position"].as_f64().expect("numeric position")
}

/// The reference sync test (§6) end to end, at the reference's timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_session_create_join_ready_start_sync_leave() {
    let server = TestServer::start(Backend::Sqlite).await;
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    assert_eq!(health.json["configured"], false);
    let ts = health.json["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    assert_eq!(health.header("x-frame-options"), Some("DENY"));
    assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(health.header("referrer-policy"), Some("no-referrer"));

    let mut host = connect(&server).await;
    host.send(create_msg("host-1", "file:abc|title:big film|cloud:one"))
        .await;
    let created = host.expect("room_created").await;
    let room = &created["room"];
    assert_eq!(room["host_id"], "host-1");
    assert_eq!(room["participants"].as_array().unwrap().len(), 1);
    assert_eq!(room["participants"][0]["is_host"], true);
    assert_eq!(room["is_playing"], false);
    assert!(room.get("state").is_none());
    let code = room["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 6);
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b))
    );

    // A guest sharing the file and title tokens (different cloud token), code in lowercase.
    let mut guest = connect(&server).await;
    guest
        .send(
            json!({"type": "join", "room_code": code.to_lowercase(), "client_id": "guest-1",
            "nickname": "Guest", "media_id": 424242,
            "media_match_key": "FILE:abc|title:big film|cloud:two"}),
        )
        .await;
    let joined = guest.expect("room_joined").await;
    assert_eq!(joined["room"]["code"], code.as_str());
    assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 2);
    let pj = host.expect("participant_joined").await;
    assert_eq!(pj["participant"]["id"], "guest-1");
    assert_eq!(pj["participant"]["is_host"], false);

    // No shared token: refused with the reference's text.
    let mut third = connect(&server).await;
    third
        .send(
            json!({"type": "join", "room_code": code, "client_id": "third",
            "nickname": "T", "media_id": 424242, "media_match_key": "file:zzz"}),
        )
        .await;
    third
        .expect_error(
            "This room is watching a different media item (\"Big Film\", room media_id: 424242)",
        )
        .await;
    third.send(json!({"type": "join", "client_id": ""})).await;
    third
        .expect_error("client_id and nickname are required to join")
        .await;

    // Start rules.
    guest.send(json!({"type": "start", "position": 1})).await;
    guest.expect_error("Only the host can start playback").await;
    host.send(json!({"type": "start_playback", "position": 1}))
        .await;
    host.expect_error("Cannot start until all participants are ready")
        .await;

    host.send(json!({"type": "ready", "duration": 3600})).await;
    guest.send(json!({"type": "ready", "duration": 3600})).await;
    let pr = guest.expect("participant_ready").await;
    assert!(pr["participant_id"] == "host-1" || pr["participant_id"] == "guest-1");
    assert_eq!(pr["duration"], 3600);
    let state = loop {
        let s = host.expect("room_state").await;
        if s["room"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["is_ready"] == true)
        {
            break s;
        }
    };
    assert_eq!(state["room"]["participants"].as_array().unwrap().len(), 2);
    assert_eq!(state["room"]["state"], "waiting");

    host.send(json!({"type": "start_playback", "position": 12.0}))
        .await;
    for c in [&mut host, &mut guest] {
        let started = c.expect("playback_started").await;
        assert_eq!(started["position"], 12.0);
        assert!(started["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }

    // state_update every 500 ms while playing; the position moves forward.
    let mut last: Option<(Instant, f64)> = None;
    for _ in 0..4 {
        let u = guest
            .expect_within("state_update", Duration::from_millis(1300))
            .await;
        assert_eq!(u["paused"], false);
        assert_eq!(u["participants"].as_array().unwrap().len(), 2);
        let now = Instant::now();
        if let Some((t, p)) = last {
            let gap = now - t;
            assert!(
                gap >= Duration::from_millis(250) && gap <= Duration::from_millis(1300),
                "state_update gap {gap:?}"
            );
            assert!(
                positions(&u) > p,
                "position went back: {} <= {p}",
                positions(&u)
            );
        }
        last = Some((now, positions(&u)));
    }

    // `resume` is relayed as `play`, echoed to its sender.
    guest
        .send(
            json!({"type": "sync", "command": {"action": "resume", "position": 42.5, "note": "x"}}),
        )
        .await;
    let relay = host.expect("sync").await;
    assert_eq!(relay["command"]["action"], "play");
    assert_eq!(relay["command"]["note"], "x");
    assert_eq!(relay["is_echo"], false);
    assert_eq!(relay["from"], "guest-1");
    assert!((relay["command"]["position"].as_f64().unwrap() - 42.5).abs() < 0.001);
    let echo = guest.expect("sync").await;
    assert_eq!(echo["is_echo"], true);

    // ping/pong with RTT, heartbeat, server pings.
    guest.send(json!({"type": "pong_report", "rtt": 80})).await;
    guest.send(json!({"type": "ping", "ping_id": "p1"})).await;
    let pong = guest.expect("pong").await;
    assert_eq!(pong["ping_id"], "p1");
    assert_eq!(pong["your_rtt"], 80.0);
    guest
        .send(json!({"type": "heartbeat", "position": 43}))
        .await;
    assert!(guest.expect("heartbeat_ack").await["timestamp"].is_i64());
    let ping = guest
        .expect_within("ping", Duration::from_millis(2600))
        .await;
    assert!(ping["ping_id"].as_str().unwrap().starts_with("guest-1-"));

    // The host leaves: host migrates to the guest, then participant_left.
    host.send(json!({"type": "leave"})).await;
    let migrated = guest.expect("host_migrated").await;
    assert_eq!(migrated["old_host_id"], "host-1");
    assert_eq!(migrated["new_host_id"], "guest-1");
    assert_eq!(migrated["new_host_nickname"], "Guest");
    let left = guest.expect("participant_left").await;
    assert_eq!(left["participant_id"], "host-1");
    assert_eq!(left["room"]["host_id"], "guest-1");
    // The socket stays open; an unjoined socket's start is refused.
    host.send(json!({"type": "start"})).await;
    host.expect_error("Only the host can start playback").await;
}

/// State reports correct the room only from the latest sync source (collaborative mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reports_correct_the_room_only_from_the_authority() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut host, mut guest, _) = room_of_two(&server).await;
    host.send(json!({"type": "sync", "command": {"action": "play", "position": 100}}))
        .await;
    guest.expect("sync").await;
    // The guest is not the latest sync source: its report is ignored.
    guest
        .send(json!({"type": "state_report", "position": 500, "paused": false}))
        .await;
    for _ in 0..2 {
        let u = guest.expect("state_update").await;
        assert!(positions(&u) < 110.0, "{u}");
    }
    // The host is: the room jumps to its report.
    for _ in 0..3 {
        host.send(json!({"type": "state_report", "position": 136, "paused": false}))
            .await;
        tokio::time::sleep(Duration::from_millis(70)).await;
    }
    let deadline = Instant::now() + Duration::from_millis(3500);
    loop {
        let u = guest
            .expect_within(
                "state_update",
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        if positions(&u) > 136.0 - 0.8 {
            assert_eq!(u["paused"], false);
            break;
        }
    }
    // Once the guest syncs, the guest drives.
    guest
        .send(json!({"type": "sync", "command": {"action": "seek", "position": 10}}))
        .await;
    host.expect("sync").await;
    guest
        .send(json!({"type": "state_report", "position": 300, "paused": true}))
        .await;
    let deadline = Instant::now() + Duration::from_millis(3500);
    loop {
        let u = host
            .expect_within(
                "state_update",
                deadline.saturating_duration_since(Instant::now()),
            )
            .await;
        if u["paused"] == true {
            assert!((positions(&u) - 300.0).abs() < 0.5, "{u}");
            break;
        }
    }
    // The host's report no longer counts (within 12 s of the guest's sync).
    host.send(json!({"type": "state_report", "position": 5, "paused": false}))
        .await;
    for _ in 0..2 {
        let u = guest.expect("state_update").await;
        assert_eq!(u["paused"], true, "{u}");
        assert!(positions(&u) > 299.0, "{u}");
    }
}

/// `WT_SYNC_MODE=host_only`: a guest's sync is dropped, the host's relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_only_mode_drops_guest_sync() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WT_SYNC_MODE", "host_only")]).await;
    let (mut host, mut guest, _) = room_of_two(&server).await;
    guest
        .send(json!({"type": "sync", "command": {"action": "play", "position": 5}}))
        .await;
    host.expect_no("sync", Duration::from_millis(400)).await;
    host.send(json!({"type": "sync", "command": {"action": "pause", "position": 7}}))
        .await;
    assert_eq!(guest.expect("sync").await["command"]["action"], "pause");
}

/// A dropped socket keeps its slot for the grace period; rejoining restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_within_grace_keeps_the_slot() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut host, guest, code) = room_of_two(&server).await;
    guest.ws.into_inner().shutdown().await.ok();
    host.expect_no("participant_left", Duration::from_millis(500))
        .await;
    // Only media_id and nickname besides the id: the socket URL carries the code.
    let mut again = connect_with(
        server.addr,
        &format!("/ws/watchtogether/{}", code.to_lowercase()),
        [127, 0, 0, 1],
        None,
    )
    .await
    .unwrap();
    again
        .send(json!({"type": "join", "client_id": "guest-1", "nickname": "Guest 2", "media_id": 424242}))
        .await;
    let joined = again.expect("room_joined").await;
    assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 2);
    let state = host.expect("room_state").await;
    assert_eq!(state["room"]["participants"][1]["nickname"], "Guest 2");
    host.send(json!({"type": "sync", "command": {"action": "seek", "position": 3}}))
        .await;
    assert_eq!(again.expect("sync").await["from"], "host-1");
    // As in the reference: the upgrade path is exact (another letter case is not it), and
    // a trailing slash leaves an empty last segment, so no room is bound.
    let other_case = connect_with(server.addr, "/WS/WatchTogether", [127, 0, 0, 1], None).await;
    match other_case {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("/WS/WatchTogether upgraded: {:?}", other.is_ok()),
    }
    let mut slash = connect_with(
        server.addr,
        &format!("/ws/watchtogether/{code}/"),
        [127, 0, 0, 1],
        None,
    )
    .await
    .unwrap();
    slash
        .send(json!({"type": "join", "client_id": "g3", "nickname": "G3", "media_id": 424242}))
        .await;
    slash.expect_error("Room not found").await;
    let mut bare = connect_with(server.addr, "/ws/watchtogether/", [127, 0, 0, 1], None)
        .await
        .expect("/ws/watchtogether/ upgrades");
    bare.send(json!({"type": "join", "room_code": code, "client_id": "g4", "nickname": "G4", "media_id": 424242}))
        .await;
    bare.expect("room_joined").await;
}

use tokio::io::AsyncWriteExt;

/// After the grace period the leave procedure runs: the next participant becomes host.
/// (The grace is shortened here; its 20 s default is checked by the config test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_migrates_when_grace_expires() {
    let server =
        TestServer::start_with(Backend::Sqlite, &[("WT_RECONNECT_GRACE_MS", "1200")]).await;
    let (host, mut guest, code) = room_of_two(&server).await;
    let closed_at = Instant::now();
    host.ws.into_inner().shutdown().await.ok();
    guest
        .expect_no("host_migrated", Duration::from_millis(700))
        .await;
    let migrated = guest.expect("host_migrated").await;
    assert!(closed_at.elapsed() >= Duration::from_millis(1100));
    assert_eq!(migrated["new_host_id"], "guest-1");
    let left = guest.expect("participant_left").await;
    assert_eq!(left["participant_id"], "host-1");
    let r = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(r.json["host_id"], "guest-1");
    assert_eq!(r.json["participants"].as_array().unwrap().len(), 1);
}

/// Rooms idle longer than the limit are closed with 1000 `Room expired` (limit shortened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_expire() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[("WT_ROOM_IDLE_MS", "700"), ("WT_EXPIRY_SWEEP_MS", "200")],
    )
    .await;
    let (mut host, _guest, code) = room_of_two(&server).await;
    let started = Instant::now();
    assert_eq!(
        host.expect_close().await,
        (1000, "Room expired".to_string())
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    let r = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json, json!({"error": "Room not found"}));
}

/// Bad input gets an `error` and leaves everyone else undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_excess_messages_get_errors() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("WT_MAX_PARTICIPANTS", "2"),
            ("WT_MAX_ROOMS_PER_ADDRESS", "2"),
            ("WT_MAX_MESSAGES_PER_SEC", "20"),
        ],
    )
    .await;
    let mut lone = connect(&server).await;
    lone.send(json!({"type": "ping"})).await;
    lone.expect_error("Room not found").await;
    lone.send(json!({"type": "create", "media_id": 0, "media_title": "x", "nickname": "n"}))
        .await;
    lone.expect_error("media_id, media_title, and nickname required")
        .await;
    // A socket with no room: a join's room_code that is not a string (even `false`) is
    // an invalid message; absent or null it is just no room.
    for code in [json!(false), json!(0), json!({"a": 1})] {
        lone.send(json!({"type": "join", "room_code": code, "client_id": "c", "nickname": "n"}))
            .await;
        lone.expect_error("Invalid message format").await;
    }
    lone.send(json!({"type": "join", "room_code": null, "client_id": "c", "nickname": "n"}))
        .await;
    lone.expect_error("Room not found").await;

    let (mut host, mut guest, code) = room_of_two(&server).await;
    host.send_raw("{not json".into()).await;
    host.expect_error("Invalid message format").await;
    host.send_raw("null".into()).await;
    host.expect_error("Invalid message format").await;
    host.send_raw(format!(
        r#"{{"type":"heartbeat","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    host.expect_error("Message too large (limit: 65536 bytes)")
        .await;
    // Past the transport's cap (1 MiB here) the socket closes with 1009, not a dropped
    // connection.
    // (The frame is written from its own task: the server stops reading at its header.)
    let big = connect(&server).await;
    let (mut sink, mut frames) = big.ws.split();
    let pad = "x".repeat(2 * 1024 * 1024);
    let writer = tokio::spawn(async move {
        let _ = sink
            .send(Message::Text(
                format!(r#"{{"type":"heartbeat","pad":"{pad}"}}"#).into(),
            ))
            .await;
        sink
    });
    let close = loop {
        match tokio::time::timeout(WAIT, frames.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
    drop(writer);
    host.send(json!({"type": "no_such_type"})).await;
    // The guest saw none of it and still gets the host's sync.
    host.send(json!({"type": "sync", "command": {"action": "seek", "position": 9}}))
        .await;
    let next = guest.expect("sync").await;
    assert_eq!(next["command"]["position"], 9.0);

    // Participant cap.
    let mut third = connect(&server).await;
    third
        .send(json!({"type": "join", "room_code": code, "client_id": "c3", "nickname": "C", "media_id": 424242}))
        .await;
    third
        .expect_error("Room is full (limit: 2 participants)")
        .await;
    // Nickname length.
    let mut long = connect(&server).await;
    long.send(
        json!({"type": "create", "media_id": 1, "media_title": "t", "nickname": "n".repeat(65)}),
    )
    .await;
    long.expect_error("Nickname too long (limit: 64 characters)")
        .await;
    // Rooms per address: the second room from 127.0.0.1 is fine, the third is refused.
    long.send(json!({"type": "create", "media_id": 1, "media_title": "t", "nickname": "n"}))
        .await;
    long.expect("room_created").await;
    long.send(json!({"type": "create", "media_id": 1, "media_title": "t", "nickname": "n"}))
        .await;
    long.expect_error("Too many rooms from this address (limit: 2)")
        .await;
    // Messages per second: 30 heartbeats → 20 acks and one error.
    for _ in 0..30 {
        guest.send(json!({"type": "heartbeat"})).await;
    }
    let (mut acks, mut errors) = (0, 0);
    while let Some(m) = guest.next(Duration::from_millis(400)).await {
        match m["type"].as_str() {
            Some("heartbeat_ack") => acks += 1,
            Some("error") => {
                assert_eq!(m["message"], "Too many messages (limit: 20 per second)");
                errors += 1;
            }
            _ => {}
        }
    }
    // One error per second-long window that overflowed (the burst may straddle two).
    assert!((10..30).contains(&acks), "{acks} acks");
    assert!((1..=2).contains(&errors), "{errors} errors");
    // The host was not affected by the guest's limit.
    host.send(json!({"type": "heartbeat"})).await;
    host.expect("heartbeat_ack").await;
}

/// A join with a connected participant's id from another address is refused; the same
/// address or the same account takes the slot over and the old socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_takeover_needs_the_same_address_or_account() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut host, mut guest, code) = room_of_two(&server).await;
    let join = json!({"type": "join", "room_code": code, "client_id": "guest-1",
        "nickname": "Mallory", "media_id": 424242});
    let mut other = connect_with(server.addr, "/ws/watchtogether", [127, 0, 0, 2], None)
        .await
        .unwrap();
    other.send(join.clone()).await;
    other
        .expect_error("This client_id is connected from another client; only the same address or account can take its place")
        .await;
    host.send(json!({"type": "sync", "command": {"action": "seek", "position": 1}}))
        .await;
    assert_eq!(guest.expect("sync").await["from"], "host-1");
    other.expect_no("sync", Duration::from_millis(200)).await;

    // Same address: taken over.
    let mut same = connect(&server).await;
    same.send(join.clone()).await;
    same.expect("room_joined").await;
    assert_eq!(
        guest.expect_close().await,
        (1000, "Replaced by a new connection".to_string())
    );

    // A signed-in account shows its name and may take its slot over from anywhere.
    let (token, _) = server
        .sign_up(&common::unique_email("wt"), "password-123")
        .await;
    let mut acct = connect_with(
        server.addr,
        &format!("/ws/watchtogether/{code}?token={token}"),
        [127, 0, 0, 3],
        None,
    )
    .await
    .unwrap();
    acct.send(
        json!({"type": "join", "client_id": "acct-1", "nickname": "ignored", "media_id": 424242}),
    )
    .await;
    let joined = acct.expect("room_joined").await;
    let me = joined["room"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "acct-1")
        .unwrap()
        .clone();
    assert_eq!(me["nickname"], "Test User");
    let mut acct2 = connect_with(
        server.addr,
        &format!("/ws/watchtogether/{code}"),
        [127, 0, 0, 4],
        Some(&token),
    )
    .await
    .unwrap();
    acct2
        .send(json!({"type": "join", "client_id": "acct-1", "nickname": "x", "media_id": 424242}))
        .await;
    acct2.expect("room_joined").await;
    assert_eq!(acct.expect_close().await.0, 1000);
    host.expect("room_state").await;
}

/// `WATCH_TOGETHER_REQUIRE_AUTH=true` refuses anonymous and bad tokens.
/// Without `WATCH_TOGETHER_REQUIRE_AUTH` the socket needs no authentication: a token this
/// server does not know (a StreamVault client's Google access token, say) leaves it
/// anonymous instead of refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_leaves_a_socket_anonymous_when_auth_is_off() {
    let server = TestServer::start(Backend::Sqlite).await;
    for (path, bearer) in [
        ("/ws/watchtogether?token=nope", None),
        ("/ws/watchtogether", Some("ya29.a0-google-access-token")),
        ("/ws/watchtogether", Some("wpd_not-a-device")),
    ] {
        let mut client = connect_with(server.addr, path, [127, 0, 0, 1], bearer)
            .await
            .unwrap_or_else(|e| panic!("{path} {bearer:?}: refused: {e}"));
        client.send(create_msg("h", "")).await;
        let created = client.expect("room_created").await;
        assert_eq!(created["room"]["participants"][0]["nickname"], "Host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_refuses_anonymous_connections() {
    let server =
        TestServer::start_with(Backend::Sqlite, &[("WATCH_TOGETHER_REQUIRE_AUTH", "true")]).await;
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("unexpected {other}"),
    };
    let anon = connect_with(server.addr, "/ws/watchtogether", [127, 0, 0, 1], None).await;
    assert_eq!(status(anon.err().expect("refused")), 401);
    let bad = connect_with(
        server.addr,
        "/ws/watchtogether?token=nope",
        [127, 0, 0, 1],
        None,
    )
    .await;
    assert_eq!(status(bad.err().expect("refused")), 401);
    let (token, _) = server
        .sign_up(&common::unique_email("wt"), "password-123")
        .await;
    let mut ok = connect_with(
        server.addr,
        "/ws/watchtogether",
        [127, 0, 0, 1],
        Some(&token),
    )
    .await
    .expect("a signed-in user connects");
    ok.send(create_msg("h", "")).await;
    let created = ok.expect("room_created").await;
    assert_eq!(created["room"]["participants"][0]["nickname"], "Test User");
    let code = created["room"]["code"].as_str().expect("code").to_string();

    // The REST routes are closed to anonymous callers too: no room created, no host_id
    // read, no room closed by its code.
    let body = json!({"media_id": 7, "media_title": "Film", "host_nickname": "Hosty"});
    let refused = json!({"error": "Watch Together requires a signed-in account"});
    let r = server
        .post_json("/api/watchtogether/rooms", body.clone())
        .await;
    assert_eq!((r.status, &r.json), (401, &refused));
    let room_path = format!("/api/watchtogether/rooms/{code}");
    let r = server.get(&room_path).await;
    assert_eq!((r.status, &r.json), (401, &refused));
    let r = server.get_bearer(&room_path, "nope").await;
    assert_eq!((r.status, &r.json), (401, &refused));
    let r = server
        .call(reqwest::Method::DELETE, &room_path, "nope", None)
        .await;
    assert_eq!((r.status, &r.json), (401, &refused));
    // Here a session cookie does sign in, so a cookie from a foreign origin is refused, in
    // the StreamVault routes' own error shape.
    let forged = server
        .http
        .delete(server.url(&room_path))
        .header("origin", "http://evil.example")
        .header("cookie", "watchpost.session_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let answer: Value = forged.json().await.unwrap();
    assert_eq!(answer, json!({"error": "Invalid origin"}));
    // The room is still there for a signed-in caller, who may use every route.
    let r = server.get_bearer(&room_path, &token).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["host_id"].is_string(), "{}", r.json);
    let r = server
        .call(
            reqwest::Method::POST,
            "/api/watchtogether/rooms",
            &token,
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = server
        .call(reqwest::Method::DELETE, &room_path, &token, None)
        .await;
    assert_eq!((r.status, &r.json), (200, &json!({"success": true})));
}

/// With `WATCH_TOGETHER_REQUIRE_AUTH` a room and its slots belong to accounts: another
/// signed-in user who reads a room's `host_id` cannot claim the host slot its creator has
/// not taken yet, nor a guest's slot while it waits out its reconnect grace, nor close the
/// room; its creator (or the host it hands over to) can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_keeps_rooms_and_slots_to_their_accounts() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("WATCH_TOGETHER_REQUIRE_AUTH", "true"),
            ("WT_RECONNECT_GRACE_MS", "20000"),
        ],
    )
    .await;
    let (alice, _) = server
        .sign_up(&common::unique_email("wt-alice"), "password-123")
        .await;
    let (mallory, _) = server
        .sign_up(&common::unique_email("wt-mallory"), "password-123")
        .await;
    let (bob, _) = server
        .sign_up(&common::unique_email("wt-bob"), "password-123")
        .await;
    let body = json!({"media_id": 7, "media_title": "Film", "host_nickname": "Alice"});
    let created = server
        .call(
            reqwest::Method::POST,
            "/api/watchtogether/rooms",
            &alice,
            Some(body),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.json);
    let code = created.json["code"].as_str().unwrap().to_string();
    let host_id = created.json["host_id"].as_str().unwrap().to_string();
    let room_path = format!("/api/watchtogether/rooms/{code}");
    // Anyone signed in may read the room (and so its host_id)...
    let read = server.get_bearer(&room_path, &mallory).await;
    assert_eq!(read.json["host_id"], host_id.as_str());

    // ...but not claim the waiting host slot (from the creator's own address, even).
    let join_as = |id: &str| json!({"type": "join", "room_code": code, "client_id": id, "nickname": "x", "media_id": 7});
    let mut thief = connect_with(
        server.addr,
        "/ws/watchtogether",
        [127, 0, 0, 1],
        Some(&mallory),
    )
    .await
    .unwrap();
    thief.send(join_as(&host_id)).await;
    thief
        .expect_error("This client_id belongs to another account")
        .await;
    // Nor close the room.
    let r = server
        .call(reqwest::Method::DELETE, &room_path, &mallory, None)
        .await;
    assert_eq!(
        (r.status, &r.json),
        (
            403,
            &json!({"error": "Only the room's creator or host can close it"})
        )
    );

    // The creator takes the host slot; a guest joins, then drops.
    let mut host = connect_with(
        server.addr,
        "/ws/watchtogether",
        [127, 0, 0, 2],
        Some(&alice),
    )
    .await
    .unwrap();
    host.send(join_as(&host_id)).await;
    host.expect("room_joined").await;
    let mut guest = connect_with(server.addr, "/ws/watchtogether", [127, 0, 0, 3], Some(&bob))
        .await
        .unwrap();
    guest.send(join_as("bob-1")).await;
    guest.expect("room_joined").await;
    drop(guest);
    // The server sees the socket go (no message marks it: the slot waits silently).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // In its grace, the guest's slot is Bob's alone: not Mallory's (not even from Bob's
    // address), Bob's from anywhere.
    let mut thief = connect_with(
        server.addr,
        "/ws/watchtogether",
        [127, 0, 0, 3],
        Some(&mallory),
    )
    .await
    .unwrap();
    thief.send(join_as("bob-1")).await;
    thief
        .expect_error("This client_id belongs to another account")
        .await;
    let mut back = connect_with(server.addr, "/ws/watchtogether", [127, 0, 0, 4], Some(&bob))
        .await
        .unwrap();
    back.send(join_as("bob-1")).await;
    back.expect("room_joined").await;

    // A guest may not close the room; the creator may.
    let r = server
        .call(reqwest::Method::DELETE, &room_path, &bob, None)
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = server
        .call(reqwest::Method::DELETE, &room_path, &alice, None)
        .await;
    assert_eq!((r.status, &r.json), (200, &json!({"success": true})));
    assert_eq!(host.expect_close().await, (1000, "Room closed".to_string()));
}

/// The session cookie signs a Watch Together socket in only from a page of a trusted
/// origin, as on the Socket.IO endpoint: another site's page (a cross-site WebSocket)
/// does not get the account, so with accounts required it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_signs_a_socket_in_only_from_a_trusted_page() {
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("WATCH_TOGETHER_REQUIRE_AUTH", "true"),
            ("BETTER_AUTH_TRUSTED_ORIGINS", "http://trusted.example"),
        ],
    )
    .await;
    let signed_up = server
        .post_json(
            "/api/auth/sign-up/email",
            json!({"name": "Cookie User", "email": common::unique_email("wt-cookie"), "password": "password-123"}),
        )
        .await;
    let cookie = signed_up
        .set_cookies()
        .into_iter()
        .find(|c| c.contains("session_token="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let open = |origin: &'static str| {
        let cookie = cookie.clone();
        let addr = server.addr;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut request = format!("ws://127.0.0.1:{}/ws/watchtogether", addr.port())
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("cookie", cookie.parse().unwrap());
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    match open("http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("a foreign page signed in with the cookie"),
    }
    let (ws, _) = open("http://trusted.example")
        .await
        .expect("a trusted page connects");
    let mut client = Client { ws, closed: None };
    client.send(create_msg("h", "")).await;
    let created = client.expect("room_created").await;
    assert_eq!(
        created["room"]["participants"][0]["nickname"],
        "Cookie User"
    );
}

/// REST create/get/delete, REST rooms' timers, and rooms surviving a restart.
async fn rest_routes_and_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let r = server
        .post_json(
            "/api/watchtogether/rooms",
            json!({"media_id": 7, "media_title": "Film"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json,
        json!({"error": "media_id, media_title, and host_nickname required"})
    );
    let r = server
        .post_json(
            "/api/watchtogether/rooms",
            json!({"media_id": 7, "media_title": "Film", "host_nickname": "Hosty"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let code = r.json["code"].as_str().unwrap().to_string();
    let host_id = r.json["host_id"].as_str().unwrap().to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&host_id).unwrap().get_version_num(),
        4
    );
    assert_eq!(
        r.json["participants"],
        json!([{"id": host_id, "nickname": "Hosty", "is_host": true, "is_ready": false}])
    );
    let got = server
        .get(&format!("/api/watchtogether/rooms/{}", code.to_lowercase()))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["state"], "waiting");
    assert_eq!(got.json["is_playing"], false);

    // The host takes its slot (a reconnect); a guest joins; REST rooms get timers.
    let mut host = connect(&server).await;
    host.send(json!({"type": "join", "room_code": code, "client_id": host_id, "nickname": "Hosty", "media_id": 7}))
        .await;
    host.expect("room_joined").await;
    host.expect("room_state").await;
    let mut guest = connect(&server).await;
    guest
        .send(json!({"type": "join", "room_code": code, "client_id": "g", "nickname": "G", "media_id": "7"}))
        .await;
    guest.expect("room_joined").await;
    host.send(json!({"type": "sync", "command": {"action": "play", "position": 50}}))
        .await;
    guest.expect("state_update").await;
    // Codes that cannot name a room are a 404 in the reference's shape, and leave the
    // room's snapshots alone (a NUL once reached PostgreSQL in the writer's batch).
    for bad in ["%00", "%FF", "A%00B"] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let r = server
                .call(
                    method.clone(),
                    &format!("/api/watchtogether/rooms/{bad}"),
                    "",
                    None,
                )
                .await;
            assert_eq!(
                (r.status, &r.json),
                (404, &json!({"error": "Room not found"})),
                "{method} {bad}"
            );
        }
    }
    guest
        .expect_within("ping", Duration::from_millis(2600))
        .await;

    drop(host);
    drop(guest);
    let server = server.restart().await;
    let got = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(got.status, 200, "room lost in restart: {}", got.text);
    assert_eq!(got.json["host_id"], host_id.as_str());
    assert_eq!(got.json["state"], "playing");
    assert_eq!(got.json["participants"].as_array().unwrap().len(), 2);
    assert!(got.json["current_position"].as_f64().unwrap() >= 50.0);

    let mut guest = connect(&server).await;
    guest
        .send(json!({"type": "join", "room_code": code, "client_id": "g", "nickname": "G", "media_id": 7}))
        .await;
    let joined = guest.expect("room_joined").await;
    assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 2);
    assert_eq!(joined["room"]["is_playing"], true);

    let del = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/watchtogether/rooms/{code}"),
            "",
            None,
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json, json!({"success": true}));
    assert_eq!(
        guest.expect_close().await,
        (1000, "Room closed".to_string())
    );
    let got = server
        .get(&format!("/api/watchtogether/rooms/{code}"))
        .await;
    assert_eq!(got.status, 404);
    let del = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/watchtogether/rooms/{code}"),
            "",
            None,
        )
        .await;
    assert_eq!(del.status, 404);
    assert_eq!(del.json, json!({"error": "Room not found"}));
    // Deleted rooms stay deleted across a restart.
    let server = server.restart().await;
    assert_eq!(
        server
            .get(&format!("/api/watchtogether/rooms/{code}"))
            .await
            .status,
        404
    );
}

both_backends!(rest_routes_and_restart);
