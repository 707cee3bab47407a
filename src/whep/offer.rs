//! Deciding whether a viewer's SDP offer is one camportal can answer, before any peer connection
//! is built, so that the viewer gets a reason it can act on instead of a generic failure.

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

/// RFC 8839 §5.4: an ICE ufrag or password is at most 256 characters; browsers send 4–32.
const MAX_ICE_CREDENTIAL: usize = 256;

/// The H.264 that camportal sends: Constrained Baseline, packetization-mode 1. A receiver that
/// offers Baseline (`42 00`) or Constrained Baseline (`42 e0`) decodes it; Chromium offers both.
pub(super) const H264_FMTP: [&str; 2] = [
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OfferError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error(
        "the offer has no video that camportal can send: it needs H.264 with \
         packetization-mode=1 and profile-level-id 42e0xx or 4200xx ({0})"
    )]
    NoUsableVideo(String),
    /// Well-formed, with H.264, but a session it describes could never carry video to the
    /// viewer.
    #[error("the offer cannot work: {0}")]
    Unworkable(String),
}

/// Checks the offer; on success returns the payload type of the H.264 format it will be sent in.
pub(super) fn check_offer(sdp: &str) -> Result<u8, OfferError> {
    let session = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|err| OfferError::Malformed(err.to_string()))?;
    let videos: Vec<_> = session
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media == "video")
        .collect();
    if videos.is_empty() {
        return Err(OfferError::NoUsableVideo("no video section".into()));
    }
    let mut seen = Vec::new();
    for media in videos {
        if let Some(payload_type) = sendable_h264(media, &mut seen) {
            check_transport(&session, media)?;
            return Ok(payload_type);
        }
    }
    seen.dedup();
    Err(OfferError::NoUsableVideo(if seen.is_empty() {
        "no codecs offered".into()
    } else {
        format!("offered: {}", seen.join(", "))
    }))
}

/// The first H.264 format of a video section that camportal can send; the others it saw are
/// added to `seen`, for the error.
fn sendable_h264(media: &MediaDescription, seen: &mut Vec<String>) -> Option<u8> {
    let codecs = media.codecs();
    for format in &media.media_name.formats {
        let Ok(payload_type) = format.parse::<u8>() else {
            continue;
        };
        let Some(codec) = codecs.get(&payload_type) else {
            continue;
        };
        if !codec.name.eq_ignore_ascii_case("H264") {
            seen.push(codec.name.clone());
            continue;
        }
        if is_sendable_h264(&codec.fmtp) {
            return Some(payload_type);
        }
        seen.push(format!("H264 {}", codec.fmtp));
    }
    None
}

