//! The daemon as a user or a service manager runs it: the binary, a config directory, signals.
//! Unlike [`super::TestDaemon`] (in-process), it can be killed and started again on the same
//! ports, as `systemctl restart` or a crash and a restart would.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Waiting for the daemon to announce its HTTP address (a debug build under load is slow).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The camportal binary running as a child process. Dropping it kills the process (SIGKILL, by
/// its PID) if it is still running.
pub struct DaemonProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the daemon announced it.
    pub address: String,
}

impl DaemonProcess {
    /// Starts the binary on `http_address` and `udp_address` (`127.0.0.1:0` lets the kernel
    /// choose) and waits until it announces its HTTP address, which it does once it listens.
    pub fn spawn(config_dir: &Path, http_address: &str, udp_address: &str) -> DaemonProcess {
        Self::spawn_with_env(config_dir, http_address, udp_address, &[])
    }

    /// [`DaemonProcess::spawn`] with extra environment variables (`NOTIFY_SOCKET`, ...).
    pub fn spawn_with_env(
        config_dir: &Path,
        http_address: &str,
        udp_address: &str,
        env: &[(&str, &str)],
    ) -> DaemonProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_camportal"))
            .envs(env.iter().copied())
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--http-address", http_address])
            .args(["--udp-address", udp_address])
            // Several daemons run at once: the RTSP ports too are the kernel's choice.
            .args(["--rtsp-address", "127.0.0.1:0"])
            .args([
                "--rtp-address",
                "127.0.0.1:0",
                "--rtcp-address",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "camportal=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("camportal binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads on to the end: a full pipe would block the daemon.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("open http://") {
                    let rest = &line[at + "open ".len()..];
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        match rx.recv_timeout(ANNOUNCE_TIMEOUT) {
            Ok(address) => DaemonProcess { child, address },
            Err(_) => {
                let _ = child.kill();
                let exit = child.wait();
                panic!("the daemon did not announce its HTTP address: {exit:?}");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`, …) to this process, by its PID.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a PID fits pid_t");
        // SAFETY: kill(2) on our own child's PID; it has not been waited for, so the PID is ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.child.try_wait().expect("try_wait") {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback TCP port and a loopback UDP port that were free a moment ago, for a daemon that
/// must come back on the same ports.
pub fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    let ports = (
        tcp.local_addr().expect("TCP port").port(),
        udp.local_addr().expect("UDP port").port(),
    );
    drop((tcp, udp));
    ports
}

/// A minimal HTTP/1.0 GET to `address` (`http://host:port`): the whole response, head and
/// body, or the error if nothing listens.
pub fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let host = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
