//! Stream sessions: request, accept, media credentials, end, expiry, and the legacy
//! signalling relay, over HTTP and Socket.IO, on SQLite and PostgreSQL.

mod common;

use common::household::{WAIT, household, id_is};
use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::json;
use watchpost::streams::media_token::{MediaRole, verify};

/// The household, plus a second linked phone (a tablet) and an unlinked phone.
struct Family {
    token: String,
    cam: String,
    cam_token: String,
    cli: String,
    cli_token: String,
    cli2_token: String,
    stranger_token: String,
}

async fn family(s: &TestServer) -> Family {
    let (token, (cam, cam_token), (cli, cli_token)) = household(s).await;
    let (cli2, cli2_token) = s.register_device(&token, "Tablet", "client").await;
    s.link(&token, &cam, &cli2).await;
    let (_, stranger_token) = s.register_device(&token, "Unlinked", "client").await;
    Family {
        token,
        cam,
        cam_token,
        cli,
        cli_token,
        cli2_token,
        stranger_token,
    }
}

/// `POST /streams/request` for `camera` with `token` (a client device's or a user's).
async fn ask(s: &TestServer, token: &str, camera: &str) -> common::Reply {
    s.call(
        Method::POST,
        "/streams/request",
        token,
        Some(json!({"cameraDeviceId": camera})),
    )
    .await
}

/// The phone asks for the camera's stream; returns the session id.
async fn request(s: &TestServer, f: &Family) -> String {
    let r = ask(s, &f.cli_token, &f.cam).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// The camera accepts session `sid`.
async fn accept(s: &TestServer, f: &Family, sid: &str) {
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            &f.cam_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A request reaches the camera as a start_stream command; only the camera accepts, once,
/// and every linked client hears that it started.
async fn request_and_accept_reach_every_participant(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let (cam, cli, cam_token, cli_token) = (&f.cam, &f.cli, &f.cam_token, &f.cli_token);
    let mut camera = s.socket(cam_token).await;
    let mut client = s.socket(cli_token).await;
    let mut other = s.socket(&f.cli2_token).await;

    let r = ask(&s, cli_token, cam).await;
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
        cli_token,
        None,
    )
    .await
    .expect_error(403, "CAMERA_ONLY");
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            cam_token,
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
        cam_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_ALREADY_STARTED");
}

/// Credentials: scoped, signed, verifiable; only for the session's participants.
async fn credentials_are_scoped_signed_and_verifiable(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let (cam, cam_token, cli_token, stranger_token) =
        (&f.cam, &f.cam_token, &f.cli_token, &f.stranger_token);
    let sid = request(&s, &f).await;
    accept(&s, &f, &sid).await;

    let secret = common::SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let publish = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/publish-credentials"),
            cam_token,
            None,
        )
        .await;
    assert_eq!(publish.status, 200, "{}", publish.text);
    assert_eq!(publish.json["mode"], "single_server_sfu");
    assert_eq!(publish.json["role"], "publish");
    assert!(publish.json["iceServers"].is_array());
    // The ready-to-use endpoint, absolute, on the server's base URL (here the default).
    let base = format!("http://localhost:{}", s.addr.port());
    assert_eq!(publish.json["whipUrl"], format!("{base}/whip/{sid}"));
    assert!(publish.json.get("whepUrl").is_none());
    let ptoken = publish.json["token"].as_str().unwrap();
    let claims = verify(secret, ptoken, &sid, &[MediaRole::Publish], now).unwrap();
    assert_eq!(claims.dev.as_deref(), Some(cam.as_str()));
    assert!(verify(secret, ptoken, &sid, &[MediaRole::Subscribe], now).is_err());
    s.call(
        Method::GET,
        &format!("/streams/{sid}/publish-credentials"),
        cli_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    for t in [cli_token, &f.cli2_token] {
        let sub = s
            .call(
                Method::GET,
                &format!("/streams/{sid}/subscribe-credentials"),
                t,
                None,
            )
            .await;
        assert_eq!(sub.status, 200, "{}", sub.text);
        assert_eq!(sub.json["whepUrl"], format!("{base}/whep/{sid}"));
        assert!(sub.json.get("whipUrl").is_none());
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
        stranger_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        cam_token,
        None,
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    let play = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/playback-token"),
            cli_token,
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
            &f.token,
            None,
        )
        .await;
    assert_eq!(owner_play.status, 200);

    let mine = s
        .call(Method::GET, "/streams/me/list", cam_token, None)
        .await;
    assert_eq!(mine.json["items"][0]["id"], sid.as_str());
    let theirs = s
        .call(Method::GET, "/streams/me/list", stranger_token, None)
        .await;
    assert_eq!(theirs.json["items"], json!([]));
}

/// The WHIP/WHEP URLs in media credentials are built on `BETTER_AUTH_BASE_URL` (a public
/// URL behind a proxy, path prefix included), not on the address the request came in on.
async fn credentials_carry_endpoints_on_the_public_base_url(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        &[(
            "BETTER_AUTH_BASE_URL",
            "https://cams.example.net/watchpost/",
        )],
    )
    .await;
    let f = family(&s).await;
    let sid = request(&s, &f).await;
    accept(&s, &f, &sid).await;
    let publish = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/publish-credentials"),
            &f.cam_token,
            None,
        )
        .await;
    assert_eq!(publish.status, 200, "{}", publish.text);
    assert_eq!(
        publish.json["whipUrl"],
        format!("https://cams.example.net/watchpost/whip/{sid}")
    );
    let subscribe = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/subscribe-credentials"),
            &f.cli_token,
            None,
        )
        .await;
    assert_eq!(subscribe.status, 200, "{}", subscribe.text);
    assert_eq!(
        subscribe.json["whepUrl"],
        format!("https://cams.example.net/watchpost/whep/{sid}")
    );
}

