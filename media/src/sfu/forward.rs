//! Per-viewer forwarding decisions, kept free of I/O so they are unit-tested directly:
//! which simulcast layer a viewer gets (the best its bandwidth estimate allows, switching
//! only at keyframes) and the RTP timeline it sees, which stays continuous across layer
//! switches and publisher reconnects.

use std::time::{Duration, Instant};

use str0m::media::{MediaTime, Rid};

/// Where a frame came from: the publisher transport and, for simulcast, the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    pub publisher: u64,
    pub rid: Option<Rid>,
}

/// One viewer stream's outgoing RTP time. Each source has its own random timestamp base;
/// on a change of source the offset is chosen so that time advances by the wall-clock gap,
/// which is what the viewer's jitter buffer expects of one continuous stream.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    source: Option<Source>,
    offset: i64,
    last: Option<(u64, Instant)>,
}

impl Timeline {
    pub fn map(&mut self, source: Source, time: MediaTime, wall: Instant) -> MediaTime {
        let src = time.numer() as i64;
        if self.source != Some(source) {
            let out = match self.last {
                None => src,
                Some((last, last_wall)) => {
                    let gap = wall.saturating_duration_since(last_wall);
                    let ticks = (gap.as_secs_f64() * f64::from(time.denom())) as i64;
                    last as i64 + ticks.max(1)
                }
            };
            self.offset = out - src;
            self.source = Some(source);
        }
        let out = (src + self.offset).max(0) as u64;
        self.last = Some((out, wall));
        MediaTime::new(out, time.frequency())
    }
}

/// One viewer stream's outgoing RTP sequence numbers: continuous across a change of
/// source (a layer switch or a reconnected publisher), so the viewer sees no gap to NACK
/// and no jump its jitter buffer would take for loss.
///
/// The numbers are extended (str0m takes the SRTP rollover counter from the upper bits),
/// so a viewer's line starts in the first 16-bit cycle whatever the publisher's count: a
/// viewer joining after the publisher's numbers wrapped would otherwise get packets
/// protected with a rollover counter it cannot know, and decrypt none of them.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    source: Option<Source>,
    offset: i64,
    last: Option<u64>,
}

impl Sequence {
    pub fn map(&mut self, source: Source, seq: u64) -> u64 {
        if self.source != Some(source) {
            let out = self.last.map_or(seq & 0xffff, |last| last + 1);
            self.offset = out as i64 - seq as i64;
            self.source = Some(source);
        }
        let out = (seq as i64 + self.offset).max(0) as u64;
        self.last = Some(self.last.map_or(out, |last| last.max(out)));
        out
    }
}

/// A publisher's simulcast layers as seen on the wire, with their measured bitrates.
#[derive(Debug, Default)]
pub(crate) struct Layers {
    layers: Vec<Layer>,
    window_start: Option<Instant>,
}

#[derive(Debug)]
struct Layer {
    rid: Rid,
    bytes: u64,
    bps: u64,
    last_seen: Instant,
}

/// A layer that has sent nothing for this long is treated as paused.
const LAYER_IDLE: Duration = Duration::from_millis(1500);

impl Layers {
    pub fn record(&mut self, rid: Rid, bytes: usize, now: Instant) {
        self.window_start.get_or_insert(now);
        match self.layers.iter_mut().find(|l| l.rid == rid) {
            Some(layer) => {
                layer.bytes += bytes as u64;
                layer.last_seen = now;
            }
            None => self.layers.push(Layer {
                rid,
                bytes: bytes as u64,
                bps: 0,
                last_seen: now,
            }),
        }
    }

    /// Closes the measurement window (called about once a second).
    pub fn tick(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            return;
        };
        let secs = now.saturating_duration_since(start).as_secs_f64();
        if secs < 0.5 {
            return;
        }
        for layer in &mut self.layers {
            layer.bps = (layer.bytes as f64 * 8.0 / secs) as u64;
            layer.bytes = 0;
        }
        self.window_start = Some(now);
    }

    /// Active layers, cheapest first, with their bitrates.
    pub fn active(&self, now: Instant) -> Vec<(Rid, u64)> {
        let mut active: Vec<(Rid, u64)> = self
            .layers
            .iter()
            .filter(|l| now.saturating_duration_since(l.last_seen) < LAYER_IDLE)
            .map(|l| (l.rid, l.bps))
            .collect();
        active.sort_by_key(|&(rid, bps)| (bps, rid_rank(&rid)));
        active
    }

    pub fn reset(&mut self) {
        self.layers.clear();
        self.window_start = None;
    }
}

/// Tie-break for layers measured at the same bitrate (e.g. before the first window closes):
/// the usual RTP stream id names, higher is better.
fn rid_rank(rid: &str) -> u8 {
    match rid {
        "h" | "f" | "hi" | "high" | "full" | "2" => 3,
        "m" | "mid" | "half" | "1" => 2,
        "l" | "q" | "lo" | "low" | "quarter" | "0" => 1,
        _ => 0,
    }
}

