//! Running under systemd (`Type=notify`): `READY=1` once HTTP, UDP and RTSP listen,
//! `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown, a one-line
//! `STATUS=`, and `WATCHDOG=1` at half `WATCHDOG_USEC` from a task that stops pinging when the
//! root supervisor stops answering (so systemd restarts a wedged daemon). Without
//! `NOTIFY_SOCKET` every call here does nothing.

use std::time::Duration;

use ractor::ActorRef;
use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::status::{PathState, Snapshot, StatusBoard};
use crate::supervisor::RootMsg;

/// How often `STATUS=` is brought up to date.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        debug!(%err, "cannot notify the service manager");
    }
}

/// The one-line status systemd shows (`systemctl status`).
pub(crate) fn status_line(snapshot: &Snapshot) -> String {
    let running = snapshot
        .paths
        .iter()
        .filter(|p| p.state == PathState::Running)
        .count();
    let sum = |f: fn(&crate::status::Readers) -> usize| -> usize {
        snapshot.paths.iter().map(|p| f(&p.readers)).sum()
    };
    let mut line = format!(
        "{running} of {} paths running; {} viewers, {} RTSP, {} MJPEG readers",
        snapshot.paths.len(),
        sum(|r| r.webrtc),
        sum(|r| r.rtsp),
        sum(|r| r.mjpeg)
    );
    if !snapshot.config_errors.is_empty() {
        line.push_str(&format!("; {} config errors", snapshot.config_errors.len()));
    }
    line
}

pub(crate) fn ready(board: &StatusBoard) {
    let status = status_line(&board.snapshot());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd ≥ 253 wants the reload's start time with it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Keeps `STATUS=` current and, if systemd asked for a watchdog, pings it at half its interval
/// while the root supervisor answers. None when not under a service manager.
pub(crate) fn spawn(root: ActorRef<RootMsg>, board: StatusBoard) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(STATUS_INTERVAL, |limit| (limit / 2).min(STATUS_INTERVAL));
    Some(tokio::spawn(async move {
        let mut since_status = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            since_status += tick;
            if watchdog.is_some() {
                // Answered only by a root that still handles messages.
                let answered = root
                    .call(RootMsg::Ping, Some(tick))
                    .await
                    .is_ok_and(|reply| reply.is_success());
                if answered {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    warn!("the root supervisor does not answer; not pinging the watchdog");
                }
            }
            if since_status >= STATUS_INTERVAL {
                since_status = Duration::ZERO;
                let status = status_line(&board.snapshot());
                notify(&[NotifyState::Status(&status)]);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PathStatus, Readers};

    #[test]
    fn the_status_line_counts_paths_and_readers() {
        let mut running = PathStatus::invalid("a", String::new());
        running.state = PathState::Running;
        running.config_error = None;
        running.readers = Readers {
            webrtc: 2,
            rtsp: 1,
            mjpeg: 0,
        };
        let failed = PathStatus::invalid("b", "broken".into());
        let snapshot = Snapshot {
            paths: vec![running, failed],
            config_errors: vec![],
        };
        assert_eq!(
            status_line(&snapshot),
            "1 of 2 paths running; 2 viewers, 1 RTSP, 0 MJPEG readers"
        );
    }
}
