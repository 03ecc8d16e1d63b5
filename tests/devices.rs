//! Devices and device links over HTTP: registration, heartbeat and presence, updates, role
//! changes, token revocation, input hygiene, deletion, and the link rules, on SQLite and
//! PostgreSQL.

mod common;

use common::{Backend, TestServer, unique_email};
use reqwest::Method;
use serde_json::json;

async fn registration_returns_the_device_and_a_token(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let r = s
        .call(Method::POST, "/devices/register", &token, Some(json!({"name": " Porch ", "role": "camera", "platform": "android", "metadata": {"model": "Pixel 3"}})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let device = &r.json["device"];
    assert!(device["id"].is_string());
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
}

/// Heartbeat marks a device online; only with its own token.
async fn heartbeat_marks_online_only_with_the_devices_own_token(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let (id, dtoken) = s.register_device(&token, "Porch", "camera").await;
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
}

/// Name and metadata can change, status and unknown fields cannot; a role change is
/// refused while the device is linked and allowed after unlinking.
async fn update_validates_fields_and_role_change_waits_for_unlinking(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let (id, _) = s.register_device(&token, "Porch", "camera").await;
    let (other_id, _) = s.register_device(&token, "Phone", "client").await;
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
}

/// Disabling revokes the token; re-enabling issues a new one and the old stays revoked.
async fn disabling_revokes_the_token_and_re_enabling_issues_a_new_one(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let (id, dtoken) = s.register_device(&token, "Porch", "camera").await;
    // Online by its heartbeat until disabled; a disabled device is never online.
    let beat = s
        .call(
            Method::POST,
            &format!("/devices/{id}/heartbeat"),
            &dtoken,
            None,
        )
        .await;
    assert_eq!(beat.status, 200, "{}", beat.text);
    let listed = s.call(Method::GET, "/devices", &token, None).await;
    assert_eq!(listed.json["items"][0]["online"], true, "{}", listed.text);
    let disabled = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(disabled.json["online"], false, "{}", disabled.text);
    let listed = s.call(Method::GET, "/devices", &token, None).await;
    assert_eq!(listed.json["items"][0]["online"], false, "{}", listed.text);
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
}

/// Control characters and NUL are refused cleanly (PostgreSQL cannot store NUL).
async fn control_characters_and_nul_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let (id, _) = s.register_device(&token, "Porch", "camera").await;
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
}

/// Deleting a device is final and revokes its token; the list needs a session.
async fn deleting_a_device_revokes_its_token(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("dev"), "password-1").await;
    let (id, dtoken) = s.register_device(&token, "Porch", "camera").await;
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

/// A link joins one camera and one client of the same user, once.
async fn links_refuse_duplicates_wrong_roles_and_unknown_devices(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("links"), "password-1").await;
    let (cam, _) = s.register_device(&token, "Cam", "camera").await;
    let (cli, _) = s.register_device(&token, "Phone", "client").await;
    let (cli2, _) = s.register_device(&token, "Tablet", "client").await;
    s.link(&token, &cam, &cli).await;
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
}

async fn links_are_listed_newest_first_paged_and_deleted_once(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("links"), "password-1").await;
    let (cam, _) = s.register_device(&token, "Cam", "camera").await;
    let (cli, _) = s.register_device(&token, "Phone", "client").await;
    let (cli2, _) = s.register_device(&token, "Tablet", "client").await;
    let link = s.link(&token, &cam, &cli).await;
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

/// A token handed over for pairing (QR code or paste) tells the app which device it is.
async fn a_device_token_names_its_device(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (user, _) = s.sign_up(&unique_email("pair"), "password-1").await;
    let (id, token) = s.register_device(&user, "Hall camera", "camera").await;
    let r = s.call(Method::GET, "/devices/me", &token, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["id"], id.as_str());
    assert_eq!(r.json["name"], "Hall camera");
    assert_eq!(r.json["role"], "camera");
    // A user session is not a device; a disabled device's token no longer works.
    s.call(Method::GET, "/devices/me", &user, None)
        .await
        .expect_error(401, "INVALID_DEVICE_TOKEN");
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &user,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.call(Method::GET, "/devices/me", &token, None)
        .await
        .expect_error(401, "INVALID_DEVICE_TOKEN");
}

