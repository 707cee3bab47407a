//! Accepting HTTP connections so that no client can hold the port: a request's headers must
//! arrive within [`HEADER_TIMEOUT`] (hyper arms the same timer while a keep-alive connection waits
//! for its next request, so it is also the idle timeout), its body within [`BODY_TIMEOUT`], and
//! one client address may hold [`MAX_CONNECTIONS_PER_CLIENT`] connections, all clients together
//! [`MAX_CONNECTIONS`]. A connection over a limit is closed at once, before it is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Headers (and the next request on a kept-alive connection) must come within this.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body (a WHEP offer is a few KiB) must come within this.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one client address may hold (a browser opens six; a load test more).
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: usize = 128;
/// Connections all clients may hold together; the file descriptor limit is raised well above.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// After an accept error (out of file descriptors), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connections open now, per client address and in all.
#[derive(Default)]
struct Open {
    by_client: HashMap<IpAddr, usize>,
    total: usize,
}

impl Open {
    /// Whether one more connection from `client` fits.
    fn admits(&self, client: IpAddr) -> bool {
        self.total < MAX_CONNECTIONS
            && self.by_client.get(&client).copied().unwrap_or(0) < MAX_CONNECTIONS_PER_CLIENT
    }
}

#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Open>>);

/// One admitted connection; counted until dropped.
struct Slot {
    connections: Connections,
    client: IpAddr,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // Counts only: nothing a panic could leave half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, client: IpAddr) -> Option<Slot> {
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

/// Serves `app` on `listener` (over TLS with `tls`) until `stop`; open connections are then
/// dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let connections = Connections::default();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        warn!(%err, "cannot accept an HTTP connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some(slot) = connections.admit(peer.ip()) else {
                    debug!(%peer, "HTTP connection refused: too many open");
                    continue;
                };
                tasks.spawn(serve_connection(stream, peer, app.clone(), tls.clone(), slot));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    slot: Slot,
) {
    let _slot = slot;
    let Some(tls) = tls else {
        return serve_http(stream, peer, app).await;
    };
    // The handshake is held to the header timeout too: a client that connects and says
    // nothing must not keep the connection.
    match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, peer, app).await,
        Ok(Err(err)) => debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_http<S>(stream: S, peer: SocketAddr, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // What `ConnectInfo<SocketAddr>` extracts, as `axum::serve` would insert it.
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    // HTTP/1.1 only: browsers speak HTTP/2 only over TLS (where ALPN offers only HTTP/1.1),
    // and version sniffing would wait for a first byte with no timeout.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(err) = connection.await {
        debug!(%peer, %err, "HTTP connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_client_and_freed_when_dropped() {
        let connections = Connections::default();
        let a: IpAddr = "192.168.1.10".parse().unwrap();
        let b: IpAddr = "192.168.1.11".parse().unwrap();
        let slots: Vec<Slot> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|_| connections.admit(a).expect("under the limit"))
            .collect();
        assert!(connections.admit(a).is_none(), "one client is capped");
        let other = connections.admit(b).expect("another client still gets in");
        drop(slots);
        drop(other);
        assert_eq!(connections.lock().total, 0);
        assert!(connections.lock().by_client.is_empty());
        assert!(connections.admit(a).is_some());
    }
}
