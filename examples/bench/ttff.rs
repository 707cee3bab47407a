//! Time to first frame: from the WHEP POST to the first decoded picture, one join at a time, each
//! onto an idle path (nobody else watching), as a kiosk that switches on.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use camportal_viewer::Viewer;

use crate::chromium::Chromium;
use crate::daemon::{self, Daemon};
use crate::report::{Section, Table};
use crate::stats::{p50_p99, percentile};
use crate::{Bench, latency::PROBE};

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Round 2's goal (issue 15; round 1's was 250 / 500 ms).
const GOAL_P50_MS: f64 = 100.0;
const GOAL_P99_MS: f64 = 200.0;

/// Where a Chromium join's time goes: ms between consecutive events the probe records, each
/// part from the end of the one before (POST, answer received, ICE connected, DTLS done — the
/// connection state "connected" —, the first frame's last packet received, presented).
type Breakdown = [f64; 5];

const PARTS: [&str; 5] = [
    "POST → answer received",
    "→ ICE connected",
    "→ DTLS done",
    "→ first frame received (keyframe encoded and sent)",
    "→ presented (decoded, rendered)",
];

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let joins = bench.plan.joins;
    let yaml = daemon::path_yaml(&daemon::testsrc(), 1280, 720, 30, "2M");
    let daemon = Daemon::start(&bench.camportal, &yaml).await?;

    let mut rust = Vec::with_capacity(joins);
    for _ in 0..joins {
        rust.push(rust_join(&daemon).await?);
        daemon.wait_viewers("bench", 0).await?;
    }
    eprintln!("  ttff: Rust viewer done");

    let browser = Chromium::launch().await?;
    let mut chromium = Vec::with_capacity(joins);
    let mut parts = Vec::with_capacity(joins);
    for _ in 0..joins {
        let (ttff, breakdown) = chromium_join(&browser, &daemon).await?;
        chromium.push(ttff);
        parts.extend(breakdown);
        daemon.wait_viewers("bench", 0).await?;
    }
    drop(browser);
    eprintln!("  ttff: Chromium done");

    let mut section = Section::new("Time to first frame");
    section.text(&format!(
        "{joins} joins per client onto a 1280x720 30 fps 2 Mbit/s test pattern path, one at a \
         time, each after the previous viewer left (the path idle, as when a kiosk switches \
         on). From the WHEP POST to the first decoded picture: the Rust viewer's first picture \
         out of its decoder; Chromium's first `requestVideoFrameCallback` (presentation time) \
         in the player page, from the player's `fetch` of the offer. For reference, MediaMTX \
         gives a new WebRTC reader nothing until the source's next IDR (libx264's default GOP \
         is 250 pictures, about 8 s)."
    ));
    let mut table = Table::new(&["client", "p50 / p99 ms", "min ms", "max ms"]);
    for (name, samples) in [("Rust viewer", &rust), ("Chromium (player)", &chromium)] {
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            name.to_owned(),
            p50_p99(samples),
            format!("{min:.1}"),
            format!("{max:.1}"),
        ]);
        let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
        section.goal(
            &format!("time to first frame, {name}"),
            "p50 < 100 ms, p99 < 200 ms",
            format!("p50 / p99 {} ms", p50_p99(samples)),
            p50.zip(p99)
                .map(|(p50, p99)| p50 < GOAL_P50_MS && p99 < GOAL_P99_MS),
        );
    }
    section.table(&table);
    section.text(&format!(
        "Where Chromium's time goes ({} of {joins} joins reported every step; each part from \
         the end of the one before, so the medians need not add up to the total's):",
        parts.len()
    ));
    let mut breakdown = Table::new(&["part", "p50 / p99 ms"]);
    for (i, name) in PARTS.iter().enumerate() {
        let samples: Vec<f64> = parts.iter().map(|b| b[i]).collect();
        breakdown.row(vec![(*name).to_owned(), p50_p99(&samples)]);
    }
    section.table(&breakdown);
    Ok(section)
}

/// One join of the Rust viewer: ms from its POST to its first decoded picture.
async fn rust_join(daemon: &Daemon) -> anyhow::Result<f64> {
    let mut viewer = Viewer::connect(&daemon.whep_url("bench")).await?;
    viewer.next_frame(FRAME_TIMEOUT).await?;
    let ttff = viewer.offer_posted().elapsed();
    viewer.close().await?;
    Ok(ttff.as_secs_f64() * 1e3)
}

/// One join of the player in a fresh Chromium tab: ms from its POST to its first presented
/// frame, and where that time went (if the page saw every step).
async fn chromium_join(
    browser: &Chromium,
    daemon: &Daemon,
) -> anyhow::Result<(f64, Option<Breakdown>)> {
    let page = browser
        .open_with_script(&daemon.page_url("bench", ""), Some(PROBE))
        .await?;
    let started = Instant::now();
    page.wait_for(
        "window.__bench.firstFrameAt !== null && window.__bench.postAt !== null",
        FRAME_TIMEOUT,
    )
    .await
    .with_context(|| format!("no frame in Chromium after {:?}", started.elapsed()))?;
    let ttff = page
        .eval("window.__bench.firstFrameAt - window.__bench.postAt")
        .await?
        .as_f64()
        .ok_or_else(|| anyhow!("no time to first frame from the page"))?;
    let steps = page
        .eval(
            "(() => { const b = window.__bench; return [b.postAt, b.answerAt, b.iceConnectedAt, \
             b.connectedAt, b.firstReceivedAt, b.firstFrameAt]; })()",
        )
        .await?;
    page.close().await?;
    let at: Option<Vec<f64>> = steps
        .as_array()
        .and_then(|steps| steps.iter().map(serde_json::Value::as_f64).collect());
    let breakdown = at.and_then(|at| {
        let parts: Vec<f64> = at.windows(2).map(|pair| pair[1] - pair[0]).collect();
        Breakdown::try_from(parts).ok()
    });
    Ok((ttff, breakdown))
}
