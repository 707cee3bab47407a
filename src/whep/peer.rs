//! Building the server side of one viewer's peer connection from its offer: codecs, ICE
//! credentials and candidates, the H.264 track, the answer. Runs synchronously inside the WHEP
//! request; nothing here waits on the network (no STUN), so the answer goes back at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rtc::interceptor::{CongestionControlBuilder, Registry, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use super::estimate::{Estimate, Published};
use super::feedback::KeyframeFeedback;
use super::offer::{Chosen, OfferError, StreamProfile, check_offer};
use super::retransmit::NackFilter;
use crate::rtp::abs_capture_time;

/// A viewer that sends nothing (no consent check, no RTCP) for this long is disconnected…
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// …and this much later it is failed and its viewer is cleaned up. Browsers send RTCP every
/// second or so, so 15 s of silence means the kiosk is gone (rtc's default would keep sending
/// its video into the void for 30 s).
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(10);

/// Where viewers can reach us: the addresses put in every answer as host candidates, all on the
/// one shared UDP port.
#[derive(Debug, Clone)]
pub(crate) struct IceAddresses {
    pub candidates: Vec<SocketAddr>,
}

impl IceAddresses {
    /// The sans-IO ICE agent accepts a datagram only if its local address is one of its local
    /// candidates. The shared wildcard socket does not tell which of our addresses a datagram was
    /// sent to, and it would not matter: replies leave through that one socket whatever the agent
    /// believes. So every datagram is reported as arriving on the first candidate. (The true
    /// destination, via IP_PKTINFO, would only pick the source address on a multi-homed box;
    /// the kernel's routing choice is used instead.)
    pub(crate) fn local_addr_for_agent(&self, socket: SocketAddr) -> SocketAddr {
        self.candidates.first().copied().unwrap_or(socket)
    }
}

/// A viewer's peer connection, answered and ready to be driven by its viewer.
pub(crate) struct Answered {
    pub pc: RTCPeerConnection,
    pub answer_sdp: String,
    /// Our ICE username fragment: how the UDP mux recognises this viewer's first packets.
    pub ufrag: String,
    /// Our ICE password: the peer signs its STUN requests with it, and the UDP mux checks that
    /// before it learns the peer's address.
    pub ice_password: String,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub payload_type: u8,
    /// The id of `abs-capture-time` if the viewer offered it.
    pub abs_capture_time_id: Option<u8>,
    /// The viewer's bandwidth as its congestion controller estimates it (never informed when
    /// the path does not adapt its rate).
    pub estimate: Arc<Estimate>,
}

/// Wire-ward of the NACK responder (`Slot::NackResponder`, 4 000), above the pacer (3 000).
const RETRANSMIT_SLOT: usize = 3_500;

/// GCC never estimates below this (bit/s); the encoder's floor is the path's `minBitrate`.
const MIN_ESTIMATE: u32 = 50_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("cannot apply the offer: {0}")]
    Rejected(String),
    #[error("internal error while answering: {0}")]
    Internal(String),
}

fn internal(err: impl std::fmt::Display) -> AnswerError {
    AnswerError::Internal(err.to_string())
}

/// The H.264 the path sends, in the format of the offer chosen for it (see `offer.rs`).
fn h264_codec(chosen: &Chosen) -> RTCRtpCodecParameters {
    let feedback = [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.into(),
            parameter: parameter.into(),
        })
        .collect::<Vec<_>>();
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: chosen.fmtp.clone(),
            rtcp_feedback: feedback,
        },
        payload_type: chosen.payload_type,
    }
}

/// How fast the path sends, as far as a viewer's answer is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PathRate {
    /// The path's configured bit/s (0: unknown, retransmissions are then not budgeted).
    pub bitrate: u32,
    /// `adaptiveBitrate`: the viewer's bandwidth is estimated.
    pub adaptive: bool,
}

