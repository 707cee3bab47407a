//! A standing queue on the way to a viewer, seen in its transport-wide feedback, and the cap on
//! the viewer's estimate that drains it.
//!
//! Why beside GCC: measured on a 1 Mbit/s link with a 300 ms buffer (tbf), GCC's delay half did
//! not react before the buffer overflowed, and its loss half, once loss stopped, climbs 5 % per
//! 200 ms (+28 %/s): the estimate went past the link every few seconds, the queue filled, and
//! each overflow froze the picture for 1–3 s. Here the queue is measured directly: a packet's
//! one-way delay (arrival on the viewer's clock minus departure on ours) less the smallest seen
//! lately is the time it waited in a queue. A queue that stays above [`STANDING_QUEUE`] for
//! [`STANDING_FOR`] (a keyframe's burst drains sooner) caps the estimate just below what the
//! link delivered; the cap then rises while the queue stays short — back to that rate within a
//! second or so, slowly just above it, faster beyond — and goes once GCC's own estimate is the
//! lower.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A queue this long, standing, means the link is full.
const STANDING_QUEUE: Duration = Duration::from_millis(50);
/// ... for this long: shorter queues are bursts (a keyframe) draining.
const STANDING_FOR: Duration = Duration::from_millis(400);
/// Below this the queue counts as empty, and the cap may rise.
const SHORT_QUEUE: Duration = Duration::from_millis(20);
/// The smallest one-way delay of this long a window is the path's own (no queue).
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// What "delivered" is measured over.
const DELIVERED_WINDOW: Duration = Duration::from_secs(1);
/// On a standing queue: the cap, as a share of what the link delivered (the rest drains it).
const CUT_TO: f64 = 0.9;
/// One cut per this long: the queue takes time to drain after a cut.
const CUT_INTERVAL: Duration = Duration::from_millis(1000);
/// While the queue is short the cap rises this much per second up to the rate at which the link
/// last filled up (its ceiling, as far as is known: the cut below it only drains the queue)...
const RISE_TO_CEILING: f64 = 1.1;
/// ... this much just above it, where the link filled up last time...
const RISE_NEAR_CEILING: f64 = 1.02;
/// ... and this much beyond: a link that grew back is found within seconds (measured: from 400
/// kbit/s back to a 2 Mbit/s path's full rate in 8–10 s).
const RISE_BEYOND: f64 = 1.25;
/// "Just above" the ceiling: up to this share of it.
const NEAR_CEILING: f64 = 1.05;

/// The queue watch of one viewer.
#[derive(Debug, Default)]
pub(crate) struct QueueWatch {
    /// Departures are measured from here (any fixed instant will do).
    epoch: Option<Instant>,
    /// Smallest one-way delay per feedback batch, for the base: (when, seconds).
    delays: VecDeque<(Instant, f64)>,
    /// Queue per feedback batch: (when, its shortest packet wait, seconds).
    queue: VecDeque<(Instant, f64)>,
    /// Bytes that arrived: (when reported, bytes).
    delivered: VecDeque<(Instant, usize)>,
    cap: Option<f64>,
    /// What the link delivered when its queue last stood.
    ceiling: Option<f64>,
    last_cut: Option<Instant>,
    last_update: Option<Instant>,
}

impl QueueWatch {
    /// One feedback batch: `(size, departure, arrival on the viewer's clock)` of each packet that
    /// arrived; `estimate` is GCC's (a cap above it is dropped).
    pub(crate) fn on_feedback(
        &mut self,
        now: Instant,
        arrived: impl IntoIterator<Item = (usize, Instant, Duration)>,
        estimate: f64,
    ) {
        let mut batch_min: Option<f64> = None;
        for (size, departure, arrival) in arrived {
            let epoch = *self.epoch.get_or_insert(departure);
            let sent = departure.saturating_duration_since(epoch).as_secs_f64();
            let delay = arrival.as_secs_f64() - sent;
            batch_min = Some(batch_min.map_or(delay, |m: f64| m.min(delay)));
            self.delivered.push_back((now, size));
        }
        trim(&mut self.delivered, now, DELIVERED_WINDOW);
        if let Some(delay) = batch_min {
            self.delays.push_back((now, delay));
            trim(&mut self.delays, now, BASE_WINDOW);
            let base = self
                .delays
                .iter()
                .map(|(_, d)| *d)
                .fold(f64::INFINITY, f64::min);
            self.queue.push_back((now, delay - base));
            trim(&mut self.queue, now, STANDING_FOR);
        }
        self.decide(now, estimate);
    }

    /// The cap (bit/s) the estimate must stay under, if any.
    pub(crate) fn cap(&self) -> Option<f64> {
        self.cap
    }

