//! When to force a keyframe. Every new viewer and every PLI/FIR wants one at once, but an IDR
//! costs several normal frames of bitrate: requests within `min_interval` of a forced keyframe
//! are merged into one more keyframe at the end of that interval, so a burst of joins costs at
//! most two IDRs and nobody waits longer than `min_interval`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Force a keyframe now.
    Now,
    /// Force one after this delay (schedule a wake-up, then call [`KeyframePolicy::fire`]).
    After(Duration),
    /// A keyframe is already scheduled; this request rides on it.
    Merged,
}

#[derive(Debug, Clone)]
pub(crate) struct KeyframePolicy {
    min_interval: Duration,
    last_forced: Option<Instant>,
    scheduled: bool,
}

impl KeyframePolicy {
    pub(crate) fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_forced: None,
            scheduled: false,
        }
    }

    pub(crate) fn request(&mut self, now: Instant) -> Decision {
        if self.scheduled {
            return Decision::Merged;
        }
        match self.last_forced {
            Some(last) if now.duration_since(last) < self.min_interval => {
                self.scheduled = true;
                Decision::After(self.min_interval - now.duration_since(last))
            }
            _ => {
                self.last_forced = Some(now);
                Decision::Now
            }
        }
    }

    /// The scheduled wake-up came: force the keyframe that was merged into it.
    pub(crate) fn fire(&mut self, now: Instant) -> bool {
        if !self.scheduled {
            return false;
        }
        self.scheduled = false;
        self.last_forced = Some(now);
        true
    }
}

/// One viewer's keyframe requests, at most one per `interval`: the path's policy above merges
/// requests only within its short interval, so without this a viewer sending PLIs at 50 Hz would
/// raise every viewer's keyframe rate (and the bitrate with it).
#[derive(Debug, Clone)]
pub(crate) struct RequestLimit {
    interval: Duration,
    last: Option<Instant>,
}

impl RequestLimit {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether a request now goes through (and counts as the last one).
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if allowed {
            self.last = Some(now);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn first_request_is_served_at_once() {
        let mut policy = KeyframePolicy::new(INTERVAL);
        assert_eq!(policy.request(Instant::now()), Decision::Now);
    }

    #[test]
    fn burst_of_joins_costs_one_more_keyframe() {
        let mut policy = KeyframePolicy::new(INTERVAL);
        let t0 = Instant::now();
        assert_eq!(policy.request(t0), Decision::Now);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            policy.request(t1),
            Decision::After(Duration::from_millis(400))
        );
        for i in 0..50 {
            assert_eq!(
                policy.request(t1 + Duration::from_millis(i)),
                Decision::Merged
            );
        }
        assert!(policy.fire(t0 + INTERVAL));
        assert!(!policy.fire(t0 + INTERVAL), "fires once");
    }

    #[test]
    fn after_the_interval_requests_are_immediate_again() {
        let mut policy = KeyframePolicy::new(INTERVAL);
        let t0 = Instant::now();
        policy.request(t0);
        assert_eq!(policy.request(t0 + INTERVAL), Decision::Now);
    }

    #[test]
    fn a_fired_keyframe_restarts_the_interval() {
        let mut policy = KeyframePolicy::new(INTERVAL);
        let t0 = Instant::now();
        policy.request(t0);
        policy.request(t0 + Duration::from_millis(10));
        assert!(policy.fire(t0 + INTERVAL));
        assert!(matches!(
            policy.request(t0 + INTERVAL + Duration::from_millis(1)),
            Decision::After(_)
        ));
    }

    #[test]
    fn a_viewer_gets_one_request_per_interval() {
        let mut limit = RequestLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|i| limit.allow(t0 + Duration::from_millis(20) * *i))
            .count();
        // 50 Hz for 2 s: at 0 s and 1 s.
        assert_eq!(allowed, 2);
        assert!(limit.allow(t0 + Duration::from_secs(3)));
    }
}
