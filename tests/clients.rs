//! Real clients against the server: the official Socket.IO client (Node) playing camera
//! and phone over both transports, and the mobile simulator page in two Chromium tabs.

mod common;

use common::{Backend, TestServer};

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