    /// Bits per second that arrived over the last [`DELIVERED_WINDOW`].
    fn delivered_bps(&self) -> f64 {
        let bytes: usize = self.delivered.iter().map(|(_, b)| b).sum();
        bytes as f64 * 8.0 / DELIVERED_WINDOW.as_secs_f64()
    }

    fn decide(&mut self, now: Instant, estimate: f64) {
        let elapsed = self
            .last_update
            .replace(now)
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        // The shortest wait over the window: if even that is long, the queue is standing.
        let standing = self
            .queue
            .iter()
            .map(|(_, q)| *q)
            .fold(f64::INFINITY, f64::min);
        let spans_window = self
            .queue
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= STANDING_FOR / 2);
        let may_cut = self
            .last_cut
            .is_none_or(|at| now.saturating_duration_since(at) >= CUT_INTERVAL);
        if spans_window && standing > STANDING_QUEUE.as_secs_f64() && may_cut {
            let delivered = self.delivered_bps();
            if delivered > 0.0 {
                self.cap = Some(CUT_TO * delivered);
                self.ceiling = Some(delivered);
                self.last_cut = Some(now);
            }
        } else if let Some(cap) = self.cap
            && standing < SHORT_QUEUE.as_secs_f64()
        {
            let rise = match self.ceiling.map(|ceiling| cap / ceiling) {
                Some(share) if share < 1.0 => RISE_TO_CEILING,
                Some(share) if share < NEAR_CEILING => RISE_NEAR_CEILING,
                _ => RISE_BEYOND,
            };
            let risen = cap * rise.powf(elapsed.min(1.0));
            self.cap = (risen < estimate).then_some(risen);
        }
    }
}

/// Drops entries older than `window`.
fn trim<T>(entries: &mut VecDeque<(Instant, T)>, now: Instant, window: Duration) {
    while entries
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window)
    {
        entries.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `secs` of a link delivering `bps` in 1000-byte packets, fed back every 100 ms, each
    /// packet waiting `queue(t)` (t in ms since `start`) on top of a 20 ms path. Returns the cap.
    fn feed(
        watch: &mut QueueWatch,
        start: Instant,
        from_ms: u64,
        to_ms: u64,
        bps: f64,
        queue: impl Fn(u64) -> u64,
    ) -> Option<f64> {
        let per_100ms = (bps / 8.0 / 1000.0 / 10.0).round() as u64;
        let mut cap = None;
        for t in (from_ms..to_ms).step_by(100) {
            let packets: Vec<_> = (0..per_100ms)
                .map(|i| {
                    let sent = t + i * 100 / per_100ms.max(1);
                    let arrival = Duration::from_millis(1_000 + sent + 20 + queue(sent));
                    (1000, start + Duration::from_millis(sent), arrival)
                })
                .collect();
            watch.on_feedback(start + Duration::from_millis(t + 100), packets, 3e6);
            cap = watch.cap();
        }
        cap
    }

    #[test]
    fn no_queue_no_cap() {
        let (mut watch, t0) = (QueueWatch::default(), Instant::now());
        assert_eq!(feed(&mut watch, t0, 0, 5_000, 800_000.0, |_| 0), None);
    }

    #[test]
    fn a_standing_queue_caps_below_what_arrives() {
        let (mut watch, t0) = (QueueWatch::default(), Instant::now());
        feed(&mut watch, t0, 0, 2_000, 960_000.0, |_| 0);
        // The queue grows 100 ms per second from here.
        let cap = feed(&mut watch, t0, 2_000, 3_000, 960_000.0, |t| {
            (t - 2_000) / 10
        });
        let cap = cap.expect("capped");
        assert!((850_000.0..=950_000.0).contains(&cap), "{cap}");
        // It drains: the cap rises back to the rate that filled the link within a second or so,
        // then slowly (2 % a second)...
        let later = feed(&mut watch, t0, 3_000, 5_000, 800_000.0, |_| 0).expect("still capped");
        assert!(later > cap * 1.1 && later < cap * 1.16, "{cap} → {later}");
        // ... faster once past it (the link may have grown), and goes once GCC's estimate is
        // lower.
        let past = feed(&mut watch, t0, 5_000, 11_000, 800_000.0, |_| 0).expect("still capped");
        assert!(past > 1.5 * cap, "{cap} → {past}");
        watch.on_feedback(t0 + 11_100 * MS, [], past * 0.9);
        assert_eq!(watch.cap(), None);
    }

    #[test]
    fn a_keyframe_burst_is_not_a_standing_queue() {
        let (mut watch, t0) = (QueueWatch::default(), Instant::now());
        // Every 2 s, 300 ms of packets wait up to 250 ms and drain again.
        let burst = |t: u64| {
            let into = t % 2_000;
            if into < 300 {
                250 - into * 250 / 300
            } else {
                0
            }
        };
        assert_eq!(feed(&mut watch, t0, 0, 10_000, 800_000.0, burst), None);
    }
}
