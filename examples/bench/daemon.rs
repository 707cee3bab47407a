//! The daemon under test, as a process of its own (so its CPU and memory are its own), on
//! loopback ports the kernel picks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `rtsp://127.0.0.1:PORT`
    pub rtsp_base: String,
    /// Keeps the config directory alive as long as the daemon.
    _dir: Option<tempfile::TempDir>,
}

/// A path file for `path_yaml`'s `source:` at the given encoding.
pub fn path_yaml(source: &str, width: u32, height: u32, fps: u32, bitrate: &str) -> String {
    format!(
        "source:\n{source}encoding:\n  width: {width}\n  height: {height}\n  fps: {fps}\n  \
         bitrate: {bitrate}\n"
    )
}

pub fn testsrc() -> String {
    "  type: testsrc\n".to_owned()
}

pub fn file(path: &Path) -> String {
    format!("  type: file\n  path: {}\n", path.display())
}

impl Daemon {
    /// Starts the daemon with one path, `bench`, from `yaml`, and waits until it runs. The
    /// viewers section offers up to 50 sessions at once from this one address: the limit on
    /// sessions still connecting is raised for it.
    pub async fn start(binary: &Path, yaml: &str) -> anyhow::Result<Daemon> {
        let server = "webrtcPendingSessionsPerAddress: 1000\nwebrtcPendingSessions: 1000\n";
        Self::start_with(binary, yaml, server).await
    }

    /// As [`Daemon::start`], with `server` as `camportal.yml`.
    pub async fn start_with(binary: &Path, yaml: &str, server: &str) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("camportal-bench-")
            .tempdir()
            .context("creating a config directory")?;
        let config = dir.path().join("config.d");
        std::fs::create_dir(&config).context("creating config.d")?;
        std::fs::write(config.join("bench.yml"), yaml).context("writing the path file")?;
        std::fs::write(dir.path().join("camportal.yml"), server)
            .context("writing camportal.yml")?;
        let mut daemon = Self::start_in(binary, &config).await?;
        daemon._dir = Some(dir);
        daemon.wait_running("bench").await?;
        Ok(daemon)
    }

    /// Starts the daemon on an existing config directory.
    pub async fn start_in(binary: &Path, config_dir: &Path) -> anyhow::Result<Daemon> {
        let mut child = Command::new(binary)
            .arg("--config-dir")
            .arg(config_dir)
            .args([
                "--http-address",
                "127.0.0.1:0",
                "--udp-address",
                "127.0.0.1:0",
                "--rtsp-address",
                "127.0.0.1:0",
                "--rtp-address",
                "127.0.0.1:0",
                "--rtcp-address",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn,camportal=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the daemon's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (rtsp_tx, rtsp_rx) = std::sync::mpsc::channel();
        // Reads the addresses, then keeps draining the log so the daemon never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("RTSP listening: rtsp://") {
                    let rest = &line[at + "RTSP listening: ".len()..];
                    let url = rest.split("/<path>").next().unwrap_or_default();
                    let _ = rtsp_tx.send(url.to_owned());
                }
                if let Some(at) = line.find("open http://") {
                    let url = line[at + "open ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        let base = tokio::task::spawn_blocking(move || rx.recv_timeout(START_TIMEOUT))
            .await?
            .map_err(|_| anyhow!("the daemon did not announce its HTTP address"));
        let base = match base {
            Ok(base) => base,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err);
            }
        };
        // Announced just after the HTTP address.
        let rtsp_base = rtsp_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        Ok(Daemon {
            child,
            base,
            rtsp_base,
            _dir: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn whep_url(&self, path: &str) -> String {
        format!("{}/{path}/whep", self.base)
    }

    pub fn page_url(&self, path: &str, query: &str) -> String {
        format!("{}/{path}/{query}", self.base)
    }

    async fn paths(&self) -> anyhow::Result<serde_json::Value> {
        let text = reqwest::get(format!("{}/api/paths", self.base))
            .await?
            .text()
            .await?;
        Ok(serde_json::from_str(&text)?)
    }

    async fn path_field(&self, path: &str, field: &str) -> anyhow::Result<serde_json::Value> {
        let paths = self.paths().await?;
        paths["paths"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == path))
            .map(|p| p[field].clone())
            .ok_or_else(|| anyhow!("no path {path} in the status API: {paths}"))
    }

    pub async fn wait_running(&self, path: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let state = self.path_field(path, "state").await?;
            if state == "running" {
                return Ok(());
            }
            if Instant::now() > deadline {
                let error = self.path_field(path, "lastError").await?;
                bail!("path {path} is {state}, not running: {error}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn viewers(&self, path: &str) -> anyhow::Result<u64> {
        self.path_field(path, "viewers")
            .await?
            .as_u64()
            .ok_or_else(|| anyhow!("no viewer count"))
    }

    /// Waits until the path has exactly `n` viewers.
    pub async fn wait_viewers(&self, path: &str, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.viewers(path).await?;
            if now == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("path {path} has {now} viewers, expected {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
