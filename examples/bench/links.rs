//! Thin links: the kiosk behind a link shaped to 4, 2, 1 and 0.5 Mbit/s (`tbf` on a veth pair
//! between two network namespaces, as in tests/bandwidth.rs), watching a 2 Mbit/s path of noisy
//! content in headless Chromium; once with the encoder at its fixed configured rate (what
//! camportal did before `adaptiveBitrate`, and what a relayed fixed-rate stream does), once
//! following the browser's bandwidth estimate. What the kiosk shows comes from the player's own
//! `getStats()`: pictures decoded per second, seconds frozen, bits received.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use camportal::config::ServerConfig;
use camportal::daemon::{self, Settings};

use crate::Bench;
use crate::chromium::Chromium;
use crate::netns::{Link, shutdown};
use crate::report::{Section, Table};
use crate::thin_link::{Inbound, KEEP_PC, inbound, noisy_path, shape};

/// Issue 13's goal on the 1 Mbit/s link, after 10 s of settling, over 20 s.
const GOAL_FPS: f64 = 24.0;
const GOAL_FROZEN_SECS: f64 = 1.0;

/// What one run saw over its measured window.
struct Seen {
    fps: f64,
    frozen: f64,
    kbps: f64,
    encoder_kbps: u32,
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let (links, settle, window): (&[u32], u64, u64) = if bench.plan.quick {
        (&[1000], 6, 10)
    } else {
        (&[4000, 2000, 1000, 500], 10, 20)
    };
    let mut table = Table::new(&[
        "link",
        "fixed: fps",
        "fixed: s frozen",
        "fixed: kbit/s",
        "adaptive: fps",
        "adaptive: s frozen",
        "adaptive: kbit/s",
        "adaptive: encoder kbit/s",
    ]);
    let mut at_1_mbit = None;
    for &kbit in links {
        let fixed = measure(bench, kbit, false, settle, window).await?;
        let adaptive = measure(bench, kbit, true, settle, window).await?;
        if kbit == 1000 {
            at_1_mbit = Some((adaptive.fps, adaptive.frozen));
        }
        eprintln!(
            "  links: {kbit} kbit/s: fixed {:.0} fps {:.1} s frozen, adaptive {:.0} fps {:.1} s \
             frozen",
            fixed.fps, fixed.frozen, adaptive.fps, adaptive.frozen
        );
        table.row(vec![
            format!("{} Mbit/s", f64::from(kbit) / 1000.0),
            format!("{:.1}", fixed.fps),
            format!("{:.2}", fixed.frozen),
            format!("{:.0}", fixed.kbps),
            format!("{:.1}", adaptive.fps),
            format!("{:.2}", adaptive.frozen),
            format!("{:.0}", adaptive.kbps),
            adaptive.encoder_kbps.to_string(),
        ]);
    }
    let mut section = Section::new("Thin links");
    section.text(&format!(
        "A kiosk (headless Chromium, the shipped player) behind a link shaped with `tbf rate R \
         burst 32kbit latency 300ms` on the daemon's side of a veth pair between two network \
         namespaces; the path is 640x360 at 30 fps of noisy content (ffmpeg `testsrc2` with \
         `noise=alls=24:allf=t`) at `bitrate: 2M`. The link is shaped before the player opens; \
         {settle} s of settling, then {window} s measured from the player's `getStats()`: \
         pictures decoded per second, seconds frozen (`totalFreezesDuration`), bits received. \
         Fixed: `adaptiveBitrate: no` (the encoder sends its configured rate whatever the link, \
         as camportal did before and as a relayed fixed-rate stream does). Adaptive: \
         `adaptiveBitrate: yes`; the last column is the encoder's rate at the end. Chromium counts \
         freezes between decoded pictures only: a kiosk that decodes nothing shows 0 s frozen. \
         The daemon runs in-process here (CPU is not measured)."
    ));
    section.table(&table);
    if let Some((fps, frozen)) = at_1_mbit {
        section.goal(
            "a 2 Mbit/s path on a 1 Mbit/s link, adaptive",
            &format!("≥ {GOAL_FPS} fps, ≤ {GOAL_FROZEN_SECS} s frozen per 20 s"),
            format!("{fps:.1} fps, {frozen:.2} s frozen per {window} s"),
            Some(fps >= GOAL_FPS && frozen <= GOAL_FROZEN_SECS * window as f64 / 20.0),
        );
    }
    Ok(section)
}

/// One run: a link of `kbit` kbit/s, the path fixed or adaptive.
async fn measure(
    bench: &Bench,
    kbit: u32,
    adaptive: bool,
    settle: u64,
    window: u64,
) -> anyhow::Result<Seen> {
    let link = Link::new("192.168.78.1", "192.168.78.2");
    shape(&link, kbit, 32);
    let server = link.server.runtime();
    let client = link.client.runtime();
    let dir = tempfile::Builder::new()
        .prefix("camportal-bench-links-")
        .tempdir_in(&bench.work)
        .context("a config directory")?;
    let config_dir: PathBuf = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).context("config.d")?;
    std::fs::write(config_dir.join("cam.yml"), noisy_path(adaptive)).context("path file")?;
    let settings = Settings {
        config_dir,
        server: ServerConfig {
            http_address: "192.168.78.1:0".parse()?,
            udp_address: "192.168.78.1:0".parse()?,
            rtsp: false,
            ..ServerConfig::default()
        },
    };
    let daemon = server
        .spawn(async move { daemon::start(settings).await })
        .await
        .context("daemon task")??;
    let url = format!("http://{}/cam/", daemon.http_addr);
    let netns = link.client.name.clone();
    let browser = client
        .spawn(async move { Chromium::launch_in(Some(&netns), &[]).await })
        .await
        .context("Chromium task")??;
    let page = browser.open_with_script(&url, Some(KEEP_PC)).await?;

    // Settle: the first picture may take a while on the thinnest link.
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let start: Inbound = inbound(&page).await;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let end = inbound(&page).await;
    let secs = window as f64;
    let encoder_kbps = daemon
        .board
        .path("cam")
        .ok_or_else(|| anyhow!("path cam is not listed"))?
        .target_bitrate_kbps;
    let seen = Seen {
        fps: (end.frames - start.frames) / secs,
        frozen: end.frozen - start.frozen,
        kbps: (end.bytes - start.bytes) * 8.0 / secs / 1000.0,
        encoder_kbps,
    };

    drop(page);
    drop(browser);
    let _ = server.spawn(async move { daemon.shutdown().await }).await;
    shutdown(server);
    shutdown(client);
    Ok(seen)
}
