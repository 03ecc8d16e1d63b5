//! Server-side recording, end to end: real VP8 + Opus published over WHIP by a webrtc-rs
//! peer (and Chromium's fake camera), recorded by the GStreamer pipeline, uploaded to the
//! S3-compatible test server or the embedded store, listed and served back by the API,
//! and checked with ffprobe. Then the faults: an S3 outage, a SIGKILL, a broken pipeline.

mod common;
mod webrtc_peer;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::household::WAIT;
use common::{Api, Backend, Store, TestServer, unique_email};
use reqwest::Method;
use serde_json::{Value, json};

/// One recording test at a time: each runs a real-time stream and a GStreamer pipeline.
static MEDIA_PEERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// About 2.5 Mbit/s of real VP8 (keyframe every 2 s) and Opus, looped by the publisher.
fn clip() -> Arc<webrtc_peer::Clip> {
    static CLIP: OnceLock<Arc<webrtc_peer::Clip>> = OnceLock::new();
    CLIP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        Arc::new(webrtc_peer::Clip::encode(dir.path(), 10, "2500k"))
    })
    .clone()
}

/// A household (user, camera, linked phone) with an accepted stream.
struct Live {
    email: String,
    user_id: String,
    user_token: String,
    camera: String,
    camera_token: String,
    client_token: String,
    sid: String,
    publish: String,
    subscribe: String,
}

