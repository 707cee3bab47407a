//! Restart delays for failed children: the first retry is quick (a camera glitch heals at once),
//! later ones grow to a cap so that a source that keeps failing costs almost nothing. A child that
//! ran long enough before failing starts the sequence again.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    /// A run at least this long counts as healthy and resets the sequence.
    healthy_after: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration, healthy_after: Duration) -> Self {
        Self {
            first,
            cap,
            healthy_after,
            failures: 0,
        }
    }

    /// A child failed after running for `ran`: how long to wait before restarting it.
    pub(crate) fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy_after {
            self.failures = 0;
        }
        let delay = self
            .first
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures since the last healthy run.
    #[cfg(test)]
    fn failures(&self) -> u32 {
        self.failures
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(250),
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..8)
            .map(|_| backoff.next_delay(Duration::ZERO).as_millis())
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn a_healthy_run_resets() {
        let mut backoff = Backoff::default();
        backoff.next_delay(Duration::ZERO);
        backoff.next_delay(Duration::ZERO);
        assert_eq!(
            backoff.next_delay(Duration::from_secs(60)),
            Duration::from_millis(250)
        );
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn never_overflows() {
        let mut backoff = Backoff::default();
        for _ in 0..100 {
            assert!(backoff.next_delay(Duration::ZERO) <= Duration::from_secs(10));
        }
    }
}
