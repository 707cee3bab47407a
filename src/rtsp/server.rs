//! Accepting RTSP connections (`rtspAddress`, `:8554`), with the same per-client and total caps
//! as HTTP, and the UDP ports RTP and RTCP to readers use (`rtpAddress`, `rtcpAddress`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::connection;
use super::transport::Allowed;
use crate::auth::Access;
use crate::connections::{Connections, accept};
use crate::path::Directory;

/// Connections one client address may hold (a reader needs one; an NVR a few).
const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// Connections all clients may hold together.
const MAX_CONNECTIONS: usize = 256;
/// Tries at finding a free even/odd UDP port pair when the ports are the kernel's choice.
const PAIR_ATTEMPTS: usize = 20;

/// What every connection shares.
pub(crate) struct Rtsp {
    pub directory: Directory,
    pub access: Arc<Access>,
    pub allowed: Allowed,
    /// The server's UDP ports, when `udp` is among `rtspTransports`.
    pub udp: Option<UdpPorts>,
}

/// The UDP sockets RTP (to readers) and RTCP (both ways) use.
pub(crate) struct UdpPorts {
    pub rtp: Arc<UdpSocket>,
    pub rtcp: Arc<UdpSocket>,
}

impl UdpPorts {
    /// Binds `rtp` and `rtcp`. With both at port 0 (tests), a free pair of an even port and the
    /// next one, as RTP and RTCP ports go (some readers insist).
    pub(crate) async fn bind(rtp: SocketAddr, rtcp: SocketAddr) -> io::Result<UdpPorts> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            UdpSocket::bind(addr).await.map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot bind the {what} port {addr}: {err}"),
                )
            })
        };
        if rtp.port() == 0
            && rtcp.port() == 0
            && let Some(pair) = free_pair(rtp, rtcp).await
        {
            return Ok(pair);
        }
        Ok(UdpPorts {
            rtp: Arc::new(bind(rtp, "RTSP RTP (rtpAddress)").await?),
            rtcp: Arc::new(bind(rtcp, "RTSP RTCP (rtcpAddress)").await?),
        })
    }

    /// `(rtp, rtcp)` port numbers, for the SETUP reply.
    pub(crate) fn ports(&self) -> (u16, u16) {
        let port = |socket: &UdpSocket| socket.local_addr().map_or(0, |a| a.port());
        (port(&self.rtp), port(&self.rtcp))
    }
}

/// An even port on `rtp`'s address and the next one on `rtcp`'s, both free.
async fn free_pair(rtp: SocketAddr, rtcp: SocketAddr) -> Option<UdpPorts> {
    for _ in 0..PAIR_ATTEMPTS {
        let probe = UdpSocket::bind(rtp).await.ok()?;
        let even = probe.local_addr().ok()?.port() & !1;
        drop(probe);
        let Some(odd) = even.checked_add(1) else {
            continue;
        };
        let Ok(first) = UdpSocket::bind(SocketAddr::new(rtp.ip(), even)).await else {
            continue;
        };
        if let Ok(second) = UdpSocket::bind(SocketAddr::new(rtcp.ip(), odd)).await {
            return Some(UdpPorts {
                rtp: Arc::new(first),
                rtcp: Arc::new(second),
            });
        }
    }
    None
}

/// Reads and drops what readers send to a UDP port (receiver reports), so that its buffer
/// never fills. Errors (an ICMP unreachable from a reader gone) are not fatal.
async fn drain(socket: Arc<UdpSocket>) {
    let mut buf = [0u8; 1500];
    loop {
        let _ = socket.recv_from(&mut buf).await;
    }
}

/// Serves RTSP on `listener` until `stop`; open connections are then dropped.
pub(crate) async fn serve(listener: TcpListener, rtsp: Arc<Rtsp>, mut stop: oneshot::Receiver<()>) {
    let connections = Connections::new(MAX_CONNECTIONS_PER_CLIENT, MAX_CONNECTIONS);
    let mut tasks = JoinSet::new();
    if let Some(udp) = &rtsp.udp {
        for socket in [&udp.rtp, &udp.rtcp] {
            tasks.spawn(drain(Arc::clone(socket)));
        }
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            (stream, peer, slot) = accept(&listener, &connections, "RTSP", |stream| {
                // A clear answer if the socket takes it at once; never a wait.
                let _ = stream.try_write(
                    b"RTSP/1.0 503 Service Unavailable\r\nCSeq: 0\r\nContent-Length: 0\r\n\r\n",
                );
            }) => {
                let rtsp = Arc::clone(&rtsp);
                tasks.spawn(async move {
                    let _slot = slot;
                    connection::serve(stream, peer, rtsp).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}
