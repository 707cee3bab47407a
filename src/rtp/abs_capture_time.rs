//! The RTP header extension `abs-capture-time`: each picture's capture time on the sender's wall
//! clock, so that a receiver (Chromium included) can tell how old the picture it shows is.
//! <http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time>: a 64-bit NTP timestamp
//! (Q32.32 seconds since 1900), without the optional clock-offset field (we are the capturer).
//! Negotiated when the offer has it, sent on the first packet of each picture.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The extension's payload for a picture captured at `wall`: the NTP timestamp, big-endian.
pub fn payload(wall: SystemTime) -> [u8; 8] {
    // A clock before 1970 is broken anyway; it reads as the Unix epoch.
    let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS);
    // Nanoseconds to a 32-bit binary fraction of a second.
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    ((seconds << 32) | fraction).to_be_bytes()
}

/// The capture time an extension payload carries (the 8-byte form or the 16-byte one with a
/// clock offset, which is ignored); `None` for anything else or a time before 1970.
pub fn parse(payload: &[u8]) -> Option<SystemTime> {
    let ntp = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    if !matches!(payload.len(), 8 | 16) {
        return None;
    }
    let seconds = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
    // Rounded to the nearest nanosecond, so that a time survives a round trip.
    let nanos = ((ntp & 0xFFFF_FFFF) * 1_000_000_000 + (1 << 31)) >> 32;
    Some(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

/// The SDP id the answer gives `abs-capture-time` (`a=extmap:<id> <URI>`), if it has it.
pub fn id_in_sdp(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, rest) = line.trim().strip_prefix("a=extmap:")?.split_once(' ')?;
        let uri = rest.split_whitespace().next()?;
        // `<id>/<direction>` is allowed.
        let id = id.split('/').next()?;
        (uri == URI).then(|| id.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamps() {
        let ntp = |d: Duration| u64::from_be_bytes(payload(UNIX_EPOCH + d));
        assert_eq!(ntp(Duration::ZERO), NTP_UNIX_OFFSET_SECS << 32);
        assert_eq!(
            ntp(Duration::from_millis(1500)),
            ((NTP_UNIX_OFFSET_SECS + 1) << 32) | 0x8000_0000
        );
        // 2025-01-01T00:00:00.25Z
        assert_eq!(
            ntp(Duration::from_millis(1_735_689_600_250)),
            ((1_735_689_600 + NTP_UNIX_OFFSET_SECS) << 32) | 0x4000_0000
        );
    }

    #[test]
    fn round_trip_to_the_nanosecond() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1_763_990_000_123_456_789),
            Duration::from_micros(1_700_000_000_999_999),
        ] {
            let t = UNIX_EPOCH + d;
            assert_eq!(parse(&payload(t)), Some(t), "{d:?}");
            let mut with_offset = payload(t).to_vec();
            with_offset.extend_from_slice(&[0; 8]);
            assert_eq!(parse(&with_offset), Some(t));
        }
        assert_eq!(parse(&[0; 7]), None);
        assert_eq!(parse(&[0; 9]), None);
        // NTP 0 is 1900: before the Unix epoch.
        assert_eq!(parse(&[0; 8]), None);
    }

    #[test]
    fn finds_the_negotiated_id() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
                   a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                   a=extmap:13 http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time\r\n";
        assert_eq!(id_in_sdp(sdp), Some(13));
        let sdp =
            "a=extmap:7/recvonly http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
        assert_eq!(id_in_sdp(sdp), Some(7));
        assert_eq!(
            id_in_sdp("a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
            None
        );
    }
}
