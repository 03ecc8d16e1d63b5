use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, LINK, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use watchpost_media::AdmissionError;
use watchpost_media::sfu::{MAX_OFFER_BYTES, ParticipantInfo, SfuError, check_offer_size};

use crate::devices::extract::DeviceCaller;
use crate::error::{ApiError, ApiResult, ErrorBody, codes, method_not_allowed_fallback};
use crate::http::extract::Path;
use crate::http::json::{Json, bytes_rejection};
use crate::state::AppState;
use crate::streams::media_token::{self, Claims, MediaRole};
use crate::streams::model::{ParticipantKind, StreamSession};
use crate::streams::service as streams;

use super::join::{Access, join_checked};
use super::trickle;

impl From<SfuError> for ApiError {
    fn from(e: SfuError) -> Self {
        match e {
            SfuError::BadSdp(reason) => {
                ApiError::bad_request(codes::INVALID_SDP, format!("Invalid SDP offer: {reason}"))
            }
            SfuError::NoUsableMedia => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::NO_USABLE_MEDIA,
                "The offer has no audio or video this server can use (Opus, VP8 or H.264)",
            ),
            SfuError::Admission(AdmissionError::RoomHasPublisher) => ApiError::conflict(
                codes::STREAM_HAS_PUBLISHER,
                "This stream already has a publisher",
            ),
            SfuError::Admission(e @ AdmissionError::TooManyPublishers { .. }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_PUBLISHERS,
                e.to_string(),
            ),
            SfuError::Admission(e @ AdmissionError::TooManySubscribers { .. }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_SUBSCRIBERS,
                e.to_string(),
            ),
            SfuError::Admission(e @ AdmissionError::AccountPublisherLimit { .. }) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_PUBLISHERS_FOR_USER,
                e.to_string(),
            ),
            SfuError::Admission(e @ AdmissionError::AccountSubscriberLimit { .. }) => {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::TOO_MANY_SUBSCRIBERS_FOR_USER,
                    e.to_string(),
                )
            }
            e @ SfuError::OfferTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::SDP_TOO_LARGE,
                e.to_string(),
            ),
            e @ SfuError::TooManyMediaLines { .. } => {
                ApiError::bad_request(codes::TOO_MANY_MEDIA_LINES, e.to_string())
            }
            SfuError::RoomClosed => {
                ApiError::conflict(codes::STREAM_NOT_ACTIVE, "The stream session is not active")
            }
            SfuError::Stopped => ApiError::unavailable("The media engine is not running"),
        }
    }
}

/// `/streams/{id}/sfu/*`: device-token signalling (JSON) for the apps.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sfu_session))
        .routes(routes!(publish_transport))
        .routes(routes!(subscribe_transport))
        .routes(routes!(sfu_trickle))
        .routes(routes!(sfu_close))
}

/// WHIP/WHEP: token-authorised and meant for any origin (OBS, players on other sites), so
/// they carry their own permissive CORS and sit outside the cookie/CSRF stack.
pub fn whip_router(state: AppState) -> axum::Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            HeaderName::from_static("if-match"),
        ])
        .expose_headers([LOCATION, ETAG, LINK, HeaderName::from_static("accept-post")])
        .max_age(Duration::from_secs(600));
    // Any other method gets the JSON 405 (axum still adds `Allow`); set on each route, under
    // the CORS layer, so that layer still answers `OPTIONS` itself.
    let endpoints = axum::Router::new()
        .route(
            "/whip/{stream}",
            axum::routing::post(whip_post).fallback(method_not_allowed_fallback),
        )
        .route(
            "/whep/{stream}",
            axum::routing::post(whep_post).fallback(method_not_allowed_fallback),
        )
        // An offer is refused past its bound without reading the rest (see `sdp_body`).
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(cors.clone())
        // Outside the CORS layer, which answers every OPTIONS itself (as a preflight).
        .layer(axum::middleware::from_fn(accept_post));
    let resources = axum::Router::new()
        .route(
            "/whip/{stream}/{resource}",
            axum::routing::patch(whip_patch)
                .delete(whip_delete)
                .fallback(method_not_allowed_fallback),
        )
        .route(
            "/whep/{stream}/{resource}",
            axum::routing::patch(whep_patch)
                .delete(whep_delete)
                .fallback(method_not_allowed_fallback),
        )
        .layer(DefaultBodyLimit::max(trickle::MAX_SDPFRAG_BYTES))
        .layer(cors);
    endpoints.merge(resources).with_state(state)
}

