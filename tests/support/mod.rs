//! Shared by the integration tests: a real daemon in-process on loopback ports chosen by the
//! kernel, with a temporary config directory; and hand-written SDP offers for bad-input tests.

#![allow(dead_code)] // each test binary uses a different part

pub mod chromium;
pub mod netns;
pub mod process;
pub mod thin_link;
pub mod vivid;

use std::path::PathBuf;
use std::time::Duration;

use camportal::config::ServerConfig;
use camportal::daemon::{self, Daemon, Settings};

pub struct TestDaemon {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Starts a daemon serving the given `(name, yaml)` path files.
    pub async fn start(paths: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_with(paths, |_| {}).await
    }

    /// [`TestDaemon::start`], with server settings changed by `configure` (loopback ports
    /// chosen by the kernel unless it says otherwise).
    pub async fn start_with(
        paths: &[(&str, &str)],
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_dir: PathBuf = dir.path().join("config.d");
        std::fs::create_dir(&config_dir).expect("config.d");
        for (name, yaml) in paths {
            std::fs::write(config_dir.join(format!("{name}.yml")), yaml).expect("path file");
        }
        let mut server = ServerConfig {
            http_address: "127.0.0.1:0".parse().unwrap(),
            udp_address: "127.0.0.1:0".parse().unwrap(),
            rtsp_address: "127.0.0.1:0".parse().unwrap(),
            rtp_address: "127.0.0.1:0".parse().unwrap(),
            rtcp_address: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        configure(&mut server);
        let daemon = daemon::start(Settings { config_dir, server })
            .await
            .expect("daemon starts");
        let test = TestDaemon { daemon, dir };
        for (name, _) in paths {
            test.wait_running(name).await;
        }
        test
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config.d")
    }

    /// Writes (creates or replaces) the path file `config.d/<name>.yml` in place.
    pub fn write_path(&self, name: &str, yaml: &str) {
        std::fs::write(self.config_dir().join(format!("{name}.yml")), yaml).expect("path file");
    }

    pub fn remove_path(&self, name: &str) {
        std::fs::remove_file(self.config_dir().join(format!("{name}.yml"))).expect("remove");
    }

    /// The status API's entry for a path, if it lists one.
    pub fn status(&self, name: &str) -> Option<camportal::status::PathStatus> {
        let snapshot = self.daemon.board.snapshot();
        snapshot.paths.into_iter().find(|p| p.name == name)
    }

    /// Waits (polling the status board, up to 10 s) until `condition` holds for the status
    /// snapshot; panics with the snapshot otherwise.
    pub async fn wait_for(
        &self,
        what: &str,
        condition: impl Fn(&camportal::status::Snapshot) -> bool,
    ) {
        for _ in 0..400 {
            if condition(&self.daemon.board.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "not within 10 s: {what}: {:?}",
            self.daemon.board.snapshot()
        );
    }

    /// The body of `GET rest` (e.g. `/api/paths`).
    pub async fn get_text(&self, rest: &str) -> String {
        reqwest::get(self.url(rest))
            .await
            .expect("daemon answers")
            .text()
            .await
            .expect("body")
    }

    /// How many WHEP sessions `/api/viewers` lists.
    pub async fn viewer_count(&self) -> usize {
        let text = self.get_text("/api/viewers").await;
        let viewers: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        viewers.as_array().map_or(0, Vec::len)
    }

    pub fn url(&self, rest: &str) -> String {
        format!("{}://{}{rest}", self.daemon.scheme, self.daemon.http_addr)
    }

    pub fn whep_url(&self, path: &str) -> String {
        self.url(&format!("/{path}/whep"))
    }

    /// Waits until the status API shows the path running (an event, not a fixed sleep).
    pub async fn wait_running(&self, name: &str) {
        for _ in 0..200 {
            let snapshot = self.daemon.board.snapshot();
            if snapshot
                .paths
                .iter()
                .any(|p| p.name == name && p.state == camportal::status::PathState::Running)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "path {name} did not start: {:?}",
            self.daemon.board.snapshot()
        );
    }
}

/// A small, fast test pattern path.
pub fn small_path(width: u32, height: u32) -> String {
    format!(
        "source:\n  type: testsrc\nencoding:\n  width: {width}\n  height: {height}\n  fps: 30\n  bitrate: 500k\n"
    )
}

/// A syntactically complete offer as a browser would send it, with the given media sections.
pub fn offer_sdp(sections: &[&str]) -> String {
    let mut sdp =
        String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    let mids: Vec<String> = (0..sections.len()).map(|i| i.to_string()).collect();
    sdp.push_str(&format!("a=group:BUNDLE {}\r\n", mids.join(" ")));
    let fingerprint = (0..32)
        .map(|i| format!("{i:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    for (mid, section) in sections.iter().enumerate() {
        let (media, formats, attributes) = match *section {
            "audio" => ("audio", "111", "a=rtpmap:111 opus/48000/2\r\n".to_owned()),
            "h264" => (
                "video",
                "102 96",
                "a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
                 a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
                 a=rtpmap:96 VP8/90000\r\n"
                    .to_owned(),
            ),
            "vp8" => ("video", "96", "a=rtpmap:96 VP8/90000\r\n".to_owned()),
            other => panic!("unknown section {other}"),
        };
        sdp.push_str(&format!(
            "m={media} 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=mid:{mid}\r\n\
             a=recvonly\r\na=rtcp-mux\r\n{attributes}"
        ));
    }
    sdp
}
