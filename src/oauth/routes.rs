//! Google sign-in with the client secret held here: the StreamVault desktop flow
//! (`/auth/google`, `/auth/google/social`, `/auth/callback`, `/auth/refresh`) and Better
//! Auth's social sign-in for web clients (`/api/auth/sign-in/social`,
//! `/api/auth/callback/google`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION, SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::service::{ClientInfo, SESSION_TTL, create_session};
use crate::crypto;
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use crate::http::cookies::read_cookie;
use crate::http::extract::ClientIp;
use crate::http::json::Json;
use crate::oauth::service::{
    self, DRIVE_SCOPE, Flow, Profile, SOCIAL_SCOPE, StateData, WEB_SCOPE, encode_component,
    with_query,
};
use crate::state::AppState;
use crate::upstream::oauth::CallError;

/// Binds a web sign-in's state to the browser that started it (login CSRF).
const STATE_COOKIE: &str = "better-auth.state";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(google_drive))
        .routes(routes!(google_social))
        .routes(routes!(callback))
        .routes(routes!(refresh))
        .routes(routes!(sign_in_social))
        .routes(routes!(callback_google))
}

fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(LOCATION, v)]).into_response(),
        Err(_) => ApiError::internal("redirect target is not a valid header value").into_response(),
    }
}

fn plain(status: StatusCode, message: &str) -> ApiError {
    ApiError::plain(status, message)
}

#[derive(Serialize, ToSchema)]
pub struct StreamVaultError {
    pub error: String,
}

// ---------------------------------------------------------------- desktop flow

/// The reference's redirect URI: `REDIRECT_URI`, else `<proto>://<host>/auth/callback`.
fn desktop_redirect_uri(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(uri) = state.oauth.redirect_uri() {
        return uri.to_string();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let proto = header("x-forwarded-proto").unwrap_or("http");
    let host = header("x-forwarded-host")
        .or_else(|| header(HOST.as_str()))
        .unwrap_or("localhost");
    format!("{proto}://{host}/auth/callback")
}

/// A query parameter, decoded. One holding a control character once decoded counts as
/// absent: no state, code or error this server or Google issues has one (and PostgreSQL
/// refuses a NUL in text).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    raw_query_param(uri, name).filter(|v| !v.chars().any(char::is_control))
}

fn raw_query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn start_desktop(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    scope: &str,
) -> ApiResult<Response> {
    let Some(client_id) = state.oauth.client_id().map(str::to_string) else {
        return Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GOOGLE_CLIENT_ID not configured",
        ));
    };
    let client_state = raw_query_param(&uri, "state")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    if client_state.chars().count() > 2048 {
        return Err(plain(StatusCode::BAD_REQUEST, "state too long"));
    }
    if client_state.chars().any(char::is_control) {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "state must not contain control characters",
        ));
    }
    let redirect_uri = desktop_redirect_uri(&state, &headers);
    let issued = service::issue_state(
        &state.db,
        Flow::Desktop,
        StateData {
            redirect_uri: redirect_uri.clone(),
            client_state: Some(client_state),
            ..StateData::default()
        },
    )
    .await?;
    Ok(found(&with_query(
        state.oauth.authorize_url(),
        &[
            ("client_id", &client_id),
            ("redirect_uri", &redirect_uri),
            ("response_type", "code"),
            ("scope", scope),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("state", &issued.state),
            ("code_challenge", &issued.code_challenge),
            ("code_challenge_method", "S256"),
        ],
    )))
}