/// RFC 9725: `OPTIONS` on a WHIP/WHEP endpoint says what it accepts. Preflights and plain
/// `OPTIONS` alike get `Accept-Post`; neither carries ICE servers, since an `OPTIONS`
/// request is never authenticated and TURN credentials are handed out only with a token.
async fn accept_post(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let options = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    if options && response.status().is_success() {
        response
            .headers_mut()
            .insert("accept-post", HeaderValue::from_static("application/sdp"));
    }
    response
}

fn sfu(state: &AppState) -> ApiResult<&watchpost_media::sfu::Sfu> {
    state.media.sfu().ok_or_else(|| {
        ApiError::conflict(
            codes::SFU_DISABLED,
            "This server does not route media (MEDIA_MODE=legacy)",
        )
    })
}

fn media_token_from(headers: &HeaderMap) -> Option<&str> {
    crate::http::extract::bearer(headers)
}

/// Verifies the bearer media token for this session and one of `roles`, and that the
/// device it was issued to may still use it (not deleted, disabled or unlinked since); the
/// session must still be active.
async fn authorise(
    state: &AppState,
    headers: &HeaderMap,
    session_id: &str,
    roles: &[MediaRole],
) -> ApiResult<(Claims, StreamSession)> {
    let token = media_token_from(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::MEDIA_TOKEN_REQUIRED,
            "Send the media token as Authorization: Bearer",
        )
    })?;
    let claims = media_token::verify(
        &state.auth.secret,
        token,
        session_id,
        roles,
        chrono::Utc::now().timestamp(),
    )
    .map_err(token_error)?;
    let session = streams::find(&state.db, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Stream session not found"))?;
    streams::recheck_media_token(&state.db, &claims, &session).await?;
    streams::require_session_active(&session)?;
    Ok((claims, session))
}

/// The SDP offer of a WHIP/WHEP `POST`, bounded before it goes anywhere near the media loop.
fn sdp_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult<String> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Expected content-type: application/sdp",
        ));
    }
    let body = body.map_err(|e| match e.status() {
        // Over the route's body limit: the same answer as an offer just over the bound.
        StatusCode::PAYLOAD_TOO_LARGE => SfuError::OfferTooLarge {
            max: MAX_OFFER_BYTES,
        }
        .into(),
        _ => bytes_rejection(e),
    })?;
    let offer = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request(codes::INVALID_SDP, "The SDP offer is not UTF-8"))?;
    check_offer_size(&offer)?;
    Ok(offer)
}

/// ICE servers as `Link` headers (RFC 9725 §4.6), for a response to a request that
/// presented `claims`: TURN credentials expire with the media token, never later.
fn ice_links(state: &AppState, claims: &Claims) -> Vec<HeaderValue> {
    streams::ice_servers(state, claims.exp)
        .into_iter()
        .flat_map(|server| {
            let username = server.username.clone();
            let credential = server.credential.clone();
            server.urls.into_iter().filter_map(move |url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(u), Some(c)) = (&username, &credential) {
                    link.push_str(&format!(
                        "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                    ));
                }
                HeaderValue::from_str(&link).ok()
            })
        })
        .collect()
}

fn created(
    state: &AppState,
    claims: &Claims,
    kind: &str,
    session_id: &str,
    resource: &str,
    answer: String,
) -> Response {
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&format!("/{kind}/{session_id}/{resource}")) {
        h.insert(LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{resource}\"")) {
        h.insert(ETAG, v);
    }
    for link in ice_links(state, claims) {
        h.append(LINK, link);
    }
    response
}

