//! The household every control-plane test starts from: one user with a camera and a
//! phone, linked. Shared by the per-domain test files (devices, commands, events, streams,
//! authorization).

use std::time::Duration;

use serde_json::Value;

use super::{TestServer, unique_email};

/// How long a test waits for a Socket.IO event it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// Matches an event payload by its `id`.
pub fn id_is(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["id"] == id
}

/// A user with a camera and a client, linked. Returns (user token, camera (id, token),
/// client (id, token)).
pub async fn household(s: &TestServer) -> (String, (String, String), (String, String)) {
    let (token, _) = s.sign_up(&unique_email("home"), "password-1").await;
    let camera = s.register_device(&token, "Porch camera", "camera").await;
    let client = s.register_device(&token, "Phone", "client").await;
    s.link(&token, &camera.0, &client.0).await;
    (token, camera, client)
}