/// What a WebRTC viewer's video section must say for media to flow to it: enabled, DTLS-SRTP,
/// able to receive, DTLS roles that fit (camportal answers passive, so the viewer must be able
/// to be active), and ICE credentials of a sane length.
fn check_transport(
    session: &SessionDescription,
    media: &MediaDescription,
) -> Result<(), OfferError> {
    let unworkable = |reason: String| Err(OfferError::Unworkable(reason));
    if media.media_name.port.value == 0 {
        return unworkable("its video section is disabled (port 0)".into());
    }
    let protos = media.media_name.protos.join("/");
    if !media.media_name.protos.iter().any(|p| p == "TLS")
        || !media
            .media_name
            .protos
            .iter()
            .any(|p| p.starts_with("SAVP"))
    {
        return unworkable(format!(
            "its video is offered over {protos}; WebRTC needs UDP/TLS/RTP/SAVPF (DTLS-SRTP)"
        ));
    }
    let attribute = |key: &str| -> Option<String> {
        match media.attribute(key) {
            Some(value) => Some(value.unwrap_or_default().to_owned()),
            None => session
                .has_attribute(key)
                .then(|| session.attribute(key).cloned().unwrap_or_default()),
        }
    };
    for direction in ["sendonly", "inactive"] {
        if attribute(direction).is_some() {
            return unworkable(format!(
                "its video is {direction}: a viewer must receive (recvonly or sendrecv)"
            ));
        }
    }
    if attribute("setup").as_deref() == Some("passive") {
        return unworkable(
            "a=setup:passive: camportal is the passive DTLS side; offer actpass or active".into(),
        );
    }
    for (key, name) in [("ice-ufrag", "ICE ufrag"), ("ice-pwd", "ICE password")] {
        match attribute(key) {
            None => return unworkable(format!("it has no {key}: camportal needs ICE")),
            Some(value) if value.is_empty() || value.len() > MAX_ICE_CREDENTIAL => {
                return unworkable(format!(
                    "its {name} is {} bytes long; 1..={MAX_ICE_CREDENTIAL} are allowed",
                    value.len()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn is_sendable_h264(fmtp: &str) -> bool {
    let mut packetization_mode = "0";
    let mut profile = "";
    for parameter in fmtp.split(';') {
        match parameter.trim().split_once('=') {
            Some(("packetization-mode", value)) => packetization_mode = value.trim(),
            Some(("profile-level-id", value)) => profile = value.trim(),
            _ => {}
        }
    }
    let profile = profile.to_ascii_lowercase();
    packetization_mode == "1" && (profile.starts_with("42e0") || profile.starts_with("4200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(media: &str) -> String {
        format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{media}")
    }

    const H264_42E01F: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=setup:actpass\r\n\
        a=recvonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn picks_constrained_baseline_h264() {
        assert_eq!(check_offer(&offer(H264_42E01F)), Ok(102));
    }

    #[test]
    fn accepts_audio_beside_video() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(
            check_offer(&offer(&format!("{audio}{H264_42E01F}"))),
            Ok(102)
        );
    }

    #[test]
    fn rejects_vp8_only_with_reason() {
        let vp8 = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n";
        let err = check_offer(&offer(vp8)).unwrap_err();
        assert!(err.to_string().contains("offered: VP8"), "{err}");
    }

    #[test]
    fn rejects_high_profile_and_mode_0() {
        let high = "m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\nc=IN IP4 0.0.0.0\r\n\
            a=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=1;profile-level-id=64001f\r\n\
            a=rtpmap:101 H264/90000\r\na=fmtp:101 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(matches!(
            check_offer(&offer(high)),
            Err(OfferError::NoUsableVideo(_))
        ));
    }

    #[test]
    fn rejects_audio_only_and_garbage() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            check_offer(&offer(audio)),
            Err(OfferError::NoUsableVideo(_))
        ));
        assert!(matches!(
            check_offer("hello"),
            Err(OfferError::Malformed(_))
        ));
    }

    #[test]
    fn offers_that_can_never_work_say_why() {
        let cases = [
            ("a=setup:actpass", "a=setup:passive", "setup:passive"),
            ("a=recvonly", "a=sendonly", "sendonly"),
            ("a=recvonly", "a=inactive", "inactive"),
            ("m=video 9 ", "m=video 0 ", "port 0"),
            ("UDP/TLS/RTP/SAVPF", "RTP/AVP", "RTP/AVP"),
            ("a=ice-ufrag:abcd\r\n", "", "no ice-ufrag"),
        ];
        for (from, to, reason) in cases {
            let sdp = offer(&H264_42E01F.replacen(from, to, 1));
            match check_offer(&sdp) {
                Err(err @ OfferError::Unworkable(_)) => {
                    assert!(err.to_string().contains(reason), "{reason}: {err}");
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
        let long_ufrag = format!("a=ice-ufrag:{}", "u".repeat(60_000));
        let sdp = offer(&H264_42E01F.replacen("a=ice-ufrag:abcd", &long_ufrag, 1));
        let err = check_offer(&sdp).unwrap_err();
        assert!(err.to_string().contains("60000 bytes"), "{err}");
        // Session-level attributes count too.
        let session_level = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=setup:passive\r\n{}",
            H264_42E01F.replacen("a=setup:actpass\r\n", "", 1)
        );
        assert!(matches!(
            check_offer(&session_level),
            Err(OfferError::Unworkable(_))
        ));
    }
}