#[utoipa::path(
    post, path = "/whip/{streamSessionId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (sendonly audio/video)"),
    security(("bearer" = [])),
    responses(
        (status = 201, content_type = "application/sdp", body = String, description = "SDP answer; Location names the resource; ICE servers in Link headers"),
        (status = 400, body = ErrorBody, description = "INVALID_SDP"),
        (status = 401, body = ErrorBody, description = "Missing or invalid publish token"),
        (status = 403, body = ErrorBody, description = "Token for another session or role"),
        (status = 409, body = ErrorBody, description = "STREAM_HAS_PUBLISHER"),
        (status = 415, body = ErrorBody, description = "Not application/sdp"),
        (status = 422, body = ErrorBody, description = "NO_USABLE_MEDIA"),
        (status = 429, body = ErrorBody, description = "TOO_MANY_PUBLISHERS"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
    )
)]
pub async fn whip_post(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (claims, session) = authorise(&state, &headers, &session_id, &[MediaRole::Publish]).await?;
    let offer = sdp_body(&headers, body)?;
    let resource = ParticipantKind::Publisher.new_id();
    let answer = join_checked(
        sfu(&state)?,
        &state.db,
        &session,
        &resource,
        true,
        offer,
        Access::MediaToken(&claims),
    )
    .await?;
    Ok(created(
        &state,
        &claims,
        "whip",
        &session_id,
        &resource,
        answer,
    ))
}

#[utoipa::path(
    post, path = "/whep/{streamSessionId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (recvonly audio/video)"),
    security(("bearer" = [])),
    responses(
        (status = 201, content_type = "application/sdp", body = String, description = "SDP answer; Location names the resource"),
        (status = 400, body = ErrorBody, description = "INVALID_SDP"),
        (status = 401, body = ErrorBody, description = "Missing or invalid subscribe/playback token"),
        (status = 403, body = ErrorBody, description = "Token for another session or role"),
        (status = 422, body = ErrorBody, description = "NO_USABLE_MEDIA"),
        (status = 429, body = ErrorBody, description = "TOO_MANY_SUBSCRIBERS"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
    )
)]
pub async fn whep_post(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (claims, session) = authorise(
        &state,
        &headers,
        &session_id,
        &[MediaRole::Subscribe, MediaRole::Playback],
    )
    .await?;
    let offer = sdp_body(&headers, body)?;
    let resource = ParticipantKind::Subscriber.new_id();
    let answer = join_checked(
        sfu(&state)?,
        &state.db,
        &session,
        &resource,
        false,
        offer,
        Access::MediaToken(&claims),
    )
    .await?;
    Ok(created(
        &state,
        &claims,
        "whep",
        &session_id,
        &resource,
        answer,
    ))
}

/// Trickle ICE. The server is ICE-lite: it learns each client's addresses from the client's
/// own connectivity checks, so trickled candidates need no action; the request is still
/// authorised and validated.
async fn patch_resource(
    State(state): State<AppState>,
    Path((session_id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: ParticipantKind,
) -> ApiResult<StatusCode> {
    authorise(
        &state,
        &headers,
        &session_id,
        &[
            MediaRole::Publish,
            MediaRole::Subscribe,
            MediaRole::Playback,
        ],
    )
    .await?;
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "Expected content-type: application/trickle-ice-sdpfrag",
        ));
    }
    let body = body.map_err(bytes_rejection)?;
    let fragment = std::str::from_utf8(&body)
        .map_err(|_| ApiError::validation("The fragment is not UTF-8 text"))?;
    trickle::check_sdpfrag(fragment).map_err(ApiError::validation)?;
    require_resource(&state, &session_id, &resource, kind).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The WHIP (`kind` publisher) or WHEP (subscriber) resource must be a live transport of
/// this session: anything else, a transport already hung up included, is a 404.
async fn require_resource(
    state: &AppState,
    session_id: &str,
    resource: &str,
    kind: ParticipantKind,
) -> ApiResult<()> {
    let live = ParticipantKind::of(resource) == Some(kind)
        && sfu(state)?
            .describe(session_id)
            .await
            .iter()
            .any(|p| p.id == resource);
    if live {
        Ok(())
    } else {
        Err(ApiError::not_found("No such WHIP/WHEP resource"))
    }
}

