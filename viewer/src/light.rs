//! The light viewer, for load tests and the benchmark: a real peer connection (ICE, DTLS, SRTP
//! decryption, RTCP receiver reports) that counts what it receives, packets, losses and
//! pictures, but never decodes. Hundreds of them fit beside the daemon on a small box, where as
//! many browsers (or decoding [`Viewer`](crate::Viewer)s) would not.
//!
//! Each viewer drives the sans-IO `rtc` peer connection on a UDP socket of its own (the server
//! tells viewers apart by address), in one task.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tracing::debug;

use crate::local_address;
use crate::offer::{self, Feedback};
use crate::sequence::{Seen, Sequence};
use crate::whep::{self, WhepClient};

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

/// One light viewer. Dropping it stops its task without telling the server (which then times
/// the session out); [`LightViewer::close`] ends it properly.
pub struct LightViewer {
    session_url: String,
    whep: WhepClient,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LightViewer {
    /// Offers to receive H.264 from `whep_url` and starts receiving; returns once the answer is
    /// applied (not yet connected: see [`LightViewer::is_connected`]).
    pub async fn connect(whep_url: &str) -> anyhow::Result<LightViewer> {
        let url = whep::parse_url(whep_url)?;
        let whep = WhepClient::new()?;
        let socket = bind(local_address::towards(&url).await?)?;
        let local_addr = socket
            .local_addr()
            .context("reading the socket's address")?;
        let mut pc = build_peer_connection(local_addr)?;
        let offer = pc.create_offer(None).context("creating the offer")?;
        let offer_sdp = offer.sdp.clone();
        pc.set_local_description(Instant::now(), offer)
            .context("applying the offer")?;
        let session = whep.post_offer(&url, offer_sdp).await?;
        let answer =
            RTCSessionDescription::answer(session.answer_sdp).context("parsing the answer SDP")?;
        if let Err(err) = pc.set_remote_description(Instant::now(), answer) {
            // The server holds a session for us: give it back.
            if let Err(delete_err) = whep.delete(&session.url).await {
                debug!(%delete_err, "DELETE after a bad answer failed");
            }
            return Err(err).context("applying the answer");
        }

        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(pc, socket, local_addr, Arc::clone(&shared), stopped));
        Ok(LightViewer {
            session_url: session.url,
            whep,
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
        let deleted = self.whep.delete(&self.session_url).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        deleted
    }
}

impl Drop for LightViewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP socket of its own on `local_ip`, with room for bursts.
fn bind(local_ip: std::net::IpAddr) -> anyhow::Result<UdpSocket> {
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
    let media_engine = offer::media_engine(Feedback::None, offer::CONSTRAINED_BASELINE)?;
    // Receiver reports, as every browser sends them; no NACKs (a loss stays a loss, and is
    // counted) and no decoder.
    let registry = configure_rtcp_reports(Registry::new());
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .context("building the peer connection")?;
    pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(offer::receive_video()))
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
