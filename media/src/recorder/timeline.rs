//! Presentation times for recorded frames.
//!
//! Each track runs on its own RTP clock. A track is anchored at the arrival of its first
//! frame (relative to the recording's start), and from then on advances with its RTP
//! timestamps, so frame spacing is exact and network jitter does not show up in the file;
//! the two tracks stay in sync to within the jitter of their first frames.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct TrackClock {
    /// (offset from the recording start, RTP time) of the first frame.
    anchor: Option<(Duration, u64)>,
    last: Option<u64>,
}

impl TrackClock {
    /// The frame's presentation time in nanoseconds from `start`, never earlier than the
    /// previous frame's (RTP timestamps that jump back, e.g. after a camera restart,
    /// re-anchor the track on arrival time). `None` for a frame from before `start`.
    pub fn pts(&mut self, start: Instant, arrival: Instant, rtp: u64, rate: u32) -> Option<u64> {
        let rate = u64::from(rate.max(1));
        let since_start = arrival.checked_duration_since(start)?;
        let (anchor_at, anchor_rtp) = *self.anchor.get_or_insert((since_start, rtp));
        let mut pts = if rtp >= anchor_rtp {
            let ticks = rtp - anchor_rtp;
            anchor_at.as_nanos() as u64
                + ticks / rate * 1_000_000_000
                + (ticks % rate) * 1_000_000_000 / rate
        } else {
            self.anchor = Some((since_start, rtp));
            since_start.as_nanos() as u64
        };
        // Far off the wall clock (a timestamp jump forward): re-anchor as well.
        let wall = since_start.as_nanos() as u64;
        if pts.abs_diff(wall) > 5_000_000_000 {
            self.anchor = Some((since_start, rtp));
            pts = wall;
        }
        if let Some(last) = self.last
            && pts < last
        {
            pts = last;
        }
        self.last = Some(pts);
        Some(pts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_their_rtp_clock_from_their_first_arrival() {
        let start = Instant::now();
        let mut video = TrackClock::default();
        let ms = Duration::from_millis;
        assert_eq!(
            video.pts(start, start + ms(40), 1_000, 90_000),
            Some(40_000_000)
        );
        // Arrived late (jitter), but the RTP clock says 33.3 ms after the first frame.
        assert_eq!(
            video.pts(start, start + ms(90), 4_000, 90_000),
            Some(73_333_333)
        );
        let mut audio = TrackClock::default();
        assert_eq!(
            audio.pts(start, start + ms(20), 0, 48_000),
            Some(20_000_000)
        );
        assert_eq!(
            audio.pts(start, start + ms(45), 960, 48_000),
            Some(40_000_000)
        );
        // Before the start: not recorded.
        assert_eq!(audio.pts(start + ms(1), start, 0, 48_000), None);
    }

    #[test]
    fn jumps_re_anchor_and_time_never_goes_back() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut clock = TrackClock::default();
        assert_eq!(clock.pts(start, start, 90_000, 90_000), Some(0));
        assert_eq!(
            clock.pts(start, start + ms(100), 99_000, 90_000),
            Some(100_000_000)
        );
        // Timestamps restart lower: re-anchored on arrival.
        assert_eq!(
            clock.pts(start, start + ms(133), 10, 90_000),
            Some(133_000_000)
        );
        // Jump forward by an hour: re-anchored on arrival too.
        assert_eq!(
            clock.pts(start, start + ms(166), 10 + 90_000 * 3600, 90_000),
            Some(166_000_000)
        );
        // Never before the previous frame.
        let mut c = TrackClock::default();
        c.pts(start, start + ms(50), 0, 1000);
        assert_eq!(c.pts(start, start + ms(10), 0, 1000), Some(50_000_000));
    }
}
