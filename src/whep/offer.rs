//! Deciding whether a viewer's SDP offer is one camportal can answer, before any peer connection
//! is built, so that the viewer gets a reason it can act on instead of a generic failure.

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

/// RFC 8839 §5.4: an ICE ufrag or password is at most 256 characters; browsers send 4–32.
const MAX_ICE_CREDENTIAL: usize = 256;

/// What the path's H.264 is: the three bytes of `profile-level-id` (profile_idc, the constraint
/// flags, level_idc), as its SPS says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamProfile(pub [u8; 3]);

impl StreamProfile {
    /// Until the path's SPS is known: what openh264 makes, Constrained Baseline, level 3.1.
    pub(crate) const DEFAULT: StreamProfile = StreamProfile([0x42, 0xe0, 0x1f]);

    /// From an SPS NAL unit (header byte first).
    pub(crate) fn from_sps(sps: &[u8]) -> Option<StreamProfile> {
        Some(StreamProfile([*sps.get(1)?, *sps.get(2)?, *sps.get(3)?]))
    }

    /// Whether a receiver that offered `offered` (profile_idc, constraint flags) decodes this
    /// stream: the same profile, or one that contains it (a Baseline, Main or High decoder
    /// decodes Constrained Baseline; High decodes Main and Constrained High). Not the other way:
    /// a Constrained High receiver (`64 0c`) does not take High with B-frames (`64 00`).
    fn decodable_by(self, offered: [u8; 2]) -> bool {
        use H264Profile::*;
        let stream = H264Profile::of(self.0[0], self.0[1]);
        match (H264Profile::of(offered[0], offered[1]), stream) {
            (Other, _) | (_, Other) => false,
            (offered, stream) if offered == stream => true,
            (Baseline | Main | High, ConstrainedBaseline) => true,
            (High, Main | ConstrainedHigh) => true,
            _ => false,
        }
    }

    fn name(self) -> &'static str {
        match H264Profile::of(self.0[0], self.0[1]) {
            H264Profile::ConstrainedBaseline => "Constrained Baseline",
            H264Profile::Baseline => "Baseline",
            H264Profile::Main => "Main",
            H264Profile::ConstrainedHigh => "Constrained High",
            H264Profile::High => "High",
            H264Profile::Other => "a profile browsers rarely decode",
        }
    }
}

/// The H.264 profiles WebRTC knows, told from `profile_idc` and the constraint flags as RFC 6184
/// and browsers read them (e.g. Constrained Baseline is `42` with constraint_set1, whatever
/// set2 says: openh264 writes `42 c0`, Chromium offers `42 e0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    Other,
}

impl H264Profile {
    fn of(profile_idc: u8, constraints: u8) -> H264Profile {
        // (profile_idc, bits that must match, their values), first match wins.
        const PATTERNS: [(u8, u8, u8, H264Profile); 8] = [
            (
                0x42,
                0b0100_1111,
                0b0100_0000,
                H264Profile::ConstrainedBaseline,
            ),
            (
                0x4d,
                0b1000_1111,
                0b1000_0000,
                H264Profile::ConstrainedBaseline,
            ),
            (
                0x58,
                0b1100_1111,
                0b1100_0000,
                H264Profile::ConstrainedBaseline,
            ),
            (0x42, 0b0100_1111, 0b0000_0000, H264Profile::Baseline),
            (0x58, 0b1100_1111, 0b1000_0000, H264Profile::Baseline),
            (0x4d, 0b1010_1111, 0b0000_0000, H264Profile::Main),
            (0x64, 0b1111_1111, 0b0000_0000, H264Profile::High),
            (0x64, 0b1111_1111, 0b0000_1100, H264Profile::ConstrainedHigh),
        ];
        PATTERNS
            .iter()
            .find(|(idc, mask, value, _)| *idc == profile_idc && constraints & mask == *value)
            .map_or(H264Profile::Other, |(.., profile)| *profile)
    }
}

