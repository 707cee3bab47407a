//! A light WHEP viewer for load tests and the benchmark: a real peer connection (ICE, DTLS,
//! SRTP decryption, RTCP receiver reports) that counts what it receives, packets, losses and
//! pictures, but never decodes. Hundreds of them fit beside the daemon on a small box, where as
//! many browsers (or [`client::Viewer`](crate::client::Viewer)s, each with a decoder) would not.
//!
//! Each viewer drives the sans-IO `rtc` peer connection on a UDP socket of its own (the server
//! tells viewers apart by address), in one task.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tracing::debug;

use crate::whep::abs_capture_time;

/// What we offer: Constrained Baseline, packetization-mode 1, as Chromium does.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for a kernel-side burst (a keyframe to hundreds of viewers) while this task waits its
/// turn on a busy box.
const SOCKET_BUFFER: usize = 1 << 20;

/// Counters since connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LightStats {
    /// RTP packets received (decrypted).
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets never received: gaps in the sequence numbers.
    pub lost: u64,
    /// Duplicate or out-of-order packets.
    pub late: u64,
    /// Pictures completed (packets with the marker bit).
    pub frames: u64,
}

impl LightStats {
    /// `self` minus an earlier snapshot: what happened in between.
    pub fn since(&self, earlier: &LightStats) -> LightStats {
        LightStats {
            packets: self.packets - earlier.packets,
            bytes: self.bytes - earlier.bytes,
            lost: self.lost - earlier.lost,
            late: self.late - earlier.late,
            frames: self.frames - earlier.frames,
        }
    }

    /// Lost packets as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        let sent = self.packets + self.lost;
        if sent == 0 {
            0.0
        } else {
            self.lost as f64 / sent as f64
        }
    }
}

#[derive(Default)]
struct Shared {
    packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
    frames: AtomicU64,
    connected: AtomicBool,
    ended: Mutex<Option<String>>,
}

impl Shared {
    fn snapshot(&self) -> LightStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LightStats {
            packets: get(&self.packets),
            bytes: get(&self.bytes),
            lost: get(&self.lost),
            late: get(&self.late),
            frames: get(&self.frames),
        }
    }
}

/// Counts gaps and reorderings in a stream of RTP sequence numbers.
#[derive(Debug, Default)]
struct Sequence {
    last: Option<u16>,
}

/// What one sequence number did: packets missing before it, or it came late.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Next { lost: u64 },
    Late,
}

impl Sequence {
    fn see(&mut self, seq: u16) -> Seen {
        let Some(last) = self.last else {
            self.last = Some(seq);
            return Seen::Next { lost: 0 };
        };
        let delta = seq.wrapping_sub(last);
        if delta == 0 || delta >= 0x8000 {
            return Seen::Late;
        }
        self.last = Some(seq);
        Seen::Next {
            lost: u64::from(delta - 1),
        }
    }
}

/// One light viewer. Dropping it stops its task without telling the server (which then times
/// the session out); [`LightViewer::close`] ends it properly.
pub struct LightViewer {
    session_url: String,
    http: reqwest::Client,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LightViewer {
    /// Offers to receive H.264 from `whep_url` and starts receiving; returns once the answer is
    /// applied (not yet connected: see [`LightViewer::is_connected`]).
    pub async fn connect(whep_url: &str) -> anyhow::Result<LightViewer> {
        let url = Url::parse(whep_url).with_context(|| format!("invalid WHEP URL {whep_url:?}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let socket = bind_towards(&url).await?;
        let local_addr = socket
            .local_addr()
            .context("reading the socket's address")?;
        let mut pc = build_peer_connection(local_addr)?;
        let now = Instant::now();
        let offer = pc.create_offer(None).context("creating the offer")?;
        let offer_sdp = offer.sdp.clone();
        pc.set_local_description(now, offer)
            .context("applying the offer")?;

        let response = http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer_sdp)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let location = response.headers().get(LOCATION).cloned();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer to POST {url}"))?;
        if status != StatusCode::CREATED {
            bail!("POST {url} answered {status}: {}", body.trim());
        }
        let location =
            location.ok_or_else(|| anyhow!("POST {url} answered 201 without a Location header"))?;
        let location = location
            .to_str()
            .context("the Location header is not text")?;
        let session_url = url
            .join(location)
            .with_context(|| format!("bad Location {location:?}"))?
            .to_string();
        let answer = RTCSessionDescription::answer(body).context("parsing the answer SDP")?;
        pc.set_remote_description(Instant::now(), answer)
            .context("applying the answer")?;

        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(pc, socket, local_addr, Arc::clone(&shared), stopped));
        Ok(LightViewer {
            session_url,
            http,
            shared,
            stop: Some(stop),
            task,
        })
    }

    pub fn stats(&self) -> LightStats {
        self.shared.snapshot()
    }

    /// ICE and DTLS are done: media can flow.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Why the viewer stopped by itself (connection failed or closed), if it did.
    pub fn ended(&self) -> Option<String> {
        self.shared
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// DELETEs the session (best effort) and stops receiving.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let deleted = self.http.delete(&self.session_url).send().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        let response = deleted.with_context(|| format!("DELETE {}", self.session_url))?;
        if !response.status().is_success() {
            bail!("DELETE {} answered {}", self.session_url, response.status());
        }
        Ok(())
    }
}

impl Drop for LightViewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP socket on the address this machine would use to reach the server (loopback for a
/// loopback server).
async fn bind_towards(url: &Url) -> anyhow::Result<UdpSocket> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let server = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} resolves to no address"))?;
    let local_ip = if server.ip().is_loopback() {
        server.ip()
    } else {
        // Connecting a UDP socket sends nothing; it only asks the kernel for the route.
        let unspecified: IpAddr = if server.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let probe = UdpSocket::bind((unspecified, 0)).await?;
        probe.connect(server).await?;
        probe.local_addr()?.ip()
    };
    let socket = std::net::UdpSocket::bind((local_ip, 0))
        .with_context(|| format!("binding a UDP socket on {local_ip}"))?;
    // The kernel caps this at net.core.rmem_max.
    if let Err(err) = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER) {
        debug!(%err, "cannot enlarge the receive buffer");
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket).context("registering the UDP socket")
}