/// A socket's rights are fixed when it connects: changing the device's role closes its
/// sockets, and a reconnect works under the new role.
async fn a_role_change_closes_the_devices_sockets(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("role"), "password-1").await;
    let (id, device_token) = s.register_device(&token, "Old phone", "camera").await;
    let mut socket = s.socket(&device_token).await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"role": "client"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["role"], "client");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while socket.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the socket stayed open after the role change"
    );
    // A rename changes no rights and closes nothing.
    let mut socket = s.socket(&device_token).await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"name": "Hall phone", "role": "client"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(event) = tokio::time::timeout_at(deadline, socket.recv()).await {
        assert!(event.is_some(), "the socket closed on a rename");
    }
}

/// A link and a role change of one of its devices, sent at once: one of them wins, and the
/// other is refused. Never both: a link must not join two devices of the wrong roles.
async fn a_link_and_a_role_change_at_once_never_both_succeed(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("linkrace"), "password-1").await;
    let (mut links_won, mut role_changes_won) = (0, 0);
    for round in 0..40 {
        let (camera, _) = s
            .register_device(&token, &format!("Cam {round}"), "camera")
            .await;
        let (client, _) = s
            .register_device(&token, &format!("Phone {round}"), "client")
            .await;
        let link_body = json!({"cameraDeviceId": camera, "clientDeviceId": client});
        let role_path = format!("/devices/{camera}");
        let (link, role) = tokio::join!(
            s.call(Method::POST, "/device-links", &token, Some(link_body)),
            s.call(
                Method::PATCH,
                &role_path,
                &token,
                Some(json!({"role": "client"}))
            ),
        );
        match (link.status, role.status) {
            (201, 409) => {
                assert_eq!(role.json["code"], "DEVICE_HAS_LINKS", "{}", role.text);
                links_won += 1;
            }
            (400, 200) => role_changes_won += 1,
            _ => panic!(
                "round {round}: link {} {}, role change {} {}",
                link.status, link.text, role.status, role.text
            ),
        }
        let devices = s
            .call(Method::GET, "/devices?limit=100", &token, None)
            .await;
        let camera_now = devices.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == camera.as_str())
            .unwrap()
            .clone();
        let links = s
            .call(Method::GET, "/device-links?limit=100", &token, None)
            .await;
        let linked = links.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["cameraDeviceId"] == camera.as_str());
        assert_eq!(
            linked,
            camera_now["role"] == "camera",
            "round {round}: linked {linked} with role {}",
            camera_now["role"]
        );
    }
    eprintln!("links won {links_won}, role changes won {role_changes_won}");
}

