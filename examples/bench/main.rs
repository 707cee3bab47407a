//! The benchmark: camportal against the seed pipeline it replaces (ffmpeg with libx264 feeding
//! MediaMTX) on this machine, in one command that writes a Markdown report.
//!
//! ```sh
//! cargo run --release --example bench            # full run, ~15 min, writes BENCHMARKS.md
//! cargo run --release --example bench -- --quick # smoke run, ~3 min, writes target/bench/BENCHMARKS-quick.md
//! ```
//!
//! What it measures (each section can be run alone with `--only`):
//! 1. `encoders`: openh264 alone against x264 alone, CPU per picture.
//! 2. `pipeline`: camportal's whole job for one viewer (capture from a file, encode, packetize,
//!    encrypt, send) against ffmpeg encoding the same file at the same rate; CPU of each process.
//!    `webcam`: the same from an MJPEG clip (4:2:2, as USB webcams send), decoded by both sides.
//! 3. `ttff`: time to first frame, 50 joins, with the Rust viewer and with headless Chromium.
//! 4. `latency`: capture stamp → decoded picture (Rust viewer), → presented frame (Chromium).
//! 5. `viewers`: 1…300 light viewers of one 720p30 2 Mbit/s stream: daemon CPU, loss, memory.
//!    `passthrough`: 1…50 light viewers of a passed-through H.264 file: CPU per viewer.
//! 6. `memory`: idle RSS with the shipped config.
//! 7. `readers`: the CPU an RTSP and an MJPEG reader add to a WHEP viewer's; RTSP PLAY → first
//!    frame over TCP and UDP.
//! 8. `links`: a Chromium kiosk behind a link shaped to 4, 2, 1 and 0.5 Mbit/s (network
//!    namespaces, `tbf`): fps, seconds frozen and bits received, fixed bitrate against adaptive.
//! 9. `soak`: join/leave cycles, an offer flood and idle HTTP connections against one daemon,
//!    with a viewer watching: RSS, open files, threads and the viewer's longest gap.
//!
//! The daemon runs as its own process and its CPU is its own (user + sys from /proc), so the
//! viewers, Chromium and ffmpeg sharing the machine do not count against it. Medians and ratios
//! come from the same run; nothing here is compared with a fixed threshold except the goals the
//! report states.

#[path = "../../tests/support/chromium.rs"]
mod chromium;
// Shared with the tests, which use more of them.
#[allow(dead_code)]
#[path = "../../tests/support/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../../tests/support/thin_link.rs"]
mod thin_link;

mod clip;
mod daemon;
mod encoders;
mod latency;
mod links;
mod machine;
mod memory;
mod passthrough;
mod pipeline;
mod proc;
mod readers;
mod report;
mod soak;
mod stats;
mod ttff;
mod viewers;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;

use report::Report;

#[derive(Parser, Debug)]
#[command(about = "camportal against ffmpeg/libx264 on this machine; writes a Markdown report")]
struct Args {
    /// Short durations and few sizes: a smoke run of every measurement (~3 min).
    #[arg(long)]
    quick: bool,
    /// Only these sections (comma-separated): encoders, pipeline, webcam, ttff, latency,
    /// viewers, passthrough, memory, readers, links, soak.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Where to write the report [default: BENCHMARKS.md, or target/bench/BENCHMARKS-quick.md
    /// with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Encoders,
    Pipeline,
    Webcam,
    Ttff,
    Latency,
    Viewers,
    Passthrough,
    Memory,
    Readers,
    Links,
    Soak,
}

/// Durations and sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// Picture sizes for the encoder and pipeline comparisons.
    pub sizes: Vec<(u32, u32)>,
    /// Pictures in the benchmark clip (played in a loop).
    pub clip_frames: u32,
    /// Pictures each encoder encodes alone.
    pub encoder_frames: u32,
    /// Measuring window of the pipeline comparison, per side and size.
    pub pipeline_secs: u64,
    pub joins: usize,
    pub latency_secs: u64,
    pub viewer_steps: Vec<usize>,
    pub viewer_window_secs: u64,
    pub idle_secs: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                sizes: vec![(1280, 720)],
                clip_frames: 60,
                encoder_frames: 60,
                pipeline_secs: 8,
                joins: 8,
                latency_secs: 8,
                viewer_steps: vec![1, 10, 30],
                viewer_window_secs: 5,
                idle_secs: 3,
            }
        } else {
            Plan {
                quick,
                sizes: vec![(640, 480), (1280, 720), (1920, 1080)],
                clip_frames: 150,
                encoder_frames: 600,
                pipeline_secs: 60,
                joins: 50,
                latency_secs: 60,
                viewer_steps: vec![1, 10, 50, 100, 200, 300],
                viewer_window_secs: 30,
                idle_secs: 10,
            }
        }
    }
}

