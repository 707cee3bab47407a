//! All viewers share one UDP port (`webrtcLocalUDPAddress`, `:8189` by default), as MediaMTX does:
//! one firewall rule, one socket, however many viewers.
//!
//! Design: webrtc 0.21 binds a socket per peer connection and has no UDP mux, so camportal drives
//! the sans-IO `rtc` core itself (see `viewer.rs`). This module owns the one socket. A datagram
//! from an address we know goes to the viewer that address belongs to; a datagram from an
//! unknown address is accepted only if it is a STUN request whose USERNAME starts with the local
//! ICE ufrag of a registered viewer (RFC 8445 §7.2.2: `local-ufrag:remote-ufrag`) and whose
//! MESSAGE-INTEGRITY checks with that viewer's ICE password, and that teaches us the address
//! (this is how Chromium's peer-reflexive candidates, hidden behind mDNS names, reach us).
//! Everything else is dropped, and counted in a summary line at most every
//! [`REPORT_INTERVAL`]: peers cannot write the log. Each viewer's inbox is bounded: a flood from
//! one peer costs that peer its packets, nobody else.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, is_stun_message};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Datagrams queued for one viewer before the newest are dropped.
const INBOX_CAPACITY: usize = 256;
/// At most one summary line of dropped datagrams per this interval.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One datagram for a viewer, with the address it came from.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub peer: SocketAddr,
    pub data: BytesMut,
}

/// A registered viewer: where its datagrams go, and the ICE password its peer's STUN requests
/// are signed with.
struct Route {
    inbox: mpsc::Sender<Inbound>,
    password: String,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, String>,
    dropped: Dropped,
}

/// Datagrams dropped since the last summary line, by why.
#[derive(Default)]
struct Dropped {
    /// STUN naming a viewer, but not signed with its password.
    bad_integrity: u64,
    /// A viewer's inbox was full.
    inbox_full: u64,
    last_report: Option<Instant>,
}

impl Dropped {
    /// The summary to log now, if one is due (and resets the counts).
    fn report(&mut self, now: Instant) -> Option<(u64, u64)> {
        if self.bad_integrity + self.inbox_full == 0
            || self
                .last_report
                .is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL)
        {
            return None;
        }
        self.last_report = Some(now);
        Some((
            std::mem::take(&mut self.bad_integrity),
            std::mem::take(&mut self.inbox_full),
        ))
    }
}

/// The shared UDP socket and the table that routes its datagrams to viewers.
pub(crate) struct UdpMux {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    routes: Mutex<Routes>,
    crypto: Arc<dyn RTCCryptoProvider>,
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
        let crypto = rtc::crypto::default_provider()
            .map_err(|err| io::Error::other(format!("no crypto provider for STUN: {err}")))?;
        let mux = Arc::new(UdpMux {
            socket: Arc::new(socket),
            local_addr,
            routes: Mutex::new(Routes::default()),
            crypto,
        });
        tokio::spawn(Arc::clone(&mux).receive_loop());
        Ok(mux)
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers a viewer by its local ICE ufrag and password; its datagrams arrive on the
    /// returned inbox.
    pub(crate) fn register(&self, ufrag: &str, password: &str) -> mpsc::Receiver<Inbound> {
        let (inbox, rx) = mpsc::channel(INBOX_CAPACITY);
        let route = Route {
            inbox,
            password: password.to_owned(),
        };
        self.lock().by_ufrag.insert(ufrag.to_owned(), route);
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
            let Some(inbox) = self.route(data, peer) else {
                continue;
            };
            let datagram = Inbound {
                peer,
                data: BytesMut::from(data),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(datagram) {
                self.dropped(|dropped| dropped.inbox_full += 1);
            }
        }
    }

    /// The inbox of the viewer a datagram from `peer` is for, learning `peer` from a signed
    /// STUN request.
    fn route(&self, data: &[u8], peer: SocketAddr) -> Option<mpsc::Sender<Inbound>> {
        let mut routes = self.lock();
        if let Some(owner) = routes.by_addr.get(&peer) {
            return routes.by_ufrag.get(owner).map(|route| route.inbox.clone());
        }
        let (ufrag, mut message) = stun_request_for(data)?;
        let route = routes.by_ufrag.get(&ufrag)?;
        let signed = MessageIntegrity::check(
            &mut message,
            route.password.as_bytes(),
            self.crypto.crypto(),
        );
        if signed.is_err() {
            drop(routes);
            self.dropped(|dropped| dropped.bad_integrity += 1);
            return None;
        }
        let inbox = route.inbox.clone();
        routes.by_addr.insert(peer, ufrag);
        Some(inbox)
    }

