//! The session description a DESCRIBE answers (RFC 4566, H.264 per RFC 6184 §8.2): one video
//! track, H.264 packetization-mode 1 on payload type 96. The parameter sets go in
//! `sprop-parameter-sets` when known, so that a reader can set up its decoder before the first
//! keyframe arrives; they also travel in-band before every IDR, so a reader that ignores them
//! (or a DESCRIBE before the encoder's first picture) loses nothing.

use std::fmt::Write;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The dynamic payload type of the H.264 track.
pub(crate) const PAYLOAD_TYPE: u8 = 96;
/// The track's control URL, relative to the session's (`a=control:*`).
pub(crate) const TRACK_CONTROL: &str = "trackID=0";
/// `profile-level-id` when the SPS is not known yet: Constrained Baseline, level 3.1 (what
/// openh264 encodes and what every H.264 decoder takes).
const DEFAULT_PROFILE_LEVEL_ID: &str = "42e01f";

/// The SDP of `path`'s H.264 track. `sps` and `pps` are NAL units without start codes (NAL
/// header byte first); either may be unknown before the encoder's first keyframe.
pub(crate) fn describe(
    sps: Option<&[u8]>,
    pps: Option<&[u8]>,
    server_ip: IpAddr,
    path: &str,
) -> String {
    let server_ip = server_ip.to_canonical();
    let family = if server_ip.is_ipv4() { "IP4" } else { "IP6" };
    let name: String = path.chars().filter(|c| !c.is_control()).collect();
    // profile_idc, constraint flags and level_idc: the three bytes after the NAL header.
    let profile_level_id = match sps.and_then(|sps| sps.get(1..4)) {
        Some(bytes) => bytes.iter().fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        }),
        None => DEFAULT_PROFILE_LEVEL_ID.to_string(),
    };
    let mut fmtp = format!("packetization-mode=1;profile-level-id={profile_level_id}");
    if let (Some(sps), Some(pps)) = (sps, pps)
        && !sps.is_empty()
        && !pps.is_empty()
    {
        let _ = write!(
            fmtp,
            ";sprop-parameter-sets={},{}",
            STANDARD.encode(sps),
            STANDARD.encode(pps)
        );
    }
    let lines = [
        "v=0".to_string(),
        format!(
            "o=- {} 1 IN {family} {server_ip}",
            session_id(path, sps, pps)
        ),
        format!("s=camportal {name}"),
        "c=IN IP4 0.0.0.0".to_string(),
        "t=0 0".to_string(),
        "a=tool:camportal".to_string(),
        "a=control:*".to_string(),
        format!("m=video 0 RTP/AVP {PAYLOAD_TYPE}"),
        format!("a=rtpmap:{PAYLOAD_TYPE} H264/90000"),
        format!("a=fmtp:{PAYLOAD_TYPE} {fmtp}"),
        format!("a=control:{TRACK_CONTROL}"),
    ];
    lines.iter().fold(String::new(), |mut sdp, line| {
        sdp.push_str(line);
        sdp.push_str("\r\n");
        sdp
    })
}

/// The `o=` session id: the same for the same stream, another when the encoder's parameters
/// change (FNV-1a of the path and the parameter sets).
fn session_id(path: &str, sps: Option<&[u8]>, pps: Option<&[u8]>) -> u32 {
    let parts = [
        path.as_bytes(),
        sps.unwrap_or_default(),
        pps.unwrap_or_default(),
    ];
    parts
        .iter()
        .flat_map(|part| part.iter().chain(&[0]))
        .fold(0x811c_9dc5u32, |hash, byte| {
            (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
        })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::rtp::h264::sample::{PPS, SPS};

    fn lines(sdp: &str) -> Vec<&str> {
        assert!(sdp.ends_with("\r\n"), "{sdp:?}");
        assert!(!sdp.replace("\r\n", "").contains('\n'), "{sdp:?}");
        sdp.split_terminator("\r\n").collect()
    }

    #[test]
    fn with_parameter_sets() {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10));
        let sdp = describe(Some(&SPS), Some(&PPS), ip, "cam");
        let id = session_id("cam", Some(&SPS), Some(&PPS));
        let origin = format!("o=- {id} 1 IN IP4 192.168.1.10");
        assert_eq!(
            lines(&sdp),
            [
                "v=0",
                origin.as_str(),
                "s=camportal cam",
                "c=IN IP4 0.0.0.0",
                "t=0 0",
                "a=tool:camportal",
                "a=control:*",
                "m=video 0 RTP/AVP 96",
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;\
                 sprop-parameter-sets=Z0LAHw==,aM48",
                "a=control:trackID=0",
            ]
        );
    }

    #[test]
    fn without_parameter_sets() {
        let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let sdp = describe(None, None, ip, "cam");
        let lines = lines(&sdp);
        assert!(lines[1].ends_with(" 1 IN IP6 ::1"), "{}", lines[1]);
        assert_eq!(
            lines[9],
            "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f"
        );
        // Only an SPS: its profile, no sprop (a decoder needs both).
        let sdp = describe(Some(&SPS), None, ip, "cam");
        assert!(sdp.contains("profile-level-id=42c01f\r\n"), "{sdp}");
        // An SPS too short to carry a profile.
        let sdp = describe(Some(&SPS[..2]), Some(&PPS), ip, "cam");
        assert!(sdp.contains("profile-level-id=42e01f;sprop"), "{sdp}");
    }

    #[test]
    fn origin_of_a_dual_stack_socket_is_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped());
        let sdp = describe(None, None, mapped, "cam");
        assert!(sdp.contains(" 1 IN IP4 10.0.0.2\r\n"), "{sdp}");
    }

    #[test]
    fn session_id_follows_the_stream() {
        let id = session_id("cam", Some(&SPS), Some(&PPS));
        assert_eq!(id, session_id("cam", Some(&SPS), Some(&PPS)));
        assert_ne!(id, session_id("cam2", Some(&SPS), Some(&PPS)));
        assert_ne!(id, session_id("cam", Some(&SPS[..3]), Some(&PPS)));
        assert_ne!(id, session_id("cam", None, None));
    }
}
