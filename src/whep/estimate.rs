//! Each viewer's bandwidth, as Google Congestion Control estimates it from the browser's
//! transport-wide feedback (TWCC, which browsers send once `transport-cc` is negotiated): the
//! estimator runs inside the peer connection's interceptor chain, where the application cannot
//! reach it, so it is wrapped to publish what it says into an [`Estimate`] the viewer reads —
//! capped while a queue stands on the way to the viewer (`queuing.rs`). The round trip comes
//! from the viewer's receiver reports (`retransmit.rs`), whether or not the rate adapts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

use super::queuing::QueueWatch;

/// What a viewer's estimator says now.
#[derive(Debug, Default)]
pub(crate) struct Estimate {
    bps: AtomicU64,
    /// Loss in parts per million, as the estimator measures it.
    loss_ppm: AtomicU64,
    rtt_us: AtomicU64,
    /// Feedback has come: until then the estimate is only the starting guess.
    informed: AtomicBool,
}

impl Estimate {
    /// The estimate in bit/s, once feedback has come.
    pub(crate) fn bps(&self) -> Option<u64> {
        self.informed
            .load(Ordering::Relaxed)
            .then(|| self.bps.load(Ordering::Relaxed))
    }

    pub(crate) fn loss(&self) -> f64 {
        self.loss_ppm.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The round trip, from the viewer's receiver reports (`retransmit.rs`).
    pub(crate) fn set_rtt(&self, rtt: std::time::Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.rtt_us.store(us, Ordering::Relaxed);
    }

    /// The round trip, once a receiver report told it.
    pub(crate) fn rtt(&self) -> Option<std::time::Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        self.rtt().map(|rtt| rtt.as_secs_f64() * 1e3)
    }
}

/// GCC, publishing its target after every change, capped while a queue stands (`queuing.rs`).
pub(crate) struct Published {
    gcc: Gcc,
    queue: QueueWatch,
    out: Arc<Estimate>,
}

impl Published {
    /// GCC starting at `initial` bit/s, kept within `min..=max`.
    pub(crate) fn new(initial: f64, min: f64, max: f64) -> (Published, Arc<Estimate>) {
        let out = Arc::new(Estimate::default());
        let gcc = Gcc::new(initial, min, max);
        out.bps
            .store(gcc.target_bitrate() as u64, Ordering::Relaxed);
        (
            Published {
                gcc,
                queue: QueueWatch::default(),
                out: Arc::clone(&out),
            },
            out,
        )
    }

    fn publish(&self) {
        let gcc = self.gcc.target_bitrate();
        let bps = self.queue.cap().map_or(gcc, |cap| cap.min(gcc));
        self.out.bps.store(bps as u64, Ordering::Relaxed);
        let stats = self.gcc.stats();
        if let Some(loss) = stats.packet_loss {
            self.out
                .loss_ppm
                .store((loss.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
        }
    }
}

impl BandwidthEstimator for Published {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        let arrived = reports
            .iter()
            .filter_map(|r| Some((r.size, r.departure, r.arrival?)));
        self.queue
            .on_feedback(now, arrived, self.gcc.target_bitrate());
        if !reports.is_empty() {
            self.out.informed.store(true, Ordering::Relaxed);
        }
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}
