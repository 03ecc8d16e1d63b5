//! Motion events from a camera: start and end over HTTP, the Socket.IO fan-out to linked
//! clients only, the automatic close after the maximum duration, and the filtered list, on
//! SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::household::{WAIT, household, id_is};
use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

/// Start and end reach linked clients (not an unlinked phone of the same user); an event
/// ends once; only a camera starts one, with a numeric score.
async fn motion_start_and_end_reach_linked_clients_only(backend: Backend) {
    let s = TestServer::start(backend).await;
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
    // A body must say it is JSON, as on every other route (no body at all is fine).
    for content_type in [Some("text/plain"), None] {
        let mut req = s
            .http
            .post(s.url("/events/motion/start"))
            .bearer_auth(&cam_token)
            .body(r#"{"score":0.7}"#);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        common::Reply::from(req.send().await.unwrap())
            .await
            .expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }
}

/// An empty body is fine; an event left open past the maximum is closed automatically and
/// clients are told.
async fn an_open_event_is_closed_after_the_maximum_duration(backend: Backend) {
    let s = TestServer::start_with(backend, &[("MOTION_MAX_DURATION_SECS", "2")]).await;
    let (_, (_, cam_token), (_, cli_token)) = household(&s).await;
    let mut client = s.socket(&cli_token).await;
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
    let closed = client.wait_for("motion:ended", WAIT, id_is(&open_id)).await;
    assert!(closed["endedAt"].is_string());
}

/// The list filters by camera and by time, and refuses times it cannot read.
async fn events_are_listed_by_camera_and_time(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (token, (cam, cam_token), _) = household(&s).await;
    // One ended event and one still open.
    for end in [true, false] {
        let r = s
            .call(Method::POST, "/events/motion/start", &cam_token, None)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        if end {
            let ev = r.json["id"].as_str().unwrap();
            let r = s
                .call(
                    Method::POST,
                    &format!("/events/{ev}/motion/end"),
                    &cam_token,
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }

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

/// Found by schemathesis: no body started an event, but a JSON `null` body (the same
/// "no details") was a 400. No body, `null` and `{}` all start one.
async fn a_null_body_starts_motion_like_no_body(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (cam, cam_token), _) = household(&s).await;
    for body in [None, Some("null"), Some("{}"), Some(" null ")] {
        let mut req = s
            .http
            .post(s.url("/events/motion/start"))
            .bearer_auth(&cam_token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 201, "{body:?}");
        let event: Value = r.json().await.unwrap();
        assert_eq!(event["cameraDeviceId"], cam.as_str(), "{body:?}");
        let r = s
            .call(
                Method::POST,
                &format!("/events/{}/motion/end", event["id"].as_str().unwrap()),
                &cam_token,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // Anything else that is not an object is still refused.
    let r = s
        .http
        .post(s.url("/events/motion/start"))
        .bearer_auth(&cam_token)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A camera in motion mode, online but not streaming, reports motion twice at once: the
/// server asks it for one stream to record, not two (only one would be ended after the
/// post-roll; the other would run on).
async fn two_motion_starts_at_once_open_one_recording_stream(backend: Backend) {
    let s = TestServer::start_with(backend, &[("RECORDING_MODE", "motion")]).await;
    let (_, (_, cam_token), _) = household(&s).await;
    let mut camera = s.socket(&cam_token).await;
    let start = || {
        s.call(
            Method::POST,
            "/events/motion/start",
            &cam_token,
            Some(json!({"score": 0.9})),
        )
    };
    let (a, b) = tokio::join!(start(), start());
    assert_eq!((a.status, b.status), (201, 201), "{} / {}", a.text, b.text);
    let requested = camera.wait_for("stream:requested", WAIT, |_| true).await;
    assert_eq!(requested["reason"], "recording", "{requested}");
    camera
        .expect_none("stream:requested", Duration::from_millis(500))
        .await;
    let r = s
        .call(Method::GET, "/streams/me/list", &cam_token, None)
        .await;
    let active: Vec<&Value> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["status"] == "requested" || x["status"] == "streaming")
        .collect();
    assert_eq!(active.len(), 1, "{}", r.text);
}

/// A camera whose clock runs ahead stamps `startedAt` a little in the future (accepted up
/// to five minutes); ending the event at once never gives it an end before its start.
async fn an_event_stamped_ahead_never_ends_before_it_started(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (_, (_, cam_token), _) = household(&s).await;
    let ahead = chrono::Utc::now() + chrono::Duration::minutes(2);
    let r = s
        .call(
            Method::POST,
            "/events/motion/start",
            &cam_token,
            Some(json!({"startedAt": ahead.to_rfc3339()})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let started = r.json["startedAt"].as_str().unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            &format!("/events/{id}/motion/end"),
            &cam_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    let ended = r.json["endedAt"].as_str().unwrap();
    assert!(parse(ended) >= parse(&started), "{started} .. {ended}");
}

both_backends!(
    a_null_body_starts_motion_like_no_body,
    an_event_stamped_ahead_never_ends_before_it_started,
    two_motion_starts_at_once_open_one_recording_stream,
    motion_start_and_end_reach_linked_clients_only,
    an_open_event_is_closed_after_the_maximum_duration,
    events_are_listed_by_camera_and_time,
);
