//! A viewer whose link cannot carry a passed-through camera's H.264 gets its keyframes only. An
//! encoded stream follows the slowest viewer (`bandwidth.rs`), but a camera's own H.264 cannot be
//! made smaller. Sending such a viewer everything overfills its link: most pictures arrive broken
//! and the kiosk shows a frozen or smeared picture. Its keyframes alone (one per GOP, decodable on
//! their own) make a slideshow that stays whole; once its estimate has room for the whole stream
//! again, it gets everything from the next keyframe on. (Not for encoded streams: there the
//! estimate of a viewer sent keyframes only could not recover, and the stretched keyframe
//! interval would leave it a picture every 20 s.)
//!
//! The choice is made at keyframes only: a picture between two keyframes needs all before it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The stream's rate is measured over this long (several GOPs at usual settings).
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// Keyframes only once the estimate is below this share of the stream's rate...
const ENTER_BELOW: f64 = 0.8;
/// ... and everything again once it is above this share.
const LEAVE_ABOVE: f64 = 1.1;

/// Of one viewer: what the stream sends, and whether it gets keyframes only.
#[derive(Debug, Default)]
pub(super) struct KeyframesOnly {
    /// Pictures' sizes as they passed: (when, bytes).
    sizes: VecDeque<(Instant, usize)>,
    first: Option<Instant>,
    on: bool,
}

impl KeyframesOnly {
    /// Whether to send this picture to the viewer, whose estimate is `estimate` (None: not
    /// estimated, everything is sent).
    pub(super) fn send(
        &mut self,
        keyframe: bool,
        bytes: usize,
        estimate: Option<u64>,
        now: Instant,
    ) -> bool {
        self.sizes.push_back((now, bytes));
        let first = *self.first.get_or_insert(now);
        while self
            .sizes
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_WINDOW)
        {
            self.sizes.pop_front();
        }
        if keyframe {
            // Decided only once a whole window has been seen: a join starts with a keyframe.
            let measured = now.saturating_duration_since(first) >= RATE_WINDOW;
            self.on = match (estimate, measured) {
                (Some(bps), true) => decide(self.on, bps as f64, self.stream_bps()),
                _ => false,
            };
        }
        keyframe || !self.on
    }

    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    fn stream_bps(&self) -> f64 {
        let bytes: usize = self.sizes.iter().map(|(_, b)| b).sum();
        bytes as f64 * 8.0 / RATE_WINDOW.as_secs_f64()
    }
}

/// Keyframes only (`true`) or everything, given the mode so far, the viewer's estimate and the
/// stream's rate (bit/s); between the two thresholds the mode stays as it was.
fn decide(on: bool, estimate: f64, stream: f64) -> bool {
    if estimate < ENTER_BELOW * stream {
        true
    } else if estimate > LEAVE_ABOVE * stream {
        false
    } else {
        on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_has_a_dead_band() {
        assert!(decide(false, 700_000.0, 1_000_000.0));
        assert!(!decide(false, 900_000.0, 1_000_000.0));
        assert!(decide(true, 900_000.0, 1_000_000.0));
        assert!(decide(true, 1_050_000.0, 1_000_000.0));
        assert!(!decide(true, 1_200_000.0, 1_000_000.0));
    }

    /// A 2 Mbit/s stream at 25 fps with a keyframe a second, the viewer estimated at `bps`:
    /// which of the pictures over `secs` seconds from `from` are sent.
    fn run(only: &mut KeyframesOnly, t0: Instant, from: u64, secs: u64, bps: u64) -> Vec<bool> {
        (from * 25..(from + secs) * 25)
            .map(|i| {
                let keyframe = i % 25 == 0;
                let now = t0 + Duration::from_millis(i * 40);
                only.send(keyframe, 10_000, Some(bps), now)
            })
            .collect()
    }

    #[test]
    fn a_viewer_below_the_stream_gets_keyframes_until_it_has_room() {
        let (mut only, t0) = (KeyframesOnly::default(), Instant::now());
        // Everything while the stream's rate is first measured.
        assert!(run(&mut only, t0, 0, 3, 1_000_000).iter().all(|s| *s));
        // Then keyframes only: one picture a second.
        let sent = run(&mut only, t0, 3, 4, 1_000_000);
        assert_eq!(sent.iter().filter(|s| **s).count(), 4);
        assert!(only.is_on());
        // Room again: everything, from the next keyframe on.
        let sent = run(&mut only, t0, 7, 2, 3_000_000);
        assert!(sent.iter().all(|s| *s));
        assert!(!only.is_on());
    }

    #[test]
    fn without_an_estimate_everything_is_sent() {
        let (mut only, t0) = (KeyframesOnly::default(), Instant::now());
        for i in 0..250u64 {
            let now = t0 + Duration::from_millis(i * 40);
            assert!(only.send(i % 25 == 0, 10_000, None, now));
        }
    }
}
