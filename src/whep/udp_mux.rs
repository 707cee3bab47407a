//! All viewers share one UDP port (`webrtcLocalUDPAddress`, `:8189` by default), as MediaMTX does:
//! one firewall rule, one socket, however many viewers.
//!
//! Design: webrtc 0.21 binds a socket per peer connection and has no UDP mux, so camportal drives
//! the sans-IO `rtc` core itself (see `viewer.rs`). This module owns the one socket. A datagram
//! from an address we know goes to the viewer that address belongs to; a datagram from an
//! unknown address is accepted only if it is a STUN request whose USERNAME starts with the local
//! ICE ufrag of a registered viewer (RFC 8445 §7.2.2: `local-ufrag:remote-ufrag`), and that
//! teaches us the address (this is how Chromium's peer-reflexive candidates, hidden behind mDNS
//! names, reach us). Everything else is dropped. Each viewer's inbox is bounded: a flood from one
//! peer costs that peer its packets, nobody else.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Datagrams queued for one viewer before the newest are dropped.
const INBOX_CAPACITY: usize = 256;

/// One datagram for a viewer, with the address it came from.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub peer: SocketAddr,
    pub data: BytesMut,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, mpsc::Sender<Inbound>>,
    by_addr: HashMap<SocketAddr, String>,
}

/// The shared UDP socket and the table that routes its datagrams to viewers.
pub(crate) struct UdpMux {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    routes: Mutex<Routes>,
}

impl UdpMux {
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<Arc<UdpMux>> {
        let socket = UdpSocket::bind(addr).await.map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot bind WebRTC UDP port {addr}: {err}"),
            )
        })?;
        let local_addr = socket.local_addr()?;
        let mux = Arc::new(UdpMux {
            socket: Arc::new(socket),
            local_addr,
            routes: Mutex::new(Routes::default()),
        });
        tokio::spawn(Arc::clone(&mux).receive_loop());
        Ok(mux)
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers a viewer by its local ICE ufrag; its datagrams arrive on the returned inbox.
    pub(crate) fn register(&self, ufrag: &str) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.lock().by_ufrag.insert(ufrag.to_owned(), tx);
        rx
    }

    pub(crate) fn unregister(&self, ufrag: &str) {
        let mut routes = self.lock();
        routes.by_ufrag.remove(ufrag);
        routes.by_addr.retain(|_, owner| owner != ufrag);
    }

    /// Sends without waiting: UDP may drop anyway, and a full socket buffer must not stall the
    /// viewer's loop (it would stall its RTCP and ICE too).
    pub(crate) fn send_to(&self, data: &[u8], peer: SocketAddr) {
        if let Err(err) = self.socket.try_send_to(data, peer)
            && err.kind() != io::ErrorKind::WouldBlock
        {
            debug!(%peer, %err, "UDP send failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        // The table holds no invariant a panic could break half-way.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn receive_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, peer) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(err) => {
                    // ICMP port unreachable from a vanished peer surfaces here on Linux: not fatal.
                    debug!(%err, "UDP receive error");
                    continue;
                }
            };
            let data = &buf[..len];
            let inbox = {
                let mut routes = self.lock();
                let owner = match routes.by_addr.get(&peer) {
                    Some(owner) => Some(owner.clone()),
                    None => stun_local_ufrag(data).filter(|u| routes.by_ufrag.contains_key(u)),
                };
                owner.and_then(|owner| {
                    let inbox = routes.by_ufrag.get(&owner).cloned();
                    routes.by_addr.entry(peer).or_insert(owner);
                    inbox
                })
            };
            let Some(inbox) = inbox else { continue };
            let datagram = Inbound {
                peer,
                data: BytesMut::from(data),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(datagram) {
                warn!(%peer, "viewer inbox full: datagram dropped");
            }
        }
    }
}

/// The local ufrag named by a STUN request's USERNAME (`local:remote`), if `data` is one.
fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    if !is_stun_message(data) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(data).ok()?;
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = String::from_utf8(username).ok()?;
    let (local, _remote) = username.split_once(':')?;
    Some(local.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{BINDING_REQUEST, Setter};
    use rtc::stun::textattrs::Username;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        ];
        message.build(&setters).expect("build STUN");
        message.raw
    }

    #[test]
    fn reads_local_ufrag_from_binding_request() {
        let request = binding_request("serverufrag:browserufrag");
        assert_eq!(stun_local_ufrag(&request).as_deref(), Some("serverufrag"));
    }

    #[test]
    fn ignores_non_stun_and_malformed() {
        assert_eq!(stun_local_ufrag(b"\x80\x60hello rtp"), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0u8; 20]), None);
        assert_eq!(stun_local_ufrag(&binding_request("no-colon")), None);
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut inbox = mux.register("abcd");
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Unknown address, not STUN: dropped.
        client
            .send_to(b"\x80\x60early", mux.local_addr())
            .await
            .unwrap();
        // STUN naming us: accepted, and teaches the address.
        client
            .send_to(&binding_request("abcd:efgh"), mux.local_addr())
            .await
            .unwrap();
        client
            .send_to(b"\x80\x60media", mux.local_addr())
            .await
            .unwrap();
        let first = inbox.recv().await.unwrap();
        assert!(is_stun_message(&first.data));
        assert_eq!(first.peer, client.local_addr().unwrap());
        let second = inbox.recv().await.unwrap();
        assert_eq!(&second.data[..], b"\x80\x60media");
        mux.unregister("abcd");
        assert!(mux.lock().by_addr.is_empty());
    }
}
