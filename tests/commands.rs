//! Commands from a phone to a camera over HTTP and Socket.IO: dispatch, acknowledgement,
//! rejection, the role and link rules, history, presence, expiry and delivery across a
//! restart, on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::household::{WAIT, household, id_is};
use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

/// The `online` flag of device `id` in a `/devices` listing.
fn online(list: &Value, id: &str) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap()["online"]
        .clone()
}

/// Sends a command with `token`; returns its id.
async fn send(s: &TestServer, token: &str, body: Value) -> String {
    let r = s.call(Method::POST, "/commands", token, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// `POST /commands` of a `type: "x"` command from `token` to `target`.
async fn command_to(s: &TestServer, token: &str, target: &str) -> common::Reply {
    s.call(
        Method::POST,
        "/commands",
        token,
        Some(json!({"targetDeviceId": target, "type": "x"})),
    )
    .await
}

/// Disables device `id` with its owner's session.
async fn disable(s: &TestServer, owner: &str, id: &str) {
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            owner,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A command to an online camera is dispatched at once; the camera acknowledges over its
/// socket and the sender, and the owner, hear every status change.
async fn command_round_trip_over_sockets(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    let mut camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let mut owner = s.socket(&token).await;

    let r = s
        .call(Method::POST, "/commands", &cli_token, Some(json!({"targetDeviceId": cam, "type": "take_snapshot", "payload": {"quality": "high"}})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cmd = r.json.clone();
    let cmd_id = cmd["id"].as_str().unwrap().to_string();
    assert_eq!(cmd["status"], "dispatched", "the camera is online");
    assert_eq!(cmd["sourceDeviceId"], cli.as_str());
    assert_eq!(cmd["targetDeviceId"], cam.as_str());
    assert_eq!(cmd["type"], "take_snapshot");
    assert_eq!(cmd["payload"], json!({"quality": "high"}));
    for k in ["createdAt", "updatedAt", "expiresAt"] {
        assert!(cmd[k].is_string(), "{k}");
    }

    let received = camera
        .wait_for("command:received", WAIT, id_is(&cmd_id))
        .await;
    assert_eq!(received["type"], "take_snapshot");
    assert_eq!(received["status"], "dispatched");
    let status = client
        .wait_for("command:status", WAIT, id_is(&cmd_id))
        .await;
    assert_eq!(status["status"], "dispatched");

    // A NUL over the socket is a 4xx answer on either database (PostgreSQL text cannot
    // hold one), and the command is untouched.
    let nul_id = camera
        .emit_with_ack(
            "command:ack",
            json!({"commandId": format!("{cmd_id}\u{0}"), "status": "acknowledged"}),
        )
        .await;
    assert_eq!(nul_id["code"], "COMMAND_NOT_FOUND", "{nul_id}");
    let nul_reason = camera
        .emit_with_ack(
            "command:ack",
            json!({"commandId": cmd_id, "status": "rejected", "reason": "a\u{0}b"}),
        )
        .await;
    assert_eq!(nul_reason["code"], "VALIDATION_ERROR", "{nul_reason}");

    let reply = camera
        .emit_with_ack(
            "command:ack",
            json!({"commandId": cmd_id, "status": "acknowledged"}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["command"]["status"], "acknowledged");
    let status = client
        .wait_for("command:status", WAIT, |v| {
            v["id"] == cmd_id.as_str() && v["status"] == "acknowledged"
        })
        .await;
    assert_eq!(status["targetDeviceId"], cam.as_str());
    owner
        .wait_for("command:status", WAIT, |v| {
            v["id"] == cmd_id.as_str() && v["status"] == "acknowledged"
        })
        .await;
    let again = camera
        .emit_with_ack(
            "command:ack",
            json!({"commandId": cmd_id, "status": "rejected"}),
        )
        .await;
    assert_eq!(again["ok"], false);
    assert_eq!(again["code"], "COMMAND_ALREADY_FINAL");
    let bad = camera
        .emit_with_ack("command:ack", json!({"status": "acknowledged"}))
        .await;
    assert_eq!(bad["code"], "VALIDATION_ERROR");
}

/// The REST fallback, with a rejection reason, and app-defined types.
async fn rest_ack_with_a_rejection_reason(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let _camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let r = s
        .call(
            Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "com.example.pan", "payload": {"deg": 30}})),
        )
        .await;
    let second = r.json["id"].as_str().unwrap().to_string();
    s.call(
        Method::POST,
        &format!("/commands/{second}/ack"),
        &cli_token,
        Some(json!({"status": "acknowledged"})),
    )
    .await
    .expect_error(403, "CAMERA_ONLY");
    s.call(
        Method::POST,
        &format!("/commands/{second}/ack"),
        &cam_token,
        Some(json!({"status": "maybe"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    let r = s
        .call(
            Method::POST,
            &format!("/commands/{second}/ack"),
            &cam_token,
            Some(json!({"status": "rejected", "reason": "busy"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "rejected");
    assert_eq!(r.json["reason"], "busy");
    let st = client
        .wait_for("command:status", WAIT, |v| {
            v["id"] == second.as_str() && v["status"] == "rejected"
        })
        .await;
    assert_eq!(st["reason"], "busy");
    s.call(
        Method::POST,
        &format!("/commands/{second}/ack"),
        &cam_token,
        Some(json!({"status": "acknowledged"})),
    )
    .await
    .expect_error(409, "COMMAND_ALREADY_FINAL");
    s.call(
        Method::POST,
        "/commands/no-such-command/ack",
        &cam_token,
        Some(json!({"status": "acknowledged"})),
    )
    .await
    .expect_error(404, "COMMAND_NOT_FOUND");
}

/// A user may send on behalf of one of their client devices, and must name it.
async fn a_user_sends_on_behalf_of_a_client(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, _), (cli, _)) = household(&s).await;
    let r = s
        .call(
            Method::POST,
            "/commands",
            &token,
            Some(json!({"targetDeviceId": cam, "type": "set_setting", "sourceDeviceId": cli})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.call(
        Method::POST,
        "/commands",
        &token,
        Some(json!({"targetDeviceId": cam, "type": "set_setting"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // Not on behalf of a client that was disabled: its own token is refused, and so is
    // the user naming it.
    disable(&s, &token, &cli).await;
    s.call(
        Method::POST,
        "/commands",
        &token,
        Some(json!({"targetDeviceId": cam, "type": "set_setting", "sourceDeviceId": cli})),
    )
    .await
    .expect_error(409, "DEVICE_DISABLED");
}

/// Only a client sends, only to a camera it is linked to, and only with a type.
async fn role_and_link_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    s.call(
        Method::POST,
        "/commands",
        &cam_token,
        Some(json!({"targetDeviceId": cam, "type": "x"})),
    )
    .await
    .expect_error(403, "CLIENT_ONLY");
    s.call(
        Method::POST,
        "/commands",
        &cli_token,
        Some(json!({"targetDeviceId": cli, "type": "x"})),
    )
    .await
    .expect_error(400, "TARGET_NOT_CAMERA");
    let (_, lonely_token) = s.register_device(&token, "Unlinked", "client").await;
    s.call(
        Method::POST,
        "/commands",
        &lonely_token,
        Some(json!({"targetDeviceId": cam, "type": "x"})),
    )
    .await
    .expect_error(403, "DEVICES_NOT_LINKED");
    s.call(
        Method::POST,
        "/commands",
        &cli_token,
        Some(json!({"targetDeviceId": cam, "type": ""})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // The payload is an object (or null), never a bare value.
    for payload in [json!([1]), json!("s"), json!(3)] {
        s.call(
            Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "x", "payload": payload})),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    }
    // The checks come before validation, as they always have: an unlinked client learns it
    // is unlinked, not that its type is malformed.
    s.call(
        Method::POST,
        "/commands",
        &lonely_token,
        Some(json!({"targetDeviceId": cam, "type": ""})),
    )
    .await
    .expect_error(403, "DEVICES_NOT_LINKED");
    // Another household's camera does not exist for this client.
    let (stranger, _) = s
        .sign_up("stranger-cmd@example.com", "correct horse battery")
        .await;
    let (their_cam, _) = s.register_device(&stranger, "Theirs", "camera").await;
    s.call(
        Method::POST,
        "/commands",
        &cli_token,
        Some(json!({"targetDeviceId": their_cam, "type": "x"})),
    )
    .await
    .expect_error(404, "DEVICE_NOT_FOUND");
    // Credentials come before the body: a bad token with a malformed body is a 401, a
    // good token with one is told what is wrong with it.
    for bearer in ["wpd_not-a-real-token", cli_token.as_str()] {
        let r = s
            .http
            .post(s.url("/commands"))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body("{\"targetDeviceId\": ")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if bearer == cli_token {
            assert_eq!(
                (status, &body["code"]),
                (400, &json!("INVALID_JSON")),
                "{body}"
            );
        } else {
            assert_eq!(
                (status, &body["code"]),
                (401, &json!("INVALID_DEVICE_TOKEN")),
                "{body}"
            );
        }
    }
    // Revocation counts at once (the hot path resolves the token and the link in the
    // same statement as the insert, nothing is cached): a removed link refuses the very
    // next command, and a disabled client's token stops working.
    let (spare_cli, spare_token) = s.register_device(&token, "Spare phone", "client").await;
    let link = s.link(&token, &cam, &spare_cli).await;
    send(
        &s,
        &spare_token,
        json!({"targetDeviceId": cam, "type": "x"}),
    )
    .await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/device-links/{link}"),
            &token,
            None,
        )
        .await;
    assert!(r.status == 204 || r.status == 200, "{}", r.text);
    command_to(&s, &spare_token, &cam)
        .await
        .expect_error(403, "DEVICES_NOT_LINKED");
    s.link(&token, &cam, &spare_cli).await;
    disable(&s, &token, &spare_cli).await;
    command_to(&s, &spare_token, &cam)
        .await
        .expect_error(401, "INVALID_DEVICE_TOKEN");
    // The one command that was allowed is stored as the spare phone's, in this household.
    let r = s.call(Method::GET, "/commands", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.text);
    assert_eq!(items[0]["sourceDeviceId"], json!(spare_cli));
    assert_eq!(items[0]["targetDeviceId"], json!(cam));
    // A disabled camera takes no commands.
    disable(&s, &token, &cam).await;
    command_to(&s, &cli_token, &cam)
        .await
        .expect_error(409, "DEVICE_DISABLED");
    // None of the refused commands was stored, by either household.
    for (owner, stored) in [(&token, 1), (&stranger, 0)] {
        let r = s.call(Method::GET, "/commands", owner, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["items"].as_array().unwrap().len(),
            stored,
            "{}",
            r.text
        );
    }
}

/// History with filters: status, device, page size; only for the user's session.
async fn history_filters_and_pages(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    let _camera = s.socket(&cam_token).await;
    let (lonely_cli, _) = s.register_device(&token, "Unlinked", "client").await;
    // One acknowledged, one rejected, one left open.
    let first = send(
        &s,
        &cli_token,
        json!({"targetDeviceId": cam, "type": "take_snapshot"}),
    )
    .await;
    let second = send(
        &s,
        &cli_token,
        json!({"targetDeviceId": cam, "type": "com.example.pan"}),
    )
    .await;
    send(
        &s,
        &token,
        json!({"targetDeviceId": cam, "type": "set_setting", "sourceDeviceId": cli}),
    )
    .await;
    for (id, status) in [(&first, "acknowledged"), (&second, "rejected")] {
        let r = s
            .call(
                Method::POST,
                &format!("/commands/{id}/ack"),
                &cam_token,
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    let all = s.call(Method::GET, "/commands", &token, None).await;
    assert_eq!(all.json["items"].as_array().unwrap().len(), 3);
    let rejected = s
        .call(Method::GET, "/commands?status=rejected", &token, None)
        .await;
    assert_eq!(rejected.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(rejected.json["items"][0]["id"], second.as_str());
    let by_lonely = s
        .call(
            Method::GET,
            &format!("/commands?deviceId={lonely_cli}"),
            &token,
            None,
        )
        .await;
    assert_eq!(by_lonely.json["items"], json!([]));
    let by_cam = s
        .call(
            Method::GET,
            &format!("/commands?deviceId={cam}&limit=2"),
            &token,
            None,
        )
        .await;
    assert_eq!(by_cam.json["items"].as_array().unwrap().len(), 2);
    assert!(by_cam.json["nextCursor"].is_string());
    s.call(Method::GET, "/commands?status=lost", &token, None)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    s.call(Method::GET, "/commands", &cli_token, None)
        .await
        .expect_error(401, "UNAUTHORIZED");
}

/// A live socket means online; closing it (no heartbeat) makes the camera offline.
async fn a_camera_socket_sets_presence(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), _) = household(&s).await;
    let camera = s.socket(&cam_token).await;
    let devices = s.call(Method::GET, "/devices", &token, None).await;
    assert_eq!(
        online(&devices.json, &cam),
        true,
        "a live socket means online"
    );

    drop(camera);
    let mut offline = false;
    for _ in 0..50 {
        let devices = s.call(Method::GET, "/devices", &token, None).await;
        if online(&devices.json, &cam) == false {
            offline = true;
            assert!(
                devices.json["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["id"] == cam.as_str() && d["lastSeenAt"].is_string())
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offline, "camera still online after its socket closed");
}

/// Offline camera: the command waits in the queue, then expires.
async fn a_queued_command_expires(backend: Backend) {
    let s = TestServer::start_with(backend, &[("COMMAND_TTL_SECS", "2")]).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut client = s.socket(&cli_token).await;
    let r = s
        .call(
            Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "take_snapshot"})),
        )
        .await;
    assert_eq!(r.json["status"], "queued");
    let doomed = r.json["id"].as_str().unwrap().to_string();
    let expired = client
        .wait_for("command:status", WAIT, |v| {
            v["id"] == doomed.as_str() && v["status"] == "expired"
        })
        .await;
    assert_eq!(expired["status"], "expired");
    s.call(
        Method::POST,
        &format!("/commands/{doomed}/ack"),
        &cam_token,
        Some(json!({"status": "acknowledged"})),
    )
    .await
    .expect_error(409, "COMMAND_EXPIRED");
    let listed = s
        .call(Method::GET, "/commands?status=expired", &token, None)
        .await;
    assert_eq!(listed.json["items"][0]["id"], doomed.as_str());
}

/// A queued command survives a restart and reaches the camera when it connects;
/// unanswered dispatched commands are delivered again on reconnect (at least once), until
/// acknowledged.
async fn a_queued_command_survives_a_restart_and_is_redelivered_until_acked(backend: Backend) {
    let s = TestServer::start_with(backend, &[("COMMAND_TTL_SECS", "60")]).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let r = s
        .call(
            Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "start_stream"})),
        )
        .await;
    let kept = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["status"], "queued");
    let s = s.restart().await;
    let mut client = s.socket(&cli_token).await;
    let mut camera = s.socket(&cam_token).await;
    let got = camera
        .wait_for("command:received", WAIT, id_is(&kept))
        .await;
    assert_eq!(got["type"], "start_stream");
    let st = client.wait_for("command:status", WAIT, id_is(&kept)).await;
    assert_eq!(st["status"], "dispatched");
    drop(camera);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut camera = s.socket(&cam_token).await;
    camera
        .wait_for("command:received", WAIT, id_is(&kept))
        .await;
    let reply = camera
        .emit_with_ack(
            "command:ack",
            json!({"commandId": kept, "status": "acknowledged"}),
        )
        .await;
    assert_eq!(reply["ok"], true);
    drop(camera);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut camera = s.socket(&cam_token).await;
    camera
        .expect_none("command:received", Duration::from_millis(500))
        .await;
}

/// A queued command is delivered only while its sender may still command the camera: one
/// from a client unlinked since, or disabled since, is not handed over when the camera
/// comes online.
async fn a_queued_command_from_a_sender_that_lost_its_rights_is_not_delivered(backend: Backend) {
    let s = TestServer::start_with(backend, &[("COMMAND_TTL_SECS", "60")]).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let (unlinked, unlinked_token) = s.register_device(&token, "Old phone", "client").await;
    let link = s.link(&token, &cam, &unlinked).await;
    let (disabled, disabled_token) = s.register_device(&token, "Lost phone", "client").await;
    s.link(&token, &cam, &disabled).await;
    let mut queued = Vec::new();
    for sender in [&cli_token, &unlinked_token, &disabled_token] {
        let r = s
            .call(
                Method::POST,
                "/commands",
                sender,
                Some(json!({"targetDeviceId": cam, "type": "take_snapshot"})),
            )
            .await;
        assert_eq!(r.json["status"], "queued", "{}", r.text);
        queued.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = s
        .call(
            Method::DELETE,
            &format!("/device-links/{link}"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    disable(&s, &token, &disabled).await;

    let mut camera = s.socket(&cam_token).await;
    camera
        .wait_for("command:received", WAIT, id_is(&queued[0]))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some((name, data))) = tokio::time::timeout_at(deadline, camera.recv()).await {
        if name == "command:received" {
            assert!(
                data["id"] == queued[0].as_str(),
                "a command from a sender without rights was delivered: {data}"
            );
        }
    }
}

/// Found by schemathesis: a command sent without a payload answers `"payload": null`, which
/// the document said could not happen (`payload` was a required object). It is nullable now.
async fn a_command_without_payload_has_the_documented_null_payload(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (cam, _), (_, cli_token)) = household(&s).await;
    let r = s
        .call(
            Method::POST,
            "/commands",
            &cli_token,
            Some(json!({"targetDeviceId": cam, "type": "take_snapshot"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["payload"], Value::Null);
    let spec = s.get("/openapi.json").await;
    let payload = &spec.json["components"]["schemas"]["Command"]["properties"]["payload"];
    let nullable = payload["type"]
        .as_array()
        .is_some_and(|types| types.contains(&json!("null")))
        || payload["oneOf"]
            .as_array()
            .is_some_and(|alternatives| alternatives.contains(&json!({"type": "null"})));
    assert!(nullable, "Command.payload must allow null: {payload}");
}

both_backends!(
    a_command_without_payload_has_the_documented_null_payload,
    command_round_trip_over_sockets,
    rest_ack_with_a_rejection_reason,
    a_user_sends_on_behalf_of_a_client,
    role_and_link_rules,
    history_filters_and_pages,
    a_camera_socket_sets_presence,
    a_queued_command_expires,
    a_queued_command_survives_a_restart_and_is_redelivered_until_acked,
    a_queued_command_from_a_sender_that_lost_its_rights_is_not_delivered,
);

/// A camera socket that stopped reading: Socket.IO handshake done, then nothing read, on
/// a tiny receive window so the server's buffers for it fill quickly.
async fn stalled_socket(
    s: &TestServer,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");
    ws.send(Message::text(format!("40{}", json!({"token": token}))))
        .await
        .unwrap();
    loop {
        let packet = ws.next().await.unwrap().unwrap();
        let text = packet.to_text().unwrap();
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        assert!(text.starts_with("40"), "{text}");
        break;
    }
    ws
}

/// A camera with two sockets, one of which stopped reading: commands still reach the
/// healthy one, each exactly once (the full socket is waited for on its own, not by
/// sending the event to the whole device again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_does_not_make_the_other_socket_hear_events_twice() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut owner = s.socket(&token).await;
    let mut healthy = s.socket(&cam_token).await;
    let _stalled = stalled_socket(&s, &cam_token).await;
    // Each connect hands the camera its pending commands (at-least-once, a legitimate
    // repeat): let both connects finish theirs, announced just before, so that every
    // repeat counted below is the emit's own.
    for _ in 0..2 {
        owner
            .wait_for("device:presence", WAIT, |v| v["online"] == true)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Fill the stalled socket's buffers: large commands until the server has to wait for
    // it (the request then takes the patience of its device emit, ~5 s).
    let filler = "x".repeat(15 * 1024);
    let mut sent = Vec::new();
    let mut waited = false;
    for i in 0..600 {
        let started = std::time::Instant::now();
        let r = s
            .call(
                Method::POST,
                "/commands",
                &cli_token,
                Some(json!({"targetDeviceId": cam, "type": "fill", "payload": {"i": i, "fill": filler}})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        sent.push(r.json["id"].as_str().unwrap().to_string());
        if started.elapsed() > Duration::from_secs(3) {
            waited = true;
            break;
        }
    }
    assert!(waited, "the stalled socket never filled up");
    // Every command reached the healthy socket once, none twice.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() || tokio::time::Instant::now() < deadline {
        let Ok(Some((name, data))) =
            tokio::time::timeout(Duration::from_millis(500), healthy.recv()).await
        else {
            if seen.len() >= sent.len() {
                break;
            }
            continue;
        };
        if name == "command:received" {
            *seen
                .entry(data["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &sent {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "command {id} reached the healthy socket {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(seen.len(), sent.len(), "events for commands not sent");
}
