//! The OAuth / OpenID Connect provider (Google by default): its endpoints, this server's
//! client credentials, and the token and userinfo calls. The client secret only ever goes
//! into the body of a token request.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::OAuthConfig;

/// A token or userinfo call that produced no JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Connection failure or timeout (described without the URL).
    Network(String),
    /// An answer that is not a JSON object.
    NotJson,
    /// No client id (`GOOGLE_CLIENT_ID`): nothing is sent, since the provider could only
    /// refuse a request that names no client.
    NotConfigured,
}

pub struct OAuthProvider {
    config: OAuthConfig,
    client: reqwest::Client,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `OAuthConfig`'s Debug already redacts the secret.
        f.debug_struct("OAuthProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuthProvider {
    pub fn new(config: &OAuthConfig) -> Self {
        Self {
            config: config.clone(),
            client: super::client(Duration::from_millis(config.timeout_ms), false),
        }
    }

    pub fn client_id(&self) -> Option<&str> {
        self.config.client_id.as_deref()
    }

    /// Both the client id and the secret are set.
    pub fn is_configured(&self) -> bool {
        self.config.client_id.is_some() && self.config.client_secret.is_some()
    }

    pub fn authorize_url(&self) -> &str {
        &self.config.authorize_url
    }

    /// `REDIRECT_URI`, if configured.
    pub fn redirect_uri(&self) -> Option<&str> {
        self.config.redirect_uri.as_deref()
    }

    pub fn desktop_callback_url(&self) -> &str {
        &self.config.desktop_callback_url
    }

    /// POSTs `params` plus the client id and secret, form-encoded, to the token endpoint.
    pub async fn token_request(
        &self,
        params: &[(&str, &str)],
    ) -> Result<Map<String, Value>, CallError> {
        let Some(client_id) = self.config.client_id.as_deref() else {
            return Err(CallError::NotConfigured);
        };
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 2);
        form.push(("client_id", client_id));
        form.push((
            "client_secret",
            self.config
                .client_secret
                .as_ref()
                .map(|s| s.expose())
                .unwrap_or_default(),
        ));
        form.extend_from_slice(params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .client
            .post(&self.config.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Network(super::describe(e)))?;
        json_object(response).await
    }

    /// The signed-in user's claims from the userinfo endpoint.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, CallError> {
        let response = self
            .client
            .get(&self.config.userinfo_url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| CallError::Network(super::describe(e)))?;
        if !response.status().is_success() {
            return Err(CallError::NotJson);
        }
        json_object(response).await
    }
}

async fn json_object(response: reqwest::Response) -> Result<Map<String, Value>, CallError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CallError::Network(super::describe(e)))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(CallError::NotJson),
    }
}