    /// Counts a dropped datagram; logs the summary when one is due.
    fn dropped(&self, count: impl FnOnce(&mut Dropped)) {
        let due = {
            let mut routes = self.lock();
            count(&mut routes.dropped);
            routes.dropped.report(Instant::now())
        };
        if let Some((bad_integrity, inbox_full)) = due {
            warn!(
                bad_integrity,
                inbox_full,
                interval_s = REPORT_INTERVAL.as_secs(),
                "UDP datagrams dropped (STUN not signed for the viewer it names; viewer inbox full)"
            );
        }
    }
}

/// The local ufrag named by a STUN request's USERNAME (`local:remote`), with the parsed
/// message, if `data` is one.
fn stun_request_for(data: &[u8]) -> Option<(String, Message)> {
    if !is_stun_message(data) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(data).ok()?;
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = String::from_utf8(username).ok()?;
    let (local, _remote) = username.split_once(':')?;
    Some((local.to_owned(), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::message::{BINDING_REQUEST, Setter};
    use rtc::stun::textattrs::Username;

    const PASSWORD: &str = "0123456789abcdef0123456789abcdef";

    /// A binding request as a browser sends it: USERNAME, MESSAGE-INTEGRITY with `password`,
    /// FINGERPRINT.
    fn binding_request(username: &str, password: &str) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().expect("crypto");
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                password.to_owned(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        message.build(&setters).expect("build STUN");
        message.raw
    }

    fn local_ufrag(data: &[u8]) -> Option<String> {
        stun_request_for(data).map(|(ufrag, _)| ufrag)
    }

    #[test]
    fn reads_local_ufrag_from_binding_request() {
        let request = binding_request("serverufrag:browserufrag", PASSWORD);
        assert_eq!(local_ufrag(&request).as_deref(), Some("serverufrag"));
    }

    #[test]
    fn ignores_non_stun_and_malformed() {
        assert_eq!(local_ufrag(b"\x80\x60hello rtp"), None);
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0u8; 20]), None);
        assert_eq!(local_ufrag(&binding_request("no-colon", PASSWORD)), None);
    }

    #[test]
    fn drops_are_summarised_at_most_once_per_interval() {
        let mut dropped = Dropped::default();
        let t0 = Instant::now();
        assert_eq!(dropped.report(t0), None, "nothing to say");
        dropped.bad_integrity = 3;
        assert_eq!(dropped.report(t0), Some((3, 0)));
        dropped.inbox_full = 5;
        assert_eq!(dropped.report(t0 + REPORT_INTERVAL / 2), None);
        dropped.inbox_full += 1;
        assert_eq!(dropped.report(t0 + REPORT_INTERVAL), Some((0, 6)));
    }

    #[tokio::test]
    async fn routes_signed_stun_then_by_address() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut inbox = mux.register("abcd", PASSWORD);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = mux.local_addr();
        // Unknown address, not STUN: dropped.
        client.send_to(b"\x80\x60early", to).await.unwrap();
        // STUN naming us but signed with another password: dropped, and nothing learnt.
        let forged = binding_request("abcd:efgh", "not-the-password-at-all-0000");
        client.send_to(&forged, to).await.unwrap();
        client.send_to(b"\x80\x60after forged", to).await.unwrap();
        // Signed STUN naming us: accepted, and teaches the address.
        client
            .send_to(&binding_request("abcd:efgh", PASSWORD), to)
            .await
            .unwrap();
        client.send_to(b"\x80\x60media", to).await.unwrap();
        let first = inbox.recv().await.unwrap();
        assert!(is_stun_message(&first.data));
        assert_eq!(first.peer, client.local_addr().unwrap());
        let second = inbox.recv().await.unwrap();
        assert_eq!(&second.data[..], b"\x80\x60media");
        mux.unregister("abcd");
        assert!(mux.lock().by_addr.is_empty());
    }
}