/// End: everyone hears; the session is closed for good.
async fn ending_tells_everyone_and_closes_the_session(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let (cam_token, cli_token, stranger_token) = (&f.cam_token, &f.cli_token, &f.stranger_token);
    let mut camera = s.socket(cam_token).await;
    let mut client = s.socket(cli_token).await;
    let sid = request(&s, &f).await;
    accept(&s, &f, &sid).await;

    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/end"),
            cli_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ended");
    assert_eq!(r.json["endReason"], "ended_by_requester");
    client.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    camera.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    s.call(
        Method::POST,
        &format!("/streams/{sid}/end"),
        cam_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_ALREADY_ENDED");
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        cli_token,
        None,
    )
    .await
    .expect_error(409, "STREAM_NOT_ACTIVE");
    s.call(
        Method::POST,
        &format!("/streams/{sid}/end"),
        stranger_token,
        None,
    )
    .await
    .expect_error(404, "STREAM_NOT_FOUND");
}

/// The camera can end a session too.
async fn the_camera_can_end_a_session(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let mut client = s.socket(&f.cli_token).await;
    let r = ask(&s, &f.cli_token, &f.cam).await;
    let sid2 = r.json["id"].as_str().unwrap().to_string();
    s.call(
        Method::POST,
        &format!("/streams/{sid2}/accept"),
        &f.cam_token,
        None,
    )
    .await;
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid2}/end"),
            &f.cam_token,
            None,
        )
        .await;
    assert_eq!(r.json["endReason"], "ended_by_camera");
    client.wait_for("stream:ended", WAIT, id_is(&sid2)).await;
}

/// Only a client linked to the camera may request its stream.
async fn only_a_linked_client_may_request(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    ask(&s, &f.stranger_token, &f.cam)
        .await
        .expect_error(403, "DEVICES_NOT_LINKED");
    ask(&s, &f.cam_token, &f.cam)
        .await
        .expect_error(403, "CLIENT_ONLY");
}

async fn stream_requests_expire(backend: Backend) {
    let s = TestServer::start_with(backend, &[("STREAM_REQUEST_TTL_SECS", "1")]).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let mut client = s.socket(&cli_token).await;
    let mut camera = s.socket(&cam_token).await;
    let r = ask(&s, &cli_token, &cam).await;
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
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let camera = s.socket(&cam_token).await;
    let mut client = s.socket(&cli_token).await;
    let r = ask(&s, &cli_token, &cam).await;
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
    // No media flows through this server, so there is no WHEP endpoint to offer.
    assert!(creds.json.get("whepUrl").is_none(), "{}", creds.text);
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
    let reply = camera
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": "nope", "data": {}}),
        )
        .await;
    assert_eq!(reply["code"], "NOT_FOUND");
    // A NUL in the id is not found on either database (PostgreSQL refuses it as text).
    let reply = camera
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": format!("{sid}\u{0}"), "data": {}}),
        )
        .await;
    assert_eq!(reply["code"], "NOT_FOUND", "{reply}");
}

