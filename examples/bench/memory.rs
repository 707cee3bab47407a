//! Memory (and CPU) of the daemon with the shipped config: idle, with one viewer, and per
//! additional viewer.

use std::time::Duration;

use camportal_viewer::LightViewer;

use crate::Bench;
use crate::daemon::Daemon;
use crate::pipeline::wait_for_frames;
use crate::proc::{self, CpuMeter};
use crate::report::{Section, Table};

const MORE_VIEWERS: usize = 10;
/// Issue 15's goals: keep round 1's figures (11.8 MB, 184 KB) below these.
const GOAL_IDLE_BYTES: f64 = 15e6;
const GOAL_BYTES_PER_VIEWER: f64 = 250e3;
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let idle = Duration::from_secs(bench.plan.idle_secs);
    let daemon = Daemon::start_in(&bench.camportal, &bench.shipped_config).await?;
    daemon.wait_running("test").await?;
    let pid = daemon.pid();
    tokio::time::sleep(SETTLE).await;

    let meter = CpuMeter::start(pid)?;
    tokio::time::sleep(idle).await;
    let idle_cpu = meter.read()?;
    let idle_rss = proc::rss_bytes(pid)?;

    let url = daemon.whep_url("test");
    let first = LightViewer::connect(&url).await?;
    wait_for_frames(&first).await?;
    tokio::time::sleep(SETTLE).await;
    let meter = CpuMeter::start(pid)?;
    tokio::time::sleep(idle).await;
    let one_cpu = meter.read()?;
    let one_rss = proc::rss_bytes(pid)?;

    let mut more = Vec::new();
    for _ in 0..MORE_VIEWERS {
        more.push(LightViewer::connect(&url).await?);
    }
    for viewer in &more {
        wait_for_frames(viewer).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let more_rss = proc::rss_bytes(pid)?;
    for viewer in more {
        let _ = viewer.close().await;
    }
    let _ = first.close().await;
    drop(daemon);

    let per_viewer = (more_rss as f64 - one_rss as f64) / MORE_VIEWERS as f64;
    let mb = |b: f64| format!("{:.1}", b / 1e6);
    let mut section = Section::new("Memory");
    section.text(&format!(
        "The release daemon with the shipped `config.d/` (one 1280x720 30 fps test pattern \
         path), {} s per state. Idle: nobody watching (the path is captured, not encoded). RSS \
         is `VmRSS` from `/proc/<pid>/status`; CPU the daemon's own, in % of one core.",
        idle.as_secs()
    ));
    let mut table = Table::new(&["state", "RSS MB", "CPU"]);
    table.row(vec![
        "idle".into(),
        mb(idle_rss as f64),
        format!("{:.1} %", idle_cpu.cores() * 100.0),
    ]);
    table.row(vec![
        "1 viewer".into(),
        mb(one_rss as f64),
        format!("{:.1} %", one_cpu.cores() * 100.0),
    ]);
    table.row(vec![
        format!("{} viewers", 1 + MORE_VIEWERS),
        mb(more_rss as f64),
        "".into(),
    ]);
    section.table(&table);
    section.text(&format!(
        "Per additional viewer: {:.0} KB.",
        per_viewer / 1e3
    ));
    section.goal(
        "idle memory",
        "< 15 MB",
        format!("{} MB", mb(idle_rss as f64)),
        Some((idle_rss as f64) < GOAL_IDLE_BYTES),
    );
    section.goal(
        "memory per viewer",
        "< 250 KB",
        format!("{:.0} KB", per_viewer / 1e3),
        Some(per_viewer < GOAL_BYTES_PER_VIEWER),
    );
    Ok(section)
}
