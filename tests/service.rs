//! Under systemd (`Type=notify`): the daemon tells the service manager when it is ready,
//! reloading and stopping, keeps a status line, and pings the watchdog. systemd is played by a
//! Unix datagram socket the test binds as `NOTIFY_SOCKET`, as systemd does.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::process::DaemonProcess;
use support::small_path;

/// Receives notifications until one contains `wanted`; returns it. Panics after 10 s.
fn wait_for(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(message.clone());
            if message.lines().any(|line| line == wanted) {
                return message;
            }
        }
    }
    panic!("no {wanted} within 10 s; received: {seen:?}");
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).expect("config.d");
    std::fs::write(config_dir.join("cam.yml"), small_path(160, 120)).expect("path file");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let socket_env = socket_path.to_str().expect("UTF-8 path");
    let mut daemon = DaemonProcess::spawn_with_env(
        &config_dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[("NOTIFY_SOCKET", socket_env), ("WATCHDOG_USEC", "1000000")],
    );
    let mut seen = Vec::new();
    let ready = wait_for(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS="), "{ready}");
    assert!(ready.contains("paths running"), "{ready}");
    // Pinged at half the watchdog interval (1 s here).
    let before = Instant::now();
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    assert!(before.elapsed() < Duration::from_secs(3), "{seen:?}");

    daemon.signal(libc::SIGHUP);
    let reloading = wait_for(&socket, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_for(&socket, "READY=1", &mut seen);

    daemon.signal(libc::SIGTERM);
    wait_for(&socket, "STOPPING=1", &mut seen);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}
