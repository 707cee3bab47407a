//! An ordinary viewer joining and leaving logs nothing above INFO, with the daemon's own log
//! filter: warnings are for things an operator should look at.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use camportal_viewer::Viewer;
use support::{TestDaemon, small_path};
use tracing_subscriber::EnvFilter;

/// The log, as the daemon would have written it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a log line is a warning or an error from the daemon or its WebRTC stack (the test's
/// own viewer, `camportal_viewer` and `webrtc`, logs in the same process).
fn loud_daemon_line(line: &str) -> bool {
    let mut words = line.split_whitespace().skip(1);
    let (Some(level), Some(target)) = (words.next(), words.next()) else {
        return false;
    };
    matches!(level, "WARN" | "ERROR")
        && (target.starts_with("camportal::") || target.starts_with("rtc"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_join_logs_nothing_above_info() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(camportal::daemon::default_log_filter(
            "info",
        )))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("cam"))
        .await
        .expect("WHEP session");
    for _ in 0..30 {
        viewer
            .next_frame(Duration::from_secs(10))
            .await
            .expect("frames");
    }
    viewer.close().await.expect("closed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    test.daemon.shutdown().await;

    let text =
        String::from_utf8_lossy(&log.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    assert!(
        text.contains("viewer created"),
        "the log is captured:\n{text}"
    );
    let loud: Vec<&str> = text.lines().filter(|l| loud_daemon_line(l)).collect();
    assert!(
        loud.is_empty(),
        "warnings on an ordinary join:\n{}",
        loud.join("\n")
    );
}
