//! The parts the benchmark needs (ffmpeg with libx264, Chromium, the release daemon) and the
//! description of the machine it ran on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct MachineInfo {
    pub quick: bool,
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub system: String,
    /// How busy the machine was over `BUSY_SAMPLE` before the first measurement.
    pub busy: String,
    pub ffmpeg: String,
    pub chromium: String,
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// ffmpeg with the libx264 encoder, as the seed pipeline uses.
pub fn check_ffmpeg() -> anyhow::Result<()> {
    let encoders = output("ffmpeg", &["-hide_banner", "-encoders"]).context(
        "ffmpeg not found (it is the seed pipeline's encoder): run `apt-get install ffmpeg`",
    )?;
    if !encoders.lines().any(|l| l.contains(" libx264 ")) {
        bail!("this ffmpeg has no libx264 encoder: install Debian's `ffmpeg` package");
    }
    Ok(())
}

pub fn chromium_binary() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub fn check_chromium() -> anyhow::Result<()> {
    let binary = chromium_binary();
    if !binary.exists() {
        bail!(
            "Chromium not found at {} (time to first frame and latency are measured in it): \
             run `apt-get install chromium` (or set $CHROMIUM)",
            binary.display()
        );
    }
    Ok(())
}

/// Builds the release daemon (a no-op when it is up to date) and returns its path.
pub fn build_daemon(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("building the release daemon…");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "camportal"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .status()
        .context("running cargo to build the daemon")?;
    if !status.success() {
        bail!("`cargo build --release --bin camportal` failed");
    }
    // This example runs from target/release/examples/.
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|release| release.join("camportal"))
        .context("locating target/release")?;
    if !binary.exists() {
        bail!("the daemon was built but {} is missing", binary.display());
    }
    Ok(binary)
}

/// How long the machine's own CPU use is sampled before the run.
const BUSY_SAMPLE: Duration = Duration::from_secs(3);

pub fn describe(root: &Path, quick: bool) -> MachineInfo {
    let root_arg = root.to_string_lossy().to_string();
    let git = |args: &[&str]| {
        let mut all = vec!["-C", root_arg.as_str()];
        all.extend_from_slice(args);
        output("git", &all)
    };
    let commit = match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain", "--untracked-files=no"]),
    ) {
        (Some(hash), Some(changes)) if !changes.is_empty() => {
            format!("{hash} (with local changes)")
        }
        (Some(hash), _) => hash,
        _ => "unknown".to_owned(),
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB RAM", kib / 1024.0 / 1024.0)
        });
    let busy = crate::proc::machine_busy(BUSY_SAMPLE).map_or_else(
        || "?".to_owned(),
        |b| {
            let secs = BUSY_SAMPLE.as_secs();
            format!("{:.0} % of all cores over {secs} s", b * 100.0)
        },
    );
    let first_line = |s: Option<String>| {
        s.and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "not found".to_owned())
    };
    let chromium = chromium_binary();
    MachineInfo {
        quick,
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        commit,
        machine: format!("{model}, {cores} cores{mem_gib}"),
        system: first_line(output("uname", &["-srm"])),
        busy,
        ffmpeg: first_line(output("ffmpeg", &["-hide_banner", "-version"])),
        chromium: first_line(output(&chromium.to_string_lossy(), &["--version"])),
    }
}
