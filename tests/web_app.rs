//! The household web app at `/`, in headless Chromium against the real server (SQLite, the
//! embedded store, the SFU and the recorder): `tests/node/household-app.mjs` drives it as a
//! family would, and this test plays the network: when the script says `OUTAGE`, the
//! server stops and comes back on the same address.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Backend, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_uses_the_web_app_in_a_browser() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("watchpost=info,watchpost_media=info")
        .with_test_writer()
        .try_init();
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            // Short segments and post-roll so the motion clip is uploaded within seconds.
            ("RECORDING_SEGMENT_SECONDS", "2"),
            ("RECORDING_POST_ROLL_SECS", "1"),
        ],
    )
    .await;
    let shots = std::env::var("WATCHPOST_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| server.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let base = server.api.base.clone();
    // Taken out and put back when the script asks for an outage.
    let mut server = Some(server);
    let mut node = tokio::process::Command::new("node")
        .arg(common::node_script("household-app.mjs"))
        .arg(&base)
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/setup.sh installs it)");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut transcript = String::new();
    let mut outages = 0;
    let read_all = async {
        while let Some(line) = lines.next_line().await.expect("read the script's output") {
            eprintln!("{line}");
            transcript.push_str(&line);
            transcript.push('\n');
            if line == "OUTAGE" {
                outages += 1;
                let stopped = server.take().expect("one server at a time");
                server = Some(stopped.restart_on_same_port().await);
                stdin.write_all(b"back\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(200), read_all)
        .await
        .expect("the browser script finishes within 200 s");
    let status = node.wait().await.unwrap();
    assert!(status.success(), "the web app script failed:\n{transcript}");
    assert_eq!(outages, 1, "{transcript}");
    assert!(transcript.contains("TIMINGS "), "{transcript}");
    for name in [
        "sign-in",
        "devices-pairing",
        "cameras-live",
        "timeline",
        "recordings",
        "cameras-phone",
        "timeline-phone",
    ] {
        let path = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 5_000, "{} is missing or empty", path.display());
    }
    server.unwrap().stop().await;
}

/// With Google sign-in configured, the sign-in screen offers "Continue with Google", which
/// takes the browser to the provider (a loopback address the script intercepts).
#[tokio::test]
async fn continue_with_google_appears_when_google_is_configured() {
    let authorize = "http://127.0.0.1:9/authorize";
    let server = TestServer::start_with(
        Backend::Sqlite,
        &[
            ("GOOGLE_CLIENT_ID", "web-app-test-client"),
            ("GOOGLE_CLIENT_SECRET", "web-app-test-secret"),
            ("GOOGLE_AUTHORIZE_URL", authorize),
            ("GOOGLE_TOKEN_URL", "http://127.0.0.1:9/token"),
            ("GOOGLE_USERINFO_URL", "http://127.0.0.1:9/userinfo"),
        ],
    )
    .await;
    let out = common::run_node(
        "web-app-google.mjs",
        &[&server.api.base, authorize],
        "Continue with Google",
    )
    .await;
    let reached = out.trim().lines().last().unwrap();
    assert!(reached.starts_with(authorize), "{reached}");
    assert!(
        reached.contains("client_id=web-app-test-client"),
        "{reached}"
    );
    assert!(!reached.contains("web-app-test-secret"), "{reached}");
    server.stop().await;
}

/// The web app in Firefox: sign-up, pairing a camera, the live grid over Firefox's own
/// Socket.IO session, the live view's controls and the phone-width layout.
#[tokio::test]
async fn the_web_app_works_in_firefox() {
    let server = TestServer::start(Backend::Sqlite).await;
    common::run_node(
        "firefox-app.mjs",
        &[&server.api.base],
        "the web app in Firefox",
    )
    .await;
    server.stop().await;
}