/// The H.264 format of the offer the stream goes out in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub payload_type: u8,
    /// For the answer: the profile and constraints the receiver offered (so the format matches
    /// it, RFC 6184 §8.2.2), with the stream's level.
    pub fmtp: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OfferError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no video that camportal can send: {0}")]
    NoUsableVideo(String),
    /// Well-formed, with H.264, but a session it describes could never carry video to the
    /// viewer.
    #[error("the offer cannot work: {0}")]
    Unworkable(String),
}

/// Checks the offer against the stream the path sends; on success returns the H.264 format the
/// stream will be sent in.
pub(super) fn check_offer(sdp: &str, stream: StreamProfile) -> Result<Chosen, OfferError> {
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
        if let Some(chosen) = sendable_h264(media, stream, &mut seen) {
            check_transport(&session, media)?;
            return Ok(chosen);
        }
    }
    seen.dedup();
    let [profile, constraints, level] = stream.0;
    Err(OfferError::NoUsableVideo(format!(
        "the path sends H.264 {} (profile-level-id {profile:02x}{constraints:02x}{level:02x}), \
         which needs H.264 with packetization-mode=1 in a profile that decodes it ({})",
        stream.name(),
        if seen.is_empty() {
            "no codecs offered".to_owned()
        } else {
            format!("offered: {}", seen.join(", "))
        }
    )))
}