async fn live(s: &Api) -> Live {
    let email = unique_email("rec");
    let (user_token, user) = s.sign_up(&email, "password-1").await;
    let (camera, camera_token) = s.register_device(&user_token, "Porch", "camera").await;
    let (client, client_token) = s.register_device(&user_token, "Phone", "client").await;
    s.link(&user_token, &camera, &client).await;
    let r = s
        .call(
            Method::POST,
            "/streams/request",
            &client_token,
            Some(json!({"cameraDeviceId": camera})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.json["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            &camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = |kind: &'static str, device: String| {
        let sid = sid.clone();
        async move {
            let r = s
                .call(
                    Method::GET,
                    &format!("/streams/{sid}/{kind}-credentials"),
                    &device,
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["token"].as_str().unwrap().to_string()
        }
    };
    Live {
        email,
        user_id: user["id"].as_str().unwrap().to_string(),
        publish: token("publish", camera_token.clone()).await,
        subscribe: token("subscribe", client_token.clone()).await,
        user_token,
        camera,
        camera_token,
        client_token,
        sid,
    }
}

/// What a camera app does with a stream request: accept it, get publish credentials and
/// publish the clip.
async fn accept_and_publish(s: &Api, sid: &str, camera_token: &str) -> webrtc_peer::Publisher {
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{sid}/accept"),
            camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(
            Method::GET,
            &format!("/streams/{sid}/publish-credentials"),
            camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_string();
    webrtc_peer::Publisher::start(
        &s.base,
        sid,
        &token,
        webrtc_peer::Options {
            clip: Some(clip()),
            ..Default::default()
        },
    )
    .await
}

async fn publish(s: &Api, live: &Live) -> webrtc_peer::Publisher {
    webrtc_peer::Publisher::start(
        &s.base,
        &live.sid,
        &live.publish,
        webrtc_peer::Options {
            clip: Some(clip()),
            ..Default::default()
        },
    )
    .await
}

/// The camera's only recording, once it exists.
async fn the_recording(s: &Api, live: &Live, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = s
            .call(
                Method::GET,
                &format!("/recordings?cameraDeviceId={}", live.camera),
                &live.user_token,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let Some(first) = r.json["items"].as_array().and_then(|a| a.first()) {
            return first.clone();
        }
        assert!(Instant::now() < deadline, "no recording appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the recording is over and every segment is uploaded; returns its detail.
async fn settled(s: &Api, token: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = s
            .call(Method::GET, &format!("/recordings/{id}"), token, None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let segments = r.json["segments"].as_array().unwrap();
        if r.json["status"] != "recording"
            && !segments.is_empty()
            && segments.iter().all(|s| !s["uploadedAt"].is_null())
        {
            return r.json;
        }
        assert!(
            Instant::now() < deadline,
            "recording did not settle: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// ffprobe's view of a file: (codec_type, codec_name) per stream, the duration, and each
/// stream's start time (seconds).
fn probe_timed(path: &Path) -> (Vec<(String, String)>, f64, Vec<f64>) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (scripts/setup.sh installs ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let starts = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["start_time"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(f64::NAN)
        })
        .collect();
    (streams, duration, starts)
}

/// Downloads every segment through its presigned URL and checks it with ffprobe; returns
/// the sum of the durations ffprobe reads.
async fn check_segments(s: &Api, token: &str, detail: &Value, live: &Live) -> f64 {
    let id = detail["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut probed = 0.0;
    for (i, segment) in detail["segments"].as_array().unwrap().iter().enumerate() {
        assert_eq!(segment["seq"], i, "segments are numbered without gaps");
        assert_eq!(
            segment["objectKey"],
            format!(
                "recordings/{}/{}/{id}/{i:06}.webm",
                live.user_id, live.camera
            )
        );
        assert_eq!(segment["contentType"], "video/webm");
        let r = s
            .call(
                Method::GET,
                &format!("/recordings/{id}/segments/{i}/download-url"),
                token,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let url = r.json["downloadUrl"].as_str().unwrap();
        let bytes = reqwest::get(url).await.unwrap();
        assert_eq!(bytes.status(), 200);
        let bytes = bytes.bytes().await.unwrap();
        assert_eq!(bytes.len() as i64, segment["sizeBytes"].as_i64().unwrap());
        let file = dir.path().join(format!("{i}.webm"));
        std::fs::write(&file, &bytes).unwrap();
        let (streams, duration, starts) = probe_timed(&file);
        assert!(
            streams.contains(&("video".into(), "vp8".into())),
            "segment {i}: {streams:?}"
        );
        // Audio and video start together in every segment (they stay in sync).
        assert!(
            (starts[0] - starts[1]).abs() < 0.15,
            "segment {i}: streams start at {starts:?}"
        );
        assert!(
            streams.contains(&("audio".into(), "opus".into())),
            "segment {i}: {streams:?}"
        );
        let recorded = segment["durationMs"].as_f64().unwrap() / 1000.0;
        assert!(
            (duration - recorded).abs() < 0.5,
            "segment {i}: ffprobe says {duration} s, the API {recorded} s"
        );
        probed += duration;
    }
    probed
}

async fn end_stream(s: &Api, live: &Live) {
    let r = s
        .call(
            Method::POST,
            &format!("/streams/{}/end", live.sid),
            &live.client_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn records_a_live_stream(backend: Backend, store: Store) {
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip(); // encoded once per run, before any timing starts
    let s = TestServer::start_store(
        backend,
        store,
        &[
            ("RECORDING_MODE", "always"),
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "s3cret-pass"),
        ],
    )
    .await;
    let live = live(&s).await;
    let mut phone = s.socket(&live.client_token).await;
    let started = Instant::now();
    let mut publisher = publish(&s, &live).await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &live.sid, &live.subscribe).await;

    let begun = phone
        .wait_for("recording:started", Duration::from_secs(10), |_| true)
        .await;
    let id = begun["id"].as_str().unwrap().to_string();
    assert_eq!(begun["status"], "recording");
    assert_eq!(begun["videoCodec"], "vp8");
    assert_eq!(begun["audioCodec"], "opus");
    assert_eq!(begun["reason"], "always");
    assert_eq!(begun["streamSessionId"], live.sid.as_str());
    // In progress: it cannot be deleted yet.
    s.call(
        Method::DELETE,
        &format!("/recordings/{id}"),
        &live.user_token,
        None,
    )
    .await
    .expect_error(409, "RECORDING_IN_PROGRESS");

    // Motion while recording: the event and the recording point at each other.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let motion = s
        .call(
            Method::POST,
            "/events/motion/start",
            &live.camera_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(motion.status, 201, "{}", motion.text);
    assert_eq!(motion.json["recordingIds"], json!([id]), "{}", motion.text);
    let event_id = motion.json["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = s
        .call(
            Method::POST,
            &format!("/events/{event_id}/motion/end"),
            &live.camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The ended event (also sent as motion:ended) names the recording covering it, as
    // GET /events does: a client replacing its copy keeps the clip.
    assert_eq!(r.json["recordingIds"], json!([id]), "{}", r.text);

    let stream_for = Duration::from_secs(25);
    tokio::time::sleep(stream_for.saturating_sub(started.elapsed())).await;
    publisher.stop_sending().await;
    let streamed = started.elapsed().as_secs_f64();
    let packets = viewer.received.lock().await.video_rtp.len();
    assert!(
        packets > 3_000,
        "the live viewer got only {packets} video packets"
    );
    end_stream(&s, &live).await;
    let done = phone
        .wait_for("recording:completed", Duration::from_secs(15), |v| {
            v["id"] == id.as_str()
        })
        .await;
    assert_eq!(done["status"], "complete");

    let detail = settled(&s, &live.user_token, &id, Duration::from_secs(30)).await;
    let segments = detail["segments"].as_array().unwrap();
    // 10 s segments cut at the clip's keyframes (every 2 s): 25 s makes three.
    assert!(
        (3..=4).contains(&segments.len()),
        "{} segments: {detail}",
        segments.len()
    );
    let total_ms: i64 = segments
        .iter()
        .map(|s| s["durationMs"].as_i64().unwrap())
        .sum();
    assert_eq!(detail["durationMs"], total_ms);
    let total_bytes: i64 = segments
        .iter()
        .map(|s| s["sizeBytes"].as_i64().unwrap())
        .sum();
    assert_eq!(detail["sizeBytes"], total_bytes);
    // ~2.5 Mbit/s for ~25 s.
    assert!(total_bytes > 4_000_000, "{total_bytes} bytes recorded");
    let recorded = total_ms as f64 / 1000.0;
    assert!(
        (streamed - recorded).abs() < 10.0,
        "segments add up to {recorded} s of {streamed} s streamed"
    );
    assert_eq!(detail["motionEventIds"], json!([event_id]));
    let events = s
        .call(
            Method::GET,
            &format!("/events?cameraDeviceId={}", live.camera),
            &live.user_token,
            None,
        )
        .await;
    assert_eq!(events.json["items"][0]["recordingIds"], json!([id]));

    // The objects are in the store under the documented layout, once each.
    let prefix = format!("recordings/{}/{}/{id}/", live.user_id, live.camera);
    let stored = s
        .state
        .storage
        .list(Some(&prefix), None, 100)
        .await
        .unwrap();
    let keys: Vec<&str> = stored.objects.iter().map(|o| o.key.as_str()).collect();
    let expected: Vec<&str> = segments
        .iter()
        .map(|s| s["objectKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, expected);
    for (object, segment) in stored.objects.iter().zip(segments) {
        assert_eq!(object.size as i64, segment["sizeBytes"].as_i64().unwrap());
    }
    let probed = check_segments(&s, &live.user_token, &detail, &live).await;
    assert!(
        (probed - recorded).abs() < 1.5,
        "ffprobe {probed} s vs {recorded} s"
    );
    // Nothing is left on the server's disk.
    let local = s.dir.path().join("rec").join(&id);
    assert!(!local.exists(), "local segments were not cleaned up");
    let metrics = s.get("/metrics").await.text;
    let uploaded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchpost_recording_segments_uploaded_total "))
        .unwrap();
    assert_eq!(uploaded, segments.len().to_string());

    authorisation(&s, &live, &id).await;

    // The operator's dashboard lists it (Basic auth only).
    let admin = |auth: bool| {
        let req = s.http.get(s.url("/admin/recordings"));
        if auth {
            req.basic_auth("root", Some("s3cret-pass"))
        } else {
            req
        }
    };
    assert_eq!(admin(false).send().await.unwrap().status(), 401);
    let listed: Value = admin(true).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["backlogBytes"], 0);
    // A segment goes with its recording: the operator's raw object delete refuses it
    // rather than leave a segment row whose object is gone.
    let segment_key = segments[0]["objectKey"].as_str().unwrap();
    let refused = s
        .http
        .delete(s.url("/admin/object"))
        .basic_auth("root", Some("s3cret-pass"))
        .json(&json!({ "objectKey": segment_key }))
        .send()
        .await
        .unwrap();
    common::Reply::from(refused)
        .await
        .expect_error(409, "RECORDING_SEGMENT");
    assert!(
        s.state.storage.head(segment_key).await.unwrap().is_some(),
        "the refused delete kept the segment"
    );

    if store == Store::Local {
        // The recordings page plays it in Chromium across the first cut without a pause.
        let first = segments[0]["durationMs"].as_f64().unwrap() / 1000.0;
        let watch = format!("{:.1}", first + 3.0);
        let out = common::run_node(
            "recordings-page.mjs",
            &[&s.base, &live.email, "password-1", &watch],
            "recordings page playback",
        )
        .await;
        let played: Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
        assert!(
            played["currentTime"].as_f64().unwrap() >= first + 3.0 - 0.2,
            "{played}"
        );
        assert!(
            played["longestStallMs"].as_u64().unwrap() < 500,
            "playback paused at a segment cut: {played}"
        );
        assert_eq!(played["width"], 640, "{played}");
    }

    // Deleting removes the objects too.
    let r = s
        .call(
            Method::DELETE,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"deleted": true}));
    let stored = s
        .state
        .storage
        .list(Some(&prefix), None, 100)
        .await
        .unwrap();
    assert!(stored.objects.is_empty());
    s.call(
        Method::GET,
        &format!("/recordings/{id}"),
        &live.user_token,
        None,
    )
    .await
    .expect_error(404, "RECORDING_NOT_FOUND");
    s.stop().await;
}

/// Another user, an unlinked client and a camera are refused on every route; the linked
/// client may read.
async fn authorisation(s: &TestServer, live: &Live, id: &str) {
    let detail = format!("/recordings/{id}");
    let download = format!("/recordings/{id}/segments/0/download-url");
    let list = format!("/recordings?cameraDeviceId={}", live.camera);

    // The linked phone reads.
    let r = s.call(Method::GET, &detail, &live.client_token, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .call(Method::GET, &download, &live.client_token, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call(Method::GET, &list, &live.client_token, None).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    // ... but does not delete (a user session is needed).
    let r = s
        .call(Method::DELETE, &detail, &live.client_token, None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);

    // Another household's user, and its phone.
    let (other, _) = s.sign_up(&unique_email("other"), "password-1").await;
    let (_, other_phone) = s.register_device(&other, "Phone", "client").await;
    for token in [&other, &other_phone] {
        s.call(Method::GET, &detail, token, None)
            .await
            .expect_error(404, "RECORDING_NOT_FOUND");
        s.call(Method::GET, &download, token, None)
            .await
            .expect_error(404, "RECORDING_NOT_FOUND");
        let r = s.call(Method::GET, &list, token, None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["items"], json!([]));
    }
    s.call(Method::DELETE, &detail, &other, None)
        .await
        .expect_error(404, "RECORDING_NOT_FOUND");

    // The same household's phone, not linked to this camera.
    let (_, unlinked) = s
        .register_device(&live.user_token, "Tablet", "client")
        .await;
    s.call(Method::GET, &detail, &unlinked, None)
        .await
        .expect_error(404, "RECORDING_NOT_FOUND");
    s.call(Method::GET, &download, &unlinked, None)
        .await
        .expect_error(404, "RECORDING_NOT_FOUND");
    let r = s.call(Method::GET, &list, &unlinked, None).await;
    assert_eq!(r.json["items"], json!([]));

    // The camera itself.
    for path in [&detail, &download, &list] {
        s.call(Method::GET, path, &live.camera_token, None)
            .await
            .expect_error(403, "CLIENT_ONLY");
    }
    let r = s
        .call(Method::DELETE, &detail, &live.camera_token, None)
        .await;
    assert_eq!(r.status, 401);

    // Bad input: clear 4xx, never 500.
    let t = &live.user_token;
    s.call(Method::GET, "/recordings?status=bogus", t, None)
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let r = s
        .call(Method::GET, "/recordings?from=yesterday", t, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.call(Method::GET, "/recordings?cursor=%%%", t, None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    s.call(
        Method::GET,
        &format!("/recordings/{id}/segments/999/download-url"),
        t,
        None,
    )
    .await
    .expect_error(404, "SEGMENT_NOT_FOUND");
    let r = s
        .call(
            Method::GET,
            &format!("/recordings/{id}/segments/abc/download-url"),
            t,
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    s.call(Method::GET, "/recordings/nope", t, None)
        .await
        .expect_error(404, "RECORDING_NOT_FOUND");
    let r = s
        .call(Method::GET, "/recordings", "not-a-session", None)
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_stream_is_recorded_into_s3() {
    records_a_live_stream(Backend::Sqlite, Store::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_stream_is_recorded_into_the_embedded_store_on_postgres() {
    records_a_live_stream(Backend::Postgres, Store::Local).await;
}

/// A camera's own mode overrides the server's: `off` records nothing, `null` goes back to
/// the default; bad values are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_can_turn_recording_off() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start_with(Backend::Sqlite, &[("RECORDING_MODE", "always")]).await;
    let live = live(&s).await;
    let path = format!("/devices/{}", live.camera);
    let r = s
        .call(
            Method::PATCH,
            &path,
            &live.user_token,
            Some(json!({"recordingMode": "off"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["recordingMode"], "off");
    s.call(
        Method::PATCH,
        &path,
        &live.user_token,
        Some(json!({"recordingMode": "sometimes"})),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    let mut publisher = publish(&s, &live).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    publisher.stop_sending().await;
    let r = s
        .call(Method::GET, "/recordings", &live.user_token, None)
        .await;
    assert_eq!(r.json["items"], json!([]), "an `off` camera was recorded");
    let r = s
        .call(
            Method::PATCH,
            &path,
            &live.user_token,
            Some(json!({"recordingMode": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["recordingMode"].is_null());
    // A rename leaves the mode alone.
    let r = s
        .call(
            Method::PATCH,
            &path,
            &live.user_token,
            Some(json!({"recordingMode": "motion"})),
        )
        .await;
    assert_eq!(r.json["recordingMode"], "motion");
    let r = s
        .call(
            Method::PATCH,
            &path,
            &live.user_token,
            Some(json!({"name": "Garden"})),
        )
        .await;
    assert_eq!(r.json["recordingMode"], "motion");
    s.stop().await;
}

/// The recorder breaks mid-stream (its directory is replaced by a file, so the next
/// segment cannot open): the recording ends `failed`, the segments closed before stay,
/// and the live viewer keeps playing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pipeline_fails_the_recording_not_the_live_stream() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "always"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
        ],
    )
    .await;
    let live = live(&s).await;
    let mut phone = s.socket(&live.client_token).await;
    let mut publisher = publish(&s, &live).await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &live.sid, &live.subscribe).await;
    let begun = phone
        .wait_for("recording:started", Duration::from_secs(10), |_| true)
        .await;
    let id = begun["id"].as_str().unwrap().to_string();
    // Let a segment or two close, then break the directory.
    let dir = s.dir.path().join("rec").join(&id);
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let done = phone
        .wait_for("recording:completed", Duration::from_secs(15), |v| {
            v["id"] == id.as_str()
        })
        .await;
    assert_eq!(done["status"], "failed");
    assert!(!done["error"].as_str().unwrap_or("").is_empty());
    // The live stream goes on.
    let before = viewer.received.lock().await.video_rtp.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = viewer.received.lock().await.video_rtp.len();
    assert!(
        after >= before + 200,
        "the viewer got {} video packets in 2 s after the failure",
        after - before
    );
    let r = s
        .call(
            Method::GET,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    assert_eq!(r.json["status"], "failed");
    let metrics = s.get("/metrics").await.text;
    assert!(
        metrics.contains("watchpost_recordings_failed_total 1"),
        "{metrics}"
    );
    publisher.stop_sending().await;
    let _ = WAIT;
    s.stop().await;
}

/// A private S3-compatible server (s3s-fs) this test may stop and start again; the suite's
/// shared one must stay up for the other tests.
struct PrivateS3 {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<common::process::Child>,
}

const S3_KEY: &str = "recording-test";
const S3_SECRET: &str = "recording-test-secret";

impl PrivateS3 {
    fn start(dir: &Path) -> PrivateS3 {
        let mut s3 = PrivateS3 {
            port: common::process::free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        s3.resume();
        s3
    }

    fn resume(&mut self) {
        let bin = which("s3s-fs");
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs runs (scripts/setup.sh installs it)");
        self.child = Some(common::process::Child(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        self.child = None;
    }

    fn vars(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("MINIO_ENDPOINT", "127.0.0.1".to_string()),
            ("MINIO_PORT", self.port.to_string()),
            ("MINIO_ACCESS_KEY", S3_KEY.to_string()),
            ("MINIO_SECRET_KEY", S3_SECRET.to_string()),
            ("MINIO_USE_SSL", "false".to_string()),
            ("MINIO_BUCKET", bucket.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The object keys s3s-fs holds under `prefix` (it keeps objects as files).
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let root = self.dir.join(bucket);
        let mut keys: Vec<String> = walk(&root.join(prefix))
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().to_string())
            .filter(|k| !k.contains(".s3s"))
            .collect();
        keys.sort();
        keys
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn which(name: &str) -> String {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found"))
        .to_string_lossy()
        .to_string()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Checks a settled recording against what the store holds: every segment uploaded once,
/// numbered without gaps, each object the size the database says.
fn assert_stored_once(s3: &PrivateS3, bucket: &str, live: &Live, detail: &Value) {
    let id = detail["id"].as_str().unwrap();
    let segments = detail["segments"].as_array().unwrap();
    for (i, segment) in segments.iter().enumerate() {
        assert_eq!(segment["seq"], i, "no gaps");
        assert!(!segment["uploadedAt"].is_null());
    }
    let prefix = format!("recordings/{}/{}/{id}", live.user_id, live.camera);
    let expected: Vec<String> = segments
        .iter()
        .map(|s| s["objectKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(s3.keys(bucket, &prefix), expected, "stored objects");
    for segment in segments {
        let file = s3
            .dir
            .join(bucket)
            .join(segment["objectKey"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len() as i64,
            segment["sizeBytes"].as_i64().unwrap()
        );
    }
}

/// The S3 server goes away for 30 s mid-recording: segments wait on local disk (the
/// backlog shows in /metrics), and once it is back every one is uploaded, none missing or
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_recording_loses_nothing() {
    let _media = MEDIA_PEERS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = PrivateS3::start(&tmp.path().join("s3"));
    let bucket = "outage";
    let mut vars = s3.vars(bucket);
    vars.push(("RECORDING_MODE".into(), "always".into()));
    vars.push(("RECORDING_SEGMENT_SECONDS".into(), "4".into()));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = TestServer::start_with(Backend::Sqlite, &refs).await;
    let live = live(&s).await;
    let started = Instant::now();
    let mut publisher = publish(&s, &live).await;
    let recording = the_recording(&s, &live, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(5)).await;

    s3.stop();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let metrics = s.get("/metrics").await.text;
    assert!(
        metric(&metrics, "watchpost_recording_backlog_bytes") > 1_000_000,
        "{metrics}"
    );
    assert!(metric(&metrics, "watchpost_recording_upload_failures_total") > 0);
    let r = s
        .call(
            Method::GET,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    let waiting = r.json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["uploadedAt"].is_null())
        .count();
    assert!(
        waiting >= 3,
        "segments waiting during the outage: {}",
        r.text
    );
    // Not uploaded yet: no URL to hand out.
    let pending = r.json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["uploadedAt"].is_null())
        .unwrap()["seq"]
        .clone();
    s.call(
        Method::GET,
        &format!("/recordings/{id}/segments/{pending}/download-url"),
        &live.user_token,
        None,
    )
    .await
    .expect_error(409, "SEGMENT_NOT_UPLOADED");
    tokio::time::sleep(Duration::from_secs(15)).await;
    s3.resume();

    tokio::time::sleep(Duration::from_secs(5)).await;
    publisher.stop_sending().await;
    let streamed = started.elapsed().as_secs_f64();
    end_stream(&s, &live).await;
    let detail = settled(&s, &live.user_token, &id, Duration::from_secs(60)).await;
    assert_stored_once(&s3, bucket, &live, &detail);
    let recorded = detail["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (streamed - recorded).abs() < 6.0,
        "{recorded} s recorded of {streamed} s streamed"
    );
    let metrics = s.get("/metrics").await.text;
    assert_eq!(metric(&metrics, "watchpost_recording_backlog_bytes"), 0);
    assert_eq!(
        metric(&metrics, "watchpost_recording_segments_uploaded_total"),
        detail["segments"].as_array().unwrap().len() as u64
    );
    s.stop().await;
}

/// The server is SIGKILLed mid-recording while the object store is down, so closed
/// segments are still on local disk. After a restart they are all uploaded, the segment
/// that was open is finalised if it can be (at most it is lost), and the recording is
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_recording_loses_at_most_the_open_segment() {
    use common::process::{Child, binary, free_port};
    let _media = MEDIA_PEERS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = PrivateS3::start(&tmp.path().join("s3"));
    let bucket = "crash";
    let port = free_port();
    let work = tmp.path().join("server");
    std::fs::create_dir_all(&work).unwrap();
    let spawn = |s3: &PrivateS3| {
        let mut command = std::process::Command::new(binary());
        command
            .current_dir(&work)
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .env("MEDIA_PUBLIC_IP", "127.0.0.1")
            .env("RECORDING_MODE", "always")
            .env("RECORDING_SEGMENT_SECONDS", "4")
            .envs(s3.vars(bucket))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Child(command.spawn().unwrap())
    };
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let ready = |api: &Api| {
        let url = api.url("/api/auth/ok");
        let http = api.http.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while http.get(&url).send().await.is_err() {
                assert!(Instant::now() < deadline, "server did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut server = spawn(&s3);
    ready(&api).await;
    let live = live(&api).await;
    let started = Instant::now();
    let mut publisher = publish(&api, &live).await;
    let recording = the_recording(&api, &live, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s3.stop();
    tokio::time::sleep(Duration::from_secs(14)).await;
    let before = api
        .call(
            Method::GET,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    let closed = before.json["segments"].as_array().unwrap().len();
    assert!(closed >= 3, "{}", before.text);
    let killed_after = started.elapsed().as_secs_f64();
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    publisher.stop_sending().await;
    drop(publisher);

    s3.resume();
    let _server = spawn(&s3);
    ready(&api).await;
    let detail = settled(&api, &live.user_token, &id, Duration::from_secs(60)).await;
    assert_eq!(detail["status"], "complete", "closed at restart");
    let segments = detail["segments"].as_array().unwrap();
    assert!(segments.len() >= closed, "closed segments were lost");
    assert_stored_once(&s3, bucket, &live, &detail);
    let recorded = detail["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        recorded > killed_after - 4.0 - 2.5,
        "only {recorded} s of {killed_after} s survived the crash"
    );
    // Every stored segment plays, the recovered one included.
    let probed = check_segments(&api, &live.user_token, &detail, &live).await;
    assert!(
        (probed - recorded).abs() < 2.0,
        "ffprobe {probed} s vs {recorded} s"
    );
}

/// `motion` mode: a camera online over Socket.IO reports motion; the server requests its
/// stream (`reason: "recording"`, no requesting device), the camera publishes, the clip is
/// recorded and linked from the motion event, and after the motion ends plus the
/// post-roll the server ends the session itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_mode_records_the_motion_and_ends_the_stream_after_the_post_roll() {
    let _media = MEDIA_PEERS.lock().await;
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "motion"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_POST_ROLL_SECS", "3"),
        ],
    )
    .await;
    let (user_token, user) = s.sign_up(&unique_email("motion"), "password-1").await;
    let (camera, camera_token) = s.register_device(&user_token, "Porch", "camera").await;
    let (client, client_token) = s.register_device(&user_token, "Phone", "client").await;
    s.link(&user_token, &camera, &client).await;
    let mut camera_socket = s.socket(&camera_token).await;
    let mut phone = s.socket(&client_token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let motion_started = Instant::now();
    let motion = s
        .call(
            Method::POST,
            "/events/motion/start",
            &camera_token,
            Some(json!({"score": 0.9})),
        )
        .await;
    assert_eq!(motion.status, 201, "{}", motion.text);
    let event_id = motion.json["id"].as_str().unwrap().to_string();
    let requested = camera_socket
        .wait_for("stream:requested", Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(requested["reason"], "recording");
    assert!(requested["requesterDeviceId"].is_null());
    assert_eq!(requested["requestedByUserId"], user["id"]);
    let sid = requested["id"].as_str().unwrap().to_string();

    // The camera app does what it does for any request: accept and publish.
    let mut publisher = accept_and_publish(&s, &sid, &camera_token).await;
    let begun = phone
        .wait_for("recording:started", Duration::from_secs(10), |_| true)
        .await;
    let id = begun["id"].as_str().unwrap().to_string();
    assert_eq!(begun["reason"], "motion");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = s
        .call(
            Method::POST,
            &format!("/events/{event_id}/motion/end"),
            &camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let motion_ended = Instant::now();

    // The server ends its session once the post-roll (3 s) is over.
    let ended = camera_socket
        .wait_for("stream:ended", Duration::from_secs(10), |v| {
            v["id"] == sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "recording_complete");
    let after = motion_ended.elapsed();
    let streamed = motion_started.elapsed().as_secs_f64();
    assert!(
        after >= Duration::from_millis(2_900) && after < Duration::from_secs(6),
        "session ended {after:?} after the motion"
    );
    publisher.stop_sending().await;

    let detail = settled(&s, &user_token, &id, Duration::from_secs(30)).await;
    assert_eq!(detail["status"], "complete");
    assert_eq!(detail["reason"], "motion");
    assert_eq!(detail["streamSessionId"], sid.as_str());
    assert_eq!(detail["motionEventIds"], json!([event_id]));
    let recorded = detail["durationMs"].as_f64().unwrap() / 1000.0;
    // From the motion to the end of the post-roll, less the time the camera took to start
    // publishing (and at most part of a segment at the end).
    assert!(
        recorded <= streamed + 0.5 && recorded >= streamed - 4.0,
        "{recorded} s recorded of {streamed} s from motion to the stream's end: {detail}"
    );
    for segment in detail["segments"].as_array().unwrap() {
        assert!(!segment["uploadedAt"].is_null());
    }
    let events = s
        .call(
            Method::GET,
            &format!("/events?cameraDeviceId={camera}"),
            &user_token,
            None,
        )
        .await;
    assert_eq!(events.json["items"][0]["recordingIds"], json!([id]));
    s.stop().await;
}

/// Chromium's fake camera and microphone publish over WHIP for ~25 s and hang up: the
/// recording lands in the S3 test server as VP8 + Opus WebM segments adding up to the
/// streamed time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_fake_camera_is_recorded_into_s3() {
    let _media = MEDIA_PEERS.lock().await;
    let s =
        TestServer::start_store(Backend::Sqlite, Store::S3, &[("RECORDING_MODE", "always")]).await;
    let live = live(&s).await;
    let started = Instant::now();
    let out = common::run_node(
        "chromium-publish.mjs",
        &[&s.base, &live.sid, &live.publish, "25"],
        "Chromium WHIP publisher",
    )
    .await;
    let streamed = started.elapsed().as_secs_f64();
    let published: Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert!(
        published["framesSent"].as_u64().unwrap() > 300,
        "{published}"
    );
    let recording = the_recording(&s, &live, Duration::from_secs(5)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    let detail = settled(&s, &live.user_token, &id, Duration::from_secs(30)).await;
    assert_eq!(detail["status"], "complete");
    assert_eq!(detail["videoCodec"], "vp8");
    assert_eq!(detail["audioCodec"], "opus");
    let segments = detail["segments"].as_array().unwrap();
    let metrics = s.get("/metrics").await.text;
    assert!(
        segments.len() >= 2,
        "{detail}\nkeyframe requests: {}",
        metric(&metrics, "watchpost_media_keyframe_requests_total")
    );
    let recorded = detail["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        recorded <= streamed && recorded > 25.0 - 10.0,
        "segments add up to {recorded} s of ~25 s streamed ({streamed} s with start-up)"
    );
    let prefix = format!("recordings/{}/{}/{id}/", live.user_id, live.camera);
    let stored = s
        .state
        .storage
        .list(Some(&prefix), None, 100)
        .await
        .unwrap();
    assert_eq!(stored.objects.len(), segments.len());
    let probed = check_segments(&s, &live.user_token, &detail, &live).await;
    assert!(
        (probed - recorded).abs() < 1.5,
        "ffprobe {probed} s vs {recorded} s"
    );
    s.stop().await;
}

/// Retention: a recording older than `RECORDING_RETENTION_DAYS` is deleted with its objects
/// by the housekeeping job (its first round runs at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_recordings_are_deleted_after_the_retention_period() {
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip();
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "always"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_RETENTION_DAYS", "1"),
        ],
    )
    .await;
    let live = live(&s).await;
    let mut publisher = publish(&s, &live).await;
    let recording = the_recording(&s, &live, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    // The janitor closes recordings no recorder drives; this one is being recorded.
    assert_eq!(
        watchpost::recordings::service::close_orphaned(&s.state)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    publisher.stop_sending().await;
    end_stream(&s, &live).await;
    settled(&s, &live.user_token, &id, Duration::from_secs(30)).await;
    let prefix = format!("recordings/{}/{}/{id}/", live.user_id, live.camera);
    let watchpost::db::Db::Sqlite(pool) = &s.state.db else {
        unreachable!()
    };
    // An end the database did not take leaves the row `recording` (undeletable, out of
    // retention's reach): the janitor closes it, its recorder being gone.
    sqlx::query("UPDATE recordings SET status = 'recording', ended_at = NULL WHERE id = $1")
        .bind(&id)
        .execute(pool)
        .await
        .unwrap();
    let r = s
        .call(
            Method::DELETE,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    r.expect_error(409, "RECORDING_IN_PROGRESS");
    assert_eq!(
        watchpost::recordings::service::close_orphaned(&s.state)
            .await
            .unwrap(),
        1
    );
    let r = s
        .call(
            Method::GET,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    assert_eq!(r.json["status"], "complete", "{}", r.text);
    assert!(r.json["endedAt"].is_string(), "{}", r.text);
    assert!(
        !s.state
            .storage
            .list(Some(&prefix), None, 10)
            .await
            .unwrap()
            .objects
            .is_empty()
    );
    // Two days old now.
    sqlx::query("UPDATE recordings SET started_at = $1 WHERE id = $2")
        .bind(chrono::Utc::now() - chrono::Duration::days(2))
        .bind(&id)
        .execute(pool)
        .await
        .unwrap();
    let s = s.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .call(
                Method::GET,
                &format!("/recordings/{id}"),
                &live.user_token,
                None,
            )
            .await;
        if r.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.state
            .storage
            .list(Some(&prefix), None, 10)
            .await
            .unwrap()
            .objects
            .is_empty()
    );
    s.stop().await;
}

/// Deleting leaves nothing behind, whenever it happens. A recording deleted while the store
/// is down and its segments still wait on local disk: their uploads give up (their bytes
/// leave the backlog, which would otherwise fill and refuse every new recording), and once
/// the store is back nothing of it is stored. A camera deleted with its recordings: their
/// objects go with them (the database would drop only the rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_recording_or_its_camera_leaves_nothing_behind() {
    let _media = MEDIA_PEERS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = PrivateS3::start(&tmp.path().join("s3"));
    let bucket = "deletions";
    let mut vars = s3.vars(bucket);
    vars.push(("RECORDING_MODE".into(), "always".into()));
    vars.push(("RECORDING_SEGMENT_SECONDS".into(), "2".into()));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = TestServer::start_with(Backend::Sqlite, &refs).await;

    let live_one = live(&s).await;
    let mut publisher = publish(&s, &live_one).await;
    let recording = the_recording(&s, &live_one, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    s3.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    publisher.stop_sending().await;
    end_stream(&s, &live_one).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s
            .call(
                Method::GET,
                &format!("/recordings/{id}"),
                &live_one.user_token,
                None,
            )
            .await;
        let waiting = r.json["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["uploadedAt"].is_null())
            .count();
        if r.json["status"] != "recording" && waiting >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no waiting segments: {}", r.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        metric(
            &s.get("/metrics").await.text,
            "watchpost_recording_backlog_bytes"
        ) > 0
    );
    let r = s
        .call(
            Method::DELETE,
            &format!("/recordings/{id}"),
            &live_one.user_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &s.get("/metrics").await.text,
        "watchpost_recording_backlog_bytes",
    ) > 0
    {
        assert!(
            Instant::now() < deadline,
            "the deleted recording's segments stayed in the backlog"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s3.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let prefix = format!("recordings/{}/{}/{id}", live_one.user_id, live_one.camera);
    assert!(
        s3.keys(bucket, &prefix).is_empty(),
        "{:?}",
        s3.keys(bucket, &prefix)
    );

    let live_two = live(&s).await;
    let mut publisher = publish(&s, &live_two).await;
    let recording = the_recording(&s, &live_two, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    publisher.stop_sending().await;
    end_stream(&s, &live_two).await;
    settled(&s, &live_two.user_token, &id, Duration::from_secs(30)).await;
    let prefix = format!("recordings/{}/{}/{id}", live_two.user_id, live_two.camera);
    assert!(!s3.keys(bucket, &prefix).is_empty());
    let r = s
        .call(
            Method::DELETE,
            &format!("/devices/{}", live_two.camera),
            &live_two.user_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        s3.keys(bucket, &prefix).is_empty(),
        "{:?}",
        s3.keys(bucket, &prefix)
    );
    s.stop().await;
}

/// The local backlog is full (`RECORDING_MAX_LOCAL_BYTES`): a new segment is refused with a
/// log line and a metric, the recording stops, and the live stream is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_new_segments() {
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip();
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "always"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_MAX_LOCAL_BYTES", "1000"),
        ],
    )
    .await;
    let live = live(&s).await;
    let mut publisher = publish(&s, &live).await;
    let viewer = webrtc_peer::Viewer::start(&s.base, &live.sid, &live.subscribe).await;
    let recording = the_recording(&s, &live, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = s.get("/metrics").await.text;
    assert!(
        metric(&metrics, "watchpost_recording_segments_refused_total") >= 1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "watchpost_recording_segments_written_total"),
        0
    );
    let before = viewer.received.lock().await.video_rtp.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        viewer.received.lock().await.video_rtp.len() > before + 100,
        "live viewers untouched"
    );
    publisher.stop_sending().await;
    end_stream(&s, &live).await;
    let r = s
        .call(
            Method::GET,
            &format!("/recordings/{id}"),
            &live.user_token,
            None,
        )
        .await;
    assert_eq!(r.json["segments"], json!([]), "{}", r.text);
    s.stop().await;
}

/// SIGTERM mid-recording: the open segment is closed and uploaded before the process
/// exits (within the shutdown bound), and nothing is left on local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_open_segment_and_uploads_it() {
    use common::process::{Child, binary, free_port};
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = PrivateS3::start(&tmp.path().join("s3"));
    let bucket = "shutdown";
    let port = free_port();
    let work = tmp.path().join("server");
    std::fs::create_dir_all(&work).unwrap();
    let mut server = Child(
        std::process::Command::new(binary())
            .current_dir(&work)
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MEDIA_UDP_PORT", "0")
            .env("MEDIA_PUBLIC_IP", "127.0.0.1")
            .env("RECORDING_MODE", "always")
            .envs(s3.vars(bucket))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.http.get(api.url("/api/auth/ok")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = live(&api).await;
    let mut publisher = publish(&api, &live).await;
    let recording = the_recording(&api, &live, Duration::from_secs(10)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    // 6 s into a 10 s segment: it is open when the signal comes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.0.wait().unwrap();
        (server, status)
    })
    .await
    .unwrap()
    .1;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    publisher.stop_sending().await;
    // The segment is in the store and nothing waits on disk.
    let prefix = format!("recordings/{}/{}/{id}", live.user_id, live.camera);
    let keys = s3.keys(bucket, &prefix);
    assert_eq!(keys, [format!("{prefix}/000000.webm")]);
    let local = work.join("recordings").join(&id);
    assert!(!local.exists() || std::fs::read_dir(&local).unwrap().next().is_none());
}

/// A camera that never reports the end of its motion: the sweeper closes the event as
/// stale (`MOTION_MAX_DURATION_SECS`), and the stream the server opened for it still ends
/// after the post-roll instead of running forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_motion_stream_ends_even_when_the_motion_never_does() {
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip();
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "motion"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_POST_ROLL_SECS", "2"),
            ("MOTION_MAX_DURATION_SECS", "4"),
        ],
    )
    .await;
    let (user_token, _) = s.sign_up(&unique_email("stale"), "password-1").await;
    let (_camera, camera_token) = s.register_device(&user_token, "Porch", "camera").await;
    let mut camera_socket = s.socket(&camera_token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let motion = s
        .call(
            Method::POST,
            "/events/motion/start",
            &camera_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(motion.status, 201, "{}", motion.text);
    let requested = camera_socket
        .wait_for("stream:requested", Duration::from_secs(5), |_| true)
        .await;
    let sid = requested["id"].as_str().unwrap().to_string();
    let mut publisher = accept_and_publish(&s, &sid, &camera_token).await;
    let ended = camera_socket
        .wait_for("stream:ended", Duration::from_secs(15), |v| {
            v["id"] == sid.as_str()
        })
        .await;
    assert_eq!(ended["endReason"], "recording_complete");
    let after = started.elapsed();
    // Stale after 4 s (the sweeper runs each second), then the 2 s post-roll.
    assert!(
        after >= Duration::from_secs(5) && after < Duration::from_secs(10),
        "{after:?}"
    );
    publisher.stop_sending().await;
    s.stop().await;
}

/// A segment larger than the multipart threshold (16 MiB) goes up to S3 in parts and comes
/// back byte for byte; the embedded store takes it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_upload_in_parts_and_come_back_intact() {
    for store in [Store::S3, Store::Local] {
        let s = TestServer::start_store(Backend::Sqlite, store, &[]).await;
        let file = s.dir.path().join("big.webm");
        let bytes: Vec<u8> = (0..(20 * 1024 * 1024 + 123u32))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&file, &bytes).unwrap();
        let key = "recordings/u/c/r/000000.webm";
        s.state
            .storage
            .put_file(key, &file, "video/webm")
            .await
            .unwrap();
        let info = s.state.storage.head(key).await.unwrap().unwrap();
        assert_eq!(info.size, bytes.len() as u64, "{store:?}");
        let url = s
            .state
            .storage
            .presign_get(key, Duration::from_secs(60))
            .await
            .unwrap()
            .url;
        let back = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        assert!(
            back.as_ref() == bytes.as_slice(),
            "{store:?}: content differs"
        );
        s.stop().await;
    }
}

/// `motion` mode on a stream that is already live (someone is watching): the recorder runs
/// all along but keeps only what overlaps the motion, from one segment before it (the
/// pre-roll) to the post-roll after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_on_a_live_stream_keeps_one_segment_of_pre_roll_and_nothing_else() {
    let _media = MEDIA_PEERS.lock().await;
    let _ = clip();
    let s = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("RECORDING_MODE", "motion"),
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_POST_ROLL_SECS", "2"),
        ],
    )
    .await;
    let live = live(&s).await;
    let mut publisher = publish(&s, &live).await;
    let streaming_since = chrono::Utc::now();
    // Seven seconds of live video without motion: nothing is kept.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let r = s
        .call(Method::GET, "/recordings", &live.user_token, None)
        .await;
    assert_eq!(
        r.json["items"],
        json!([]),
        "kept without motion: {}",
        r.text
    );
    let motion = s
        .call(
            Method::POST,
            "/events/motion/start",
            &live.camera_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(motion.status, 201, "{}", motion.text);
    let event_id = motion.json["id"].as_str().unwrap().to_string();
    let motion_at =
        chrono::DateTime::parse_from_rfc3339(motion.json["startedAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = s
        .call(
            Method::POST,
            &format!("/events/{event_id}/motion/end"),
            &live.camera_token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ended_at = chrono::DateTime::parse_from_rfc3339(r.json["endedAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    // Still live well after the post-roll: those segments are not kept.
    tokio::time::sleep(Duration::from_secs(8)).await;
    publisher.stop_sending().await;
    end_stream(&s, &live).await;
    let recording = the_recording(&s, &live, Duration::from_secs(5)).await;
    let id = recording["id"].as_str().unwrap().to_string();
    let detail = settled(&s, &live.user_token, &id, Duration::from_secs(30)).await;
    assert_eq!(detail["reason"], "motion");
    assert_eq!(detail["motionEventIds"], json!([event_id]));
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let segments = detail["segments"].as_array().unwrap();
    let first = at(&segments[0]["startedAt"]);
    let last = segments.last().unwrap();
    let last_end = at(&last["startedAt"])
        + chrono::Duration::milliseconds(last["durationMs"].as_i64().unwrap());
    // Pre-roll: the kept footage starts before the motion, but not at the stream's start.
    assert!(
        first < motion_at,
        "no pre-roll: first segment at {first}, motion at {motion_at}"
    );
    assert!(
        first > streaming_since + chrono::Duration::seconds(2),
        "kept footage from long before the motion ({first}, stream from {streaming_since})"
    );
    // Post-roll: it ends after the motion plus 2 s, within a segment or two of it.
    assert!(
        last_end >= ended_at + chrono::Duration::seconds(2),
        "post-roll cut short: {last_end}"
    );
    assert!(
        last_end <= ended_at + chrono::Duration::seconds(2 + 5),
        "kept footage long after the post-roll: {last_end} (motion ended {ended_at})"
    );
    s.stop().await;
}
