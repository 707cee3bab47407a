//! Counting a server's open connections, per client address and in all, so that no client can
//! hold a port (HTTP, RTSP): a connection over a limit is closed at once, before it is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// After an accept error (out of file descriptors), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connections open now, per client address and in all.
struct Open {
    by_client: HashMap<IpAddr, usize>,
    total: usize,
    per_client_limit: usize,
    total_limit: usize,
}

impl Open {
    /// Whether one more connection from `client` fits.
    fn admits(&self, client: IpAddr) -> bool {
        self.total < self.total_limit
            && self.by_client.get(&client).copied().unwrap_or(0) < self.per_client_limit
    }
}

#[derive(Clone)]
pub(crate) struct Connections(Arc<Mutex<Open>>);

/// One admitted connection; counted until dropped.
pub(crate) struct Slot {
    connections: Connections,
    client: IpAddr,
}

impl Connections {
    /// At most `per_client` connections from one address, `total` from all.
    pub(crate) fn new(per_client: usize, total: usize) -> Connections {
        Connections(Arc::new(Mutex::new(Open {
            by_client: HashMap::new(),
            total: 0,
            per_client_limit: per_client,
            total_limit: total,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Counts only: nothing a panic could leave half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more connection from `client`, if it fits.
    pub(crate) fn admit(&self, client: IpAddr) -> Option<Slot> {
        let mut open = self.lock();
        if !open.admits(client) {
            return None;
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Some(Slot {
            connections: self.clone(),
            client,
        })
    }
}

/// The next connection `connections` admits, with its slot. One over the limits is handed to
/// `refused` (to answer it without waiting) and closed; an accept error (out of file
/// descriptors) is logged and waited out. Cancel-safe.
pub(crate) async fn accept(
    listener: &TcpListener,
    connections: &Connections,
    protocol: &'static str,
    refused: impl Fn(&TcpStream),
) -> (TcpStream, SocketAddr, Slot) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, protocol, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match connections.admit(peer.ip()) {
            Some(slot) => return (stream, peer, slot),
            None => {
                debug!(%peer, protocol, "connection refused: too many open");
                refused(&stream);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_client_and_freed_when_dropped() {
        let connections = Connections::new(3, 5);
        let a: IpAddr = "192.168.1.10".parse().unwrap();
        let b: IpAddr = "192.168.1.11".parse().unwrap();
        let slots: Vec<Slot> = (0..3)
            .map(|_| connections.admit(a).expect("under the limit"))
            .collect();
        assert!(connections.admit(a).is_none(), "one client is capped");
        let others: Vec<Slot> = (0..2)
            .map(|_| connections.admit(b).expect("another client still gets in"))
            .collect();
        assert!(
            connections.admit(b).is_none(),
            "all clients together are capped"
        );
        drop(slots);
        drop(others);
        assert_eq!(connections.lock().total, 0);
        assert!(connections.lock().by_client.is_empty());
        assert!(connections.admit(a).is_some());
    }
}