async fn delete_resource(
    State(state): State<AppState>,
    Path((session_id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    kind: ParticipantKind,
) -> ApiResult<StatusCode> {
    let token = media_token_from(&headers).ok_or_else(ApiError::unauthorized)?;
    // Only the camera's own token hangs up the camera; viewers' tokens close viewers.
    let roles: &[MediaRole] = if kind == ParticipantKind::Publisher {
        &[MediaRole::Publish]
    } else {
        &[MediaRole::Subscribe, MediaRole::Playback]
    };
    // Past its expiry too: a transport that outlived its token can still be hung up.
    media_token::verify_to_hang_up(&state.auth.secret, token, &session_id, roles)
        .map_err(token_error)?;
    require_resource(&state, &session_id, &resource, kind).await?;
    sfu(&state)?.leave(&session_id, &resource).await;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportOffer {
    pub sdp: String,
    /// Must be `offer`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportAnswer {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
    pub participant_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuSession {
    pub stream_session_id: String,
    pub status: String,
    #[schema(value_type = Vec<Object>)]
    pub participants: Vec<ParticipantInfo>,
}

#[utoipa::path(
    get, path = "/streams/{streamSessionId}/sfu/session", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SfuSession, description = "Live participants and their traffic"),
        (status = 403, body = ErrorBody, description = "Not a participant device"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
    )
)]
pub async fn sfu_session(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SfuSession>> {
    let session = participant_session(&state, &device, &id).await?;
    let mut participants = sfu(&state)?.describe(&session.id).await;
    // A transport's id is the capability to trickle to and close it (as a WHIP/WHEP
    // resource URL is), so other participants see a stable alias, never the id itself.
    for p in &mut participants {
        p.id = public_participant_id(&p.id);
    }
    Ok(axum::Json(SfuSession {
        stream_session_id: session.id,
        status: session.status.to_string(),
        participants,
    }))
}

/// A device's transport on `/streams/{id}/sfu/*`, once the route has checked its role: the
/// join, rechecked against the device token it came with.
async fn device_transport(
    state: &AppState,
    headers: &HeaderMap,
    device: &crate::devices::model::Device,
    session: &StreamSession,
    publisher: bool,
    body: TransportOffer,
) -> ApiResult<axum::Json<TransportAnswer>> {
    let kind = if publisher {
        ParticipantKind::Publisher
    } else {
        ParticipantKind::Subscriber
    };
    let participant = kind.new_id();
    let access = Access::DeviceToken {
        token: crate::http::extract::bearer(headers).unwrap_or_default(),
        device_id: &device.id,
    };
    let offer = offer_sdp(body)?;
    let answer = join_checked(
        sfu(state)?,
        &state.db,
        session,
        &participant,
        publisher,
        offer,
        access,
    )
    .await?;
    Ok(axum::Json(TransportAnswer {
        kind: "answer".into(),
        sdp: answer,
        participant_id: participant,
    }))
}

fn offer_sdp(body: TransportOffer) -> ApiResult<String> {
    if body.kind != "offer" {
        return Err(ApiError::validation("type must be \"offer\""));
    }
    Ok(body.sdp)
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/sfu/publish-transport", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = TransportOffer,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TransportAnswer, description = "The SFU's answer"),
        (status = 400, body = ErrorBody, description = "INVALID_SDP"),
        (status = 403, body = ErrorBody, description = "Not this session's camera"),
        (status = 409, body = ErrorBody, description = "Already has a publisher"),
        (status = 422, body = ErrorBody, description = "NO_USABLE_MEDIA"),
        (status = 429, body = ErrorBody, description = "TOO_MANY_PUBLISHERS"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
    )
)]
pub async fn publish_transport(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<TransportOffer>,
) -> ApiResult<axum::Json<TransportAnswer>> {
    let session = streams::find_for_user(&state.db, &device.user_id, &id).await?;
    if device.id != session.camera_device_id {
        return Err(ApiError::forbidden(
            codes::NOT_A_PARTICIPANT,
            "Only the session's camera can publish",
        ));
    }
    streams::require_session_active(&session)?;
    device_transport(&state, &headers, &device, &session, true, body).await
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/sfu/subscribe-transport", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = TransportOffer,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TransportAnswer, description = "The SFU's answer"),
        (status = 400, body = ErrorBody, description = "INVALID_SDP"),
        (status = 403, body = ErrorBody, description = "Not a viewer of this stream"),
        (status = 422, body = ErrorBody, description = "NO_USABLE_MEDIA"),
        (status = 429, body = ErrorBody, description = "TOO_MANY_SUBSCRIBERS"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
    )
)]
pub async fn subscribe_transport(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<TransportOffer>,
) -> ApiResult<axum::Json<TransportAnswer>> {
    let session = streams::find_for_user(&state.db, &device.user_id, &id).await?;
    if !streams::may_view(&state.db, &device, &session).await? {
        return Err(ApiError::forbidden(
            codes::NOT_A_PARTICIPANT,
            "This device may not watch this stream",
        ));
    }
    streams::require_session_active(&session)?;
    device_transport(&state, &headers, &device, &session, false, body).await
}

