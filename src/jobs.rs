//! Background jobs: time-driven state changes, housekeeping, and the bridge from media
//! events to stream sessions. `Server::run` starts them and stops them on shutdown.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use watchpost_media::sfu::MediaEvent;

use crate::db::Db;
use crate::state::AppState;
use crate::storage::ObjectStore;
use crate::{auth, commands, events, recordings, streams, videos};

/// Time-driven state changes: command and stream-request expiry, stale motion events.
/// Once a second keeps expiry within about a second of its deadline.
pub fn spawn_sweeper(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A round in progress finishes (its writes are conditional updates); only the wait
        // between rounds is cut short.
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            if let Err(e) = commands::service::expire_due(&state).await {
                tracing::warn!(error = ?e, "command expiry failed");
            }
            if let Err(e) = streams::service::expire_due(&state).await {
                tracing::warn!(error = ?e, "stream request expiry failed");
            }
            if let Err(e) = events::service::close_stale(&state).await {
                tracing::warn!(error = ?e, "closing stale motion events failed");
            }
            if let Err(e) = recordings::service::end_finished_motion_sessions(&state).await {
                tracing::warn!(error = ?e, "ending motion recording streams failed");
            }
        }
    })
}

/// SQLite's log is copied into the database file here rather than by whichever request
/// happens to cross the auto-checkpoint threshold (see `Db::connect`). Every second keeps
/// the log to about a second of writes; on stop a last round empties it.
pub fn spawn_checkpointer(db: Db, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !matches!(db, Db::Sqlite(_)) {
            return;
        }
        let mut checkpointer = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // On stop, one last round that also empties the log.
            let last_round = stop.run_until_cancelled(tick.tick()).await.is_none();
            if checkpointer.is_none() {
                // Retried every round: with SQLite's own checkpoints off, the log would
                // otherwise grow for good.
                checkpointer = match db.checkpointer().await {
                    Ok(connection) => connection,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection");
                        None
                    }
                };
            }
            if let Some(checkpointer) = checkpointer.as_mut()
                && let Err(e) = checkpointer.run(last_round).await
            {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
            if last_round {
                return;
            }
        }
    })
}

/// How long a temporary upload file may go unwritten before it counts as abandoned.
const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(3600);

/// Periodic housekeeping that must not depend on traffic (first round at start).
pub fn spawn_janitor(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            match auth::service::purge_expired_sessions(&state.db).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "purged expired sessions"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "session purge failed"),
            }
            let closed = close_sockets_of_ended_sessions(&state).await;
            if closed > 0 {
                tracing::info!(closed, "closed sockets of ended sessions");
            }
            match recordings::service::close_orphaned(&state).await {
                Ok(n) if n > 0 => {
                    tracing::info!(closed = n, "closed recordings no recorder drives")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "closing orphaned recordings failed"),
            }
            match recordings::service::purge_expired(&state).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "retention: deleted old recordings"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "recording retention sweep failed"),
            }
            match videos::service::sweep_abandoned(&state.db, &state.storage, state.presign_ttl())
                .await
            {
                Ok(n) if n > 0 => tracing::info!(removed = n, "deleted uploads never completed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "sweeping uncompleted uploads failed"),
            }
            match videos::service::settle_sizes(&state.db, &state.storage, state.presign_ttl())
                .await
            {
                Ok(n) if n > 0 => tracing::info!(changed = n, "recorded uploads' final sizes"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "settling uploads' sizes failed"),
            }
            // An upload in progress keeps touching its file; one untouched this long was
            // abandoned (a client gone mid-upload, or a crash before the rename).
            if let ObjectStore::Local(store) = &state.storage {
                match store.sweep_temp(ABANDONED_UPLOAD_AGE).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "removed abandoned upload files"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = ?e, "sweeping abandoned uploads failed"),
                }
            }
        }
    })
}

/// A user socket is authenticated once, when it connects; a session that has expired
/// since (or was removed) must not keep receiving its account's events. Closes those
/// sockets; returns how many sessions were found ended.
pub async fn close_sockets_of_ended_sessions(state: &AppState) -> usize {
    let mut closed = 0;
    for token in state.realtime.session_tokens() {
        match auth::service::find_session(&state.db, &token).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                state.realtime.disconnect_session_token(&token);
                closed += 1;
            }
            Err(e) => tracing::warn!(error = ?e, "session check for open sockets failed"),
        }
    }
    closed
}

/// Ends a stream session when its publisher's transport dies (ICE/DTLS failure or
/// disconnect), so everyone gets `stream:ended`. On `stop` it first handles what the
/// media plane already reported (its shutdown ends every live publisher), then returns.
pub fn spawn_media_event_listener(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    let Some(sfu) = state.media.sfu() else {
        return tokio::spawn(async {});
    };
    let mut events = sfu.subscribe_events();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                biased;
                event = events.recv() => event,
                () = stop.cancelled() => match events.try_recv() {
                    Ok(event) => Ok(event),
                    Err(_) => return,
                },
            };
            match event {
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
                    recordings::service::on_publisher_connected(&state, &room).await;
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
    })
}
