//! Soak: what a long life and hostile peers do to the daemon. One light viewer watches
//! throughout while the daemon takes many join/leave cycles, an offer flood from one client and
//! a pile of idle HTTP connections; RSS, open files and threads are read before, at the peak and
//! after each phase (after: once the daemon has had time to give memory back), and the
//! watching viewer's longest gap between pictures shows whether real viewers noticed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camportal_viewer::LightViewer;
use tokio::io::AsyncReadExt;

use crate::Bench;
use crate::daemon::{self, Daemon};
use crate::pipeline::wait_for_frames;
use crate::proc;
use crate::report::{Section, Table};

/// Concurrent join/leave workers.
const WORKERS: usize = 8;
/// How long the daemon gets after a phase to close what it must and give memory back (its
/// heap is trimmed every 10 s; sessions that never connect end within 5 s).
const AFTER: Duration = Duration::from_secs(30);
const IDLE_CONNECTIONS: usize = 100;

/// RSS MB, open files, threads of the daemon now.
fn sample(pid: u32) -> anyhow::Result<(f64, usize, usize)> {
    Ok((
        proc::rss_bytes(pid)? as f64 / 1e6,
        proc::fd_count(pid)?,
        proc::thread_count(pid)?,
    ))
}

/// Records the watching viewer's longest gap between pictures until told to stop.
struct GapWatch {
    longest_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl GapWatch {
    fn start(viewer: Arc<LightViewer>) -> GapWatch {
        let longest_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (longest, stopped) = (Arc::clone(&longest_ms), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut frames, mut since) = (viewer.stats().frames, Instant::now());
            while !stopped.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = viewer.stats().frames;
                if now != frames {
                    frames = now;
                    since = Instant::now();
                }
                longest.fetch_max(since.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        });
        GapWatch { longest_ms, stop }
    }

    /// The longest gap since the last call.
    fn take(&self) -> u64 {
        self.longest_ms.swap(0, Ordering::Relaxed)
    }
}

impl Drop for GapWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits [`AFTER`], then samples the daemon and the watcher's longest gap meanwhile.
async fn settle(pid: u32, gaps: &GapWatch) -> anyhow::Result<((f64, usize, usize), u64)> {
    tokio::time::sleep(AFTER).await;
    Ok((sample(pid)?, gaps.take()))
}

async fn join_leave(url: String, cycles: usize) -> anyhow::Result<usize> {
    let mut done = 0;
    for _ in 0..cycles {
        let viewer = LightViewer::connect(&url).await?;
        wait_for_frames(&viewer).await?;
        viewer.close().await?;
        done += 1;
    }
    Ok(done)
}

async fn offer_flood(whep: &str, offers: usize) -> anyhow::Result<(usize, usize)> {
    let client = reqwest::Client::new();
    let offer = include_str!("soak_offer.sdp");
    let (mut created, mut refused) = (0, 0);
    for _ in 0..offers {
        let status = client
            .post(whep)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await?
            .status();
        match status.as_u16() {
            201 => created += 1,
            503 => refused += 1,
            other => anyhow::bail!("offer answered {other}"),
        }
    }
    Ok((created, refused))
}

/// Opens idle connections; returns how many the daemon had closed after `wait`.
async fn idle_connections(base: &str, wait: Duration) -> anyhow::Result<usize> {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut streams = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        streams.push(tokio::net::TcpStream::connect(&addr).await?);
    }
    tokio::time::sleep(wait).await;
    let mut closed = 0;
    for stream in &mut streams {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(10), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    Ok(closed)
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let (cycles, offers) = if bench.plan.quick {
        (200, 500)
    } else {
        (10_000, 5_000)
    };
    let yaml = daemon::path_yaml(&daemon::testsrc(), 640, 480, 30, "1M");
    // The shipped limits: what a flood meets in the field.
    let daemon = Daemon::start_with(&bench.camportal, &yaml, "").await?;
    let pid = daemon.pid();
    let url = daemon.whep_url("bench");
    let watcher = Arc::new(LightViewer::connect(&url).await?);
    wait_for_frames(&watcher).await?;
    let gaps = GapWatch::start(Arc::clone(&watcher));
    tokio::time::sleep(Duration::from_secs(2)).await;
    gaps.take();

    let mut table = Table::new(&[
        "phase",
        "RSS MB",
        "open files",
        "threads",
        "watcher's longest gap",
    ]);
    let mut row = |phase: String, (rss, fds, threads): (f64, usize, usize), gap: Option<u64>| {
        table.row(vec![
            phase,
            format!("{rss:.1}"),
            fds.to_string(),
            threads.to_string(),
            gap.map(|ms| format!("{ms} ms")).unwrap_or_default(),
        ]);
    };
    row("start".into(), sample(pid)?, None);

    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(join_leave(url.clone(), cycles / WORKERS)))
        .collect();
    let mut joined = 0;
    for worker in workers {
        joined += worker.await??;
    }
    let took = started.elapsed().as_secs_f64();
    row(
        format!("{joined} join/leave cycles ({took:.0} s)"),
        sample(pid)?,
        Some(gaps.take()),
    );
    let (settled, gap) = settle(pid, &gaps).await?;
    row(format!("{} s after", AFTER.as_secs()), settled, Some(gap));

    let (created, refused) = offer_flood(&url, offers).await?;
    let peak = sample(pid)?;
    row(
        format!("{offers} offers from one client: {created} created, {refused} refused (503)"),
        peak,
        Some(gaps.take()),
    );
    let (settled, gap) = settle(pid, &gaps).await?;
    row(format!("{} s after", AFTER.as_secs()), settled, Some(gap));

    let base = url.trim_end_matches("/bench/whep").to_owned();
    let closed = idle_connections(&base, Duration::from_secs(12)).await?;
    row(
        format!(
            "{IDLE_CONNECTIONS} idle HTTP connections: {closed} closed by the daemon within 12 s"
        ),
        sample(pid)?,
        Some(gaps.take()),
    );
    drop(gaps);
    let alive = watcher.ended().is_none();

    let mut section = Section::new("Soak");
    section.text(&format!(
        "The release daemon with one 640x480 30 fps test-pattern path and one light viewer \
         watching throughout ({}). Join/leave: {WORKERS} clients each connecting a light viewer, \
         waiting for its first picture and closing it, in a loop. Offer flood: valid offers \
         POSTed back to back by one client that never does ICE. RSS is `VmRSS`; open files and \
         threads are counted in `/proc/<pid>`.",
        if alive {
            "it stayed connected"
        } else {
            "it was disconnected"
        }
    ));
    section.table(&table);
    Ok(section)
}
