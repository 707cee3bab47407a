//! Watches a camportal path from the command line, like a browser would, and prints once a
//! second: pictures decoded, their size, the latency read from the stamp (p50), and gaps in the
//! stamp's frame counter (pictures the viewer never got).
//!
//! `cargo run --release --example view -- http://127.0.0.1:8889/test/`

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use camportal_viewer::{Viewer, ViewerFrame};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Watch a camportal path over WHEP and print per-second statistics")]
struct Args {
    /// The path's page URL (`…/test/`) or its WHEP endpoint (`…/test/whep`).
    url: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

/// One second's worth of observations.
#[derive(Default)]
struct Window {
    frames: u32,
    keyframes: u32,
    size: Option<(u32, u32)>,
    latencies: Vec<Duration>,
    unstamped: u32,
    gaps: u64,
}

impl Window {
    fn add(&mut self, frame: &ViewerFrame, last_counter: &mut Option<u32>) {
        self.frames += 1;
        self.keyframes += u32::from(frame.keyframe);
        self.size = Some((frame.picture.width, frame.picture.height));
        let Some(stamp) = frame.picture.stamp else {
            self.unstamped += 1;
            return;
        };
        let captured = UNIX_EPOCH + Duration::from_micros(stamp.unix_micros);
        // A capture stamped "after" we got it (clock skew) counts as zero latency.
        self.latencies
            .push(frame.received.duration_since(captured).unwrap_or_default());
        if let Some(last) = *last_counter {
            // Frames the counter skipped; a source restart (counter back to 0) is not a gap.
            if stamp.frame > last {
                self.gaps += u64::from(stamp.frame - last - 1);
            }
        }
        *last_counter = Some(stamp.frame);
    }

    fn report(&mut self, lost_packets: u64) {
        let size = self
            .size
            .map_or_else(|| "-".to_owned(), |(w, h)| format!("{w}x{h}"));
        self.latencies.sort();
        let p50 = self.latencies.get(self.latencies.len() / 2).map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        );
        println!(
            "{frames:3} frames ({keys} key) {size:>9}  latency p50 {p50:>9}  gaps {gaps}  \
             lost packets {lost_packets}{unstamped}",
            frames = self.frames,
            keys = self.keyframes,
            gaps = self.gaps,
            unstamped = if self.unstamped > 0 {
                format!("  unstamped {}", self.unstamped)
            } else {
                String::new()
            },
        );
        *self = Window::default();
    }
}

/// `…/test/` and `…/test` both mean the WHEP endpoint `…/test/whep`.
fn whep_url(url: &str) -> String {
    if url.trim_end_matches('/').ends_with("/whep") {
        url.to_owned()
    } else {
        format!("{}/whep", url.trim_end_matches('/'))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let url = whep_url(&args.url);
    let mut viewer = Viewer::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    eprintln!("watching {}", viewer.session_url());

    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut window = Window::default();
    let mut last_counter = None;
    let mut lost_before = 0;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    let outcome = loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        let wait = next_report.saturating_duration_since(Instant::now());
        tokio::select! {
            frame = viewer.next_frame(wait) => match frame {
                Ok(frame) => window.add(&frame, &mut last_counter),
                // A quiet second is not an error; a closed viewer is.
                Err(err) if viewer.is_closed() => break Err(err),
                Err(_) => {}
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
        if Instant::now() >= next_report {
            let lost = viewer.stats().rtp_lost;
            window.report(lost - lost_before);
            lost_before = lost;
            next_report += Duration::from_secs(1);
        }
    };
    let stats = viewer.stats();
    viewer.close().await?;
    eprintln!("{stats:?}");
    outcome
}