#[utoipa::path(
    patch, path = "/whip/{streamSessionId}/{resourceId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("resourceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Accepted (the ICE-lite server learns candidates from checks)"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, or a fragment that is not SDP lines with well-formed candidates"),
        (status = 413, body = ErrorBody, description = "PAYLOAD_TOO_LARGE: a fragment over 16 KiB"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: not application/trickle-ice-sdpfrag"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session; or no such live WHIP/WHEP resource"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
        (status = 403, body = ErrorBody, description = "MEDIA_TOKEN_FORBIDDEN: a media token for another session or role"),
    )
)]
pub async fn whip_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    patch_resource(state, path, headers, body, ParticipantKind::Publisher).await
}

#[utoipa::path(
    patch, path = "/whep/{streamSessionId}/{resourceId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("resourceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Accepted (the ICE-lite server learns candidates from checks)"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters, or a fragment that is not SDP lines with well-formed candidates"),
        (status = 413, body = ErrorBody, description = "PAYLOAD_TOO_LARGE: a fragment over 16 KiB"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: not application/trickle-ice-sdpfrag"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session; or no such live WHIP/WHEP resource"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
        (status = 403, body = ErrorBody, description = "MEDIA_TOKEN_FORBIDDEN: a media token for another session or role"),
    )
)]
pub async fn whep_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    patch_resource(state, path, headers, body, ParticipantKind::Subscriber).await
}

#[utoipa::path(
    delete, path = "/whip/{streamSessionId}/{resourceId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("resourceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The publisher transport is closed"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session; or no such live WHIP/WHEP resource"),
        (status = 403, body = ErrorBody, description = "MEDIA_TOKEN_FORBIDDEN: a media token for another session or role"),
    )
)]
pub async fn whip_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    delete_resource(state, path, headers, ParticipantKind::Publisher).await
}

#[utoipa::path(
    delete, path = "/whep/{streamSessionId}/{resourceId}", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$"), ("resourceId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The viewer transport is closed"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 400, body = ErrorBody, description = "VALIDATION_ERROR: a path parameter with control characters"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session; or no such live WHIP/WHEP resource"),
        (status = 403, body = ErrorBody, description = "MEDIA_TOKEN_FORBIDDEN: a media token for another session or role"),
    )
)]
pub async fn whep_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    delete_resource(state, path, headers, ParticipantKind::Subscriber).await
}

/// The alias under which a transport appears to the stream's other participants.
fn public_participant_id(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let prefix = ParticipantKind::of(id).map_or("p", ParticipantKind::prefix);
    format!("{prefix}-{}", crate::crypto::hex(&digest[..8]))
}

