//! The daemon as a user runs it: the binary, a config directory, signals.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::process::{DaemonProcess, http_get};

#[test]
fn sigterm_stops_the_daemon_cleanly_and_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(config_dir.join("cam.yml"), "source:\n  type: testsrc\n").unwrap();
    // A broken file beside it must not stop the good path.
    std::fs::write(config_dir.join("broken.yml"), "source: [\n").unwrap();
    let mut daemon = DaemonProcess::spawn(&config_dir, "127.0.0.1:0", "127.0.0.1:0");
    let address = daemon.address.clone();

    let status = http_get(&address, "/api/paths").expect("daemon answers");
    assert!(status.contains("\"name\":\"cam\""), "{status}");
    assert!(
        status.contains("broken.yml"),
        "the broken file is reported: {status}"
    );

    // SIGHUP reloads the configuration; the daemon carries on serving.
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert!(daemon.running(), "SIGHUP must not end the daemon");
    assert!(
        http_get(&address, "/api/paths")
            .expect("daemon answers")
            .contains("\"name\":\"cam\"")
    );

    let sent = Instant::now();
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(10));
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
