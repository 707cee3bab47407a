//! Paces a source that has no clock of its own (the test pattern, a file) on a grid of ticks at
//! its fps, by the monotonic clock.

use std::time::{Duration, Instant};

use crate::frame::CaptureTime;

pub(super) struct Pacer {
    period: Duration,
    next_tick: Option<Instant>,
}

impl Pacer {
    /// Ticks `fps` times a second (at least once).
    pub(super) fn new(fps: u32) -> Pacer {
        Pacer {
            period: Duration::from_secs(1) / fps.max(1),
            next_tick: None,
        }
    }

    /// Sleeps until the next tick of the grid and returns the capture time. A late caller gets
    /// its picture at once, and the ticks it missed are skipped rather than caught up in a
    /// burst: the following picture waits for the next tick of the grid.
    pub(super) fn wait_for_tick(&mut self) -> CaptureTime {
        let due = self.next_tick.unwrap_or_else(Instant::now);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let capture = CaptureTime::now();
        let next = next_tick(due, capture.mono, self.period);
        self.next_tick = Some(next);
        capture
    }
}

/// The tick after `now` for a grid that was due at `due`: one period on if we are on time, the
/// first grid point after `now` if we are late.
fn next_tick(due: Instant, now: Instant, period: Duration) -> Instant {
    let late = now.saturating_duration_since(due);
    let missed = u32::try_from(late.as_nanos() / period.as_nanos().max(1)).unwrap_or(u32::MAX);
    if missed > 0 {
        tracing::debug!(missed, "source late: skipping ticks");
    }
    missed
        .checked_add(1)
        .and_then(|n| period.checked_mul(n))
        .and_then(|d| due.checked_add(d))
        .unwrap_or(now + period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_is_one_period_on_late_skips_to_the_grid() {
        let t0 = Instant::now();
        let p = Duration::from_millis(20);
        assert_eq!(next_tick(t0, t0, p), t0 + p);
        assert_eq!(next_tick(t0, t0 + Duration::from_millis(5), p), t0 + p);
        // 70 ms late: three ticks missed, the next one is the fourth.
        assert_eq!(next_tick(t0, t0 + Duration::from_millis(70), p), t0 + 4 * p);
    }
}
