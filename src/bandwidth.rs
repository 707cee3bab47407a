//! How fast a path's encoder may send, from its WebRTC viewers' bandwidth estimates (GCC, see
//! `whep/estimate.rs`). Pure decisions, unit-tested; the broadcaster keeps the estimates and the
//! encoder applies the result.
//!
//! Policy: the encoder follows the **slowest** viewer, with headroom, between the path's
//! `minBitrate` and its `bitrate`. A portal has one or two kiosks: a picture that every kiosk can
//! play beats a sharper one that freezes on one of them. The floor bounds what one slow viewer
//! can cost the others. RTSP and MJPEG readers have no say (a slow one skips to keyframes).

use std::time::{Duration, Instant};

/// The encoder aims this far below the estimate: room for RTCP, retransmissions and keyframes,
/// which the encoder's rate control spreads over a second.
pub(crate) const HEADROOM: f64 = 0.85;
/// An estimate older than this is a viewer that left (viewers report twice a second).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(3);

/// The encoder's target: the slowest estimate with headroom, within `floor..=configured`
/// (a floor above the configured rate is the configured rate). No estimates: `configured`.
pub(crate) fn target(estimates: impl IntoIterator<Item = u64>, configured: u32, floor: u32) -> u32 {
    let floor = floor.min(configured);
    match estimates.into_iter().min() {
        None => configured,
        Some(slowest) => {
            let aim = (slowest as f64 * HEADROOM) as u64;
            aim.clamp(u64::from(floor), u64::from(configured)) as u32
        }
    }
}

/// Whether to retune the encoder from `current` to `wanted` bit/s: down at once when it is
/// clearly less (5 %: a congested link cannot wait), up only by a clear step (10 %), so the
/// encoder does not chase every wobble of the estimate (the estimator itself rises slowly) —
/// but back to the `configured` rate whenever that is what is wanted, however close.
pub(crate) fn worth_changing(current: u32, wanted: u32, configured: u32) -> bool {
    if wanted == current {
        return false;
    }
    let (c, w) = (f64::from(current), f64::from(wanted));
    wanted == configured || w < c * 0.95 || w > c * 1.10
}

/// While the rate is down, keyframes come this many times less often than configured.
const KEYFRAME_STRETCH: u32 = 30;

/// The keyframe interval (in pictures) at `rate` bit/s: the configured one at the configured
/// rate, [`KEYFRAME_STRETCH`] times that below it (a minute at the default 2 s). A keyframe is
/// several pictures' worth of bits in one burst: on a 1 Mbit/s link one takes ~300 ms to get
/// through, which the viewer sees as a freeze (measured: one per periodic keyframe). WebRTC
/// viewers do not need periodic ones: a join or a loss gets one at once, and so does an RTSP
/// reader's PLAY.
pub(crate) fn keyframe_interval(configured_frames: u32, configured: u32, rate: u32) -> u32 {
    if rate < configured {
        configured_frames.saturating_mul(KEYFRAME_STRETCH)
    } else {
        configured_frames
    }
}

/// Far below the configured rate, only every n-th picture is encoded: at a quarter of it every
/// second one, at an eighth every third. Each picture then gets two or three times the bits, so
/// it stays sharp rather than blocky, and a hard picture (noise, a dark room) cannot push the
/// encoder far over its rate (measured: openh264 made ~380 kbit/s of the test's noisy 640x360
/// at 30 fps when asked for 150). Back to more pictures only once the rate is an eighth above a
/// threshold (`current` is the step now), so a rate hovering at one does not flip the frame rate.
pub(crate) fn picture_step(configured: u32, rate: u32, current: u32) -> u32 {
    const THRESHOLDS: [(f64, u32); 2] = [(8.0, 3), (4.0, 2)];
    const BACK: f64 = 1.125;
    let ratio = f64::from(configured) / f64::from(rate.max(1));
    THRESHOLDS
        .iter()
        .find(|(at, step)| {
            let at = if current >= *step { at / BACK } else { *at };
            ratio >= at
        })
        .map_or(1, |(_, step)| *step)
}