/// Legacy mode has no transport to close: unlinking a client, or disabling it, ends the
/// sessions it asked for, so the camera hears `stream:ended` and hangs up, and the relay
/// stops carrying their signalling.
async fn legacy_mode_unlinking_or_disabling_a_client_ends_its_calls(backend: Backend) {
    let s = TestServer::start_with(backend, &[("MEDIA_MODE", "legacy")]).await;
    let f = family(&s).await;
    let mut camera = s.socket(&f.cam_token).await;
    let mut client = s.socket(&f.cli_token).await;
    let sid = request(&s, &f).await;
    accept(&s, &f, &sid).await;
    let tablet_call = ask(&s, &f.cli2_token, &f.cam).await;
    assert_eq!(tablet_call.status, 201, "{}", tablet_call.text);
    let tablet_sid = tablet_call.json["id"].as_str().unwrap().to_string();
    let tablet = tablet_call.json["requesterDeviceId"]
        .as_str()
        .unwrap()
        .to_string();

    let links = s.call(Method::GET, "/device-links", &f.token, None).await;
    let link = links.json["items"]
        .as_array()
        .expect("a page of links")
        .iter()
        .find(|l| l["clientDeviceId"] == f.cli.as_str())
        .expect("the phone's link")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .call(
            Method::DELETE,
            &format!("/device-links/{link}"),
            &f.token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ended = camera.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    assert_eq!(ended["endReason"], "unlinked", "{ended}");
    client.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    let reply = camera
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": sid, "data": {"type": "offer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(reply["code"], "STREAM_NOT_ACTIVE", "{reply}");
    client
        .expect_none("webrtc:signal", std::time::Duration::from_millis(300))
        .await;
    // The tablet's own call was not touched by the phone's unlink.
    let r = s
        .call(Method::GET, "/streams/me/list", &f.cam_token, None)
        .await;
    let status_of = |id: &str| {
        r.json["items"]
            .as_array()
            .expect("a page of sessions")
            .iter()
            .find(|x| x["id"] == id)
            .map(|x| x["status"].clone())
    };
    assert_eq!(
        status_of(&tablet_sid),
        Some(json!("requested")),
        "{}",
        r.text
    );
    assert_eq!(status_of(&sid), Some(json!("ended")), "{}", r.text);

    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{tablet}"),
            &f.token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ended = camera
        .wait_for("stream:ended", WAIT, id_is(&tablet_sid))
        .await;
    assert_eq!(ended["endReason"], "device_disabled", "{ended}");
}

/// Legacy mode: an unlink ends the calls it finds, but a call requested while it looked
/// escapes it. The relay checks the link itself: such a call's next signal is refused, and
/// the call ends. Here the link row is removed behind the server's back, as the unlink that
/// missed the call leaves it.
async fn legacy_mode_the_relay_ends_a_call_whose_link_is_gone(backend: Backend) {
    let s = TestServer::start_with(backend, &[("MEDIA_MODE", "legacy")]).await;
    let f = family(&s).await;
    let camera = s.socket(&f.cam_token).await;
    let mut client = s.socket(&f.cli_token).await;
    let sid = request(&s, &f).await;
    accept(&s, &f, &sid).await;
    let offer = json!({"streamSessionId": sid, "data": {"type": "offer", "sdp": "v=0\r\n"}});
    let reply = camera.emit_with_ack("webrtc:signal", offer.clone()).await;
    assert_eq!(reply["ok"], true, "{reply}");
    client.wait_for("webrtc:signal", WAIT, |_| true).await;

    let sql = "DELETE FROM device_links WHERE camera_device_id = $1 AND client_device_id = $2";
    let removed = match &s.state.db {
        watchpost::db::Db::Sqlite(p) => sqlx::query(sql)
            .bind(&f.cam)
            .bind(&f.cli)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        watchpost::db::Db::Postgres(p) => sqlx::query(sql)
            .bind(&f.cam)
            .bind(&f.cli)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(removed, 1);
    let reply = camera.emit_with_ack("webrtc:signal", offer).await;
    assert_eq!(reply["code"], "STREAM_NOT_ACTIVE", "{reply}");
    client
        .expect_none("webrtc:signal", std::time::Duration::from_millis(300))
        .await;
    let ended = client.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    assert_eq!(ended["endReason"], "unlinked", "{ended}");
    // Refused from the other end too, now that the call is over.
    let reply = client
        .emit_with_ack(
            "webrtc:signal",
            json!({"streamSessionId": sid, "data": {"type": "answer", "sdp": "v=0\r\n"}}),
        )
        .await;
    assert_eq!(reply["code"], "STREAM_NOT_ACTIVE", "{reply}");
}

async fn sfu_mode_refuses_relay(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (cam, cam_token), (_, cli_token)) = household(&s).await;
    let camera = s.socket(&cam_token).await;
    let r = ask(&s, &cli_token, &cam).await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    let reply = camera
        .emit_with_ack("webrtc:signal", json!({"streamSessionId": sid, "data": {}}))
        .await;
    assert_eq!(reply["code"], "NOT_LEGACY_MODE");
}

/// Two tabs (or a double click) ask for an idle camera's stream at the same moment: one
/// session is opened and the other request joins it; the camera is asked once.
async fn two_user_requests_at_once_open_one_session(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let mut camera = s.socket(&f.cam_token).await;
    for _ in 0..5 {
        let (a, b) = tokio::join!(ask(&s, &f.token, &f.cam), ask(&s, &f.token, &f.cam));
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 201], "{} / {}", a.text, b.text);
        assert_eq!(a.json["id"], b.json["id"]);
        let sid = a.json["id"].as_str().unwrap().to_string();
        camera.wait_for("stream:requested", WAIT, id_is(&sid)).await;
        camera
            .expect_none("stream:requested", std::time::Duration::from_millis(200))
            .await;
        let r = s
            .call(Method::POST, &format!("/streams/{sid}/end"), &f.token, None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

/// The web app's flow: a signed-in user watches their own camera with no device of their
/// own. The camera hears `stream:requested` with no requesting device, a second request
/// joins the same session, the user gets view credentials and ends it.
async fn a_signed_in_user_watches_their_camera_without_a_device(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let me = s
        .call(Method::GET, "/api/auth/get-session", &f.token, None)
        .await;
    let user_id = me.json["user"]["id"].as_str().unwrap().to_string();

    // Offline camera: refused plainly rather than left to expire.
    ask(&s, &f.token, &f.cam)
        .await
        .expect_error(409, "CAMERA_OFFLINE");

    let mut camera = s.socket(&f.cam_token).await;
    let mut app = s.socket(&f.token).await;
    let r = ask(&s, &f.token, &f.cam).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["requesterDeviceId"], serde_json::Value::Null);
    assert_eq!(r.json["requestedByUserId"], user_id.as_str());
    assert_eq!(r.json["reason"], "view");
    let heard = camera.wait_for("stream:requested", WAIT, id_is(&sid)).await;
    assert_eq!(heard["requesterDeviceId"], serde_json::Value::Null);
    app.wait_for("stream:requested", WAIT, id_is(&sid)).await;

    // A second tab joins the running request instead of asking the camera again.
    let again = ask(&s, &f.token, &f.cam).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["id"], sid.as_str());

    accept(&s, &f, &sid).await;
    app.wait_for("stream:started", WAIT, id_is(&sid)).await;

    let creds = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/subscribe-credentials"),
            &f.token,
            None,
        )
        .await;
    assert_eq!(creds.status, 200, "{}", creds.text);
    assert_eq!(creds.json["role"], "subscribe");
    let whep = creds.json["whepUrl"].as_str().unwrap();
    assert!(whep.ends_with(&format!("/whep/{sid}")), "{whep}");
    let claims = verify(
        &s.state.auth.secret,
        creds.json["token"].as_str().unwrap(),
        &sid,
        &[MediaRole::Subscribe],
        chrono::Utc::now().timestamp(),
    )
    .expect("a valid subscribe token for this session");
    assert_eq!(claims.dev, None, "the account's token names no device");
    // A user may not publish: publishing stays with the camera's device token.
    s.call(
        Method::GET,
        &format!("/streams/{sid}/publish-credentials"),
        &f.token,
        None,
    )
    .await
    .expect_error(401, "INVALID_DEVICE_TOKEN");

    let ended = s
        .call(Method::POST, &format!("/streams/{sid}/end"), &f.token, None)
        .await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    assert_eq!(ended.json["status"], "ended");
    assert_eq!(ended.json["endReason"], "ended_by_user");
    camera.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    app.wait_for("stream:ended", WAIT, id_is(&sid)).await;
    // An ended session gives no more credentials.
    s.call(
        Method::GET,
        &format!("/streams/{sid}/subscribe-credentials"),
        &f.token,
        None,
    )
    .await
    .expect_error(409, "STREAM_NOT_ACTIVE");

    // A disabled camera and a device that is not a camera are refused.
    let r = ask(&s, &f.token, &f.cli).await;
    r.expect_error(400, "TARGET_NOT_CAMERA");
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{}", f.cam),
            &f.token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    ask(&s, &f.token, &f.cam)
        .await
        .expect_error(409, "DEVICE_DISABLED");
}

