//! Plain RTP and RTCP packets (RFC 3550) for protocols that send without a WebRTC stack: the
//! RTP fixed header in front of each payload, and the RTCP sender report that lets a player map
//! RTP timestamps to wall-clock time (and so sync and show latency). RTSP needs both; WHEP gets
//! them from its stack.

use std::time::SystemTime;

use super::abs_capture_time;

/// RTP version 2, no padding, no extension, no CSRC (the first byte of every packet we send).
const VERSION_2: u8 = 0x80;
/// RTCP packet type of a sender report (RFC 3550 §12.1).
const RTCP_SR: u8 = 200;

/// Appends a 12-byte RTP header: version 2, no CSRC, no header extension.
pub(crate) fn header(
    buf: &mut Vec<u8>,
    payload_type: u8,
    marker: bool,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) {
    buf.push(VERSION_2);
    buf.push((u8::from(marker) << 7) | (payload_type & 0x7f));
    buf.extend_from_slice(&sequence.to_be_bytes());
    buf.extend_from_slice(&timestamp.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
}

/// An RTCP sender report without report blocks (RFC 3550 §6.4.1): `ntp` is the wall-clock time
/// the RTP timestamp `rtp_timestamp` stands for; `packets` and `octets` count what was sent so
/// far (payload octets, without headers).
pub(crate) fn sender_report(
    ssrc: u32,
    ntp: SystemTime,
    rtp_timestamp: u32,
    packets: u32,
    octets: u32,
) -> [u8; 28] {
    let mut out = [0; 28];
    out[0] = VERSION_2; // report count 0
    out[1] = RTCP_SR;
    // Length in 32-bit words minus one: 28 / 4 - 1.
    out[2..4].copy_from_slice(&6u16.to_be_bytes());
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    // The same Q32.32 NTP timestamp as `abs-capture-time`'s.
    out[8..16].copy_from_slice(&abs_capture_time::payload(ntp));
    out[16..20].copy_from_slice(&rtp_timestamp.to_be_bytes());
    out[20..24].copy_from_slice(&packets.to_be_bytes());
    out[24..28].copy_from_slice(&octets.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn rtp_header_bytes() {
        let mut buf = vec![0xaa];
        header(&mut buf, 96, true, 0x1234, 0x0102_0304, 0x1a2b_3c4d);
        assert_eq!(
            buf,
            [
                0xaa, 0x80, 0xe0, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0x1a, 0x2b, 0x3c, 0x4d
            ]
        );
        let mut buf = Vec::new();
        header(&mut buf, 96, false, 0xffff, 0, 1);
        assert_eq!(buf, [0x80, 0x60, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]);
        // A payload type over 7 bits cannot touch the marker bit.
        let mut buf = Vec::new();
        header(&mut buf, 0xff, false, 0, 0, 0);
        assert_eq!(buf[1], 0x7f);
    }

    #[test]
    fn sender_report_bytes() {
        // 2025-01-01T00:00:00.5Z
        let wall = UNIX_EPOCH + Duration::from_millis(1_735_689_600_500);
        let sr = sender_report(0x1a2b_3c4d, wall, 90_000, 10, 1000);
        assert_eq!(sr[0] >> 6, 2, "version");
        assert_eq!(sr[0] & 0x3f, 0, "no padding, no report blocks");
        assert_eq!(sr[1], 200);
        assert_eq!(u16::from_be_bytes([sr[2], sr[3]]), 6);
        assert_eq!(sr[4..8], [0x1a, 0x2b, 0x3c, 0x4d]);
        let seconds = 1_735_689_600u32 + 2_208_988_800u32;
        assert_eq!(sr[8..12], seconds.to_be_bytes());
        assert_eq!(sr[12..16], [0x80, 0, 0, 0]);
        assert_eq!(sr[16..20], 90_000u32.to_be_bytes());
        assert_eq!(sr[20..24], [0, 0, 0, 10]);
        assert_eq!(sr[24..28], 1000u32.to_be_bytes());
    }
}
