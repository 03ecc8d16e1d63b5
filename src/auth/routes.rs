//! `/api/auth/*`: Better Auth's email/password endpoints, wire-compatible with its client.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, LOCATION, PRAGMA, SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::{MaybeUser, session_token};
use crate::auth::model::{Session, User};
use crate::auth::service::{self, ClientInfo, NewUser};
use crate::crypto;
use crate::error::{ApiError, ApiResult, ErrorBody, codes};
use crate::http::cookies::{self, DONT_REMEMBER};
use crate::http::extract::ClientIp;
use crate::http::json::Json;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up_email))
        .routes(routes!(sign_in_email))
        .routes(routes!(sign_out))
        .routes(routes!(get_session))
        .routes(routes!(ok))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignUpBody {
    pub name: String,
    pub email: String,
    pub password: String,
    pub image: Option<String>,
    #[serde(rename = "callbackURL")]
    pub callback_url: Option<String>,
    pub remember_me: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInBody {
    pub email: String,
    pub password: String,
    #[serde(rename = "callbackURL")]
    pub callback_url: Option<String>,
    pub remember_me: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct SignUpResponse {
    pub token: String,
    pub user: User,
}

#[derive(Serialize, ToSchema)]
pub struct SignInResponse {
    pub redirect: bool,
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub user: User,
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub session: Session,
    pub user: User,
}

#[derive(Serialize, ToSchema)]
pub struct SuccessResponse {
    pub success: bool,
}

#[derive(Serialize, ToSchema)]
pub struct OkResponse {
    pub ok: bool,
}

fn client_info(ip: &ClientIp, headers: &HeaderMap) -> ClientInfo {
    ClientInfo {
        ip_address: Some(ip.0.to_string()),
        user_agent: headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// A callback URL must stay on this server or a trusted origin (no open redirects).
fn check_callback_url(state: &AppState, url: &Option<String>) -> ApiResult<()> {
    match url {
        Some(url) if !state.auth.is_safe_callback_url(url) => Err(ApiError::forbidden(
            codes::INVALID_CALLBACK_URL,
            "Invalid callbackURL",
        )),
        _ => Ok(()),
    }
}

/// Adds the session cookie (and the bearer plugin's `set-auth-token`) to a response.
fn attach_session(state: &AppState, response: &mut Response, token: &str, remember: bool) {
    let secret = &state.auth.secret;
    let max_age = remember.then_some(service::SESSION_TTL.num_seconds());
    let headers = response.headers_mut();
    let cookie = state.auth.cookies.session_cookie(secret, token, max_age);
    headers.append(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
    );
    if !remember {
        let flag = state.auth.cookies.dont_remember_cookie(secret);
        headers.append(
            SET_COOKIE,
            HeaderValue::from_str(&flag).expect("cookie is ASCII"),
        );
    }
    let signed = crypto::signed_token(secret, token);
    headers.insert(
        "set-auth-token",
        HeaderValue::from_str(&signed).expect("token is ASCII"),
    );
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("set-auth-token"),
    );
}

#[utoipa::path(
    post, path = "/api/auth/sign-up/email", tag = "auth",
    request_body = SignUpBody,
    responses(
        (status = 200, body = SignUpResponse, description = "Account created and signed in"),
        (status = 400, body = ErrorBody, description = "INVALID_EMAIL, PASSWORD_TOO_SHORT, PASSWORD_TOO_LONG or VALIDATION_ERROR"),
        (status = 403, body = ErrorBody, description = "INVALID_CALLBACK_URL (or a cross-site browser request: INVALID_ORIGIN)"),
        (status = 422, body = ErrorBody, description = "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"),
        (status = 429, body = ErrorBody, description = "Too many attempts"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn sign_up_email(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<SignUpBody>,
) -> ApiResult<Response> {
    if state.config.disable_signup {
        // Better Auth's answer when `emailAndPassword.disableSignUp` is set.
        return Err(ApiError::bad_request(
            codes::EMAIL_PASSWORD_SIGN_UP_DISABLED,
            "Email and password sign up is not enabled",
        ));
    }
    check_callback_url(&state, &body.callback_url)?;
    let remember = body.remember_me.unwrap_or(true);
    let user = service::sign_up(
        &state.db,
        NewUser {
            name: body.name,
            email: body.email,
            password: body.password,
            image: body.image,
        },
    )
    .await?;
    let session =
        service::create_session(&state.db, &user.id, &client_info(&ip, &headers), remember).await?;
    let mut response = axum::Json(SignUpResponse {
        token: session.token.clone(),
        user,
    })
    .into_response();
    attach_session(&state, &mut response, &session.token, remember);
    Ok(response)
}

#[utoipa::path(
    post, path = "/api/auth/sign-in/email", tag = "auth",
    request_body = SignInBody,
    responses(
        (status = 200, body = SignInResponse, description = "Signed in; with callbackURL also a Location header"),
        (status = 400, body = ErrorBody, description = "INVALID_EMAIL, PASSWORD_TOO_LONG or VALIDATION_ERROR"),
        (status = 401, body = ErrorBody, description = "INVALID_EMAIL_OR_PASSWORD"),
        (status = 403, body = ErrorBody, description = "INVALID_CALLBACK_URL (or a cross-site browser request: INVALID_ORIGIN)"),
        (status = 429, body = ErrorBody, description = "Too many attempts"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
    )
)]
pub async fn sign_in_email(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(body): Json<SignInBody>,
) -> ApiResult<Response> {
    check_callback_url(&state, &body.callback_url)?;
    if service::normalize_email(&body.email).is_err() {
        return Err(ApiError::bad_request(codes::INVALID_EMAIL, "Invalid email"));
    }
    if body.password.encode_utf16().count() > service::MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            codes::PASSWORD_TOO_LONG,
            "Password too long",
        ));
    }
    let remember = body.remember_me.unwrap_or(true);
    let user = service::verify_credentials(&state.db, &body.email, body.password).await?;
    let session =
        service::create_session(&state.db, &user.id, &client_info(&ip, &headers), remember).await?;
    let url = body.callback_url;
    let mut response = axum::Json(SignInResponse {
        redirect: url.is_some(),
        token: session.token.clone(),
        url: url.clone(),
        user,
    })
    .into_response();
    if let Some(url) = url
        && let Ok(value) = HeaderValue::from_str(&url)
    {
        response.headers_mut().insert(LOCATION, value);
    }
    attach_session(&state, &mut response, &session.token, remember);
    Ok(response)
}

#[utoipa::path(
    post, path = "/api/auth/sign-out", tag = "auth",
    responses((status = 200, body = SuccessResponse, description = "Session deleted and cookies expired"))
)]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session_token(&headers, &state.auth.secret, state.auth.cookies.secure) {
        // Deleted first: a socket connecting meanwhile either sees the session gone (its
        // connect check) or is in the room when its sockets are closed.
        let found = service::find_session(&state.db, &token).await?;
        service::delete_session(&state.db, &token).await?;
        if let Some((_, user)) = found {
            state.realtime.disconnect_session(&user.id, &token);
        }
    }
    let mut response = axum::Json(SuccessResponse { success: true }).into_response();
    for cookie in state.auth.cookies.expired_cookies() {
        response.headers_mut().append(
            SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("cookie is ASCII"),
        );
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/api/auth/get-session", tag = "auth",
    responses((status = 200, body = Option<SessionResponse>, description = "The current session and user, or the JSON value null"))
)]
pub async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    MaybeUser(current): MaybeUser,
) -> ApiResult<Response> {
    let mut response = match current {
        None => axum::Json(serde_json::Value::Null).into_response(),
        Some(mut current) => {
            let remember = !cookies::has_signed_flag(
                &headers,
                &state.auth.secret,
                DONT_REMEMBER,
                state.auth.cookies.secure,
            );
            let refreshed =
                remember && service::refresh_if_due(&state.db, &mut current.session).await?;
            let token = current.session.token.clone();
            let mut response = axum::Json(SessionResponse {
                session: current.session,
                user: current.user,
            })
            .into_response();
            if refreshed {
                attach_session(&state, &mut response, &token, true);
            }
            response
        }
    };
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[utoipa::path(
    get, path = "/api/auth/ok", tag = "auth",
    responses((status = 200, body = OkResponse, description = "The auth service is up"))
)]
pub async fn ok() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(OkResponse { ok: true }))
}