/// The session, if `device` takes part in it (its camera or a device allowed to watch).
async fn participant_session(
    state: &AppState,
    device: &crate::devices::model::Device,
    id: &str,
) -> ApiResult<StreamSession> {
    let session = streams::find_for_user(&state.db, &device.user_id, id).await?;
    if device.id != session.camera_device_id
        && !streams::may_view(&state.db, device, &session).await?
    {
        return Err(ApiError::forbidden(
            codes::NOT_A_PARTICIPANT,
            "This device is not part of this stream",
        ));
    }
    Ok(session)
}

fn require_transport_id(participant_id: &str) -> ApiResult<()> {
    let well_formed = participant_id.len() <= 64 && ParticipantKind::of(participant_id).is_some();
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::validation(
            "participantId must be the id returned by publish-transport or subscribe-transport",
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SfuTrickle {
    /// The `participantId` from publish-transport or subscribe-transport.
    #[schema(pattern = r"^(pub|sub)-[\x21-\x7E]{0,60}$")]
    pub participant_id: String,
    /// An ICE candidate (`candidate:...`, as in `RTCIceCandidate.candidate`, its fields
    /// well formed as RFC 8839 has them); an empty string marks the end of candidates.
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*(a=)?(candidate:[\s\S]*)?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub candidate: String,
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/sfu/trickle", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = SfuTrickle,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Accepted (the ICE-lite server learns candidates from checks)"),
        (status = 400, body = ErrorBody, description = "Malformed participant id or candidate"),
        (status = 403, body = ErrorBody, description = "Not a participant device"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
    )
)]
pub async fn sfu_trickle(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
    Json(body): Json<SfuTrickle>,
) -> ApiResult<StatusCode> {
    participant_session(&state, &device, &id).await?;
    require_transport_id(&body.participant_id)?;
    // Empty: the end of candidates.
    let candidate = body.candidate.trim();
    if !candidate.is_empty() {
        trickle::check_candidate(candidate).map_err(ApiError::validation)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SfuClose {
    /// The `participantId` from publish-transport or subscribe-transport.
    #[schema(pattern = r"^(pub|sub)-[\x21-\x7E]{0,60}$")]
    pub participant_id: String,
}

#[utoipa::path(
    post, path = "/streams/{streamSessionId}/sfu/close", tag = "media",
    params(("streamSessionId" = String, Path, pattern = r"^[^\x00-\x1F\x7F]+$")),
    request_body = SfuClose,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The transport is closed (closing the camera's ends the stream)"),
        (status = 400, body = ErrorBody, description = "Malformed participant id"),
        (status = 403, body = ErrorBody, description = "Not a participant device"),
        (status = 401, body = ErrorBody, description = "Missing, invalid or the wrong kind of credentials"),
        (status = 415, body = ErrorBody, description = "UNSUPPORTED_MEDIA_TYPE: the body is not application/json"),
        (status = 404, body = ErrorBody, description = "STREAM_NOT_FOUND: no such stream session"),
        (status = 409, body = ErrorBody, description = "STREAM_NOT_ACTIVE: the session has ended (or SFU_DISABLED)"),
    )
)]
pub async fn sfu_close(
    State(state): State<AppState>,
    DeviceCaller(device): DeviceCaller,
    Path(id): Path<String>,
    Json(body): Json<SfuClose>,
) -> ApiResult<StatusCode> {
    let session = participant_session(&state, &device, &id).await?;
    require_transport_id(&body.participant_id)?;
    if ParticipantKind::of(&body.participant_id) == Some(ParticipantKind::Publisher)
        && device.id != session.camera_device_id
    {
        return Err(ApiError::forbidden(
            codes::NOT_A_PARTICIPANT,
            "Only the session's camera can close its publish transport",
        ));
    }
    sfu(&state)?.leave(&session.id, &body.participant_id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A valid token for another session or role is forbidden; anything else is unauthorised.
fn token_error(e: media_token::TokenError) -> ApiError {
    match e {
        media_token::TokenError::WrongSession | media_token::TokenError::WrongRole => {
            ApiError::forbidden(codes::MEDIA_TOKEN_FORBIDDEN, e.to_string())
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_MEDIA_TOKEN,
            e.to_string(),
        ),
    }
}