/// The first H.264 format of a video section that can carry `stream`; the others it saw are
/// added to `seen`, for the error.
fn sendable_h264(
    media: &MediaDescription,
    stream: StreamProfile,
    seen: &mut Vec<String>,
) -> Option<Chosen> {
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
        if let Some(offered) = sendable_profile(&codec.fmtp, stream) {
            let level = stream.0[2];
            return Some(Chosen {
                payload_type,
                fmtp: format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;\
                     profile-level-id={:02x}{:02x}{level:02x}",
                    offered[0], offered[1]
                ),
            });
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

/// The offered profile_idc and constraint flags, if this format can carry `stream`.
fn sendable_profile(fmtp: &str, stream: StreamProfile) -> Option<[u8; 2]> {
    let mut packetization_mode = "0";
    let mut profile = "";
    for parameter in fmtp.split(';') {
        match parameter.trim().split_once('=') {
            Some(("packetization-mode", value)) => packetization_mode = value.trim(),
            Some(("profile-level-id", value)) => profile = value.trim(),
            _ => {}
        }
    }
    let hex = |at: usize| u8::from_str_radix(profile.get(at..at + 2)?, 16).ok();
    let offered = [hex(0)?, hex(2)?];
    (packetization_mode == "1" && profile.len() == 6 && stream.decodable_by(offered))
        .then_some(offered)
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

    const CB: StreamProfile = StreamProfile::DEFAULT;

    /// Chromium's H.264 formats (as it offers them), the stream of each profile must pick its own.
    const CHROMIUM: &str = "m=video 9 UDP/TLS/RTP/SAVPF 102 106 108 112 127\r\n\
        c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n\
        a=setup:actpass\r\na=recvonly\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
        a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
        a=rtpmap:112 H264/90000\r\na=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n\
        a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n";

    #[test]
    fn the_answer_describes_the_stream_sent() {
        let pick = |stream: [u8; 3]| {
            check_offer(&offer(CHROMIUM), StreamProfile(stream)).map(|c| {
                (
                    c.payload_type,
                    c.fmtp.rsplit('=').next().unwrap_or("").to_owned(),
                )
            })
        };
        // Constrained Baseline (as openh264 writes it, 42 c0): the Baseline format comes first
        // and decodes it; the level is the stream's.
        assert_eq!(pick([0x42, 0xc0, 0x28]), Ok((102, "420028".into())));
        assert_eq!(pick([0x42, 0xe0, 0x1f]), Ok((102, "42001f".into())));
        // Main with constraint_set1 (as x264 writes it): the Main format.
        assert_eq!(pick([0x4d, 0x40, 0x1f]), Ok((108, "4d001f".into())));
        // High with B-frames: not the Constrained High format.
        assert_eq!(pick([0x64, 0x00, 0x28]), Ok((112, "640028".into())));
        // A profile nobody offered: a clear refusal.
        let err = pick([0x6e, 0x00, 0x1f]).unwrap_err().to_string();
        assert!(
            err.contains("profile-level-id 6e001f") && err.contains("offered: H264"),
            "{err}"
        );
        assert_eq!(
            StreamProfile::from_sps(&[0x67, 0x4d, 0x40, 0x1f, 0xaa]),
            Some(StreamProfile([0x4d, 0x40, 0x1f]))
        );
        assert_eq!(StreamProfile::from_sps(&[0x67, 0x4d]), None);
    }

    #[test]
    fn profiles_are_read_as_browsers_read_them() {
        use H264Profile::*;
        for (idc, iop, profile) in [
            (0x42, 0xc0, ConstrainedBaseline),
            (0x42, 0xe0, ConstrainedBaseline),
            (0x42, 0x40, ConstrainedBaseline),
            (0x42, 0x00, Baseline),
            (0x4d, 0x00, Main),
            (0x4d, 0x40, Main),
            (0x4d, 0x80, ConstrainedBaseline),
            (0x64, 0x00, High),
            (0x64, 0x0c, ConstrainedHigh),
            (0x6e, 0x00, Other),
        ] {
            assert_eq!(H264Profile::of(idc, iop), profile, "{idc:02x}{iop:02x}");
        }
        // Only a containing profile decodes a stream.
        let cb = StreamProfile([0x42, 0xc0, 0x1f]);
        assert!(cb.decodable_by([0x42, 0xe0]) && cb.decodable_by([0x4d, 0x00]));
        let main = StreamProfile([0x4d, 0x40, 0x1f]);
        assert!(!main.decodable_by([0x42, 0xe0]) && main.decodable_by([0x64, 0x00]));
    }

    #[test]
    fn picks_constrained_baseline_h264() {
        assert_eq!(
            check_offer(&offer(H264_42E01F), CB).map(|c| c.payload_type),
            Ok(102)
        );
    }

    #[test]
    fn accepts_audio_beside_video() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(
            check_offer(&offer(&format!("{audio}{H264_42E01F}")), CB).map(|c| c.payload_type),
            Ok(102)
        );
    }

    #[test]
    fn rejects_vp8_only_with_reason() {
        let vp8 = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n";
        let err = check_offer(&offer(vp8), CB).unwrap_err();
        assert!(err.to_string().contains("offered: VP8"), "{err}");
    }

    #[test]
    fn rejects_mode_0_and_profiles_that_cannot_decode_the_stream() {
        // A Constrained High decoder cannot take Constrained Baseline (here); mode 0 nothing.
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\nc=IN IP4 0.0.0.0\r\n\
            a=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=1;profile-level-id=640c1f\r\n\
            a=rtpmap:101 H264/90000\r\na=fmtp:101 packetization-mode=0;profile-level-id=42e01f\r\n";
        assert!(matches!(
            check_offer(&offer(sdp), CB),
            Err(OfferError::NoUsableVideo(_))
        ));
        // A Baseline-only viewer cannot take a camera's Main.
        let main = StreamProfile([0x4d, 0x40, 0x1f]);
        let err = check_offer(&offer(H264_42E01F), main).unwrap_err();
        assert!(err.to_string().contains("H.264 Main"), "{err}");
    }

    #[test]
    fn rejects_audio_only_and_garbage() {
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            check_offer(&offer(audio), CB),
            Err(OfferError::NoUsableVideo(_))
        ));
        assert!(matches!(
            check_offer("hello", CB),
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
            match check_offer(&sdp, CB) {
                Err(err @ OfferError::Unworkable(_)) => {
                    assert!(err.to_string().contains(reason), "{reason}: {err}");
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
        let long_ufrag = format!("a=ice-ufrag:{}", "u".repeat(60_000));
        let sdp = offer(&H264_42E01F.replacen("a=ice-ufrag:abcd", &long_ufrag, 1));
        let err = check_offer(&sdp, CB).unwrap_err();
        assert!(err.to_string().contains("60000 bytes"), "{err}");
        // Session-level attributes count too.
        let session_level = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=setup:passive\r\n{}",
            H264_42E01F.replacen("a=setup:actpass\r\n", "", 1)
        );
        assert!(matches!(
            check_offer(&session_level, CB),
            Err(OfferError::Unworkable(_))
        ));
    }
}
