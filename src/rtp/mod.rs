//! RTP facts that more than one protocol needs: the H.264 byte stream and its packetization
//! (RFC 6184), the `abs-capture-time` header extension, plain RTP/RTCP packets and the 90 kHz
//! media clock. WHEP and RTSP use them, and the test viewers read with them what the daemon
//! wrote.

use std::sync::LazyLock;
use std::time::Instant;

pub mod abs_capture_time;
pub mod h264;
pub(crate) mod packet;

/// Every reader's RTP clock (90 kHz) counts from this instant, so timestamps keep going forward
/// across path restarts and a player's jitter buffer never sees time jump back.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the media clock (at daemon start, before any picture is captured).
pub(crate) fn init_clock() {
    LazyLock::force(&EPOCH);
}

/// The 90 kHz timestamp of a picture captured at `mono` (wrapping, without a reader's offset).
pub(crate) fn clock_90k(mono: Instant) -> u32 {
    (mono.saturating_duration_since(*EPOCH).as_micros() * 9 / 100) as u32
}
