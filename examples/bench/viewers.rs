//! Viewers of one stream: 1…300 light viewers of one 1280x720 30 fps 2 Mbit/s path. The daemon's
//! own CPU and memory, and what each viewer got. [`ramp`] also measures the passthrough section.

use std::time::Duration;

use anyhow::{Context, bail};
use camportal_viewer::{LightStats, LightViewer};

use crate::daemon::{self, Daemon};
use crate::pipeline::wait_for_frames;
use crate::proc::{self, CpuMeter};
use crate::report::{Section, Table};
use crate::stats::{median, percentile};
use crate::{Bench, clip};

const SETTLE: Duration = Duration::from_secs(2);
/// Viewers joining at once while ramping up.
const JOIN_BATCH: usize = 10;
/// Round 2's goal (issue 15; round 1's was 150 viewers at ≤ 1.5 cores).
const GOAL_VIEWERS: usize = 300;
const GOAL_LOSS: f64 = 0.01;
const GOAL_CORES: f64 = 1.0;

pub struct Step {
    pub viewers: usize,
    pub cores: f64,
    pub rss: u64,
    pub loss_mean: f64,
    pub loss_max: f64,
    pub fps_min: f64,
    pub kbps_median: f64,
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let plan = &bench.plan;
    let (w, h) = (1280, 720);
    let clip = clip::ensure(&bench.work, w, h, plan.clip_frames, clip::CAMERA)?;
    let yaml = daemon::path_yaml(&daemon::file(&clip), w, h, 30, "2M");
    let daemon = Daemon::start(&bench.camportal, &yaml).await?;
    let window = Duration::from_secs(plan.viewer_window_secs);
    let steps = ramp(&daemon, &plan.viewer_steps, window).await?;
    drop(daemon);

    let mut section = Section::new("Viewers of one stream");
    section.text(&format!(
        "One path, the 1280x720 benchmark clip at 30 fps and 2 Mbit/s (`file` source), watched \
         by light viewers: real ICE, DTLS, SRTP decryption and RTCP receiver reports, counting \
         packets and pictures without decoding, all in the benchmark's process on the same \
         machine. Viewers join {JOIN_BATCH} at a time; after {} s of settling, a {} s window per \
         step. CPU: the daemon's own (user + system from `/proc`, 1.0 = one core busy). Loss: \
         packets missing from each viewer's sequence numbers (no retransmission asked for).",
        SETTLE.as_secs(),
        window.as_secs()
    ));
    let mut table = Table::new(&[
        "viewers",
        "daemon CPU (cores)",
        "loss per viewer, mean / worst",
        "slowest viewer fps",
        "kbit/s per viewer (median)",
        "daemon RSS MB",
    ]);
    for s in &steps {
        table.row(vec![
            s.viewers.to_string(),
            format!("{:.2}", s.cores),
            format!("{:.3} % / {:.3} %", s.loss_mean * 100.0, s.loss_max * 100.0),
            format!("{:.1}", s.fps_min),
            format!("{:.0}", s.kbps_median),
            format!("{:.1}", s.rss as f64 / 1e6),
        ]);
    }
    section.table(&table);
    if let (Some(first), Some(last)) = (steps.first(), steps.last())
        && last.viewers > first.viewers
    {
        let per_viewer =
            (last.rss as f64 - first.rss as f64) / (last.viewers - first.viewers) as f64;
        section.text(&format!(
            "Memory per additional viewer: {:.0} KB (RSS at {} viewers minus at {}, divided).",
            per_viewer / 1e3,
            last.viewers,
            first.viewers
        ));
    }
    let (measured, met) = match steps.iter().find(|s| s.viewers == GOAL_VIEWERS) {
        Some(s) => (
            format!(
                "loss {:.3} % (worst viewer {:.3} %), {:.2} cores",
                s.loss_mean * 100.0,
                s.loss_max * 100.0,
                s.cores
            ),
            Some(s.loss_mean < GOAL_LOSS && s.cores <= GOAL_CORES),
        ),
        None => ("not in this run's steps".into(), None),
    };
    section.goal(
        &format!("{GOAL_VIEWERS} viewers of one 720p30 2 Mbit/s stream"),
        &format!("loss < {} %, daemon ≤ {GOAL_CORES} core", GOAL_LOSS * 100.0),
        measured,
        met,
    );
    Ok(section)
}

/// Light viewers join path `bench` of `daemon` up to each of `steps_wanted` in turn; at each, after
/// settling, the daemon's CPU and RSS and what the viewers got over `window`.
pub async fn ramp(
    daemon: &Daemon,
    steps_wanted: &[usize],
    window: Duration,
) -> anyhow::Result<Vec<Step>> {
    let url = daemon.whep_url("bench");

    let mut viewers: Vec<LightViewer> = Vec::new();
    let mut steps = Vec::new();
    for &n in steps_wanted {
        while viewers.len() < n {
            let batch = (n - viewers.len()).min(JOIN_BATCH);
            let joins: Vec<_> = (0..batch)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { LightViewer::connect(&url).await })
                })
                .collect();
            for join in joins {
                let viewer = join.await??;
                viewers.push(viewer);
            }
        }
        for viewer in &viewers {
            wait_for_frames(viewer)
                .await
                .with_context(|| format!("a viewer among {n}"))?;
        }
        daemon.wait_viewers("bench", n as u64).await?;
        tokio::time::sleep(SETTLE).await;
        let before: Vec<LightStats> = viewers.iter().map(LightViewer::stats).collect();
        let meter = CpuMeter::start(daemon.pid())?;
        tokio::time::sleep(window).await;
        let cpu = meter.read()?;
        let rss = proc::rss_bytes(daemon.pid())?;
        let secs = cpu.wall.as_secs_f64();
        let got: Vec<LightStats> = viewers
            .iter()
            .zip(&before)
            .map(|(v, b)| v.stats().since(b))
            .collect();
        for viewer in &viewers {
            if let Some(reason) = viewer.ended() {
                bail!("a viewer ended during the {n}-viewer window: {reason}");
            }
        }
        let losses: Vec<f64> = got.iter().map(LightStats::loss).collect();
        let fps: Vec<f64> = got.iter().map(|g| g.frames as f64 / secs).collect();
        let kbps: Vec<f64> = got
            .iter()
            .map(|g| g.bytes as f64 * 8.0 / secs / 1000.0)
            .collect();
        let step = Step {
            viewers: n,
            cores: cpu.cores(),
            rss,
            loss_mean: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            loss_max: percentile(&losses, 100.0).unwrap_or(0.0),
            fps_min: percentile(&fps, 0.0).unwrap_or(0.0),
            kbps_median: median(&kbps).unwrap_or(0.0),
        };
        eprintln!(
            "  {n} viewers: {:.2} cores, loss {:.3} % (max {:.3} %), RSS {:.1} MB",
            step.cores,
            step.loss_mean * 100.0,
            step.loss_max * 100.0,
            step.rss as f64 / 1e6
        );
        steps.push(step);
    }
    for viewer in viewers {
        // Best effort: the daemon goes away right after anyway.
        let _ = viewer.close().await;
    }
    Ok(steps)
}
