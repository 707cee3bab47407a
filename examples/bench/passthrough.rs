//! H.264 passthrough: a camera's (here a file's) own H.264 sent as it is, no encoder. What each
//! viewer costs then is the whole of the daemon's per-viewer work: packetizing is shared, so
//! it is SRTP encryption, sending and RTCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::{self, Daemon};
use crate::report::{Section, Table};
use crate::viewers::ramp;
use crate::{Bench, clip};

const FPS: u32 = 30;
const STEPS: [usize; 3] = [1, 10, 50];

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let plan = &bench.plan;
    let (w, h) = (1280, 720);
    let raw = clip::ensure(&bench.work, w, h, plan.clip_frames, clip::CAMERA)?;
    let h264 = h264_clip(&raw, w, h)?;
    let mut source = daemon::file(&h264);
    source.push_str("  format: h264\n");
    let yaml = daemon::path_yaml(&source, w, h, FPS, "2M");
    let daemon = Daemon::start(&bench.camportal, &yaml).await?;
    let window = Duration::from_secs(plan.viewer_window_secs);
    let steps_wanted: Vec<usize> = STEPS
        .into_iter()
        .filter(|&n| !plan.quick || n <= 10)
        .collect();
    let steps = ramp(&daemon, &steps_wanted, window).await?;
    drop(daemon);

    let mut section = Section::new("H.264 passthrough: CPU per viewer");
    section.text(&format!(
        "The 1280x720 benchmark clip encoded once by x264 as a camera would send it (Baseline, \
         2 Mbit/s, a keyframe every 2 s, parameter sets with each), played by a `file` source \
         with `format: h264`: passed through, never decoded or encoded. Light viewers as in the \
         viewers section, {} s per step. The daemon's CPU then is reading the file, packetizing \
         once and, per viewer, SRTP encryption, sending and RTCP; compare the viewers section \
         (the same clip encoded by camportal) for what the encoder costs.",
        window.as_secs()
    ));
    let mut table = Table::new(&[
        "viewers",
        "daemon CPU",
        "loss per viewer, mean / worst",
        "kbit/s per viewer (median)",
    ]);
    for s in &steps {
        table.row(vec![
            s.viewers.to_string(),
            format!("{:.1} %", s.cores * 100.0),
            format!("{:.3} % / {:.3} %", s.loss_mean * 100.0, s.loss_max * 100.0),
            format!("{:.0}", s.kbps_median),
        ]);
    }
    section.table(&table);
    if let (Some(first), Some(last)) = (steps.first(), steps.last())
        && last.viewers > first.viewers
    {
        let per_viewer = (last.cores - first.cores) / (last.viewers - first.viewers) as f64;
        section.text(&format!(
            "Per additional viewer: {:.2} % of a core (CPU at {} viewers minus at {}, divided); \
             with one viewer the daemon uses {:.1} %.",
            per_viewer * 100.0,
            last.viewers,
            first.viewers,
            first.cores * 100.0
        ));
    }
    Ok(section)
}

/// The H.264 version of a raw clip, as a camera would send it, made once beside it.
fn h264_clip(raw: &Path, w: u32, h: u32) -> anyhow::Result<PathBuf> {
    let output = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "baseline",
        "-b:v",
        "2M",
        "-g",
        "60",
        "-bf",
        "0",
        "-x264-params",
        "repeat-headers=1",
        "-f",
        "h264",
    ];
    clip::converted(raw, (w, h), FPS, "h264", &output)
}
