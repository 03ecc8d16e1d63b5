//! A benchmark's household: a user with a camera and a linked phone, and an accepted
//! stream between them, made through the public API as the apps make it.

use serde_json::{Value, json};

pub struct Household {
    pub sid: String,
    pub publish: String,
    pub subscribe: String,
}

pub async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (Value, Option<String>) {
    let mut req = http
        .post(format!("{base}{path}"))
        .header("origin", base)
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let token = r
        .headers()
        .get("set-auth-token")
        .map(|v| v.to_str().unwrap().to_string());
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    (v, token)
}

pub async fn get_token(http: &reqwest::Client, url: String, token: &str) -> String {
    let v: Value = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// A user with a camera and a linked phone, and an accepted stream between them.
pub async fn household(http: &reqwest::Client, base: &str, tag: &str) -> Household {
    let email = format!("{tag}-{}@bench.test", std::process::id());
    let (_, user) = post(
        http,
        base,
        "/api/auth/sign-up/email",
        None,
        json!({"email": email, "password": "password-1", "name": "Bench"}),
    )
    .await;
    let user = user.expect("session token");
    let mut devices = Vec::new();
    for (name, role) in [("Cam", "camera"), ("Phone", "client")] {
        let (v, _) = post(
            http,
            base,
            "/devices/register",
            Some(&user),
            json!({"name": name, "role": role}),
        )
        .await;
        devices.push((
            v["device"]["id"].as_str().unwrap().to_string(),
            v["deviceToken"].as_str().unwrap().to_string(),
        ));
    }
    let [(cam, cam_token), (cli, cli_token)] = <[_; 2]>::try_from(devices).unwrap();
    post(
        http,
        base,
        "/device-links",
        Some(&user),
        json!({"cameraDeviceId": cam, "clientDeviceId": cli}),
    )
    .await;
    let (session, _) = post(
        http,
        base,
        "/streams/request",
        Some(&cli_token),
        json!({"cameraDeviceId": cam}),
    )
    .await;
    let sid = session["id"].as_str().unwrap().to_string();
    post(
        http,
        base,
        &format!("/streams/{sid}/accept"),
        Some(&cam_token),
        json!({}),
    )
    .await;
    Household {
        publish: get_token(
            http,
            format!("{base}/streams/{sid}/publish-credentials"),
            &cam_token,
        )
        .await,
        subscribe: get_token(
            http,
            format!("{base}/streams/{sid}/subscribe-credentials"),
            &cli_token,
        )
        .await,
        sid,
    }
}
