//! The rig the access-control tests stand on (tests/support/netns.rs): a server and a client in
//! two network namespaces joined by a veth pair. The client reaches the server at its address,
//! the server sees the client's address, and the namespaces are really apart (the server's
//! listener is not on the client's loopback).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::netns::Link;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Everything here is local and immediate; a hang is a failure.
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_its_namespace_reaches_the_server_and_is_seen_at_its_own_address() {
    let link = Link::new("192.168.77.1", "192.168.77.2");
    let server = link.server.runtime();
    let client = link.client.runtime();

    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    let accepted = server.spawn(async move {
        let listener = TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind in the server namespace");
        let port = listener.local_addr().expect("listener address").port();
        port_tx.send(port).expect("the test waits for the port");
        let (mut stream, peer) = listener.accept().await.expect("accept");
        stream.write_all(b"hello").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        peer
    });
    let port = tokio::time::timeout(TIMEOUT, port_rx)
        .await
        .expect("the server listens in time")
        .expect("the server task sends its port");

    let server_address = SocketAddr::new(link.server_ip, port);
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    let connected = client.spawn(async move {
        // The listener is on 0.0.0.0 in the server's namespace only.
        let elsewhere = TcpStream::connect(loopback).await;
        let mut stream = TcpStream::connect(server_address)
            .await
            .expect("connect across the veth pair");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.expect("read");
        (elsewhere.err().map(|e| e.kind()), received)
    });
    let (loopback_error, received) = tokio::time::timeout(TIMEOUT, connected)
        .await
        .expect("the client is done in time")
        .expect("client task");
    let peer = tokio::time::timeout(TIMEOUT, accepted)
        .await
        .expect("the server is done in time")
        .expect("server task");

    assert_eq!(
        loopback_error,
        Some(std::io::ErrorKind::ConnectionRefused),
        "the client's loopback is its own"
    );
    assert_eq!(received, b"hello");
    assert_eq!(
        peer.ip(),
        link.client_ip,
        "the server sees the client's address"
    );

    server.shutdown_background();
    client.shutdown_background();
}