/// The best layer a viewer can take: the highest whose bitrate fits in 90% of its
/// estimate, or the cheapest if none fits. Without an estimate, the best layer.
pub(crate) fn choose_layer(active: &[(Rid, u64)], estimate: Option<u64>) -> Option<Rid> {
    let cheapest = active.first().map(|l| l.0);
    let Some(estimate) = estimate else {
        return active.last().map(|l| l.0);
    };
    let budget = estimate / 10 * 9;
    active
        .iter()
        .rev()
        .find(|(_, bps)| *bps <= budget)
        .map(|l| l.0)
        .or(cheapest)
}

/// The layer a viewer should move to. Climbing needs 10% headroom (see [`choose_layer`]);
/// stepping down happens only once the current layer no longer fits the estimate at all
/// or has stopped, so a viewer does not flap between layers on estimate noise.
pub(crate) fn retarget(
    current: Option<Rid>,
    active: &[(Rid, u64)],
    estimate: Option<u64>,
) -> Option<Rid> {
    let best = choose_layer(active, estimate);
    let position = |rid: Option<Rid>| active.iter().position(|(r, _)| Some(*r) == rid);
    let (Some(now), Some(next)) = (position(current), position(best)) else {
        return best;
    };
    if next >= now {
        return best;
    }
    let still_fits = estimate.is_none_or(|e| active[now].1 <= e);
    if still_fits { current } else { best }
}

/// What one viewer's video stream is doing.
#[derive(Debug)]
pub(crate) struct VideoState {
    /// The layer being forwarded (simulcast only).
    pub layer: Option<Rid>,
    /// The layer the viewer should get; taken over at its next keyframe.
    pub target: Option<Rid>,
    /// Until a keyframe arrives, delta frames are useless to the decoder.
    pub waiting_keyframe: bool,
    pub layer_switches: u64,
}

impl Default for VideoState {
    fn default() -> Self {
        Self {
            layer: None,
            target: None,
            waiting_keyframe: true,
            layer_switches: 0,
        }
    }
}

impl VideoState {
    /// Whether a video frame from layer `rid` goes to this viewer. Layers are never mixed
    /// in one stream, and a stream only starts or switches at a keyframe.
    pub fn admit(&mut self, rid: Option<Rid>, keyframe: bool) -> bool {
        let Some(rid) = rid else {
            if self.waiting_keyframe && !keyframe {
                return false;
            }
            self.waiting_keyframe = false;
            return true;
        };
        // The current layer keeps flowing until the target layer's keyframe takes over.
        if self.layer == Some(rid) && !self.waiting_keyframe {
            return true;
        }
        if !keyframe {
            return false;
        }
        let wanted = match self.target {
            Some(target) => target == rid,
            // No target yet: start with whatever layer gives a keyframe first.
            None => self.layer.is_none() || self.layer == Some(rid),
        };
        if !wanted {
            return false;
        }
        if self.layer.is_some_and(|l| l != rid) {
            self.layer_switches += 1;
        }
        self.layer = Some(rid);
        self.waiting_keyframe = false;
        true
    }