/// What a connecting device socket is checked against once it is in its device's room
/// (a change that landed between the admission check and the join could not close it):
/// the token it presented, its status and its role must all still hold.
async fn a_connecting_socket_is_rechecked_against_its_token_status_and_role(backend: Backend) {
    use watchpost::devices::service::{device_by_token, hash_device_token, touch_if_unchanged};
    let s = TestServer::start(backend).await;
    let (token, _) = s.sign_up(&unique_email("recheck"), "password-1").await;
    let db = &s.state.db;
    let patch = |id: String, body: serde_json::Value| {
        let (s, token) = (&s, &token);
        async move {
            let r = s
                .call(Method::PATCH, &format!("/devices/{id}"), token, Some(body))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r
        }
    };
    let (id, dtoken) = s.register_device(&token, "Porch", "camera").await;
    let admitted = device_by_token(db, &dtoken).await.unwrap().unwrap();
    let hash = hash_device_token(&dtoken);
    assert!(touch_if_unchanged(db, &admitted, &hash).await.unwrap());
    // Another role since admission.
    patch(id.clone(), json!({"role": "client"})).await;
    assert!(!touch_if_unchanged(db, &admitted, &hash).await.unwrap());
    patch(id.clone(), json!({"role": "camera"})).await;
    assert!(touch_if_unchanged(db, &admitted, &hash).await.unwrap());
    // Disabled, then enabled again: the token it was admitted with is revoked for good.
    patch(id.clone(), json!({"status": "disabled"})).await;
    assert!(!touch_if_unchanged(db, &admitted, &hash).await.unwrap());
    let r = patch(id.clone(), json!({"status": "active"})).await;
    assert!(!touch_if_unchanged(db, &admitted, &hash).await.unwrap());
    let fresh = r.json["deviceToken"].as_str().unwrap();
    assert!(
        touch_if_unchanged(db, &admitted, &hash_device_token(fresh))
            .await
            .unwrap()
    );
    // Deleted.
    let r = s
        .call(Method::DELETE, &format!("/devices/{id}"), &token, None)
        .await;
    assert!(r.status < 300, "{}", r.text);
    assert!(
        !touch_if_unchanged(db, &admitted, &hash_device_token(fresh))
            .await
            .unwrap()
    );
}

both_backends!(
    a_device_token_names_its_device,
    a_connecting_socket_is_rechecked_against_its_token_status_and_role,
    a_link_and_a_role_change_at_once_never_both_succeed,
    registration_returns_the_device_and_a_token,
    heartbeat_marks_online_only_with_the_devices_own_token,
    update_validates_fields_and_role_change_waits_for_unlinking,
    disabling_revokes_the_token_and_re_enabling_issues_a_new_one,
    a_role_change_closes_the_devices_sockets,
    control_characters_and_nul_are_refused,
    deleting_a_device_revokes_its_token,
    links_refuse_duplicates_wrong_roles_and_unknown_devices,
    links_are_listed_newest_first_paged_and_deleted_once,
);

/// A device socket whose client stopped reading (its send buffer full, so the socket
/// library refuses to queue the close) is still closed when the device is disabled: it
/// leaves its rooms at once and the close lands as soon as there is room for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_device_is_closed_even_while_its_socket_is_not_reading() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (token, _) = s.sign_up(&unique_email("stalled"), "password-1").await;
    let (id, dtoken) = s.register_device(&token, "Porch", "camera").await;
    // Engine.IO over long-polling: the client decides when to read.
    let poll = s.url("/socket.io/?EIO=4&transport=polling");
    let open = s
        .http
        .get(&poll)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let session = format!("{poll}&sid={}", handshake["sid"].as_str().unwrap());
    let post = |body: String| {
        let (http, url) = (s.http.clone(), session.clone());
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    post(format!("40{}", json!({ "token": dtoken }))).await;
    // Until the namespace's connect answer, answering the server's pings.
    loop {
        let body = s
            .http
            .get(&session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let packets: Vec<&str> = body.split('\u{1e}').collect();
        if packets.contains(&"2") {
            post("3".to_string()).await;
        }
        if packets.iter().any(|p| p.starts_with("40")) {
            break;
        }
        assert!(packets.iter().all(|p| *p == "2"), "{body}");
    }
    // More acknowledged heartbeats than the socket's buffer holds, none of them read.
    let flood: Vec<String> = (1..=160)
        .map(|n| format!("42{n}[\"heartbeat\",{{}}]"))
        .collect();
    post(flood.join("\u{1e}")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{id}"),
            &token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The client reads again: the buffered answers, then the close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the disabled device's socket was not closed"
        );
        let r = s.http.get(&session).send().await.unwrap();
        if r.status() != 200 {
            break; // The session is gone.
        }
        let body = r.text().await.unwrap();
        if body
            .split('\u{1e}')
            .any(|packet| packet == "41" || packet == "1")
        {
            break;
        }
    }
}
