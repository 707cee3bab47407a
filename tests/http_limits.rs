//! No HTTP client can hold the port: idle, half-sent and slow connections are closed, and one
//! address cannot take every connection, so others still get the API, the player and WHEP.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{TestDaemon, small_path};

/// The daemon's header timeout is 10 s; closing must come soon after it.
const CLOSED_WITHIN: Duration = Duration::from_secs(14);

/// Sends `first`, then waits for the server to end the connection; returns how long it took
/// and what it answered.
async fn held(addr: SocketAddr, first: &[u8]) -> (Duration, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(first).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSED_WITHIN, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "still open after {CLOSED_WITHIN:?}: {first:?}"
    );
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

async fn connect_from(local: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().expect("address"))?;
    socket.connect(to).await
}

/// Whether the server closes a fresh connection at once (over a limit) or keeps it.
async fn refused_at_once(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partial_and_slow_connections_are_closed() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let addr = test.daemon.http_addr;
    let slow_body = "POST /cam/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
                     Content-Length: 4000\r\n\r\nv=0\r\n";
    let (idle, partial, slow) = tokio::join!(
        held(addr, b""),
        held(addr, b"GET /api/paths HTTP/1.1\r\nHost: x\r\n"),
        held(addr, slow_body.as_bytes()),
    );
    eprintln!(
        "closed after: idle {} ms, partial headers {} ms, slow body {} ms",
        idle.0.as_millis(),
        partial.0.as_millis(),
        slow.0.as_millis()
    );
    assert!(
        !slow.1.starts_with("HTTP/1.1 2"),
        "a body that never arrives is not served: {}",
        slow.1
    );
    test.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let addr = test.daemon.http_addr;
    // One client opens connections until the daemon closes new ones at once.
    let mut hoard = Vec::new();
    let mut capped_at = None;
    for n in 0..400 {
        let mut stream = connect_from("127.0.0.1", addr).await.expect("connect");
        if n >= 100 && n % 10 == 0 && refused_at_once(&mut stream).await {
            capped_at = Some(n);
            break;
        }
        hoard.push(stream);
    }
    let capped_at = capped_at.expect("a connection cap per address");
    eprintln!("one address capped at {capped_at} connections");
    // Another address is still served: the API and the player answer.
    let mut other = connect_from("127.0.0.2", addr).await.expect("connect");
    other
        .write_all(b"GET /api/paths HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(hoard);
    test.daemon.shutdown().await;
}
