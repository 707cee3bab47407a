//! What the data plane counts as it works, for `/metrics`: plain atomics and histograms the
//! threads that do the work add to, read on each scrape. A path's counters live as long as its
//! path actor (a restarted path starts from zero, which Prometheus reads as a counter reset).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Why the encoder made a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyframeReason {
    /// A reader joined (WHEP, RTSP PLAY), or the first picture after nobody watched.
    Join,
    /// A reader asked (RTCP PLI or FIR).
    Pli,
    /// A reader fell behind and skips to the next keyframe.
    Lag,
    /// The source's first picture (a camera back, a program restarted).
    Source,
    /// A new encoder (the path started, or the picture size changed).
    Start,
    /// The configured keyframe interval (or, passed through, the source's own).
    Interval,
}

impl KeyframeReason {
    pub(crate) const ALL: [KeyframeReason; 6] = [
        KeyframeReason::Join,
        KeyframeReason::Pli,
        KeyframeReason::Lag,
        KeyframeReason::Source,
        KeyframeReason::Start,
        KeyframeReason::Interval,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            KeyframeReason::Join => "join",
            KeyframeReason::Pli => "pli",
            KeyframeReason::Lag => "lag",
            KeyframeReason::Source => "source",
            KeyframeReason::Start => "start",
            KeyframeReason::Interval => "interval",
        }
    }

    /// A compact code for an atomic (0 means none).
    pub(crate) fn code(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_code(code: u8) -> Option<KeyframeReason> {
        Self::ALL.get(usize::from(code.checked_sub(1)?)).copied()
    }
}

/// Bytes and packets sent (to one WHEP session, or by all readers of a path).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl Traffic {
    pub(crate) fn add(&self, bytes: usize, packets: u64) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.packets.fetch_add(packets, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
}

/// The path children that restart on their own.
pub(crate) const CHILDREN: [&str; 3] = ["capture", "encoder", "broadcaster"];

/// One path's counters.
#[derive(Debug)]
pub(crate) struct PathCounters {
    /// Everything sent to the path's readers (RTP with SRTP overhead, RTSP, MJPEG parts).
    pub sent: Traffic,
    pub capture_frames: AtomicU64,
    /// Restarts after a failure, by child (index into [`CHILDREN`]).
    pub restarts: [AtomicU64; 3],
    keyframes: [AtomicU64; KeyframeReason::ALL.len()],
    /// Seconds openh264 takes per picture.
    pub encode_seconds: Histogram,
    /// Seconds from a picture's capture to its packets being ready to send.
    pub capture_to_send_seconds: Histogram,
}

impl Default for PathCounters {
    fn default() -> Self {
        PathCounters {
            sent: Traffic::default(),
            capture_frames: AtomicU64::new(0),
            restarts: Default::default(),
            keyframes: Default::default(),
            // 0.5 ms .. ~1 s: a small picture encodes in under a millisecond, 1080p in tens.
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            capture_to_send_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
        }
    }
}

impl PathCounters {
    pub(crate) fn keyframe(&self, reason: KeyframeReason) {
        self.keyframes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn keyframes(&self, reason: KeyframeReason) -> u64 {
        self.keyframes[reason as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn captured(&self) {
        self.capture_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn restarted(&self, child: &str) {
        if let Some(i) = CHILDREN.iter().position(|c| *c == child) {
            self.restarts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn encoded_in(&self, took: Duration) {
        self.encode_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn ready_to_send_after(&self, since_capture: Duration) {
        self.capture_to_send_seconds
            .observe(since_capture.as_secs_f64());
    }
}

/// Counters of the daemon as a whole.
#[derive(Debug, Default)]
pub(crate) struct DaemonCounters {
    /// Reloads of `config.d/` whose files all parsed, and those with an error in some file.
    pub reloads_ok: AtomicU64,
    pub reloads_error: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_reasons_round_trip_through_their_codes() {
        for reason in KeyframeReason::ALL {
            assert_eq!(KeyframeReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(KeyframeReason::from_code(0), None);
        assert_eq!(KeyframeReason::from_code(200), None);
    }
}
