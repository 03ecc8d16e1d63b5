//! The media plane's HTTP face: WHIP (RFC 9725) and WHEP ingest/egress, the seed's
//! `/streams/{id}/sfu/*` signalling endpoints, and the bridge from SFU events to stream
//! sessions.

pub mod routes;

pub use routes::{router, whip_router};

use watchpost_media::sfu::MediaEvent;

use crate::app::AppState;
use crate::streams;

/// Ends a stream session when its publisher's transport dies (ICE/DTLS failure or
/// disconnect), so everyone gets `stream:ended`.
pub fn spawn_event_listener(state: AppState) {
    let Some(sfu) = state.media.sfu() else { return };
    let mut events = sfu.subscribe_events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(MediaEvent::PublisherLeft { room, reason }) => {
                    tracing::info!(stream = %room, %reason, "publisher left");
                    if let Ok(Some(mut session)) = streams::service::find(&state.db, &room).await
                        && session.is_active()
                        && let Err(e) =
                            streams::service::end_session(&state, &mut session, "publisher_left")
                                .await
                    {
                        tracing::debug!(error = ?e, "ending session after publisher left");
                    }
                }
                Ok(MediaEvent::PublisherConnected { room }) => {
                    tracing::info!(stream = %room, "publisher connected");
                }
                Ok(MediaEvent::SubscriberLeft { room, participant }) => {
                    tracing::debug!(stream = %room, %participant, "subscriber left");
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "media event listener lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
