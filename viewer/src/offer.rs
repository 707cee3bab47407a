//! What every viewer offers, as Chromium does: one receive-only video transceiver with H.264
//! (Constrained Baseline unless told otherwise), packetization-mode 1, and the
//! `abs-capture-time` header extension (the player asks for it, so the server treats these
//! viewers as it treats a browser).

use anyhow::Context;
use camportal::rtp::abs_capture_time;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Constrained Baseline level 3.1, what the viewers offer unless asked for more.
pub(crate) const CONSTRAINED_BASELINE: &[&str] = &["42e01f"];
/// Payload types of the offered formats, in the order given (Chromium's numbers).
const H264_PAYLOAD_TYPES: [u8; 4] = [102, 104, 106, 108];

/// Which RTCP feedback the viewer offers to send.
#[derive(Clone, Copy)]
pub(crate) enum Feedback {
    /// NACK, PLI and FIR, as a browser: losses are repaired and keyframes asked for.
    Browser,
    /// None: a loss stays a loss, and is counted.
    None,
}

/// The codecs and header extensions of the offer (both `webrtc` and `rtc` take this engine):
/// one H.264 format per `profile_level_ids` entry (e.g. `4d001f` for Main), in that order.
pub(crate) fn media_engine(
    feedback: Feedback,
    profile_level_ids: &[&str],
) -> anyhow::Result<MediaEngine> {
    if profile_level_ids.is_empty() || profile_level_ids.len() > H264_PAYLOAD_TYPES.len() {
        anyhow::bail!(
            "offer 1 to {} H.264 profiles, not {}",
            H264_PAYLOAD_TYPES.len(),
            profile_level_ids.len()
        );
    }
    let rtcp_feedback = match feedback {
        Feedback::Browser => [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
            .into_iter()
            .map(|(typ, parameter)| RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            })
            .collect(),
        Feedback::None => Vec::new(),
    };
    let mut media_engine = MediaEngine::default();
    for (profile_level_id, payload_type) in profile_level_ids.iter().zip(H264_PAYLOAD_TYPES) {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!(
                            "level-asymmetry-allowed=1;packetization-mode=1;\
                             profile-level-id={profile_level_id}"
                        ),
                        rtcp_feedback: rtcp_feedback.clone(),
                    },
                    payload_type,
                },
                RtpCodecKind::Video,
            )
            .with_context(|| format!("registering H.264 {profile_level_id}"))?;
    }
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: abs_capture_time::URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .context("registering abs-capture-time")?;
    Ok(media_engine)
}

/// The one transceiver: video, receive only.
pub(crate) fn receive_video() -> RTCRtpTransceiverInit {
    RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Recvonly,
        streams: Vec::new(),
        send_encodings: Vec::new(),
    }
}
