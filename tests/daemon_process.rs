//! The daemon as a user runs it: the binary, a config directory, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary on kernel-chosen loopback ports and returns it with its HTTP address,
/// read from the log line that announces it.
fn spawn_daemon(config_dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_camportal"))
        .args(["--config-dir"])
        .arg(config_dir)
        .args([
            "--http-address",
            "127.0.0.1:0",
            "--udp-address",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "camportal=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("camportal binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("open http://") {
                let rest = &line[at + "open ".len()..];
                let url = rest.split_whitespace().next().unwrap_or_default();
                let address = url.trim_end_matches('/').to_owned();
                let _ = tx.send(address);
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("daemon announces its HTTP address");
    (child, address)
}

/// A minimal HTTP/1.0 GET, enough for the status API.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(config_dir.join("cam.yml"), "source:\n  type: testsrc\n").unwrap();
    // A broken file beside it must not stop the good path.
    std::fs::write(config_dir.join("broken.yml"), "source: [\n").unwrap();
    let (mut child, address) = spawn_daemon(&config_dir);

    let status = http_get(&address, "/api/paths");
    assert!(status.contains("\"name\":\"cam\""), "{status}");
    assert!(
        status.contains("broken.yml"),
        "the broken file is reported: {status}"
    );

    // SIGHUP reloads the configuration; the daemon carries on serving.
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not end the daemon"
    );
    assert!(http_get(&address, "/api/paths").contains("\"name\":\"cam\""));

    let sent = Instant::now();
    // Our own child, by its PID.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    println!("exited {exit:?} {} ms after SIGTERM", took.as_millis());
    assert!(exit.success(), "exit status {exit:?}");
    // The promise is 2 s (a service manager's stop must not time out); the bound leaves room for
    // a loaded CI machine, the figure above is what it took.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn check_validates_a_directory_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yml"), "source: testsrc\n").unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "source: testsrc\nencoding:\n  fpss: 30\n",
    )
    .unwrap();
    let run = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_camportal"))
            .arg("check")
            .arg(dir)
            .output()
            .expect("camportal check runs")
    };
    let out = run(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok: good"), "{stdout}");
    assert!(
        stdout.contains("bad.yml:3:3:") && stdout.contains("fpss"),
        "names file, line and key: {stdout}"
    );

    std::fs::remove_file(dir.path().join("bad.yml")).unwrap();
    let out = run(dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
