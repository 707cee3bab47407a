//! Each viewer's bandwidth, as Google Congestion Control estimates it from the browser's
//! transport-wide feedback (TWCC, which browsers send once `transport-cc` is negotiated): the
//! estimator runs inside the peer connection's interceptor chain, where the application cannot
//! reach it, so it is wrapped to publish what it says into an [`Estimate`] the viewer reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

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

    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1e3),
        }
    }
}

/// GCC, publishing its target after every change.
pub(crate) struct Published {
    gcc: Gcc,
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
                out: Arc::clone(&out),
            },
            out,
        )
    }

    fn publish(&self) {
        let bps = self.gcc.target_bitrate();
        self.out.bps.store(bps as u64, Ordering::Relaxed);
        let stats = self.gcc.stats();
        if let Some(loss) = stats.packet_loss {
            self.out
                .loss_ppm
                .store((loss.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
        }
        if let Some(rtt) = stats.round_trip_time {
            self.out
                .rtt_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
        }
    }
}

impl BandwidthEstimator for Published {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
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
