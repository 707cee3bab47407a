//! Latency: from the capture time stamped into the test pattern to the picture decoded by the
//! Rust viewer and presented by Chromium, 1280x720 at 30 fps. Same machine, same clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use camportal_viewer::Viewer;

use crate::Bench;
use crate::chromium::Chromium;
use crate::daemon::{self, Daemon};
use crate::report::{Section, Table};
use crate::stats::{median, p50_p99, percentile};

/// The script the benchmark injects into the player page (time to first frame, stamps).
pub const PROBE: &str = include_str!("probe.js");
const WARM_UP: Duration = Duration::from_secs(2);
const GOAL_P50_MS: f64 = 80.0;

fn ms_since(stamp_micros: u64, at: SystemTime) -> f64 {
    let at = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as f64;
    (at - stamp_micros as f64) / 1e3
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let secs = bench.plan.latency_secs;
    let yaml = daemon::path_yaml(&daemon::testsrc(), 1280, 720, 30, "2M");
    let daemon = Daemon::start(&bench.camportal, &yaml).await?;

    // The Rust viewer.
    let mut viewer = Viewer::connect(&daemon.whep_url("bench")).await?;
    let warm = Instant::now() + WARM_UP;
    let end = warm + Duration::from_secs(secs);
    let (mut received, mut decoded) = (Vec::new(), Vec::new());
    let (mut gaps, mut last) = (0u64, None::<u32>);
    while Instant::now() < end {
        let frame = viewer.next_frame(Duration::from_secs(5)).await?;
        let now = SystemTime::now();
        let Some(stamp) = frame.picture.stamp else {
            continue;
        };
        if Instant::now() < warm {
            last = Some(stamp.frame);
            continue;
        }
        if let Some(last) = last {
            gaps += u64::from(stamp.frame.saturating_sub(last).saturating_sub(1));
        }
        last = Some(stamp.frame);
        received.push(ms_since(stamp.unix_micros, frame.received));
        decoded.push(ms_since(stamp.unix_micros, now));
    }
    let rust_stats = viewer.stats();
    viewer.close().await?;
    daemon.wait_viewers("bench", 0).await?;
    eprintln!("  latency: Rust viewer done");

    // The player in Chromium.
    let browser = Chromium::launch().await?;
    let page = browser
        .open_with_script(&daemon.page_url("bench", "?stats=1"), Some(PROBE))
        .await?;
    page.wait_for(
        "window.__bench.firstFrameAt !== null",
        Duration::from_secs(15),
    )
    .await
    .context("the player shows no picture")?;
    tokio::time::sleep(WARM_UP).await;
    page.eval("window.__bench.measuring = true").await?;
    // The player's own figure (?stats=1, from abs-capture-time), once a second.
    let mut player = Vec::new();
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(ms) = page.eval("window.camportal.latencyMs").await?.as_f64() {
            player.push(ms);
        }
    }
    page.eval("window.__bench.measuring = false").await?;
    let result = page
        .eval("({ latencies: window.__bench.latencies, unstamped: window.__bench.unstamped })")
        .await?;
    let presented: Vec<f64> = result["latencies"]
        .as_array()
        .ok_or_else(|| anyhow!("no latencies from the page: {result}"))?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    let unstamped = result["unstamped"].as_u64().unwrap_or(0);
    page.close().await?;
    drop(browser);
    eprintln!("  latency: Chromium done");

    let mut section = Section::new("Latency");
    section.text(&format!(
        "A 1280x720 30 fps 2 Mbit/s test pattern path, {secs} s per client after {} s of \
         warm-up. The capture time is the stamp the test pattern draws into each picture (read \
         back from the decoded pixels); the daemon and the viewers share the machine's clock. \
         Rust viewer: {} pictures ({} missing from the stamp's counter, {} RTP packets lost). \
         Chromium: the player page, each presented frame drawn to a canvas inside \
         `requestVideoFrameCallback` and its stamp read; latency to `expectedDisplayTime` ({} \
         frames, {unstamped} unreadable). The player's own figure (`?stats=1`, from \
         `abs-capture-time`) is the median of its once-a-second readings.",
        WARM_UP.as_secs(),
        decoded.len(),
        gaps,
        rust_stats.rtp_lost,
        presented.len(),
    ));
    let mut table = Table::new(&["from capture to", "p50 / p99 ms"]);
    table.row(vec![
        "Rust viewer: last packet of the picture received".into(),
        p50_p99(&received),
    ]);
    table.row(vec![
        "Rust viewer: picture decoded".into(),
        p50_p99(&decoded),
    ]);
    table.row(vec![
        "Chromium: frame presented (stamp)".into(),
        p50_p99(&presented),
    ]);
    table.row(vec![
        "Chromium: the player's `?stats=1` figure (abs-capture-time)".into(),
        median(&player).map_or_else(|| "–".into(), |m| format!("{m:.1} (median)")),
    ]);
    section.table(&table);
    let p50 = percentile(&presented, 50.0);
    section.goal(
        "latency to Chromium, p50",
        "< 80 ms",
        p50.map_or_else(|| "–".into(), |p| format!("{p:.1} ms")),
        p50.map(|p| p < GOAL_P50_MS),
    );
    Ok(section)
}
