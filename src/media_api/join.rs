//! Joining a stream's room, with the caller's access checked again once the transport
//! exists.
//!
//! A revocation (unlink, disable, delete) commits and then asks the media loop to close the
//! device's transports. A join authorised just before that commit can reach the loop just
//! after the close, which then found nothing to close. So the access is checked a second
//! time after the join: either that check sees the revocation and the new transport leaves,
//! or the revocation commits later and its close queues behind the join.

use watchpost_media::sfu::Sfu;

use crate::db::Db;
use crate::error::{ApiResult, DomainError};
use crate::streams::media_token::Claims;
use crate::streams::model::StreamSession;
use crate::streams::service as streams;

/// How long a recheck the database could not answer waits before its second try.
const RECHECK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// What let the caller in, checked again after the join.
pub enum Access<'a> {
    /// A WHIP/WHEP media token.
    MediaToken(&'a Claims),
    /// A device token, on the `/streams/{id}/sfu/*` endpoints.
    DeviceToken { token: &'a str, device_id: &'a str },
}

impl Access<'_> {
    fn device(&self) -> Option<&str> {
        match self {
            Access::MediaToken(claims) => claims.dev.as_deref(),
            Access::DeviceToken { device_id, .. } => Some(device_id),
        }
    }
}

/// Joins `session`'s room as `participant` (its publisher, or a viewer) and returns the SDP
/// answer, or leaves again and refuses if the caller's access was revoked meanwhile.
pub async fn join_checked(
    sfu: &Sfu,
    db: &Db,
    session: &StreamSession,
    participant: &str,
    publisher: bool,
    offer: String,
    access: Access<'_>,
) -> ApiResult<String> {
    let owner = streams::media_owner(session, access.device());
    let answer = if publisher {
        sfu.publish(&session.id, participant, owner, offer).await?
    } else {
        sfu.subscribe(&session.id, participant, owner, offer)
            .await?
    };
    let recheck = || async {
        match &access {
            Access::MediaToken(claims) => streams::recheck_media_token(db, claims, session).await,
            Access::DeviceToken { token, device_id } => {
                streams::recheck_device_transport(db, token, device_id, session, publisher).await
            }
        }
    };
    let mut outcome = recheck().await;
    // A database hiccup gets one more try: failing closed ends a publisher's stream.
    if matches!(outcome, Err(DomainError::Database(_))) {
        tokio::time::sleep(RECHECK_RETRY).await;
        outcome = recheck().await;
    }
    if let Err(e) = outcome {
        // Revoked meanwhile, or access that cannot be confirmed: the transport leaves.
        sfu.leave(&session.id, participant).await;
        return Err(e.into());
    }
    Ok(answer)
}
