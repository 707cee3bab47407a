//! Accepting HTTP connections so that no client can hold the port: a request's headers must
//! arrive within [`HEADER_TIMEOUT`] (hyper arms the same timer while a keep-alive connection waits
//! for its next request, so it is also the idle timeout), its body within [`BODY_TIMEOUT`], and
//! one client address may hold [`MAX_CONNECTIONS_PER_CLIENT`] connections, all clients together
//! [`MAX_CONNECTIONS`]. A connection over a limit is closed at once, before it is read.

use std::net::SocketAddr;
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
use tracing::debug;

use crate::connections::{Connections, Slot, accept};

/// Headers (and the next request on a kept-alive connection) must come within this.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body (a WHEP offer is a few KiB) must come within this.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one client address may hold (a browser opens six; a load test more).
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: usize = 128;
/// Connections all clients may hold together; the file descriptor limit is raised well above.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Serves `app` on `listener` (over TLS with `tls`) until `stop`; open connections are then
/// dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let connections = Connections::new(MAX_CONNECTIONS_PER_CLIENT, MAX_CONNECTIONS);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            (stream, peer, slot) = accept(&listener, &connections, "HTTP", |_| {}) => {
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
