//! The control plane over HTTP and Socket.IO: devices, links, commands, motion events and
//! stream sessions, every state transition, expiry and restart survival, on SQLite and
//! PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, TestServer, unique_email};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn id_is(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["id"] == id
}

/// A user with a camera and a client, linked. Returns (user token, camera (id, token), client (id, token)).
async fn household(s: &TestServer) -> (String, (String, String), (String, String)) {
    let (token, _) = s.sign_up(&unique_email("home"), "password-1").await;
    let camera = s.register_device(&token, "Porch camera", "camera").await;
    let client = s.register_device(&token, "Phone", "client").await;
    s.link(&token, &camera.0, &client.0).await;
    (token, camera, client)
}

async fn devices_lifecycle(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let r = s
        .call(Method::POST, "/devices/register", &token, Some(json!({"name": " Porch ", "role": "camera", "platform": "android", "metadata": {"model": "Pixel 3"}})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let device = &r.json["device"];
    let id = device["id"].as_str().unwrap().to_string();
    let dtoken = r.json["deviceToken"].as_str().unwrap().to_string();
    assert!(dtoken.starts_with("wpd_") && dtoken.len() > 40);
    assert_eq!(device["name"], "Porch");
    assert_eq!(device["role"], "camera");
    assert_eq!(device["platform"], "android");
    assert_eq!(device["metadata"], json!({"model": "Pixel 3"}));
    assert_eq!(device["status"], "active");
    assert_eq!(device["online"], false);
    assert!(device.get("tokenHash").is_none() && !r.text.contains("token_hash"));

    for (body, what) in [
        (json!({"name": "x", "role": "doorbell"}), "bad role"),
        (json!({"role": "camera"}), "missing name"),
        (json!({"name": "", "role": "camera"}), "empty name"),
        (
            json!({"name": "x", "role": "camera", "metadata": [1]}),
            "metadata not an object",
        ),
    ] {
        let r = s
            .call(Method::POST, "/devices/register", &token, Some(body))
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
    }

    // Heartbeat marks it online; only with its own token.
    let r = s
        .call(
            Method::POST,
            &format!("/devices/{id}/heartbeat"),
            &dtoken,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["ok"], true);
    assert!(r.json["serverTime"].is_string());
    let (other_id, other_token) = s.register_device(&token, "Phone", "client").await;
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        &other_token,
        None,
    )
    .await
    .expect_error(403, "WRONG_DEVICE");
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        "wpd_bogus",
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        &token,
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");
    let list = s.call(Method::GET, "/devices", &token, None).await;
    let items = list.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], other_id.as_str(), "newest first");
    let cam = items.iter().find(|d| d["id"] == id.as_str()).unwrap();
    assert_eq!(cam["online"], true);
    assert!(cam["lastSeenAt"].is_string());

    // Update.
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"name": "Garden", "metadata": {"fps": 15}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "Garden");
    assert_eq!(r.json["metadata"], json!({"fps": 15}));
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"status": "lost"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"colour": "red"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // Role change is refused while linked, allowed after unlinking.
    let link = s.link(&token, &id, &other_id).await;
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"role": "client"})),
    )
    .await
    .expect_error(409, "DEVICE_HAS_LINKS");
    s.call(
        Method::DELETE,
        &format!("/device-links/{link}"),
        &token,
        None,
    )
    .await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"role": "client"})),
        )
        .await;
    assert_eq!(r.json["role"], "client");

    // Disabling revokes the token; re-enabling restores it.
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"status": "disabled"})),
    )
    .await;
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        &dtoken,
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");
    let err = common::sio::connect(&s.base, json!({"token": dtoken}))
        .await
        .err()
        .expect("disabled device refused");
    assert!(err.contains("device token"), "{err}");
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.json["status"], "active");
    // The revoked token stays revoked; re-enabling issues a new one.
    let fresh = r.json["deviceToken"]
        .as_str()
        .expect("new token on re-enable")
        .to_string();
    assert_ne!(fresh, dtoken);
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        &dtoken,
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");
    assert_eq!(
        s.call(
            Method::POST,
            &format!("/devices/{id}/heartbeat"),
            &fresh,
            None
        )
        .await
        .status,
        200
    );
    let dtoken = fresh;
    // Control characters and NUL are refused cleanly (PostgreSQL cannot store NUL).
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"name": "cam\u{0}"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::PATCH,
        &format!("/devices/{id}"),
        &token,
        Some(json!({"metadata": {"k": "\u{0}"}})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(Method::DELETE, "/device-links/%00", &token, None)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    assert_eq!(
        s.get_bearer("/api/auth/get-session", "%00").await.text,
        "null"
    );

    // Delete.
    let r = s
        .call(Method::DELETE, &format!("/devices/{id}"), &token, None)
        .await;
    assert_eq!(r.json, json!({"ok": true}));
    s.call(Method::DELETE, &format!("/devices/{id}"), &token, None)
        .await
        .expect_error(404, "DEVICE_NOT_FOUND");
    s.call(
        Method::POST,
        &format!("/devices/{id}/heartbeat"),
        &dtoken,
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");
    s.get("/devices").await.expect_error(401, "UNAUTHORIZED");
}

async fn links_rules(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("links"), "password-1").await;
    let (cam, _) = s.register_device(&token, "Cam", "camera").await;
    let (cli, _) = s.register_device(&token, "Phone", "client").await;
    let (cli2, _) = s.register_device(&token, "Tablet", "client").await;
    let link = s.link(&token, &cam, &cli).await;
    s.call(
        Method::POST,
        "/device-links",
        &token,
        Some(json!({"cameraDeviceId": cam, "clientDeviceId": cli})),
    )
    .await
    .expect_error(409, "LINK_EXISTS");
    s.call(
        Method::POST,
        "/device-links",
        &token,
        Some(json!({"cameraDeviceId": cli, "clientDeviceId": cli2})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::POST,
        "/device-links",
        &token,
        Some(json!({"cameraDeviceId": cam, "clientDeviceId": cam})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::POST,
        "/device-links",
        &token,
        Some(json!({"cameraDeviceId": cam, "clientDeviceId": "nope"})),
    )
    .await
    .expect_error(404, "DEVICE_NOT_FOUND");
    let second = s.link(&token, &cam, &cli2).await;
    let list = s.call(Method::GET, "/device-links", &token, None).await;
    let items = list.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], second.as_str());
    assert_eq!(items[1]["cameraDeviceId"], cam.as_str());
    assert_eq!(items[1]["clientDeviceId"], cli.as_str());
    let page = s
        .call(Method::GET, "/device-links?limit=1", &token, None)
        .await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 1);
    assert!(page.json["nextCursor"].is_string());
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/device-links/{link}"),
            &token,
            None
        )
        .await
        .status,
        200
    );
    s.call(
        Method::DELETE,
        &format!("/device-links/{link}"),
        &token,
        None,
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

async fn command_round_trip(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    let mut camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let mut owner = s.socket(&token).await;
    let online = |list: &Value, id: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()["online"]
            .clone()
    };
    let devices = s.call(Method::GET, "/devices", &token, None).await;
    assert_eq!(
        online(&devices.json, &cam),
        true,
        "a live socket means online"
    );

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

    // The REST fallback, with a rejection reason, and app-defined types.
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

    // A user may send on behalf of one of their client devices.
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

    // Role and link rules.
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
    let (lonely_cli, lonely_token) = s.register_device(&token, "Unlinked", "client").await;
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

    // History with filters.
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

    // Closing the socket (no heartbeat) makes the camera offline.
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

async fn commands_expire_and_survive_restart(backend: Backend) {
    let s = TestServer::start_with(backend, &[("COMMAND_TTL_SECS", "2")]).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut client = s.socket(&cli_token).await;

    // Offline camera: the command waits in the queue, then expires.
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
    drop(client);

    // A queued command survives a restart and reaches the camera when it connects.
    let mut vars = s.vars.clone();
    vars.insert("COMMAND_TTL_SECS".into(), "60".into());
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
    let mut s = s;
    s.vars = vars;
    let s = s.restart().await;
    let mut client = s.socket(&cli_token).await;
    let mut camera = s.socket(&cam_token).await;
    let got = camera
        .wait_for("command:received", WAIT, id_is(&kept))
        .await;
    assert_eq!(got["type"], "start_stream");
    let st = client.wait_for("command:status", WAIT, id_is(&kept)).await;
    assert_eq!(st["status"], "dispatched");
    // Unanswered dispatched commands are delivered again on reconnect (at least once).
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

async fn motion_events(backend: Backend) {
    let s = TestServer::start_with(backend, &[("MOTION_MAX_DURATION_SECS", "2")]).await;
    let (token, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let (_, stranger_token) = s.register_device(&token, "Unlinked phone", "client").await;
    let mut client = s.socket(&cli_token).await;
    let mut stranger = s.socket(&stranger_token).await;

    let r = s
        .call(
            Method::POST,
            "/events/motion/start",
            &cam_token,
            Some(json!({"score": 0.87, "metadata": {"zone": "gate"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ev = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["cameraDeviceId"], cam.as_str());
    assert_eq!(r.json["endedAt"], Value::Null);
    assert_eq!(r.json["score"], 0.87);
    let detected = client.wait_for("motion:detected", WAIT, id_is(&ev)).await;
    assert_eq!(detected["metadata"], json!({"zone": "gate"}));
    stranger
        .expect_none("motion:detected", Duration::from_millis(300))
        .await;

    let r = s
        .call(
            Method::POST,
            &format!("/events/{ev}/motion/end"),
            &cam_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["endedAt"].is_string());
    let ended = client.wait_for("motion:ended", WAIT, id_is(&ev)).await;
    assert!(ended["endedAt"].is_string());
    s.call(
        Method::POST,
        &format!("/events/{ev}/motion/end"),
        &cam_token,
        None,
    )
    .await
    .expect_error(409, "EVENT_ALREADY_ENDED");
    s.call(Method::POST, "/events/motion/start", &cli_token, None)
        .await
        .expect_error(403, "CAMERA_ONLY");
    s.call(
        Method::POST,
        "/events/motion/start",
        &cam_token,
        Some(json!({"score": "high"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    // An empty body is fine.
    let r = s
        .http
        .post(s.url("/events/motion/start"))
        .bearer_auth(&cam_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let open: Value = r.json().await.unwrap();
    let open_id = open["id"].as_str().unwrap().to_string();
    // Left open past the maximum: closed automatically, clients told.
    let closed = client.wait_for("motion:ended", WAIT, id_is(&open_id)).await;
    assert!(closed["endedAt"].is_string());

    let list = s
        .call(
            Method::GET,
            &format!("/events?cameraDeviceId={cam}"),
            &token,
            None,
        )
        .await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 2);
    let future = "2999-01-01T00:00:00Z";
    let none = s
        .call(Method::GET, &format!("/events?from={future}"), &token, None)
        .await;
    assert_eq!(none.json["items"], json!([]));
    let past = s
        .call(Method::GET, "/events?to=2000-01-01T00:00:00Z", &token, None)
        .await;
    assert_eq!(past.json["items"], json!([]));
    s.call(Method::GET, "/events?from=yesterday", &token, None)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::GET,
        "/events?from=-10000-01-01T00:00:00Z",
        &token,
        None,
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
}

async fn stream_sessions(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    let (cli2, cli2_token) = s.register_device(&token, "Tablet", "client").await;
    s.link(&token, &cam, &cli2).await;
    let (_, stranger_token) = s.register_device(&token, "Unlinked", "client").await;
    let mut camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let mut other = s.socket(&cli2_token).await;

    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["status"], "requested");
    assert_eq!(r.json["requesterDeviceId"], cli.as_str());
    assert_eq!(r.json["cameraDeviceId"], cam.as_str());
    client.wait_for("stream:requested", WAIT, id_is(&sid)).await;
    let cmd = camera
        .wait_for("command:received", WAIT, |v| v["type"] == "start_stream")
        .await;
    assert_eq!(cmd["payload"]["streamSessionId"], sid.as_str());

    s.call(
        Method::POST,
        &format!("/streams/{sid}/accept"),
        &cli_token,
        None,
    )
    .await
    .expect_error(403, "CAMERA_ONLY");
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            &cam_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "streaming");
    assert!(r.json["startedAt"].is_string());
    client.wait_for("stream:started", WAIT, id_is(&sid)).await;
    other.wait_for("stream:started", WAIT, id_is(&sid)).await;
    s.call(
        Method::POST,
        &format!("/streams/{sid}/accept"),
        &cam_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_ALREADY_STARTED");

    // Credentials: scoped, signed, verifiable.
    let secret = common::SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let publish = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/publish-credentials"),
            &cam_token,
            None,
        )
        .await;
    assert_eq!(publish.status, 200, "{}", publish.text);
    assert_eq!(publish.json["mode"], "single_server_sfu");
    assert_eq!(publish.json["role"], "publish");
    assert!(publish.json["iceServers"].is_array());
    use watchpost::streams::media_token::{MediaRole, verify};
    let ptoken = publish.json["token"].as_str().unwrap();
    let claims = verify(secret, ptoken, &sid, &[MediaRole::Publish], now).unwrap();
    assert_eq!(claims.dev.as_deref(), Some(cam.as_str()));
    assert!(verify(secret, ptoken, &sid, &[MediaRole::Subscribe], now).is_err());
    s.call(
        Method::GET,
        &format!("/streams/{sid}/publish-credentials"),
        &cli_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    for t in [&cli_token, &cli2_token] {
        let sub = s
            .call(
                Method::GET,
                &format!("/streams/{sid}/subscribe-credentials"),
                t,
                None,
            )
            .await;
        assert_eq!(sub.status, 200, "{}", sub.text);
        verify(
            secret,
            sub.json["token"].as_str().unwrap(),
            &sid,
            &[MediaRole::Subscribe],
            now,
        )
        .unwrap();
    }
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        &stranger_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        &cam_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    let play = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/playback-token"),
            &cli_token,
            None,
        )
        .await;
    assert_eq!(play.status, 200, "{}", play.text);
    verify(
        secret,
        play.json["token"].as_str().unwrap(),
        &sid,
        &[MediaRole::Playback],
        now,
    )
    .unwrap();
    let owner_play = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/playback-token"),
            &token,
            None,
        )
        .await;
    assert_eq!(owner_play.status, 200);

    let mine = s
        .call(Method::GET, "/streams/me/list", &cam_token, None)
        .await;
    assert_eq!(mine.json["items"][0]["id"], sid.as_str());
    let theirs = s
        .call(Method::GET, "/streams/me/list", &stranger_token, None)
        .await;
    assert_eq!(theirs.json["items"], json!([]));

    // End: everyone hears; the session is closed for good.
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/end"),
            &cli_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ended");
    assert_eq!(r.json["endReason"], "ended_by_requester");
    client.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    camera.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    // (the tablet was unlinked above, so it is no longer told)
    s.call(
        Method::POST,
        &format!("/streams/{sid}/end"),
        &cam_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_ALREADY_ENDED");
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        &cli_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_NOT_ACTIVE");
    s.call(
        Method::POST,
        &format!("/streams/{sid}/end"),
        &stranger_token,
        None,
    )
    .await
    .expect_error(404, "STREAM_NOT_FOUND");

    // The camera can end a session too.
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    let sid2 = r.json["id"].as_str().unwrap().to_string();
    s.call(
        Method::POST,
        &format!("/streams/{sid2}/accept"),
        &cam_token,
        None,
    )
    .await;
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid2}/end"),
            &cam_token,
            None,
        )
        .await;
    assert_eq!(r.json["endReason"], "ended_by_camera");
    client.wait_for("stream:ended", WAIT, id_is(&sid2)).await;
    s.call(
        Method::POST,
        "/streams/request",
        &stranger_token,
        Some(json!({"cameraDeviceId": cam})),
    )
    .await
    .expect_error(403, "DEVICES_NOT_LINKED");
    s.call(
        Method::POST,
        "/streams/request",
        &cam_token,
        Some(json!({"cameraDeviceId": cam})),
    )
    .await
    .expect_error(403, "CLIENT_ONLY");
}

async fn stream_requests_expire(backend: Backend) {
    let s = TestServer::start_with(backend, &[("STREAM_REQUEST_TTL_SECS", "1")]).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut client = s.socket(&cli_token).await;
    let mut camera = s.socket(&cam_token).await;
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    let ended = client.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    assert_eq!(ended["status"], "expired");
    camera.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    s.call(
        Method::POST,
        &format!("/streams/{sid}/accept"),
        &cam_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_EXPIRED");
}

async fn legacy_mode_relays_signalling(backend: Backend) {
    let s = TestServer::start_with(backend, &[("MEDIA_MODE", "legacy")]).await;
    let (_, (cam, cam_token), (cli, cli_token)) = household(&s).await;
    let camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    let creds = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/subscribe-credentials"),
            &cli_token,
            None,
        )
        .await;
    assert_eq!(creds.json["mode"], "legacy");
    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    let reply = camera
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": sid, "data": offer}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let got = client
        .wait_for("webrtc:signal", WAIT, |v| {
            v["streamSessionId"] == sid.as_str()
        })
        .await;
    assert_eq!(got["fromDeviceId"], cam.as_str());
    assert_eq!(got["data"], offer);
    let _ = cli;
    let reply = camera
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": "nope", "data": {}}),
        )
        .await;
    assert_eq!(reply["code"], "NOT_FOUND");
}

async fn sfu_mode_refuses_relay(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let camera = s.socket(&cam_token).await;
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    let reply = camera
        .emit_with_ack("webrtc:signal", json!({"streamSessionId": sid, "data": {}}))
        .await;
    assert_eq!(reply["code"], "NOT_LEGACY_MODE");
    // Socket auth: garbage tokens are refused with a message.
    for auth in [
        json!({"token": "wpd_nope"}),
        json!({"token": "not-a-session"}),
        json!({}),
    ] {
        let err = common::sio::connect(&s.base, auth.clone())
            .await
            .err()
            .expect("refused");
        assert!(!err.is_empty(), "{auth}");
    }
}

/// Every route, tried by a second user and that user's devices against the first user's
/// resources: nothing is visible or changeable.
async fn authorization_matrix(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (a, (a_cam, a_cam_token), (a_cli, a_cli_token)) = household(&s).await;
    let (b, (b_cam, b_cam_token), (b_cli, b_cli_token)) = household(&s).await;
    let a_link = s.call(Method::GET, "/device-links", &a, None).await.json["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cmd = s
        .call(
            Method::POST,
            "/commands",
            &a_cli_token,
            Some(json!({"targetDeviceId": a_cam, "type": "x"})),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ev = s
        .call(Method::POST, "/events/motion/start", &a_cam_token, None)
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = s
        .call(
            Method::POST,
            "/streams/request",
            &a_cli_token,
            Some(json!({"cameraDeviceId": a_cam})),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();

    // User B's session.
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/devices/{a_cam}"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::DELETE, format!("/devices/{a_cam}"), None),
        (
            Method::POST,
            "/device-links".to_string(),
            Some(json!({"cameraDeviceId": a_cam, "clientDeviceId": b_cli})),
        ),
        (
            Method::POST,
            "/device-links".to_string(),
            Some(json!({"cameraDeviceId": b_cam, "clientDeviceId": a_cli})),
        ),
        (Method::DELETE, format!("/device-links/{a_link}"), None),
        (
            Method::POST,
            "/commands".to_string(),
            Some(json!({"targetDeviceId": a_cam, "type": "x", "sourceDeviceId": b_cli})),
        ),
        (
            Method::POST,
            "/commands".to_string(),
            Some(json!({"targetDeviceId": b_cam, "type": "x", "sourceDeviceId": a_cli})),
        ),
        (Method::GET, format!("/streams/{sid}/playback-token"), None),
        (
            Method::POST,
            "/videos/upload-url".to_string(),
            Some(json!({"fileName": "a.mp4", "deviceId": a_cam})),
        ),
    ] {
        let r = s.call(method.clone(), &path, &b, body).await;
        assert_eq!(r.status, 404, "user B {method} {path}: {}", r.text);
    }
    for path in [
        "/devices",
        "/device-links",
        "/commands",
        "/events",
        "/videos",
    ] {
        let r = s.call(Method::GET, path, &b, None).await;
        assert_eq!(r.status, 200);
        let text = r.text.clone();
        for secret in [&a_cam, &a_cli, &cmd, &ev, &sid] {
            assert!(
                !text.contains(secret.as_str()),
                "user B sees {secret} in {path}"
            );
        }
    }

    // User B's devices.
    for (method, path, token, body, want) in [
        (
            Method::POST,
            format!("/devices/{a_cam}/heartbeat"),
            &b_cam_token,
            None,
            403,
        ),
        (
            Method::POST,
            "/commands".to_string(),
            &b_cli_token,
            Some(json!({"targetDeviceId": a_cam, "type": "x"})),
            404,
        ),
        (
            Method::POST,
            format!("/commands/{cmd}/ack"),
            &b_cam_token,
            Some(json!({"status": "acknowledged"})),
            404,
        ),
        (
            Method::POST,
            format!("/events/{ev}/motion/end"),
            &b_cam_token,
            None,
            404,
        ),
        (
            Method::POST,
            "/streams/request".to_string(),
            &b_cli_token,
            Some(json!({"cameraDeviceId": a_cam})),
            404,
        ),
        (
            Method::POST,
            format!("/streams/{sid}/accept"),
            &b_cam_token,
            None,
            404,
        ),
        (
            Method::GET,
            format!("/streams/{sid}/publish-credentials"),
            &b_cam_token,
            None,
            404,
        ),
        (
            Method::GET,
            format!("/streams/{sid}/subscribe-credentials"),
            &b_cli_token,
            None,
            404,
        ),
        (
            Method::GET,
            format!("/streams/{sid}/playback-token"),
            &b_cli_token,
            None,
            404,
        ),
        (
            Method::POST,
            format!("/streams/{sid}/end"),
            &b_cli_token,
            None,
            404,
        ),
        (
            Method::POST,
            format!("/streams/{sid}/end"),
            &b_cam_token,
            None,
            404,
        ),
    ] {
        let r = s.call(method.clone(), &path, token, body).await;
        assert_eq!(r.status, want, "B's device {method} {path}: {}", r.text);
    }
    let mine = s
        .call(Method::GET, "/streams/me/list", &b_cli_token, None)
        .await;
    assert!(!mine.text.contains(&sid));

    // Role confusion within one user: a camera cannot act as a client and vice versa.
    for (method, path, token, body, want) in [
        (
            Method::POST,
            "/commands".to_string(),
            &a_cam_token,
            Some(json!({"targetDeviceId": a_cam, "type": "x"})),
            403,
        ),
        (
            Method::POST,
            "/streams/request".to_string(),
            &a_cam_token,
            Some(json!({"cameraDeviceId": a_cam})),
            403,
        ),
        (
            Method::GET,
            format!("/streams/{sid}/subscribe-credentials"),
            &a_cam_token,
            None,
            403,
        ),
        (
            Method::POST,
            "/events/motion/start".to_string(),
            &a_cli_token,
            None,
            403,
        ),
        (
            Method::POST,
            format!("/commands/{cmd}/ack"),
            &a_cli_token,
            Some(json!({"status": "acknowledged"})),
            403,
        ),
        (
            Method::POST,
            format!("/streams/{sid}/accept"),
            &a_cli_token,
            None,
            403,
        ),
        (
            Method::GET,
            format!("/streams/{sid}/publish-credentials"),
            &a_cli_token,
            None,
            403,
        ),
    ] {
        let r = s.call(method.clone(), &path, token, body).await;
        assert_eq!(r.status, want, "role confusion {method} {path}: {}", r.text);
    }
    // Device tokens are not user sessions, and user sessions are not device tokens.
    for (method, path) in [
        (Method::GET, "/devices"),
        (Method::GET, "/device-links"),
        (Method::GET, "/events"),
        (Method::POST, "/devices/register"),
    ] {
        let r = s
            .call(method.clone(), path, &a_cam_token, Some(json!({})))
            .await;
        assert_eq!(r.status, 401, "device token on {method} {path}: {}", r.text);
    }
    for (method, path) in [
        (Method::POST, "/events/motion/start".to_string()),
        (Method::POST, "/streams/request".to_string()),
        (Method::GET, "/streams/me/list".to_string()),
        (Method::POST, format!("/streams/{sid}/accept")),
        (Method::POST, format!("/commands/{cmd}/ack")),
    ] {
        let r = s
            .call(
                method.clone(),
                &path,
                &a,
                Some(json!({"status": "acknowledged", "cameraDeviceId": a_cam})),
            )
            .await;
        assert_eq!(
            r.status, 401,
            "user session on device route {method} {path}: {}",
            r.text
        );
    }
    // Nothing of A's changed.
    let devices = s.call(Method::GET, "/devices", &a, None).await;
    assert_eq!(devices.json["items"].as_array().unwrap().len(), 2);
    assert!(!devices.text.contains("mine now"));
}

both_backends!(
    devices_lifecycle,
    links_rules,
    command_round_trip,
    commands_expire_and_survive_restart,
    motion_events,
    stream_sessions,
    stream_requests_expire,
    legacy_mode_relays_signalling,
    sfu_mode_refuses_relay,
    authorization_matrix,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_socket_io_client_plays_camera_and_client() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[("COMMAND_TTL_SECS", "5"), ("STREAM_REQUEST_TTL_SECS", "5")],
    )
    .await;
    for transport in ["websocket", "polling"] {
        common::run_node(
            "socketio-flow.mjs",
            &[s.base.as_str(), transport],
            &format!("socket.io-client ({transport})"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_simulator_in_two_chromium_tabs() {
    let s = TestServer::start(Backend::Sqlite).await;
    common::run_node("sim-ui.mjs", &[s.base.as_str()], "simulator flow").await;
}