#[utoipa::path(
    get, path = "/auth/google", tag = "streamvault",
    params(("state" = Option<String>, Query, max_length = 2048, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$", description = "The client's state; returned to the loopback callback")),
    responses(
        (status = 302, description = "To the provider with Drive scopes, a server-issued state and a PKCE challenge"),
        (status = 400, body = StreamVaultError, description = "A state over 2048 characters or with control characters"),
        (status = 429, body = StreamVaultError, description = "More Google sign-ins started from this client than `OAUTH_RATE_LIMIT_MAX` a minute; `Retry-After` says when to try again"),
        (status = 500, body = StreamVaultError, description = r#"`{"error":"GOOGLE_CLIENT_ID not configured"}`"#),
    )
)]
pub async fn google_drive(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    start_desktop(state, headers, uri, DRIVE_SCOPE).await
}

#[utoipa::path(
    get, path = "/auth/google/social", tag = "streamvault",
    params(("state" = Option<String>, Query, max_length = 2048, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$", description = "The client's state; returned to the loopback callback")),
    responses(
        (status = 302, description = "To the provider with profile scopes, a server-issued state and a PKCE challenge"),
        (status = 400, body = StreamVaultError, description = "A state over 2048 characters or with control characters"),
        (status = 429, body = StreamVaultError, description = "More Google sign-ins started from this client than `OAUTH_RATE_LIMIT_MAX` a minute; `Retry-After` says when to try again"),
        (status = 500, body = StreamVaultError, description = r#"`{"error":"GOOGLE_CLIENT_ID not configured"}`"#),
    )
)]
pub async fn google_social(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    start_desktop(state, headers, uri, SOCIAL_SCOPE).await
}

#[utoipa::path(
    get, path = "/auth/callback", tag = "streamvault",
    params(
        ("code" = Option<String>, Query), ("error" = Option<String>, Query),
        ("state" = Option<String>, Query, description = "Must be a state this server issued, unused and unexpired"),
    ),
    responses((status = 302, description = "To the desktop callback with `tokens=<standard base64 JSON>` (and the client's `state`), or `error=<text>`: the provider's error, `no_code`, `invalid_state` or `token_exchange_failed`"))
)]
pub async fn callback(State(state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let loopback = state.oauth.desktop_callback_url().to_string();
    let issued = match query_param(&uri, "state") {
        Some(s) => service::consume_state(&state.db, Flow::Desktop, &s).await?,
        None => None,
    };
    let client_state = issued
        .as_ref()
        .and_then(|i| i.client_state.as_deref())
        .map(|s| format!("&state={}", encode_component(s)))
        .unwrap_or_default();
    let sep = if loopback.contains('?') { '&' } else { '?' };
    let fail = |error: &str| {
        found(&format!(
            "{loopback}{sep}error={}{client_state}",
            encode_component(error)
        ))
    };
    // An empty `error` is no error (the reference tests it for truthiness).
    if let Some(error) = query_param(&uri, "error").filter(|e| !e.is_empty()) {
        return Ok(fail(&error));
    }
    let Some(code) = query_param(&uri, "code").filter(|c| !c.is_empty()) else {
        return Ok(fail("no_code"));
    };
    let Some(issued) = issued else {
        tracing::warn!(
            "desktop OAuth callback with a state this server did not issue (or used or expired)"
        );
        return Ok(fail("invalid_state"));
    };
    let answer = state
        .oauth
        .token_request(&[
            ("code", &code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", &issued.redirect_uri),
            ("code_verifier", &issued.code_verifier),
        ])
        .await;
    match answer {
        Err(e) => {
            tracing::warn!(error = ?e, "desktop OAuth token exchange failed");
            Ok(fail("token_exchange_failed"))
        }
        Ok(tokens) => {
            if let Some(error) = tokens.get("error").filter(|e| !e.is_null()) {
                let text = tokens
                    .get("error_description")
                    .filter(|d| !d.is_null() && d.as_str() != Some(""))
                    .unwrap_or(error);
                return Ok(fail(&service::error_text(text)));
            }
            // Standard base64 goes in unescaped, as the reference sends it.
            Ok(found(&format!(
                "{loopback}{sep}tokens={}{client_state}",
                service::token_blob(&tokens)
            )))
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    /// A string; a non-zero number is taken as its text (StreamVault clients send either).
    #[schema(value_type = Option<serde_json::Value>)]
    pub refresh_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefreshResponse {
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
    pub token_type: Option<String>,
}

/// `refresh_token` from a JSON or form body; anything falsy counts as absent.
fn refresh_token_of(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let value = if content_type.starts_with("application/x-www-form-urlencoded") {
        url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| Value::String(v.into_owned()))
    } else {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("refresh_token")
            .cloned()
    };
    match value? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) if n.as_f64() != Some(0.0) => Some(n.to_string()),
        Value::Bool(true) => Some("true".to_string()),
        _ => None,
    }
}

#[utoipa::path(
    post, path = "/auth/refresh", tag = "streamvault",
    request_body(content = RefreshBody, description = "JSON or form-encoded"),
    responses(
        (status = 200, body = RefreshResponse, description = "New access token (absent keys omitted)"),
        (status = 400, body = StreamVaultError, description = r#"`{"error":"refresh_token required"}` or the provider's error code"#),
        (status = 500, body = StreamVaultError, description = r#"`{"error":"refresh_failed"}`, or `{"error":"GOOGLE_CLIENT_ID not configured"}` (then nothing is sent upstream)"#),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    // A body over the limit (or cut short) gets the reference's error shape, not text.
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ));
        }
        Err(e) => return Err(plain(e.status(), "Invalid request body")),
    };
    let Some(token) = refresh_token_of(&headers, &body) else {
        return Err(plain(StatusCode::BAD_REQUEST, "refresh_token required"));
    };
    let answer = state
        .oauth
        .token_request(&[("refresh_token", &token), ("grant_type", "refresh_token")])
        .await;
    match answer {
        // As `/auth/google` answers the same misconfiguration.
        Err(CallError::NotConfigured) => Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GOOGLE_CLIENT_ID not configured",
        )),
        Err(e) => {
            tracing::warn!(error = ?e, "OAuth token refresh failed");
            Err(plain(StatusCode::INTERNAL_SERVER_ERROR, "refresh_failed"))
        }
        Ok(tokens) => {
            if let Some(error) = tokens.get("error").filter(|e| !e.is_null()) {
                let body = format!(r#"{{"error":{error}}}"#);
                return Ok((
                    StatusCode::BAD_REQUEST,
                    [(CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response());
            }
            let body = service::pick(&tokens, &["access_token", "expires_in", "token_type"]);
            Ok((StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response())
        }
    }
}

// ---------------------------------------------------------------- Better Auth (web)

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocialSignInBody {
    pub provider: String,
    #[serde(rename = "callbackURL")]
    pub callback_url: Option<String>,
    #[serde(rename = "errorCallbackURL")]
    pub error_callback_url: Option<String>,
    #[serde(rename = "newUserCallbackURL")]
    pub new_user_callback_url: Option<String>,
    pub disable_redirect: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct SocialSignInResponse {
    pub url: String,
    pub redirect: bool,
}

/// A callback URL must stay on this server or a trusted origin (no open redirects).
fn check_callback_url(state: &AppState, url: Option<&str>) -> ApiResult<()> {
    match url {
        Some(url) if !state.auth.is_safe_callback_url(url) => Err(ApiError::forbidden(
            codes::INVALID_CALLBACK_URL,
            "Invalid callbackURL",
        )),
        _ => Ok(()),
    }
}

fn web_redirect_uri(state: &AppState) -> String {
    format!(
        "{}/api/auth/callback/google",
        state.auth.base_url.trim_end_matches('/')
    )
}

fn cookie_attributes(state: &AppState) -> &'static str {
    if state.auth.cookies.secure {
        "Path=/; HttpOnly; Secure; SameSite=Lax"
    } else {
        "Path=/; HttpOnly; SameSite=Lax"
    }
}

#[utoipa::path(
    post, path = "/api/auth/sign-in/social", tag = "auth",
    request_body = SocialSignInBody,
    responses(
        (status = 200, body = SocialSignInResponse, description = "The provider URL to open; a state cookie binds the flow to this browser"),
        (status = 403, body = ErrorBody, description = "INVALID_CALLBACK_URL"),
        (status = 404, body = ErrorBody, description = "PROVIDER_NOT_FOUND (only `google`, and only when configured)"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a malformed or invalid JSON body (INVALID_JSON)"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 429, body = ErrorBody, description = "TOO_MANY_REQUESTS: more Google sign-ins started from this client than `OAUTH_RATE_LIMIT_MAX` a minute (`X-Retry-After`)"),
    )
)]
pub async fn sign_in_social(
    State(state): State<AppState>,
    Json(body): Json<SocialSignInBody>,
) -> ApiResult<Response> {
    if body.provider != service::PROVIDER_ID || !state.oauth.is_configured() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "PROVIDER_NOT_FOUND",
            "Provider not found",
        ));
    }
    for url in [
        &body.callback_url,
        &body.error_callback_url,
        &body.new_user_callback_url,
    ] {
        check_callback_url(&state, url.as_deref())?;
    }
    let redirect_uri = web_redirect_uri(&state);
    let issued = service::issue_state(
        &state.db,
        Flow::Web,
        StateData {
            redirect_uri: redirect_uri.clone(),
            client_state: None,
            callback_url: Some(body.callback_url.unwrap_or_else(|| "/".to_string())),
            error_callback_url: body.error_callback_url,
            new_user_callback_url: body.new_user_callback_url,
        },
    )
    .await?;
    let url = with_query(
        state.oauth.authorize_url(),
        &[
            ("response_type", "code"),
            ("client_id", state.oauth.client_id().unwrap_or_default()),
            ("redirect_uri", &redirect_uri),
            ("scope", WEB_SCOPE),
            ("state", &issued.state),
            ("code_challenge", &issued.code_challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let mut response = axum::Json(SocialSignInResponse {
        url,
        redirect: !body.disable_redirect.unwrap_or(false),
    })
    .into_response();
    let signed = crypto::signed_token(&state.auth.secret, &issued.state);
    let cookie = format!(
        "{}={}; Max-Age={}; {}",
        state.auth.cookies.name(STATE_COOKIE),
        encode_component(&signed),
        service::STATE_TTL.num_seconds(),
        cookie_attributes(&state)
    );
    response.headers_mut().append(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    Ok(response)
}

fn state_mismatch() -> ApiError {
    ApiError::forbidden("STATE_MISMATCH", "Invalid or expired OAuth state")
}

/// The state from the signed cookie set by `sign_in_social`, if its signature holds.
fn cookie_state(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let raw = read_cookie(headers, &state.auth.cookies.name(STATE_COOKIE))?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    crypto::verify_signed(&state.auth.secret, &decoded)
}

#[utoipa::path(
    get, path = "/api/auth/callback/google", tag = "auth",
    params(("code" = Option<String>, Query), ("state" = String, Query), ("error" = Option<String>, Query)),
    responses(
        (status = 302, description = "Signed in (session cookie set) and sent to callbackURL; or sent to errorCallbackURL with `?error=`"),
        (status = 403, body = ErrorBody, description = "STATE_MISMATCH: a state this server did not issue to this browser, or used or expired"),
    )
)]
pub async fn callback_google(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let Some(presented) = query_param(&uri, "state") else {
        return Err(state_mismatch());
    };
    if cookie_state(&state, &headers).as_deref() != Some(presented.as_str()) {
        return Err(state_mismatch());
    }
    let Some(issued) = service::consume_state(&state.db, Flow::Web, &presented).await? else {
        return Err(state_mismatch());
    };
    let callback_url = issued
        .callback_url
        .clone()
        .unwrap_or_else(|| "/".to_string());
    let error_url = issued
        .error_callback_url
        .clone()
        .unwrap_or_else(|| callback_url.clone());
    let clear_state = format!(
        "{}=; Max-Age=0; {}",
        state.auth.cookies.name(STATE_COOKIE),
        cookie_attributes(&state)
    );
    let fail = |error: &str| {
        let mut r = found(&with_query(&error_url, &[("error", error)]));
        r.headers_mut().append(
            SET_COOKIE,
            HeaderValue::from_str(&clear_state).expect("cookie is ASCII"),
        );
        r
    };
    if let Some(error) = query_param(&uri, "error") {
        return Ok(fail(&error));
    }
    let Some(code) = query_param(&uri, "code").filter(|c| !c.is_empty()) else {
        return Ok(fail("no_code"));
    };
    let tokens = match state
        .oauth
        .token_request(&[
            ("code", &code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", &issued.redirect_uri),
            ("code_verifier", &issued.code_verifier),
        ])
        .await
    {
        Ok(t) if t.get("error").is_none_or(Value::is_null) => t,
        Ok(t) => return Ok(fail(&service::error_text(&t["error"]))),
        Err(e) => {
            tracing::warn!(error = ?e, "social sign-in token exchange failed");
            return Ok(fail("token_exchange_failed"));
        }
    };
    let Some(access_token) = tokens.get("access_token").and_then(Value::as_str) else {
        return Ok(fail("token_exchange_failed"));
    };
    let profile = match state.oauth.userinfo(access_token).await {
        Ok(claims) => Profile::from_claims(&claims),
        Err(CallError::Network(e)) => {
            tracing::warn!(error = %e, "userinfo request failed");
            None
        }
        Err(CallError::NotJson | CallError::NotConfigured) => None,
    };
    let Some(profile) = profile else {
        return Ok(fail("email_not_found"));
    };
    let service::SocialUser {
        user,
        created,
        sessions_ended,
    } = match service::find_or_create_user(&state.db, &profile).await {
        Ok(found) => found,
        Err(e @ crate::error::DomainError::Forbidden { .. }) => {
            tracing::info!(reason = %e, "social sign-in refused");
            return Ok(fail("account_not_linked"));
        }
        Err(e) => return Err(e.into()),
    };
    if sessions_ended {
        state.realtime.disconnect_user(&user.id);
    }
    let client = ClientInfo {
        ip_address: Some(ip.0.to_string()),
        user_agent: headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let session = create_session(&state.db, &user.id, &client, true).await?;
    let target = match (&issued.new_user_callback_url, created) {
        (Some(url), true) => url.clone(),
        _ => callback_url,
    };
    let mut response = found(&target);
    let h = response.headers_mut();
    // The same cookie and bearer header email sign-in sets.
    let cookie = state.auth.cookies.session_cookie(
        &state.auth.secret,
        &session.token,
        Some(SESSION_TTL.num_seconds()),
    );
    h.append(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    h.append(
        SET_COOKIE,
        HeaderValue::from_str(&clear_state).expect("cookie is ASCII"),
    );
    h.insert(
        "set-auth-token",
        HeaderValue::from_str(&crypto::signed_token(&state.auth.secret, &session.token))
            .expect("token is ASCII"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("set-auth-token"),
    );
    Ok(response)
}
