//! The media plane: WHIP/WHEP against the in-process SFU, with hand-made SDP for the error
//! and limit paths and headless Chromium for real interop.

mod common;
mod webrtc_peer;

use common::process::{Child, binary, free_port};
use common::{Api, Backend, Reply, TestServer, unique_email};
use reqwest::Method;
use serde_json::json;

/// Tests that move real media (Chromium or webrtc-rs peers) run one at a time: several
/// encoders at once on a 2-core machine trigger CPU-overuse adaptation (simulcast layers
/// collapse, first frames arrive late) and skew the bandwidth estimates under test.
static MEDIA_PEERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FINGERPRINT: &str = "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

/// A minimal, valid offer with one video m-line in `direction` using `codec`.
fn offer(direction: &str, codec: &str) -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:wpTe",
        "a=ice-pwd:watchpostwatchpostwatch1",
        &format!("a=fingerprint:{FINGERPRINT}"),
        "a=setup:actpass",
        "a=mid:0",
        &format!("a={direction}"),
        "a=rtcp-mux",
        &format!("a=rtpmap:96 {codec}/90000"),
        "a=rtcp-fb:96 nack pli",
        "a=ssrc:1111 cname:test",
        "",
    ]
    .join("\r\n")
}

struct Stream {
    sid: String,
    /// The household's user session token.
    user_token: String,
    /// The camera's device id.
    camera: String,
    /// The camera's device token.
    camera_token: String,
    /// The requesting phone's device token.
    client_token: String,
    /// The phone's link to the camera.
    client_link: String,
    /// The second linked client (a tablet).
    client2: String,
    publish: String,
    subscribe: String,
    subscribe2: String,
}

/// A household with a camera and two linked phones and an accepted stream, on any server
/// (in-process or a child process).
async fn live_stream(s: &Api) -> Stream {
    let (token, _) = s.sign_up(&unique_email("media"), "password-1").await;
    stream_of(s, &token).await
}

/// Another camera of the account signed in with `token`, with its own two linked phones,
/// live.
async fn stream_of(s: &Api, token: &str) -> Stream {
    let (cam, cam_token) = s.register_device(token, "Cam", "camera").await;
    let (cli, cli_token) = s.register_device(token, "Phone", "client").await;
    let (cli2, cli2_token) = s.register_device(token, "Tablet", "client").await;
    let client_link = s.link(token, &cam, &cli).await;
    s.link(token, &cam, &cli2).await;
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &cli_token,
            Some(json!({"cameraDeviceId": cam})),
        )
        .await;
    let sid = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            &cam_token,
            None
        )
        .await
        .status,
        200
    );
    Stream {
        client_token: cli_token.clone(),
        client_link,
        client2: cli2,
        camera: cam.clone(),
        camera_token: cam_token.clone(),
        user_token: token.to_string(),
        publish: credentials(s, &sid, &cam_token, "publish").await,
        subscribe: credentials(s, &sid, &cli_token, "subscribe").await,
        subscribe2: credentials(s, &sid, &cli2_token, "subscribe").await,
        sid,
    }
}

/// A media token from `/streams/{sid}/{kind}-credentials` for the device with `token`.
async fn credentials(s: &Api, sid: &str, token: &str, kind: &str) -> String {
    let r = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/{kind}-credentials"),
            token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["token"].as_str().unwrap().to_string()
}