fn build_peer_connection(local_addr: SocketAddr) -> anyhow::Result<RTCPeerConnection> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: Vec::new(),
                },
                payload_type: 102,
            },
            RtpCodecKind::Video,
        )
        .context("registering H.264")?;
    // As the player asks for it, so that the server does for us what it does for a browser.
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: abs_capture_time::URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .context("registering abs-capture-time")?;
    // Receiver reports, as every browser sends them; no NACKs (a loss stays a loss, and is
    // counted) and no decoder.
    let registry = configure_rtcp_reports(Registry::new());
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .context("building the peer connection")?;
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: Vec::new(),
            send_encodings: Vec::new(),
        }),
    )
    .context("adding the video transceiver")?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local_addr.ip().to_string(),
            port: local_addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .context("making our host candidate")?;
    let init = RTCIceCandidate::from(&candidate)
        .to_json()
        .context("encoding our host candidate")?;
    pc.add_local_candidate(init)
        .context("adding our host candidate")?;
    Ok(pc)
}

/// Drives the peer connection until it ends or we are stopped.
async fn run(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; 2048];
    let mut sequence = Sequence::default();
    let reason = loop {
        let mut ended = None;
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => {
                        shared.connected.store(true, Ordering::Relaxed);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        ended = Some(format!("connection {state}"));
                    }
                    _ => {}
                }
            }
        }
        if let Some(reason) = ended {
            break reason;
        }
        while let Some(message) = pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                match sequence.see(packet.header.sequence_number) {
                    Seen::Next { lost } => {
                        shared.packets.fetch_add(1, Ordering::Relaxed);
                        shared
                            .bytes
                            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
                        shared.lost.fetch_add(lost, Ordering::Relaxed);
                        if packet.header.marker {
                            shared.frames.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Seen::Late => {
                        shared.late.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if !shared.connected.load(Ordering::Relaxed) {
            // rtc 0.21 starts the DTLS handshake (we are its client) when ICE connects but
            // leaves the ClientHello queued until its next timer, 200 ms later; a timer tick
            // now sends it (timers not due do nothing).
            if let Err(err) = pc.handle_timeout(Instant::now()) {
                debug!(%err, "light viewer: timeout handling failed");
            }
        }
        // Last: handling events, reads and timers queues datagrams.
        while let Some(out) = pc.poll_write() {
            if let Err(err) = socket.try_send_to(&out.message, out.transport.peer_addr) {
                debug!(%err, "light viewer: UDP send failed");
            }
        }
        let timeout = pc
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = &mut stop => {
                let _ = pc.close();
                while let Some(out) = pc.poll_write() {
                    let _ = socket.try_send_to(&out.message, out.transport.peer_addr);
                }
                break "closed".to_owned();
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    let message = TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr,
                            peer_addr: peer,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&buf[..len]),
                    };
                    if let Err(err) = pc.handle_read(message) {
                        debug!(%err, "light viewer: dropped a datagram");
                    }
                }
                // ICMP unreachable from a server that went away surfaces here: not fatal.
                Err(err) => debug!(%err, "light viewer: UDP receive error"),
            },
            _ = tokio::time::sleep_until(timeout) => {
                if let Err(err) = pc.handle_timeout(Instant::now()) {
                    debug!(%err, "light viewer: timeout handling failed");
                }
            }
        }
    };
    shared.connected.store(false, Ordering::Relaxed);
    *shared.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_losses_and_stragglers_are_late() {
        let mut s = Sequence::default();
        assert_eq!(s.see(65534), Seen::Next { lost: 0 });
        assert_eq!(s.see(65535), Seen::Next { lost: 0 });
        // Across the wrap, two missing (0 and 1).
        assert_eq!(s.see(2), Seen::Next { lost: 2 });
        assert_eq!(s.see(2), Seen::Late);
        assert_eq!(s.see(1), Seen::Late);
        assert_eq!(s.see(3), Seen::Next { lost: 0 });
    }

    #[test]
    fn loss_is_a_fraction_of_what_was_sent() {
        let before = LightStats {
            packets: 100,
            lost: 0,
            ..Default::default()
        };
        let after = LightStats {
            packets: 199,
            lost: 1,
            ..Default::default()
        };
        let window = after.since(&before);
        assert_eq!((window.packets, window.lost), (99, 1));
        assert!((window.loss() - 0.01).abs() < 1e-12);
        assert_eq!(LightStats::default().loss(), 0.0);
    }
}