    /// The layer this viewer needs a keyframe from, if it is waiting for one.
    pub fn wants_keyframe_from(&self) -> Option<Option<Rid>> {
        if self.waiting_keyframe {
            return Some(self.target.or(self.layer));
        }
        match self.target {
            Some(target) if self.layer != Some(target) => Some(Some(target)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(publisher: u64, rid: Option<&str>) -> Source {
        Source {
            publisher,
            rid: rid.map(Rid::from),
        }
    }

    #[test]
    fn timeline_is_continuous_across_a_change_of_source() {
        let mut t = Timeline::default();
        let t0 = Instant::now();
        let a = t.map(src(1, None), MediaTime::from_90khz(1_000_000), t0);
        assert_eq!(a.numer(), 1_000_000);
        let b = t.map(
            src(1, None),
            MediaTime::from_90khz(1_003_000),
            t0 + Duration::from_millis(33),
        );
        assert_eq!(b.numer(), 1_003_000);
        // A reconnected publisher starts at an unrelated timestamp, 500 ms later.
        let c = t.map(
            src(2, None),
            MediaTime::from_90khz(7),
            t0 + Duration::from_millis(533),
        );
        assert_eq!(c.numer(), 1_003_000 + 45_000);
        let d = t.map(
            src(2, None),
            MediaTime::from_90khz(3007),
            t0 + Duration::from_millis(566),
        );
        assert_eq!(d.numer(), c.numer() + 3000);
    }

    #[test]
    fn sequence_numbers_run_on_across_a_change_of_source() {
        let mut s = Sequence::default();
        assert_eq!(s.map(src(1, None), 40_000), 40_000);
        assert_eq!(s.map(src(1, None), 40_001), 40_001);
        // A reordered packet keeps its place; it does not move the line back.
        assert_eq!(s.map(src(1, None), 40_003), 40_003);
        assert_eq!(s.map(src(1, None), 40_002), 40_002);
        // A new source with its own random start continues right after the last.
        assert_eq!(s.map(src(1, Some("h")), 7), 40_004);
        assert_eq!(s.map(src(1, Some("h")), 8), 40_005);
        assert_eq!(s.map(src(2, None), 65_000), 40_006);
    }

    /// A viewer joining after the publisher's sequence numbers wrapped starts with a
    /// rollover counter of 0 (the only one it can assume), then counts on through its own
    /// wraps.
    #[test]
    fn a_viewer_line_starts_in_the_first_rollover_cycle() {
        let mut s = Sequence::default();
        let wrapped_twice = 2 * 65_536 + 65_530;
        assert_eq!(s.map(src(1, None), wrapped_twice), 65_530);
        assert_eq!(s.map(src(1, None), wrapped_twice + 10), 65_540);
        assert_eq!(
            s.map(src(1, None), wrapped_twice + 10) >> 16,
            1,
            "its own wrap"
        );
    }

    #[test]
    fn layer_choice_follows_the_estimate() {
        let active = vec![
            (Rid::from("l"), 150_000),
            (Rid::from("m"), 500_000),
            (Rid::from("h"), 1_500_000),
        ];
        assert_eq!(choose_layer(&active, None), Some(Rid::from("h")));
        assert_eq!(choose_layer(&active, Some(100_000)), Some(Rid::from("l")));
        assert_eq!(choose_layer(&active, Some(600_000)), Some(Rid::from("m")));
        assert_eq!(choose_layer(&active, Some(5_000_000)), Some(Rid::from("h")));
        assert_eq!(choose_layer(&[], Some(5_000_000)), None);
    }

    #[test]
    fn retargeting_climbs_with_headroom_and_steps_down_only_when_it_must() {
        let active = vec![(Rid::from("l"), 150_000), (Rid::from("h"), 1_000_000)];
        let (l, h) = (Some(Rid::from("l")), Some(Rid::from("h")));
        assert_eq!(retarget(None, &active, Some(200_000)), l);
        assert_eq!(retarget(l, &active, Some(1_050_000)), l, "no headroom yet");
        assert_eq!(retarget(l, &active, Some(1_200_000)), h);
        assert_eq!(retarget(h, &active, Some(1_050_000)), h, "still fits");
        assert_eq!(retarget(h, &active, Some(900_000)), l);
        // The current layer stopped: move to what is there.
        assert_eq!(retarget(h, &active[..1], Some(5_000_000)), l);
    }

    #[test]
    fn layers_are_ranked_by_measured_bitrate_and_pause() {
        let mut layers = Layers::default();
        let t0 = Instant::now();
        layers.record(Rid::from("a"), 100_000, t0);
        layers.record(Rid::from("b"), 10_000, t0);
        layers.tick(t0 + Duration::from_secs(1));
        let active = layers.active(t0 + Duration::from_secs(1));
        assert_eq!(active[0], (Rid::from("b"), 80_000));
        assert_eq!(active[1], (Rid::from("a"), 800_000));
        layers.record(Rid::from("b"), 10_000, t0 + Duration::from_secs(2));
        let active = layers.active(t0 + Duration::from_secs(2));
        assert_eq!(active.len(), 1, "layer a paused");
    }

    #[test]
    fn viewer_switches_layers_only_at_keyframes_and_never_mixes() {
        let (l, h) = (Some(Rid::from("l")), Some(Rid::from("h")));
        let mut v = VideoState {
            target: l,
            ..Default::default()
        };
        assert!(!v.admit(l, false), "no delta frame before a keyframe");
        assert!(!v.admit(h, true), "not the target layer");
        assert!(v.admit(l, true));
        assert!(v.admit(l, false));
        assert!(!v.admit(h, false));
        // The estimate grew: target the high layer, keep the low one until h's keyframe.
        v.target = h;
        assert_eq!(v.wants_keyframe_from(), Some(h));
        assert!(v.admit(l, false));
        assert!(!v.admit(h, false));
        assert!(v.admit(h, true));
        assert!(!v.admit(l, false), "old layer dropped after the switch");
        assert!(!v.admit(l, true));
        assert_eq!(v.layer_switches, 1);
        assert_eq!(v.wants_keyframe_from(), None);
    }

    #[test]
    fn non_simulcast_video_waits_for_the_first_keyframe() {
        let mut v = VideoState::default();
        assert_eq!(v.wants_keyframe_from(), Some(None));
        assert!(!v.admit(None, false));
        assert!(v.admit(None, true));
        assert!(v.admit(None, false));
        assert_eq!(v.wants_keyframe_from(), None);
    }
}
