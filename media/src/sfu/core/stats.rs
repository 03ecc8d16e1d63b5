//! Figures: per-peer counts and bitrates for `describe`, and the process-wide `/metrics`
//! counters (atomics shared with the server; relaxed adds, never a lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use str0m::Event;
use str0m::bwe::BweKind;
use str0m::media::{Mid, Rid};

use super::super::{MediaCounters, ParticipantInfo};
use super::{Core, Peer, Role};

#[derive(Default)]
pub(super) struct PeerStats {
    /// Cumulative NACK counts per stream, to turn str0m's totals into counter increments.
    nack_totals: HashMap<(Mid, Option<Rid>, bool), u64>,
    last_peer_stats: Option<(Instant, u64, u64)>,
    bps_in: u64,
    bps_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Replaces one peer's contribution to a process-wide gauge.
fn set_gauge(gauge: &AtomicU64, contribution: &mut u64, value: u64) {
    gauge.fetch_add(value, Ordering::Relaxed);
    gauge.fetch_sub(*contribution, Ordering::Relaxed);
    *contribution = value;
}

/// Takes a leaving peer's share out of the gauges.
pub(super) fn release_gauges(counters: &MediaCounters, peer: &mut Peer) {
    set_gauge(&counters.ingress_bps, &mut peer.stats.bps_in, 0);
    set_gauge(&counters.egress_bps, &mut peer.stats.bps_out, 0);
    if let Role::Subscriber(_, viewing) = &mut peer.role {
        set_gauge(
            &counters.egress_estimate_bps,
            &mut viewing.estimate_gauge,
            0,
        );
    }
}

/// The str0m events that only feed figures.
pub(super) fn on_event(counters: &MediaCounters, peer: &mut Peer, event: Event) {
    let stats = &mut peer.stats;
    match event {
        Event::MediaEgressStats(st) => {
            let prev = stats
                .nack_totals
                .insert((st.mid, st.rid, true), st.nacks)
                .unwrap_or(0);
            counters
                .nacks_received
                .fetch_add(st.nacks.saturating_sub(prev), Ordering::Relaxed);
        }
        Event::MediaIngressStats(st) => {
            let prev = stats
                .nack_totals
                .insert((st.mid, st.rid, false), st.nacks)
                .unwrap_or(0);
            counters
                .nacks_sent
                .fetch_add(st.nacks.saturating_sub(prev), Ordering::Relaxed);
        }
        Event::PeerStats(st) => {
            if let Some((t, rx, tx)) = stats.last_peer_stats {
                let secs = st.timestamp.saturating_duration_since(t).as_secs_f64();
                if secs > 0.0 {
                    let bps_in = (st.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / secs) as u64;
                    let bps_out = (st.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / secs) as u64;
                    set_gauge(&counters.ingress_bps, &mut stats.bps_in, bps_in);
                    set_gauge(&counters.egress_bps, &mut stats.bps_out, bps_out);
                }
            }
            stats.last_peer_stats = Some((st.timestamp, st.peer_bytes_rx, st.peer_bytes_tx));
        }
        Event::EgressBitrateEstimate(estimate) => {
            if let Role::Subscriber(_, viewing) = &mut peer.role {
                match estimate {
                    BweKind::Twcc { estimate, .. } => viewing.twcc_bps = Some(estimate.as_u64()),
                    BweKind::Remb { estimate, .. } => viewing.remb_bps = Some(estimate.as_u64()),
                    _ => {}
                }
                let value = viewing.estimate().unwrap_or(0);
                set_gauge(
                    &counters.egress_estimate_bps,
                    &mut viewing.estimate_gauge,
                    value,
                );
            }
        }
        _ => {}
    }
}

impl Core {
    /// The room's participants, publisher first.
    pub fn describe(&self, room: &str) -> Vec<ParticipantInfo> {
        let mut peers: Vec<&Peer> = self.peers.values().filter(|p| &*p.room == room).collect();
        peers.sort_by_key(|p| (!p.is_publisher(), p.id.clone()));
        peers
            .into_iter()
            .map(|p| {
                let viewing = match &p.role {
                    Role::Subscriber(_, v) => Some(v),
                    Role::Publisher(_) => None,
                };
                ParticipantInfo {
                    id: p.id.clone(),
                    role: if p.is_publisher() {
                        "publisher"
                    } else {
                        "subscriber"
                    },
                    connected: p.connected,
                    tracks: p
                        .media
                        .iter()
                        .map(|(mid, kind)| format!("{kind:?}:{mid}").to_lowercase())
                        .collect(),
                    packets_in: p.stats.packets_in,
                    bytes_in: p.stats.bytes_in,
                    bytes_out: p.stats.bytes_out,
                    bitrate_in: p.stats.bps_in,
                    bitrate_out: p.stats.bps_out,
                    estimated_bitrate: viewing.and_then(|v| v.estimate()),
                    layer: viewing.and_then(|v| v.video.layer.map(|r| r.to_string())),
                    layer_switches: viewing.map(|v| v.video.layer_switches),
                }
            })
            .collect()
    }
}
