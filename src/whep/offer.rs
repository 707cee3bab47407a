//! Deciding whether a viewer's SDP offer is one camportal can answer, before any peer connection
//! is built, so that the viewer gets a reason it can act on instead of a generic failure.

use std::io::Cursor;

use rtc::sdp::description::session::SessionDescription;

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
                return Ok(payload_type);
            }
            seen.push(format!("H264 {}", codec.fmtp));
        }
    }
    seen.dedup();
    Err(OfferError::NoUsableVideo(if seen.is_empty() {
        "no codecs offered".into()
    } else {
        format!("offered: {}", seen.join(", "))
    }))
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
        a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
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
}