/// Another account can neither ask for, watch nor end someone else's camera stream.
async fn a_user_cannot_reach_another_users_streams(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let _camera = s.socket(&f.cam_token).await;
    let r = ask(&s, &f.token, &f.cam).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.json["id"].as_str().unwrap().to_string();
    accept(&s, &f, &sid).await;

    let (other, _) = s
        .sign_up(&common::unique_email("neighbour"), "password-1")
        .await;
    ask(&s, &other, &f.cam)
        .await
        .expect_error(404, "DEVICE_NOT_FOUND");
    for (method, path) in [
        (Method::GET, format!("/streams/{sid}/subscribe-credentials")),
        (Method::GET, format!("/streams/{sid}/playback-token")),
        (Method::POST, format!("/streams/{sid}/end")),
    ] {
        s.call(method, &path, &other, None)
            .await
            .expect_error(404, "STREAM_NOT_FOUND");
    }
    // Still streaming for its owner.
    let creds = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/subscribe-credentials"),
            &f.token,
            None,
        )
        .await;
    assert_eq!(creds.status, 200, "{}", creds.text);
}

/// The owner's signed-in sessions hear a device come online and go offline.
async fn presence_changes_reach_the_owner(backend: Backend) {
    let s = TestServer::start(backend).await;
    let f = family(&s).await;
    let mut app = s.socket(&f.token).await;
    let camera = s.socket(&f.cam_token).await;
    let online = app
        .wait_for("device:presence", WAIT, |v| v["deviceId"] == f.cam.as_str())
        .await;
    assert_eq!(online["online"], true);
    assert!(online["lastSeenAt"].is_string());
    drop(camera);
    let offline = app
        .wait_for("device:presence", WAIT, |v| {
            v["deviceId"] == f.cam.as_str() && v["online"] == false
        })
        .await;
    assert!(offline["lastSeenAt"].is_string());

    // Another account hears nothing of it.
    let (other, _) = s
        .sign_up(&common::unique_email("neighbour"), "password-1")
        .await;
    let mut stranger = s.socket(&other).await;
    let _camera = s.socket(&f.cam_token).await;
    app.wait_for("device:presence", WAIT, |v| v["online"] == true)
        .await;
    stranger
        .expect_none("device:presence", std::time::Duration::from_millis(500))
        .await;
}

both_backends!(
    request_and_accept_reach_every_participant,
    credentials_are_scoped_signed_and_verifiable,
    credentials_carry_endpoints_on_the_public_base_url,
    ending_tells_everyone_and_closes_the_session,
    the_camera_can_end_a_session,
    only_a_linked_client_may_request,
    stream_requests_expire,
    legacy_mode_relays_signalling,
    legacy_mode_unlinking_or_disabling_a_client_ends_its_calls,
    legacy_mode_the_relay_ends_a_call_whose_link_is_gone,
    two_user_requests_at_once_open_one_session,
    sfu_mode_refuses_relay,
    a_signed_in_user_watches_their_camera_without_a_device,
    a_user_cannot_reach_another_users_streams,
    presence_changes_reach_the_owner,
);
