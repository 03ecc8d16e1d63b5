//! The OpenAPI document. Routes register themselves through `utoipa_axum`'s router, so a
//! route cannot exist without appearing here.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Watchpost",
        description = "Self-hosted home-camera server: accounts, devices, commands, motion events, live streams and recordings.",
    ),
    modifiers(&SecuritySchemes),
    // Query parameters refer to these by name without registering them.
    components(schemas(
        names::DeviceRoleName,
        names::DeviceStatusName,
        names::RecordingModeName,
        names::CommandStatusName,
        names::AckStatusName,
        names::RecordingStatusName,
    )),
    paths(
        crate::storage::routes::get_object,
        crate::storage::routes::put_object,
        crate::media_api::routes::whip_post,
        crate::media_api::routes::whep_post,
        crate::media_api::routes::whip_patch,
        crate::media_api::routes::whep_patch,
        crate::media_api::routes::whip_delete,
        crate::tmdb::routes::tmdb_proxy,
        crate::media_api::routes::whep_delete,
    ),
    tags(
        (name = "auth", description = "Better Auth-compatible email/password accounts"),
        (name = "operations", description = "Health and metrics"),
        (name = "recordings", description = "Server-side recordings of cameras' live streams and their segments"),
        (name = "videos", description = "The signed-in user's video objects (presigned upload/download)"),
        (name = "storage", description = "The embedded object store's presigned endpoints"),
        (name = "admin", description = "Operator dashboard (HTTP Basic auth)"),
        (name = "devices", description = "Cameras and clients; device tokens"),
        (name = "links", description = "Which clients may command and watch which cameras"),
        (name = "commands", description = "Commands from clients to cameras (delivered over Socket.IO)"),
        (name = "events", description = "Motion events"),
        (name = "streams", description = "On-demand live stream sessions and media credentials"),
        (name = "pages", description = "Browser pages"),
        (name = "media", description = "WHIP/WHEP and SFU signalling"),
        (name = "watchtogether", description = "StreamVault Watch Together rooms (the room protocol itself is `WS /ws/watchtogether[/<code>]`)"),
        (name = "streamvault", description = "StreamVault desktop backend: Google OAuth with server-held secrets, TMDB proxy"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new("better-auth.session_token"),
            )),
        );
    }
}

/// Closed sets of strings that request fields and query parameters accept, named in the
/// document (`#[schema(value_type = …)]`) so that clients and generated tests know them.
/// The handlers still take the text and check it themselves.
pub mod names {
    use serde::Serialize;
    use utoipa::ToSchema;

    /// A device's role.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum DeviceRoleName {
        Camera,
        Client,
    }

    /// A device's status (`disabled` revokes its token).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum DeviceStatusName {
        Active,
        Disabled,
    }

    /// A camera's recording mode.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum RecordingModeName {
        Off,
        Always,
        Motion,
    }

    /// A command's status.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum CommandStatusName {
        Queued,
        Dispatched,
        Acknowledged,
        Rejected,
        Expired,
    }

    /// A camera's answer to a command.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum AckStatusName {
        Acknowledged,
        Rejected,
    }

    /// A recording's status.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum RecordingStatusName {
        Recording,
        Complete,
        Failed,
    }
}