/// Answers `offer_sdp` for a path whose H.264 is `stream` (its `profile-level-id`), sent at
/// `rate`.
pub(crate) fn answer(
    offer_sdp: String,
    addresses: &IceAddresses,
    stream: StreamProfile,
    rate: PathRate,
) -> Result<Answered, AnswerError> {
    let chosen = check_offer(&offer_sdp, stream)?;
    let now = Instant::now();

    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(h264_codec(&chosen), RtpCodecKind::Video)
        .map_err(internal)?;
    // Answered only if offered: then receivers know each picture's capture time.
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: abs_capture_time::URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(internal)?;
    // NACK responder (retransmits lost packets) and RTCP sender reports.
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(internal)?;
    // PLI/FIR must reach the viewer; the chain would otherwise consume them.
    let registry = registry.with(Slot::Custom(20_000), KeyframeFeedback::default());
    // With `adaptiveBitrate`, the viewer's bandwidth, from its transport-wide feedback
    // (negotiated by the defaults above): GCC over a send history, without a pacer, as the
    // encoder's rate is what follows the estimate (a pacer would delay every keyframe's burst).
    // It starts and may stay above the path's rate (the encoder keeps its headroom below it),
    // which is what tells a free link from a full one; a thin link brings it down within
    // seconds. Off, nothing is added to the chain.
    let bitrate = rate.bitrate;
    let (registry, estimate) = if rate.adaptive {
        let (estimator, estimate) = Published::new(
            1.5 * f64::from(bitrate),
            f64::from(MIN_ESTIMATE),
            3.0 * f64::from(bitrate),
        );
        let registry = registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(estimator).build(),
            )
            .with(Slot::TwccSender, TwccSenderBuilder::new().build());
        (registry, estimate)
    } else {
        (registry, Arc::default())
    };
    // Between the wire and the NACK responder: a packet is resent at most once per round trip,
    // and within a share of the viewer's estimate, or of the path's rate while there is none
    // (see `retransmit.rs`).
    let registry = registry.with(
        Slot::Custom(RETRANSMIT_SLOT),
        NackFilter::new(Arc::clone(&estimate), u64::from(bitrate)),
    );

    let mut rng = rand::rng();
    let ufrag = Alphanumeric.sample_string(&mut rng, 16);
    let password = Alphanumeric.sample_string(&mut rng, 32);
    let settings = SettingEngineBuilder::new()
        .with_ice_credentials(ufrag.clone(), password.clone())
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            None,
        )
        // The viewer opens the DTLS handshake once its ICE is up (`a=setup:passive`). As the
        // opening side, rtc 0.21 leaves its ClientHello queued until a 200 ms timer, and a
        // ClientHello that beats the viewer's ICE is dropped and resent only after 1 s: both
        // went straight into every viewer's time to first frame.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .build();

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal)?;

    let offer = RTCSessionDescription::offer(offer_sdp)
        .map_err(|err| OfferError::Malformed(err.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|err| AnswerError::Rejected(err.to_string()))?;

    let ssrc = rand::random::<u32>();
    let id = Alphanumeric.sample_string(&mut rng, 12);
    let codec = h264_codec(&chosen).rtp_codec;
    let track = MediaStreamTrack::new(
        format!("camportal-{id}"),
        format!("video-{id}"),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    let sender = pc.add_track(track).map_err(internal)?;

    let mut candidate_lines = Vec::new();
    for address in &addresses.candidates {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: address.ip().to_string(),
                port: address.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(internal)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(internal)?;
        candidate_lines.push(init.candidate.clone());
        pc.add_local_candidate(init).map_err(internal)?;
    }

    let answer = pc
        .create_answer(None)
        .map_err(|err| AnswerError::Rejected(err.to_string()))?;
    let answer_sdp = with_candidates(&answer.sdp, &candidate_lines);
    pc.set_local_description(now, answer)
        .map_err(|err| AnswerError::Rejected(err.to_string()))?;

    let (payload_type, abs_capture_time_id) = {
        let mut rtp_sender = pc
            .rtp_sender(sender)
            .ok_or_else(|| internal("sender vanished"))?;
        let parameters = &rtp_sender.get_parameters().rtp_parameters;
        let abs_capture_time_id = parameters
            .header_extensions
            .iter()
            .find(|h| h.uri == abs_capture_time::URI)
            .and_then(|h| u8::try_from(h.id).ok());
        let payload_type = parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_H264))
            .map(|c| c.payload_type)
            .ok_or_else(|| {
                AnswerError::Offer(OfferError::NoUsableVideo(
                    "no H.264 format was negotiated".into(),
                ))
            })?;
        (payload_type, abs_capture_time_id)
    };

    Ok(Answered {
        pc,
        answer_sdp,
        ufrag,
        ice_password: password,
        sender,
        ssrc,
        payload_type,
        abs_capture_time_id,
        estimate,
    })
}

/// rtc writes the candidates into the first m-section only, even when that section is a
/// rejected one (an offer with audio first): then the viewer would get no candidate at all.
/// With BUNDLE one section carrying them is enough, so they go into the first accepted one.
fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    let sections: Vec<&str> = sdp.split("\r\nm=").collect();
    let accepted = sections
        .iter()
        .skip(1)
        .position(|s| s.split(' ').nth(1).is_some_and(|port| port != "0"));
    let Some(accepted) = accepted.map(|i| i + 1) else {
        return sdp.to_owned();
    };
    if sections[accepted].contains("a=candidate:") {
        return sdp.to_owned();
    }
    let mut out: Vec<String> = sections.iter().map(|s| (*s).to_owned()).collect();
    let section = &mut out[accepted];
    let trailing = section.ends_with("\r\n");
    if !trailing {
        section.push_str("\r\n");
    }
    for candidate in candidates {
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        section.push_str(&format!("a={line}\r\n"));
    }
    section.push_str("a=end-of-candidates\r\n");
    if !trailing {
        section.truncate(section.len() - 2);
    }
    out.join("\r\nm=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_the_first_accepted_section() {
        let sdp = "v=0\r\ns=-\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:1\r\n";
        let out = with_candidates(sdp, &["candidate:1 1 udp 1 127.0.0.1 8189 typ host".into()]);
        let video = out.split("m=video").nth(1).unwrap();
        assert!(
            video.contains("a=candidate:1 1 udp 1 127.0.0.1 8189 typ host\r\n"),
            "{out}"
        );
        assert!(video.ends_with("a=end-of-candidates\r\n"), "{out}");
        assert!(!out.split("m=video").next().unwrap().contains("candidate"));
    }

    #[test]
    fn sections_that_have_candidates_are_left_alone() {
        let sdp = "v=0\r\nm=video 9 X 102\r\na=candidate:1 1 udp 1 10.0.0.1 8189 typ host\r\n";
        assert_eq!(with_candidates(sdp, &["candidate:2".into()]), sdp);
    }
}
