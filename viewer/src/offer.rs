//! What every viewer offers, as Chromium does: one receive-only video transceiver with H.264
//! Constrained Baseline, packetization-mode 1, and the `abs-capture-time` header extension (the
//! player asks for it, so the server treats these viewers as it treats a browser).

use anyhow::Context;
use camportal::rtp::abs_capture_time;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;

/// Which RTCP feedback the viewer offers to send.
#[derive(Clone, Copy)]
pub(crate) enum Feedback {
    /// NACK, PLI and FIR, as a browser: losses are repaired and keyframes asked for.
    Browser,
    /// None: a loss stays a loss, and is counted.
    None,
}

/// The codecs and header extensions of the offer (both `webrtc` and `rtc` take this engine).
pub(crate) fn media_engine(feedback: Feedback) -> anyhow::Result<MediaEngine> {
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
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback,
                },
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .context("registering H.264")?;
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