/// The latest estimate of each viewer, by reader id.
#[derive(Debug, Default)]
pub(crate) struct Estimates {
    latest: std::collections::HashMap<u64, (u64, Instant)>,
}

impl Estimates {
    pub(crate) fn report(&mut self, reader: u64, bps: u64, now: Instant) {
        self.latest.insert(reader, (bps, now));
        self.latest
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < STALE_AFTER);
    }

    /// The slowest fresh estimate, if any.
    pub(crate) fn slowest(&self, now: Instant) -> Option<u64> {
        self.latest
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < STALE_AFTER)
            .map(|(bps, _)| *bps)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_viewer_sets_the_rate_within_floor_and_configured() {
        assert_eq!(target([], 2_000_000, 150_000), 2_000_000);
        assert_eq!(target([1_000_000, 5_000_000], 2_000_000, 150_000), 850_000);
        assert_eq!(target([50_000], 2_000_000, 150_000), 150_000);
        assert_eq!(target([9_000_000], 2_000_000, 150_000), 2_000_000);
        // A floor above the configured rate is the configured rate.
        assert_eq!(target([10_000], 300_000, 500_000), 300_000);
    }

    #[test]
    fn small_wobbles_leave_the_encoder_alone() {
        let configured = 2_000_000;
        assert!(!worth_changing(1_000_000, 970_000, configured));
        assert!(worth_changing(1_000_000, 940_000, configured));
        assert!(!worth_changing(1_000_000, 1_080_000, configured));
        assert!(worth_changing(1_000_000, 1_120_000, configured));
        // Back to the configured rate, however close.
        assert!(worth_changing(1_900_000, configured, configured));
        assert!(!worth_changing(configured, configured, configured));
    }

    #[test]
    fn keyframes_thin_out_while_the_rate_is_down() {
        assert_eq!(keyframe_interval(60, 2_000_000, 2_000_000), 60);
        assert_eq!(keyframe_interval(60, 2_000_000, 1_900_000), 1800);
        assert_eq!(keyframe_interval(60, 2_000_000, 150_000), 1800);
        assert_eq!(keyframe_interval(60, 2_000_000, 3_000_000), 60);
    }

    #[test]
    fn far_below_the_configured_rate_fewer_pictures() {
        assert_eq!(picture_step(2_000_000, 2_000_000, 1), 1);
        assert_eq!(picture_step(2_000_000, 850_000, 1), 1);
        assert_eq!(picture_step(2_000_000, 500_000, 1), 2);
        assert_eq!(picture_step(2_000_000, 250_000, 1), 3);
        assert_eq!(picture_step(2_000_000, 150_000, 2), 3);
        // Hovering at a quarter: once at 15 fps, it stays there until the rate is clearly up.
        assert_eq!(picture_step(2_000_000, 520_000, 1), 1);
        assert_eq!(picture_step(2_000_000, 520_000, 2), 2);
        assert_eq!(picture_step(2_000_000, 570_000, 2), 1);
        assert_eq!(picture_step(2_000_000, 270_000, 3), 3);
        assert_eq!(picture_step(2_000_000, 290_000, 3), 2);
    }

    #[test]
    fn a_viewer_that_stops_reporting_stops_counting() {
        let t0 = Instant::now();
        let mut estimates = Estimates::default();
        estimates.report(1, 500_000, t0);
        estimates.report(2, 2_000_000, t0);
        assert_eq!(estimates.slowest(t0), Some(500_000));
        // Viewer 1 left; viewer 2 keeps reporting.
        let later = t0 + STALE_AFTER + Duration::from_millis(1);
        estimates.report(2, 2_100_000, later);
        assert_eq!(estimates.slowest(later), Some(2_100_000));
        assert_eq!(estimates.slowest(later + STALE_AFTER), None);
    }
}