async fn post_sdp(s: &TestServer, path: &str, token: Option<&str>, sdp: &str) -> Reply {
    let mut req = s
        .http
        .post(s.url(path))
        .header("content-type", "application/sdp")
        .body(sdp.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Reply::from(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_whep_validation_and_authorisation() {
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let whip = format!("/whip/{}", st.sid);
    let whep = format!("/whep/{}", st.sid);

    post_sdp(&s, &whip, Some(&st.publish), "hello, I am not SDP")
        .await
        .expect_error(400, "INVALID_SDP");
    post_sdp(
        &s,
        &whip,
        Some(&st.publish),
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
    )
    .await
    .expect_error(400, "INVALID_SDP");
    post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP9"))
        .await
        .expect_error(422, "NO_USABLE_MEDIA");
    post_sdp(&s, &whip, None, &offer("sendonly", "VP8"))
        .await
        .expect_error(401, "MEDIA_TOKEN_REQUIRED");
    post_sdp(
        &s,
        &whip,
        Some("wpm_forged.token"),
        &offer("sendonly", "VP8"),
    )
    .await
    .expect_error(401, "INVALID_MEDIA_TOKEN");
    post_sdp(&s, &whip, Some(&st.subscribe), &offer("sendonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_FORBIDDEN");
    let other = live_stream(&s).await;
    post_sdp(&s, &whip, Some(&other.publish), &offer("sendonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_FORBIDDEN");
    let r = Reply::from(
        s.http
            .post(s.url(&whip))
            .bearer_auth(&st.publish)
            .header("content-type", "text/plain")
            .body("v=0")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");

    let r = post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP8")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert!(r.text.starts_with("v=0"));
    assert!(r.text.contains("a=ice-lite"));
    assert!(r.text.contains("typ host"));
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with(&format!("/whip/{}/", st.sid)));
    assert!(r.header("etag").is_some());
    // One publisher per stream.
    post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP8"))
        .await
        .expect_error(409, "STREAM_HAS_PUBLISHER");
    // A viewer's token cannot hang up the camera, even knowing its resource URL.
    let r = Reply::from(
        s.http
            .delete(s.url(&location))
            .bearer_auth(&st.subscribe)
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(403, "MEDIA_TOKEN_FORBIDDEN");

    let r = post_sdp(&s, &whep, Some(&st.subscribe), &offer("recvonly", "VP8")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.text.contains("a=sendonly"));
    let options = s
        .http
        .request(Method::OPTIONS, s.url(&whep))
        .header("origin", "https://player.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(options.status().is_success());
    assert_eq!(options.headers()["access-control-allow-origin"], "*");

    // Trickle is accepted (ICE-lite learns candidates from checks); DELETE ends the resource.
    let patch = s
        .http
        .patch(s.url(&location))
        .bearer_auth(&st.publish)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=candidate:1 1 udp 1 127.0.0.1 9 typ host")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 204);
    // What is trickled is still checked: bytes that are not a fragment, a malformed
    // candidate, an oversized body, another content type.
    let trickle = |body: Vec<u8>, content_type: &'static str| {
        let request = s
            .http
            .patch(s.url(&location))
            .bearer_auth(&st.publish)
            .header("content-type", content_type)
            .body(body);
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    let sdpfrag = "application/trickle-ice-sdpfrag";
    trickle(b"garbage\x00\xff".to_vec(), sdpfrag)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    trickle(b"garbage\xff".to_vec(), sdpfrag)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    trickle(
        b"a=candidate:1 1 udp 1 999.1.1.1 99999 typ host".to_vec(),
        sdpfrag,
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    trickle(
        format!("a=candidate:{}", "x".repeat(100_000)).into_bytes(),
        sdpfrag,
    )
    .await
    .expect_error(413, "PAYLOAD_TOO_LARGE");
    trickle(b"a=end-of-candidates".to_vec(), "text/plain")
        .await
        .expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let del = s
        .http
        .delete(s.url(&location))
        .bearer_auth(&st.publish)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
}

/// Found by schemathesis: WHEP's `PATCH`/`DELETE` ignored the resource id (a made-up one
/// got 204/200, and a hung-up viewer could still be trickled to), and an `INVALID_SDP`
/// message carried the parser's internals (`Parse error at PointerOffset(0x7f…)`, a heap
/// address). A WHIP/WHEP resource must be a live transport of its own kind in that session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_whep_resources_must_exist_and_sdp_errors_hide_parser_internals() {
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let (whip, whep) = (format!("/whip/{}", st.sid), format!("/whep/{}", st.sid));
    for garbage in [
        "hello, I am not SDP",
        "",
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n",
    ] {
        let r = post_sdp(&s, &whip, Some(&st.publish), garbage).await;
        r.expect_error(400, "INVALID_SDP");
        let message = r.json["message"].as_str().unwrap();
        assert!(
            !message.contains("PointerOffset")
                && !message.contains("0x")
                && !message.contains('\n'),
            "{message:?}"
        );
    }
    let publisher = post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP8")).await;
    assert_eq!(publisher.status, 201, "{}", publisher.text);
    let publisher = publisher.header("location").unwrap().to_string();
    let viewer = post_sdp(&s, &whep, Some(&st.subscribe), &offer("recvonly", "VP8")).await;
    assert_eq!(viewer.status, 201, "{}", viewer.text);
    let viewer = viewer.header("location").unwrap().to_string();
    let viewer_id = viewer.rsplit('/').next().unwrap().to_string();
    let publisher_id = publisher.rsplit('/').next().unwrap().to_string();
    let patch = |path: String, token: String| {
        let s = &s;
        async move {
            Reply::from(
                s.http
                    .patch(s.url(&path))
                    .bearer_auth(token)
                    .header("content-type", "application/trickle-ice-sdpfrag")
                    .body("a=candidate:1 1 udp 1 127.0.0.1 9 typ host")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let delete = |path: String, token: String| {
        let s = &s;
        async move {
            Reply::from(
                s.http
                    .delete(s.url(&path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // Made-up ids, and ids of the other kind, are no resource of this endpoint.
    for (path, token) in [
        (
            format!("{whep}/sub-00000000-0000-0000-0000-000000000000"),
            &st.subscribe,
        ),
        (format!("{whep}/made-up"), &st.subscribe),
        (format!("{whep}/{publisher_id}"), &st.subscribe),
        (
            format!("{whip}/pub-00000000-0000-0000-0000-000000000000"),
            &st.publish,
        ),
        (format!("{whip}/{viewer_id}"), &st.publish),
    ] {
        patch(path.clone(), token.clone())
            .await
            .expect_error(404, "NOT_FOUND");
        delete(path.clone(), token.clone())
            .await
            .expect_error(404, "NOT_FOUND");
    }
    assert_eq!(
        patch(viewer.clone(), st.subscribe.clone()).await.status,
        204
    );
    assert_eq!(
        delete(viewer.clone(), st.subscribe.clone()).await.status,
        200
    );
    // Hung up: gone for good.
    patch(viewer.clone(), st.subscribe.clone())
        .await
        .expect_error(404, "NOT_FOUND");
    delete(viewer, st.subscribe.clone())
        .await
        .expect_error(404, "NOT_FOUND");
    assert_eq!(
        patch(publisher.clone(), st.publish.clone()).await.status,
        204
    );
    // A camera that streamed past its token's lifetime can still hang up with it (the
    // token opens nothing new any more), and only its own session's resource.
    let expired = |role| {
        watchpost::streams::media_token::issue(
            common::SECRET.as_bytes(),
            &watchpost::streams::media_token::Claims {
                sid: st.sid.clone(),
                role,
                dev: None,
                pair: None,
                exp: chrono::Utc::now().timestamp() - 60,
            },
        )
    };
    let expired_publish = expired(watchpost::streams::media_token::MediaRole::Publish);
    post_sdp(&s, &whip, Some(&expired_publish), &offer("sendonly", "VP8"))
        .await
        .expect_error(401, "INVALID_MEDIA_TOKEN");
    let expired_subscribe = expired(watchpost::streams::media_token::MediaRole::Subscribe);
    delete(publisher.clone(), expired_subscribe)
        .await
        .expect_error(403, "MEDIA_TOKEN_FORBIDDEN");
    assert_eq!(delete(publisher, expired_publish).await.status, 200);
}

/// A WHIP/WHEP endpoint or resource called with a method it does not serve answers 405
/// with the JSON error every other route gives, and says in `Allow` what it does serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_refuse_other_methods_with_a_json_405() {
    let s = TestServer::start(Backend::Sqlite).await;
    for kind in ["whip", "whep"] {
        for (method, path, allowed) in [
            (Method::GET, format!("/{kind}/some-session"), "POST"),
            (Method::PUT, format!("/{kind}/some-session"), "POST"),
            (
                Method::GET,
                format!("/{kind}/some-session/some-resource"),
                "PATCH",
            ),
            (
                Method::POST,
                format!("/{kind}/some-session/some-resource"),
                "DELETE",
            ),
        ] {
            let r = s
                .http
                .request(method.clone(), s.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method} {path}");
            let allow = r.headers()["allow"].to_str().unwrap().to_string();
            assert!(allow.contains(allowed), "{method} {path}: Allow {allow}");
            let body: serde_json::Value = r.json().await.expect("a JSON error");
            assert_eq!(
                body["code"], "METHOD_NOT_ALLOWED",
                "{method} {path}: {body}"
            );
        }
    }
}

/// RFC 9725: `OPTIONS` on a WHIP or WHEP endpoint answers `Accept-Post: application/sdp`,
/// whether it is a CORS preflight or a plain request, and never carries TURN credentials
/// (nothing about it is authenticated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_options_answer_accept_post_without_turn_credentials() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_SECRET", "north"),
        ],
    )
    .await;
    let st = live_stream(&s).await;
    for kind in ["whip", "whep"] {
        let url = s.url(&format!("/{kind}/{}", st.sid));
        let plain = s.http.request(Method::OPTIONS, &url).send().await.unwrap();
        assert!(plain.status().is_success(), "{kind}: {}", plain.status());
        assert_eq!(plain.headers()["accept-post"], "application/sdp", "{kind}");
        assert!(
            plain.headers().get("link").is_none(),
            "{kind}: ICE servers on OPTIONS"
        );

        let preflight = s
            .http
            .request(Method::OPTIONS, &url)
            .header("origin", "https://player.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success());
        let h = preflight.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
        assert_eq!(h["accept-post"], "application/sdp");
        assert!(
            h.get("link").is_none(),
            "{kind}: ICE servers on a preflight"
        );
    }
}

/// The transport ids live in a room, straight from the SFU.
async fn participants(s: &TestServer, sid: &str) -> Vec<String> {
    let sfu = s.state.media.sfu().expect("an SFU");
    sfu.describe(sid).await.into_iter().map(|p| p.id).collect()
}

/// The transport id at the end of a WHIP/WHEP `Location`.
fn resource_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.text);
    let location = reply.header("location").expect("a Location");
    location.rsplit('/').next().unwrap().to_string()
}

/// Waits (briefly: the close is a command to the media loop) until `id` has left `sid`.
async fn assert_gone(s: &TestServer, sid: &str, id: &str, what: &str) {
    for _ in 0..100 {
        if !participants(s, sid).await.iter().any(|p| p == id) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: transport {id} still in the room");
}

/// Revocation reaches the media plane: unlinking a phone, disabling a tablet, deleting a
/// laptop or disabling the camera closes that device's live transports at once, and the
/// media token it still holds is refused when presented again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_devices_lose_their_media_at_once_and_their_tokens_stop_working() {
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let (whip, whep) = (format!("/whip/{}", st.sid), format!("/whep/{}", st.sid));
    let (laptop, laptop_token) = s.register_device(&st.user_token, "Laptop", "client").await;
    s.link(&st.user_token, &st.camera, &laptop).await;
    let laptop_media = credentials(&s, &st.sid, &laptop_token, "subscribe").await;

    let camera =
        resource_of(&post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP8")).await);
    let phone =
        resource_of(&post_sdp(&s, &whep, Some(&st.subscribe), &offer("recvonly", "VP8")).await);
    let tablet =
        resource_of(&post_sdp(&s, &whep, Some(&st.subscribe2), &offer("recvonly", "VP8")).await);
    let laptop_view =
        resource_of(&post_sdp(&s, &whep, Some(&laptop_media), &offer("recvonly", "VP8")).await);
    assert_eq!(participants(&s, &st.sid).await.len(), 4);

    // Unlinking the phone: it stops watching; the others do not.
    let r = s
        .call(
            Method::DELETE,
            &format!("/device-links/{}", st.client_link),
            &st.user_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_gone(&s, &st.sid, &phone, "unlinked phone").await;
    assert!(participants(&s, &st.sid).await.contains(&tablet));
    post_sdp(&s, &whep, Some(&st.subscribe), &offer("recvonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_REVOKED");

    // Disabling the tablet.
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{}", st.client2),
            &st.user_token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_gone(&s, &st.sid, &tablet, "disabled tablet").await;
    post_sdp(&s, &whep, Some(&st.subscribe2), &offer("recvonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_REVOKED");
    // Enabled again (a new device token): the token it held under the revoked pairing stays
    // refused; credentials asked for now work.
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{}", st.client2),
            &st.user_token,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let tablet_token = r.json["deviceToken"].as_str().unwrap().to_string();
    post_sdp(&s, &whep, Some(&st.subscribe2), &offer("recvonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_REVOKED");
    let fresh = credentials(&s, &st.sid, &tablet_token, "subscribe").await;
    let tablet = resource_of(&post_sdp(&s, &whep, Some(&fresh), &offer("recvonly", "VP8")).await);
    assert!(participants(&s, &st.sid).await.contains(&tablet));

    // Deleting the laptop.
    let r = s
        .call(
            Method::DELETE,
            &format!("/devices/{laptop}"),
            &st.user_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_gone(&s, &st.sid, &laptop_view, "deleted laptop").await;
    post_sdp(&s, &whep, Some(&laptop_media), &offer("recvonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_REVOKED");
    assert!(participants(&s, &st.sid).await.contains(&camera));

    // Disabling the camera hangs it up and ends its stream.
    let mut requester_socket = s.socket(&st.client_token).await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/devices/{}", st.camera),
            &st.user_token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_gone(&s, &st.sid, &camera, "disabled camera").await;
    let session = watchpost::streams::service::find(&s.state.db, &st.sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.status.as_str(), "ended");
    assert_eq!(session.end_reason.as_deref(), Some("device_disabled"));
    requester_socket
        .wait_for("stream:ended", common::household::WAIT, |v| {
            v["id"] == st.sid.as_str()
        })
        .await;
    post_sdp(&s, &whip, Some(&st.publish), &offer("sendonly", "VP8"))
        .await
        .expect_error(403, "MEDIA_TOKEN_REVOKED");
}

/// A join that raced a revocation leaves no transport behind. The interleaving the race
/// produces, run in order: the join is authorised, the revocation commits and closes the
/// device's transports (none yet), then the join reaches the media loop. The join checks
/// again once its transport exists, and leaves. Both revocations (unlink, disable) and
/// both ways in (a WHEP media token, a device token on `subscribe-transport`); an
/// unrevoked device's join stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_raced_a_revocation_leaves_no_transport_behind() {
    use watchpost::media_api::join::{Access, join_checked};
    use watchpost::streams::media_token::{self, MediaRole};
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let sfu = s.state.media.sfu().expect("an SFU");
    let session = watchpost::streams::service::find(&s.state.db, &st.sid)
        .await
        .unwrap()
        .unwrap();
    for (round, by_device_token) in [(0, false), (1, false), (2, true), (3, true), (4, false)] {
        let (viewer, viewer_token) = s
            .register_device(&st.user_token, &format!("Viewer {round}"), "client")
            .await;
        let link = s.link(&st.user_token, &st.camera, &viewer).await;
        let media = credentials(&s, &st.sid, &viewer_token, "subscribe").await;
        // Authorised, as the route does before it joins.
        let claims = media_token::verify(
            &s.state.auth.secret,
            &media,
            &st.sid,
            &[MediaRole::Subscribe],
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
        watchpost::streams::service::recheck_media_token(&s.state.db, &claims, &session)
            .await
            .unwrap();
        // The revocation lands in between (the last round revokes nothing).
        let r = match round {
            0 | 2 => {
                s.call(
                    Method::DELETE,
                    &format!("/device-links/{link}"),
                    &st.user_token,
                    None,
                )
                .await
            }
            1 | 3 => {
                s.call(
                    Method::PATCH,
                    &format!("/devices/{viewer}"),
                    &st.user_token,
                    Some(json!({"status": "disabled"})),
                )
                .await
            }
            _ => s.call(Method::GET, "/devices", &st.user_token, None).await,
        };
        assert_eq!(r.status, 200, "{}", r.text);
        let participant = format!("sub_raced{round}");
        let access = if by_device_token {
            Access::DeviceToken {
                token: &viewer_token,
                device_id: &viewer,
            }
        } else {
            Access::MediaToken(&claims)
        };
        let joined = join_checked(
            sfu,
            &s.state.db,
            &session,
            &participant,
            false,
            offer("recvonly", "VP8"),
            access,
        )
        .await;
        let present = participants(&s, &st.sid).await.contains(&participant);
        if round == 4 {
            assert!(joined.is_ok(), "an unrevoked viewer is refused");
            assert!(present, "an unrevoked viewer's transport is gone");
        } else {
            let e = joined.expect_err(&format!("round {round}: a revoked viewer joined"));
            assert_eq!(e.status, 403, "round {round}");
            assert_eq!(e.code, "MEDIA_TOKEN_REVOKED", "round {round}");
            assert!(
                !present,
                "round {round}: the revoked viewer's transport stayed"
            );
        }
    }
}

/// Fair share: one account's cameras and viewers are capped (`MEDIA_MAX_*_PER_USER`) so
/// another account still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_take_every_media_slot() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("MEDIA_MAX_PUBLISHERS_PER_USER", "1"),
            ("MEDIA_MAX_SUBSCRIBERS_PER_USER", "1"),
        ],
    )
    .await;
    let first = live_stream(&s).await;
    let second = stream_of(&s, &first.user_token).await;
    let neighbour = live_stream(&s).await;
    let whip = |st: &Stream| format!("/whip/{}", st.sid);
    let whep = |st: &Stream| format!("/whep/{}", st.sid);

    let r = post_sdp(
        &s,
        &whip(&first),
        Some(&first.publish),
        &offer("sendonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    post_sdp(
        &s,
        &whip(&second),
        Some(&second.publish),
        &offer("sendonly", "VP8"),
    )
    .await
    .expect_error(429, "TOO_MANY_PUBLISHERS_FOR_USER");
    let r = post_sdp(
        &s,
        &whip(&neighbour),
        Some(&neighbour.publish),
        &offer("sendonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "another account still goes live: {}", r.text);

    let r = post_sdp(
        &s,
        &whep(&first),
        Some(&first.subscribe),
        &offer("recvonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    post_sdp(
        &s,
        &whep(&first),
        Some(&first.subscribe2),
        &offer("recvonly", "VP8"),
    )
    .await
    .expect_error(429, "TOO_MANY_SUBSCRIBERS_FOR_USER");
    let r = post_sdp(
        &s,
        &whep(&neighbour),
        Some(&neighbour.subscribe),
        &offer("recvonly", "VP8"),
    )
    .await;
    assert_eq!(
        r.status, 201,
        "another account's viewer still gets in: {}",
        r.text
    );
}

/// An offer with this many video m-lines.
fn offer_with_media_lines(count: usize) -> String {
    let one = offer("sendonly", "VP8");
    let (session, media) = one.split_at(one.find("m=video").unwrap());
    let mids: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    let mut sdp = session.replace(
        "a=group:BUNDLE 0",
        &format!("a=group:BUNDLE {}", mids.join(" ")),
    );
    for mid in &mids {
        sdp.push_str(&media.replace("a=mid:0", &format!("a=mid:{mid}")));
    }
    sdp
}

/// SDP offers are bounded (64 KiB, 8 m-lines) before they reach the media loop, on WHIP
/// and on the device transport routes, each with a clear JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdp_offers_are_bounded_before_the_media_loop() {
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let whip = format!("/whip/{}", st.sid);
    let padded = |len: usize| {
        let mut sdp = offer("sendonly", "VP8");
        while sdp.len() < len {
            sdp.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
        }
        sdp
    };
    post_sdp(&s, &whip, Some(&st.publish), &padded(65 * 1024))
        .await
        .expect_error(413, "SDP_TOO_LARGE");
    // Far past the bound (but within the HTTP body limit, so the server reads the whole
    // request and the client always gets the answer rather than a reset mid-upload): the
    // same answer.
    post_sdp(&s, &whip, Some(&st.publish), &padded(900 * 1024))
        .await
        .expect_error(413, "SDP_TOO_LARGE");
    post_sdp(&s, &whip, Some(&st.publish), &offer_with_media_lines(9))
        .await
        .expect_error(400, "TOO_MANY_MEDIA_LINES");
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{}/sfu/publish-transport", st.sid),
            &st.camera_token,
            Some(json!({"type": "offer", "sdp": padded(65 * 1024)})),
        )
        .await;
    r.expect_error(413, "SDP_TOO_LARGE");
    // Within the bounds the offer is answered.
    let r = post_sdp(&s, &whip, Some(&st.publish), &offer_with_media_lines(8)).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// TURN credentials on a WHIP/WHEP answer and in media credentials expire with the media
/// token that unlocked them (here 10 minutes), not after TURN_CREDENTIAL_TTL_SECS (a day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_expire_with_the_media_token() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_SECRET", "north"),
            ("TURN_CREDENTIAL_TTL_SECS", "86400"),
        ],
    )
    .await;
    let st = live_stream(&s).await;
    let now = chrono::Utc::now().timestamp();
    let token_exp =
        watchpost::streams::media_token::decode(common::SECRET.as_bytes(), &st.subscribe, now)
            .unwrap()
            .exp;
    let r = post_sdp(
        &s,
        &format!("/whep/{}", st.sid),
        Some(&st.subscribe),
        &offer("recvonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let link = r.header("link").expect("ICE servers in Link");
    let username = link.split("username=\"").nth(1).unwrap();
    let expiry: i64 = username.split(':').next().unwrap().parse().unwrap();
    assert!(
        expiry <= token_exp,
        "TURN expiry {expiry} after the token's {token_exp}"
    );
    assert!(expiry > now, "already expired");

    let creds = s
        .call(
            Method::GET,
            &format!("/streams/{}/publish-credentials", st.sid),
            &st.camera_token,
            None,
        )
        .await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(creds.json["expiresAt"].as_str().unwrap())
            .unwrap()
            .timestamp();
    let username = creds.json["iceServers"][0]["username"].as_str().unwrap();
    let expiry: i64 = username.split(':').next().unwrap().parse().unwrap();
    assert_eq!(
        expiry, expires_at,
        "TURN lives exactly as long as the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_limits_are_enforced() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("MEDIA_MAX_PUBLISHERS", "1"),
            ("MEDIA_MAX_SUBSCRIBERS_PER_ROOM", "1"),
        ],
    )
    .await;
    let a = live_stream(&s).await;
    let b = live_stream(&s).await;
    let r = post_sdp(
        &s,
        &format!("/whip/{}", a.sid),
        Some(&a.publish),
        &offer("sendonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    post_sdp(
        &s,
        &format!("/whip/{}", b.sid),
        Some(&b.publish),
        &offer("sendonly", "VP8"),
    )
    .await
    .expect_error(429, "TOO_MANY_PUBLISHERS");
    let first = post_sdp(
        &s,
        &format!("/whep/{}", a.sid),
        Some(&a.subscribe),
        &offer("recvonly", "VP8"),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    post_sdp(
        &s,
        &format!("/whep/{}", a.sid),
        Some(&a.subscribe2),
        &offer("recvonly", "VP8"),
    )
    .await
    .expect_error(429, "TOO_MANY_SUBSCRIBERS");
    // Leaving frees the slot (DELETE is processed by the media loop, so allow it a moment).
    let location = first.header("location").unwrap().to_string();
    s.http
        .delete(s.url(&location))
        .bearer_auth(&a.subscribe)
        .send()
        .await
        .unwrap();
    let mut admitted = false;
    for _ in 0..50 {
        let r = post_sdp(
            &s,
            &format!("/whep/{}", a.sid),
            Some(&a.subscribe2),
            &offer("recvonly", "VP8"),
        )
        .await;
        if r.status == 201 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(admitted, "slot not released after DELETE");
    let status = s.get("/healthz").await;
    assert_eq!(status.json["media"]["publishers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_via_whip_and_two_chromium_viewers_watch_via_whep() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let mut requester = s.socket(&st.client_token).await;
    let playback = s
        .call(
            Method::GET,
            &format!("/streams/{}/playback-token", st.sid),
            &st.client_token,
            None,
        )
        .await;
    let playback = playback.json["token"].as_str().unwrap().to_string();
    common::run_node(
        "whip-whep.mjs",
        &[
            s.base.as_str(),
            st.sid.as_str(),
            st.publish.as_str(),
            st.subscribe.as_str(),
            st.subscribe2.as_str(),
            playback.as_str(),
        ],
        "WHIP/WHEP interop",
    )
    .await;
    // The browser hung up its publisher: the session ends and everyone is told.
    let ended = requester
        .wait_for("stream:ended", std::time::Duration::from_secs(30), |v| {
            v["id"] == st.sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "publisher_left", "{ended}");
    let metrics = s.get("/metrics").await.text;
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchpost_media_frames_forwarded_total "))
        .and_then(|v| v.parse().ok())
        .expect("frames counter in /metrics");
    assert!(forwarded > 0, "{metrics}");
    // Each viewer that connected triggered a keyframe request to the publisher.
    let plis: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchpost_media_keyframe_requests_total "))
        .and_then(|v| v.parse().ok())
        .expect("keyframe counter in /metrics");
    assert!(plis > 0, "{metrics}");
}

/// coturn on loopback, with `use-auth-secret`; stopped when dropped.
struct Coturn {
    child: std::process::Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_coturn(secret: &str) -> Coturn {
    let port = free_udp_port();
    let relay_min = 40000 + (port % 20000);
    let child = std::process::Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={relay_min}"),
            &format!("--max-port={}", relay_min + 50),
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            "--realm=watchpost.test",
            // The SFU is on loopback in this test; coturn refuses loopback peers by default.
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--fingerprint",
            "--log-file=stdout",
            "--simple-log",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver (Debian coturn, installed by scripts/setup.sh test) runs");
    std::thread::sleep(std::time::Duration::from_millis(500));
    Coturn { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_connects_through_coturn_relay_with_ephemeral_credentials() {
    let _media = MEDIA_PEERS.lock().await;
    let secret = "coturn-shared-secret";
    let turn = start_coturn(secret);
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", turn.port);
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[("TURN_URLS", turn_url.as_str()), ("TURN_SECRET", secret)],
    )
    .await;
    let st = live_stream(&s).await;
    // The credentials carry TURN REST-style ephemeral credentials for coturn.
    let creds = s
        .call(
            Method::GET,
            &format!("/streams/{}/subscribe-credentials", st.sid),
            &st.client_token,
            None,
        )
        .await;
    let ice = creds.json["iceServers"].clone();
    let username = ice[0]["username"].as_str().unwrap();
    let (expiry, _) = username.split_once(':').unwrap();
    assert!(expiry.parse::<i64>().unwrap() > chrono::Utc::now().timestamp());
    assert!(
        ice[0]["credential"]
            .as_str()
            .is_some_and(|c| c.ends_with('='))
    );
    common::run_node(
        "turn-relay.mjs",
        &[
            s.base.as_str(),
            st.sid.as_str(),
            st.publish.as_str(),
            st.subscribe.as_str(),
            ice.to_string().as_str(),
        ],
        "TURN relay viewer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_carries_media_when_udp_is_blocked() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    common::run_node(
        "ice-tcp.mjs",
        &[
            s.base.as_str(),
            st.sid.as_str(),
            st.publish.as_str(),
            st.subscribe.as_str(),
        ],
        "ICE-TCP viewer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_simulcast_viewer_decodes_one_layer_at_a_time() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    common::run_node(
        "simulcast.mjs",
        &[
            s.base.as_str(),
            st.sid.as_str(),
            st.publish.as_str(),
            st.subscribe.as_str(),
            st.client_token.as_str(),
        ],
        "simulcast viewer",
    )
    .await;
}

/// Checks one viewer's reception of the publisher's frames `[.., end)`: every frame it got
/// is a byte-exact copy, the first one is a keyframe, and from there nothing is missing.
fn assert_complete_from_first_keyframe(
    name: &str,
    got: &webrtc_peer::Received,
    video_end: u32,
    audio_end: u32,
) {
    assert_eq!(
        got.corrupt, 0,
        "{name}: corrupted: {:?}",
        got.corrupt_samples
    );
    // The stream starts at a keyframe: the earliest frame the viewer has. (Frames repaired
    // by retransmission may complete out of order, as in any jitter buffer, so a delta
    // after a repaired keyframe can be whole first.)
    let (first, key, _, _) = *got
        .video
        .iter()
        .min_by_key(|v| v.0)
        .unwrap_or_else(|| panic!("{name}: no video"));
    assert!(key, "{name}: first video frame {first} is not a keyframe");
    let mut indices: Vec<u32> = got.video.iter().map(|v| v.0).collect();
    indices.sort_unstable();
    let expected: Vec<u32> = (first..video_end).collect();
    assert_eq!(
        indices, expected,
        "{name}: video frames missing or out of order"
    );
    assert!(indices.len() >= 60, "{name}: only {} frames", indices.len());
    let a0 = *got
        .audio
        .first()
        .unwrap_or_else(|| panic!("{name}: no audio"));
    let expected: Vec<u32> = (a0..audio_end).collect();
    assert_eq!(
        got.audio, expected,
        "{name}: audio packets missing or out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_publisher_reaches_two_webrtc_rs_viewers_byte_exact() {
    two_webrtc_rs_viewers_byte_exact(webrtc_peer::VideoCodec::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_publisher_reaches_two_webrtc_rs_viewers_byte_exact() {
    two_webrtc_rs_viewers_byte_exact(webrtc_peer::VideoCodec::H264).await;
}

/// A viewer that joins after the camera's RTP sequence numbers wrapped past 65,535 still
/// decrypts and gets every frame and audio packet: the SFU starts each viewer's numbering in
/// the first rollover cycle, the only one a receiver can assume (SRTP does not signal it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_after_the_camera_sequence_wrapped_gets_media() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let mut publisher = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            first_seq: Some(65_450),
            ..Default::default()
        },
    )
    .await;
    // 86 packets to the wrap: audio (50/s) and video (30 frames/s) both pass it by then.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (video_end, audio_end) = publisher.stop_sending().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let got = viewer.received.lock().await;
    assert!(
        got.video_rtp.first().is_some_and(|r| r.1 < 65_450),
        "the camera had wrapped before the viewer joined: {:?}",
        got.video_rtp.first()
    );
    assert_complete_from_first_keyframe("late viewer", &got, video_end, audio_end);
}

/// A webrtc-rs camera (Opus + `codec`) and two webrtc-rs viewers: every frame arrives
/// byte for byte, starting at a keyframe the SFU asked for when the viewer joined.
async fn two_webrtc_rs_viewers_byte_exact(codec: webrtc_peer::VideoCodec) {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let mut requester = s.socket(&st.client_token).await;
    let mut publisher = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            codec,
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let plis_before = publisher.plis.load(std::sync::atomic::Ordering::SeqCst);
    let one = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    let two = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe2).await;
    // A third viewer comes and goes abruptly (its tab closes): the others never notice.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let passer_by = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let _ = passer_by.pc.close().await;
    assert!(!passer_by.received.lock().await.video.is_empty());
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (video_end, audio_end) = publisher.stop_sending().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (name, viewer) in [("viewer 1", &one), ("viewer 2", &two)] {
        let got = viewer.received.lock().await;
        let mime = match codec {
            webrtc_peer::VideoCodec::Vp8 => "video/VP8",
            webrtc_peer::VideoCodec::H264 => "video/H264",
        };
        assert!(
            got.video_codec.eq_ignore_ascii_case(mime),
            "{}",
            got.video_codec
        );
        assert_complete_from_first_keyframe(name, &got, video_end, audio_end);
        // Keyframe on join: the viewer's first picture arrives quickly after it connects.
        let first_picture = got.video[0]
            .3
            .saturating_duration_since(viewer.connected_at);
        eprintln!(
            "{name}: {} video frames, {} audio packets, first keyframe {first_picture:?} after connecting",
            got.video.len(),
            got.audio.len()
        );
        assert!(
            first_picture < std::time::Duration::from_millis(500),
            "{name}: first keyframe took {first_picture:?}"
        );
    }
    // Each joining viewer made the SFU ask the publisher for a keyframe.
    let plis = publisher.plis.load(std::sync::atomic::Ordering::SeqCst) - plis_before;
    assert!(plis >= 1, "no PLI reached the publisher");
    // A WHIP DELETE is a hang-up: the session ends at once, without the reconnect grace.
    let hung_up_at = std::time::Instant::now();
    let del = s
        .http
        .delete(s.url(&publisher.location))
        .bearer_auth(&st.publish)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let ended = requester
        .wait_for("stream:ended", std::time::Duration::from_secs(10), |v| {
            v["id"] == st.sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "publisher_left", "{ended}");
    assert!(hung_up_at.elapsed() < std::time::Duration::from_secs(3));
    for viewer in [one, two] {
        let _ = viewer.pc.close().await;
    }
    let _ = publisher.pc.close().await;
}

/// Sequence numbers advance by small steps (padding may take a few) and timestamps never
/// go back: one continuous RTP stream on one SSRC.
fn assert_one_continuous_rtp_stream(name: &str, facts: &[(u32, u16, u32)]) {
    let ssrcs: std::collections::BTreeSet<u32> = facts.iter().map(|f| f.0).collect();
    assert_eq!(ssrcs.len(), 1, "{name}: SSRC changed: {ssrcs:?}");
    for pair in facts.windows(2) {
        let seq_step = pair[1].1.wrapping_sub(pair[0].1);
        assert!(
            (1..=64).contains(&seq_step),
            "{name}: sequence jumps {} -> {}",
            pair[0].1,
            pair[1].1
        );
        let ts_step = pair[1].2.wrapping_sub(pair[0].2) as i32;
        assert!(
            (0..90_000 * 10).contains(&ts_step),
            "{name}: timestamp jumps {} -> {}",
            pair[0].2,
            pair[1].2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_stream_stays_continuous_when_the_publisher_reconnects() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start_with(Backend::Sqlite, &[("MEDIA_RECONNECT_GRACE_MS", "3000")]).await;
    let st = live_stream(&s).await;
    let mut requester = s.socket(&st.client_token).await;
    let mut first =
        webrtc_peer::Publisher::start(&s.base, &st.sid, &st.publish, Default::default()).await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The camera's network drops: its transport closes without a WHIP DELETE.
    let (first_end, first_audio_end) = first.stop_sending().await;
    let _ = first.pc.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // It comes back with a new WHIP session on the same publish token, within the grace.
    let mut second = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            first: 100_000,
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (second_end, second_audio_end) = second.stop_sending().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    {
        let got = viewer.received.lock().await;
        assert_eq!(got.corrupt, 0);
        let video: Vec<u32> = got.video.iter().map(|v| v.0).collect();
        let split = video
            .iter()
            .position(|i| *i >= 100_000)
            .expect("frames from the reconnected publisher");
        let (before, after) = video.split_at(split);
        assert_eq!(before, &(before[0]..first_end).collect::<Vec<_>>()[..]);
        assert!(
            got.video[split].1,
            "the new publisher's video starts at a keyframe"
        );
        assert!(after[0] < 100_010, "late start: {}", after[0]);
        assert_eq!(after, &(after[0]..second_end).collect::<Vec<_>>()[..]);
        let split = got.audio.iter().position(|i| *i >= 100_000).unwrap();
        let (before, after) = got.audio.split_at(split);
        assert_eq!(
            before,
            &(before[0]..first_audio_end).collect::<Vec<_>>()[..]
        );
        assert_eq!(after, &(after[0]..second_audio_end).collect::<Vec<_>>()[..]);
        assert_one_continuous_rtp_stream("video", &got.video_rtp);
        assert_one_continuous_rtp_stream("audio", &got.audio_rtp);
    }
    // Lost again and not back within the grace period: the session ends for everyone.
    let _ = second.pc.close().await;
    let lost_at = std::time::Instant::now();
    let ended = requester
        .wait_for("stream:ended", std::time::Duration::from_secs(20), |v| {
            v["id"] == st.sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "publisher_left", "{ended}");
    assert!(
        lost_at.elapsed() >= std::time::Duration::from_millis(2500),
        "ended before the grace period: {:?}",
        lost_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_the_simulcast_layer_its_bandwidth_allows() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let mut publisher = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            simulcast: true,
            ..Default::default()
        },
    )
    .await;
    // One viewer on a fast link (TWCC-driven estimate), one reporting 300 kbit/s in REMB.
    let fast = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    let slow =
        webrtc_peer::Viewer::start_with(&s.base, &st.sid, &st.subscribe2, Some(300_000), None)
            .await;
    // Wait until the fast viewer has climbed to the high layer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let on_high = fast
            .received
            .lock()
            .await
            .video
            .last()
            .is_some_and(|v| v.2 == 2);
        if on_high {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fast viewer never reached the high layer: {}",
            s.get_bearer(
                &format!("/streams/{}/sfu/session", st.sid),
                &st.client_token
            )
            .await
            .text
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let session = s
        .get_bearer(
            &format!("/streams/{}/sfu/session", st.sid),
            &st.client_token,
        )
        .await;
    let metrics = s.get("/metrics").await.text;
    let (video_end, _) = publisher.stop_sending().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let fast_got = fast.received.lock().await;
    let slow_got = slow.received.lock().await;
    assert_eq!(fast_got.corrupt + slow_got.corrupt, 0);
    // The slow viewer's REMB arrives only after its first packets, so its own TWCC estimate
    // may briefly lift it before the cap applies; from then on it stays on the low layer.
    // Its last 60 frames (2 s) are all low-layer, complete and in order.
    assert!(slow_got.video[0].1);
    let tail = &slow_got.video[slow_got.video.len().saturating_sub(60)..];
    assert_eq!(tail.len(), 60);
    assert!(
        tail.iter().all(|v| v.2 == 1),
        "slow viewer on the high layer at the end"
    );
    let indices: Vec<u32> = tail.iter().map(|v| v.0).collect();
    assert_eq!(indices, (indices[0]..video_end).collect::<Vec<_>>());
    // The fast viewer went up once, at a keyframe of the high layer, and stayed there;
    // indices never go back and never skip.
    let layers: Vec<u8> = fast_got.video.iter().map(|v| v.2).collect();
    let switches: Vec<usize> = (1..layers.len())
        .filter(|&i| layers[i] != layers[i - 1])
        .collect();
    assert!(switches.len() <= 1, "fast viewer flapped: {switches:?}");
    assert_eq!(*layers.last().unwrap(), 2);
    for &i in &switches {
        assert!(
            fast_got.video[i].1,
            "switch to the high layer not at a keyframe"
        );
    }
    for pair in fast_got.video.windows(2) {
        let step = pair[1].0 - pair[0].0;
        assert!(step <= 1, "frames skipped: {} -> {}", pair[0].0, pair[1].0);
    }
    assert_eq!(fast_got.video.last().unwrap().0, video_end - 1);
    assert_one_continuous_rtp_stream("fast viewer video", &fast_got.video_rtp);
    assert_one_continuous_rtp_stream("slow viewer video", &slow_got.video_rtp);

    // The server's own account agrees: per-viewer layer, switch count and estimate.
    assert_eq!(session.status, 200, "{}", session.text);
    let viewers: Vec<&serde_json::Value> = session.json["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "subscriber")
        .collect();
    assert_eq!(viewers.len(), 2, "{}", session.text);
    let layers: Vec<&str> = viewers
        .iter()
        .map(|p| p["layer"].as_str().unwrap_or(""))
        .collect();
    assert!(
        layers.contains(&"h") && layers.contains(&"l"),
        "{}",
        session.text
    );
    for p in &viewers {
        assert!(
            p["estimatedBitrate"].as_u64().is_some_and(|b| b > 0),
            "{}",
            session.text
        );
    }
    let estimate: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchpost_media_egress_estimated_bitrate_bps "))
        .and_then(|v| v.parse().ok())
        .expect("estimate gauge in /metrics");
    assert!(estimate > 300_000, "{metrics}");
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_recover_packet_loss_on_both_legs() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    // Every 15th video packet from the camera is lost on the way in, and every 15th on the
    // way out to the viewer: the SFU NACKs the camera, and answers the viewer's NACKs from
    // its own send cache.
    let mut publisher = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            loss: Some(webrtc_peer::Loss {
                drop_every: 15,
                towards_sfu: true,
            }),
            ..Default::default()
        },
    )
    .await;
    let viewer = webrtc_peer::Viewer::start_with(
        &s.base,
        &st.sid,
        &st.subscribe,
        None,
        Some(webrtc_peer::Loss {
            drop_every: 15,
            towards_sfu: false,
        }),
    )
    .await;
    // A viewer on a clean link sees only the camera leg's losses (repaired by the SFU).
    let clean = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe2).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // The last losses need later packets to show as gaps: heal both links for a few frames
    // before the camera stops (a lost final packet is beyond any NACK's reach).
    for link in [&publisher.link, &viewer.link] {
        link.healed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (video_end, audio_end) = publisher.stop_sending().await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_complete_from_first_keyframe(
        "clean viewer",
        &*clean.received.lock().await,
        video_end,
        audio_end,
    );
    let in_dropped = publisher
        .link
        .dropped
        .load(std::sync::atomic::Ordering::SeqCst);
    let out_dropped = viewer
        .link
        .dropped
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        in_dropped >= 5 && out_dropped >= 5,
        "{in_dropped} {out_dropped}"
    );
    let metrics = s.get("/metrics").await.text;
    eprintln!(
        "NACKs sent to the camera: {}, received from the viewer: {}",
        metric(&metrics, "watchpost_media_nacks_sent_total"),
        metric(&metrics, "watchpost_media_nacks_received_total")
    );
    {
        let got = viewer.received.lock().await;
        eprintln!(
            "dropped {in_dropped} packets in and {out_dropped} out; viewer got {} frames and {} retransmissions",
            got.video.len(),
            got.repairs
        );
        assert_complete_from_first_keyframe("lossy viewer", &got, video_end, audio_end);
    }
    let metrics = s.get("/metrics").await.text;
    assert!(
        metric(&metrics, "watchpost_media_nacks_sent_total") > 0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "watchpost_media_nacks_received_total") > 0,
        "{metrics}"
    );
    // Datagrams leave in messages: a GSO run of one viewer's packets is one.
    let messages = metric(&metrics, "watchpost_media_send_messages_total");
    assert!(
        messages > 0 && messages <= metric(&metrics, "watchpost_media_packets_out_total"),
        "{metrics}"
    );
    let _ = viewer.pc.close().await;
    let _ = publisher.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_media_public_ip_is_advertised_as_a_host_candidate() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[("MEDIA_PUBLIC_IP", "127.0.0.1, 198.51.100.20")],
    )
    .await;
    let st = live_stream(&s).await;
    let r = post_sdp(
        &s,
        &format!("/whep/{}", st.sid),
        Some(&st.subscribe),
        &offer("recvonly", "VP8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for ip in ["127.0.0.1", "198.51.100.20"] {
        assert!(
            r.text
                .lines()
                .any(|l| l.starts_with("a=candidate:") && l.contains(&format!(" {ip} "))),
            "{ip} missing:\n{}",
            r.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_signalling_endpoints_publish_subscribe_trickle_and_close() {
    let s = TestServer::start(Backend::Sqlite).await;
    let st = live_stream(&s).await;
    let base = format!("/streams/{}/sfu", st.sid);
    let transport = |sdp: String| json!({"type": "offer", "sdp": sdp});

    // Only the session's camera publishes; only its viewers subscribe.
    s.call(
        Method::POST,
        &format!("{base}/publish-transport"),
        &st.client_token,
        Some(transport(offer("sendonly", "VP8"))),
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    let (_, other_cam) = s.register_device(&st.user_token, "Garage", "camera").await;
    s.call(Method::GET, &format!("{base}/session"), &other_cam, None)
        .await
        .expect_error(403, "NOT_A_PARTICIPANT");
    s.call(
        Method::POST,
        &format!("{base}/publish-transport"),
        &st.camera_token,
        Some(json!({"type": "answer", "sdp": offer("sendonly", "VP8")})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");

    let published = s
        .call(
            Method::POST,
            &format!("{base}/publish-transport"),
            &st.camera_token,
            Some(transport(offer("sendonly", "VP8"))),
        )
        .await;
    assert_eq!(published.status, 200, "{}", published.text);
    assert_eq!(published.json["type"], "answer");
    assert!(
        published.json["sdp"]
            .as_str()
            .unwrap()
            .contains("a=recvonly")
    );
    let publisher_id = published.json["participantId"]
        .as_str()
        .unwrap()
        .to_string();
    let subscribed = s
        .call(
            Method::POST,
            &format!("{base}/subscribe-transport"),
            &st.client_token,
            Some(transport(offer("recvonly", "VP8"))),
        )
        .await;
    assert_eq!(subscribed.status, 200, "{}", subscribed.text);
    let viewer_id = subscribed.json["participantId"]
        .as_str()
        .unwrap()
        .to_string();

    // The session lists both, under aliases: a transport id is the capability to close it.
    let session = s
        .call(
            Method::GET,
            &format!("{base}/session"),
            &st.client_token,
            None,
        )
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    let listed = session.json["participants"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{}", session.text);
    assert!(!session.text.contains(&publisher_id) && !session.text.contains(&viewer_id));
    assert_eq!(listed[0]["role"], "publisher");
    assert_eq!(listed[1]["role"], "subscriber");

    // Bad requests: no device token, another household's device, a malformed or an
    // unknown-field body, an oversized candidate.
    let r = Reply::from(
        s.http
            .post(s.url(&format!("{base}/trickle")))
            .json(&json!({"participantId": viewer_id, "candidate": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.json["code"].is_string(), "{}", r.text);
    let stranger = live_stream(&s).await;
    s.call(
        Method::POST,
        &format!("{base}/close"),
        &stranger.client_token,
        Some(json!({"participantId": viewer_id})),
    )
    .await
    .expect_error(404, "STREAM_NOT_FOUND");
    let r = Reply::from(
        s.http
            .post(s.url(&format!("{base}/close")))
            .bearer_auth(&st.client_token)
            .header("content-type", "application/json")
            .body("{\"participantId\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(400, "INVALID_JSON");
    s.call(
        Method::POST,
        &format!("{base}/close"),
        &st.client_token,
        Some(json!({"participantId": viewer_id, "extra": 1})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::POST,
        &format!("{base}/trickle"),
        &st.client_token,
        Some(json!({"participantId": format!("sub-{}", "x".repeat(100)), "candidate": ""})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");

    // Trickle: validated, then accepted (ICE-lite learns addresses from the checks).
    s.call(
        Method::POST,
        &format!("{base}/trickle"),
        &st.client_token,
        Some(json!({"participantId": viewer_id, "candidate": "not a candidate"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    s.call(
        Method::POST,
        &format!("{base}/trickle"),
        &st.client_token,
        Some(json!({"participantId": "../../etc", "candidate": ""})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    let trickled = s
        .call(
            Method::POST,
            &format!("{base}/trickle"),
            &st.client_token,
            Some(json!({
                "participantId": viewer_id,
                "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"
            })),
        )
        .await;
    assert_eq!(trickled.status, 204, "{}", trickled.text);

    // Only the camera closes the camera's transport.
    s.call(
        Method::POST,
        &format!("{base}/close"),
        &st.client_token,
        Some(json!({"participantId": publisher_id})),
    )
    .await
    .expect_error(403, "NOT_A_PARTICIPANT");
    // Close the viewer's transport: it leaves, the publisher stays.
    let closed = s
        .call(
            Method::POST,
            &format!("{base}/close"),
            &st.client_token,
            Some(json!({"participantId": viewer_id})),
        )
        .await;
    assert_eq!(closed.status, 204, "{}", closed.text);
    let mut remaining = 0;
    for _ in 0..50 {
        let session = s
            .call(
                Method::GET,
                &format!("{base}/session"),
                &st.client_token,
                None,
            )
            .await;
        remaining = session.json["participants"].as_array().unwrap().len();
        if remaining == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(remaining, 1, "viewer transport still listed after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_network_dies_ends_the_stream() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start_with(Backend::Sqlite, &[("MEDIA_RECONNECT_GRACE_MS", "0")]).await;
    let st = live_stream(&s).await;
    let mut requester = s.socket(&st.client_token).await;
    // The camera reaches the SFU through a relay that can be cut, like a network that dies
    // without a goodbye: no DTLS close, no WHIP DELETE, just silence.
    let mut publisher = webrtc_peer::Publisher::start(
        &s.base,
        &st.sid,
        &st.publish,
        webrtc_peer::Options {
            loss: Some(webrtc_peer::Loss {
                drop_every: u32::MAX,
                towards_sfu: true,
            }),
            ..Default::default()
        },
    )
    .await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &st.sid, &st.subscribe).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!viewer.received.lock().await.video.is_empty());
    publisher
        .link
        .cut
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cut_at = std::time::Instant::now();
    // Eight seconds of silence and the transport is declared dead (no grace configured).
    let ended = requester
        .wait_for("stream:ended", std::time::Duration::from_secs(40), |v| {
            v["id"] == st.sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "publisher_left", "{ended}");
    let took = cut_at.elapsed();
    eprintln!("stream ended {took:?} after the camera's network died");
    assert!(
        took >= std::time::Duration::from_secs(7) && took < std::time::Duration::from_secs(12),
        "{took:?}"
    );
    let _ = publisher.stop_sending().await;
    let _ = viewer.pc.close().await;
}

/// SIGTERM mid-stream, to the real binary: a webrtc-rs camera publishing over WHIP, a
/// webrtc-rs viewer receiving over WHEP, the camera's Socket.IO connection and an upload in
/// flight. The upload still gets its normal response, and the process exits 0 within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_finishes_in_flight_requests_and_exits_cleanly() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _media = MEDIA_PEERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Child(
        std::process::Command::new(binary())
            .current_dir(dir.path())
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .env("MEDIA_PUBLIC_IP", "127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read the log as it comes (a full pipe would stall the server); kept for the failure
    // messages.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.0.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    while api.http.get(api.url("/api/auth/ok")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server did not start: {}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A live stream: the camera on Socket.IO, publishing; a viewer receiving.
    let st = live_stream(&api).await;
    let camera_socket = api.socket(&st.camera_token).await;
    let r = api
        .call(
            Method::POST,
            "/videos/upload-url",
            &st.user_token,
            Some(
                json!({"fileName": "clip.mp4", "deviceId": st.camera, "contentType": "video/mp4"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let upload_url = r.json["uploadUrl"].as_str().unwrap();
    let upload_path = &upload_url[upload_url.find("/storage/").expect("a local upload URL")..];
    let mut publisher =
        webrtc_peer::Publisher::start(&api.base, &st.sid, &st.publish, Default::default()).await;
    let viewer = webrtc_peer::Viewer::start(&api.base, &st.sid, &st.subscribe).await;
    let frames = || async { viewer.received.lock().await.video.len() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames().await < 15 {
        assert!(Instant::now() < deadline, "no media reached the viewer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An upload in flight: the headers and half the body before the signal, the rest after.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut upload = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    upload
        .write_all(
            format!(
                "PUT {upload_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.write_all(first_half).await.unwrap();
    upload.flush().await.unwrap();
    let before = frames().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        frames().await > before,
        "media stopped flowing before the signal"
    );

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let signalled = Instant::now();

    // The in-flight request completes with its normal response.
    tokio::time::sleep(Duration::from_millis(300)).await;
    upload.write_all(second_half).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        upload.read_to_string(&mut response),
    )
    .await
    .expect("no response to the in-flight upload within 10 s of SIGTERM")
    .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight upload answered: {response:?}; log: {}",
        log.lock().unwrap()
    );

    // Exit 0 within 10 s of the signal.
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM; log: {}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = signalled.elapsed();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    eprintln!("exited with {status} {took:?} after SIGTERM, mid-stream");
    assert_eq!(status.code(), Some(0), "exit status {status}; log: {log}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    assert!(log.contains("shut down cleanly"), "{log}");
    // The media plane hung up the camera and the stream was ended through the usual path,
    // after the sockets were closed, without anything panicking on the way out.
    assert!(
        log.contains("publisher left") && log.contains("media server stopping"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    drop(camera_socket);
    let _ = publisher.stop_sending().await;
    let _ = viewer.pc.close().await;
    let _ = publisher.pc.close().await;
}