/// Everything a section needs.
pub struct Bench {
    pub plan: Plan,
    /// The release daemon binary.
    pub camportal: PathBuf,
    /// Clips and scratch files (target/bench).
    pub work: PathBuf,
    /// The shipped config directory (for the idle measurement).
    pub shipped_config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // rtc's DTLS warns on every handshake: as a client that it has no server name (it
            // needs none), as a server (the in-process daemon of the links section) about
            // Chromium's extensions; hundreds of viewers would bury the report in it.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if cfg!(debug_assertions) {
        bail!("the benchmark measures release builds: run `cargo run --release --example bench`");
    }
    let plan = Plan::new(args.quick);
    let all = args.only.is_empty();
    let wants = |s: Section| all || args.only.contains(&s);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("target").join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            work.join("BENCHMARKS-quick.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });

    // Every missing part is reported before anything runs, each with what to install.
    let mut missing = Vec::new();
    let needs_ffmpeg = wants(Section::Encoders)
        || wants(Section::Pipeline)
        || wants(Section::Webcam)
        || wants(Section::Passthrough)
        || wants(Section::Readers)
        || wants(Section::Links);
    if needs_ffmpeg && let Err(err) = machine::check_ffmpeg() {
        missing.push(format!("{err:#}"));
    }
    let needs_chromium = wants(Section::Ttff) || wants(Section::Latency) || wants(Section::Links);
    if needs_chromium && let Err(err) = machine::check_chromium() {
        missing.push(format!("{err:#}"));
    }
    if !missing.is_empty() {
        bail!("cannot run the benchmark:\n  - {}", missing.join("\n  - "));
    }
    let needs_daemon = [
        Section::Pipeline,
        Section::Webcam,
        Section::Ttff,
        Section::Latency,
        Section::Viewers,
        Section::Passthrough,
        Section::Memory,
        Section::Readers,
        Section::Soak,
    ]
    .into_iter()
    .any(wants);
    let camportal = if needs_daemon {
        machine::build_daemon(&root)?
    } else {
        PathBuf::new()
    };

    let bench = Bench {
        plan,
        camportal,
        work,
        shipped_config: root.join("config.d"),
    };
    let started = Instant::now();
    let mut report = Report::new(machine::describe(&root, bench.plan.quick));
    eprintln!("{}", report.header_text());

    if wants(Section::Encoders) {
        report.add(encoders::run(&bench).await.context("encoders")?);
    }
    if wants(Section::Pipeline) {
        report.add(pipeline::run(&bench).await.context("pipeline")?);
    }
    if wants(Section::Webcam) {
        report.add(pipeline::run_webcam(&bench).await.context("webcam path")?);
    }
    if wants(Section::Ttff) {
        report.add(ttff::run(&bench).await.context("time to first frame")?);
    }
    if wants(Section::Latency) {
        report.add(latency::run(&bench).await.context("latency")?);
    }
    if wants(Section::Viewers) {
        report.add(viewers::run(&bench).await.context("viewers")?);
    }
    if wants(Section::Passthrough) {
        report.add(passthrough::run(&bench).await.context("passthrough")?);
    }
    if wants(Section::Memory) {
        report.add(memory::run(&bench).await.context("memory")?);
    }
    if wants(Section::Readers) {
        report.add(readers::run(&bench).await.context("readers")?);
    }
    if wants(Section::Links) {
        report.add(links::run(&bench).await.context("thin links")?);
    }
    if wants(Section::Soak) {
        report.add(soak::run(&bench).await.context("soak")?);
    }
    report.finish(started.elapsed());
    std::fs::write(&out, report.markdown())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "\nwrote {} ({:.1} min)",
        out.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
