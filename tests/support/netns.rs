//! Two network namespaces joined by a veth pair, for the tests in which it matters where a
//! client comes from (access control): the daemon listens in one namespace and clients connect
//! from the other, so a client can have a public-looking address such as 203.0.113.2 while
//! nothing leaves the machine. Neither namespace has a default route, so a mistake fails as
//! "network unreachable" rather than as traffic on a real network.
//!
//! The namespaces are made with the `ip` command (iproute2) and need root (CAP_SYS_ADMIN), as
//! the tests run here. A missing `ip` is a failure that says what to install, never a skip.
//!
//! Code runs in a namespace through [`Netns::runtime`]: a tokio runtime whose threads were
//! started from a thread that entered the namespace, so every socket its tasks open is there.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

/// Our namespaces are named `cp{pid}x{n}s` and `cp{pid}x{n}c`: unique across concurrently
/// running test binaries (the PID) and the tests of one binary (the counter).
const PREFIX: &str = "cp";

/// The veth pair's ends, in the server's and in the client's namespace. The pair is created
/// directly in the two namespaces, so the names need only be unique there (an interface name
/// has at most 15 bytes).
const SERVER_DEVICE: &str = "cp-server";
const CLIENT_DEVICE: &str = "cp-client";

/// Bringing a veth pair up takes milliseconds; a loaded machine may take longer.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Two network namespaces joined by a veth pair, no default route. Dropping it deletes both
/// namespaces (which deletes the veth pair).
pub struct Link {
    pub server: Netns,
    pub client: Netns,
    pub server_ip: IpAddr,
    pub client_ip: IpAddr,
}

impl Link {
    /// `server_ip`/`client_ip` e.g. "203.0.113.1"/"203.0.113.2" or "192.168.77.1"/"192.168.77.2"
    /// (a /24 between them; a /64 for IPv6 addresses). Each namespace also has its loopback up.
    pub fn new(server_ip: &str, client_ip: &str) -> Link {
        let parse = |ip: &str| -> IpAddr {
            ip.parse()
                .unwrap_or_else(|e| panic!("netns: {ip:?} is not an IP address: {e}"))
        };
        let (server_ip, client_ip) = (parse(server_ip), parse(client_ip));
        remove_stale();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Each Netns deletes its namespace when dropped: if a step below fails (a panic), what
        // was made so far is deleted on the way out.
        let server = Netns::add(format!("{PREFIX}{pid}x{n}s"));
        let client = Netns::add(format!("{PREFIX}{pid}x{n}c"));
        ip(&[
            "link",
            "add",
            "name",
            SERVER_DEVICE,
            "netns",
            server.name.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_DEVICE,
            "netns",
            client.name.as_str(),
        ]);
        server.configure(SERVER_DEVICE, server_ip);
        client.configure(CLIENT_DEVICE, client_ip);
        server.wait_up(SERVER_DEVICE);
        client.wait_up(CLIENT_DEVICE);
        Link {
            server,
            client,
            server_ip,
            client_ip,
        }
    }
}

/// A named network namespace (`ip netns add`). Dropping it deletes the namespace
/// (`ip netns del`); threads and sockets still in it keep it alive until they end.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn add(name: String) -> Netns {
        ip(&["netns", "add", name.as_str()]);
        Netns { name }
    }

    /// The file that `ip netns add` bind-mounts the namespace on; open it to enter (setns).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` to be run inside this namespace (`ip netns exec NAME program`), for child
    /// processes; add arguments, environment and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.name.as_str()])
            .arg(program);
        command
    }

    /// A multi-thread tokio runtime (2 workers, all drivers) whose threads live in this
    /// namespace, so every socket its tasks open is in it. A new thread is in the namespace of
    /// the thread that starts it, so the runtime is built on a thread that entered this
    /// namespace first (setns), and the threads the runtime starts later (blocking pool) are
    /// started by its own threads.
    ///
    /// Use it only by spawning work into it and awaiting the handle, e.g. from the test's own
    /// runtime: `runtime.spawn(fut).await.unwrap()`. Never `runtime.block_on(fut)` (nor
    /// `runtime.spawn_blocking`) from a thread in another namespace: `block_on` runs the future
    /// on the calling thread, so its sockets would be in the caller's namespace.
    ///
    /// Dropping a `Runtime` inside an async context (a `#[tokio::test]`) panics: end it with
    /// `runtime.shutdown_background()` (or [`shutdown`]).
    pub fn runtime(&self) -> Runtime {
        let path = self.path();
        let thread_name = format!("{}-rt", self.name);
        let entered = std::thread::Builder::new()
            .name(format!("{}-enter", self.name))
            .spawn(move || {
                enter(&path);
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(thread_name)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime in the namespace")
            })
            .expect("a thread to enter the namespace");
        match entered.join() {
            Ok(runtime) => runtime,
            // The thread's own message (setns failed, …) is the test's.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Puts `address` on `device`, and `device` and the loopback up.
    fn configure(&self, device: &str, address: IpAddr) {
        let name = self.name.as_str();
        let cidr = match address {
            IpAddr::V4(_) => format!("{address}/24"),
            IpAddr::V6(_) => format!("{address}/64"),
        };
        let mut add: Vec<&str> = vec!["-n", name, "addr", "add", cidr.as_str(), "dev", device];
        if address.is_ipv6() {
            // Usable at once, without waiting out duplicate address detection.
            add.push("nodad");
        }
        ip(&add);
        ip(&["-n", name, "link", "set", device, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Waits until `device` is up with its carrier: the kernel finishes bringing a link up
    /// asynchronously, and a packet sent before that is dropped (a lost SYN costs a second).
    fn wait_up(&self, device: &str) {
        let name = self.name.as_str();
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        loop {
            let link = ip(&["-n", name, "-o", "link", "show", "dev", device]);
            if link.contains("LOWER_UP") && link.contains(" state UP ") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "netns: {device} in {name} not up within {LINK_UP_TIMEOUT:?}: {}",
                link.trim()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .output();
    }
}

/// Ends a runtime from [`Netns::runtime`] without blocking: dropping a `Runtime` inside an
/// async context panics. Its tasks are dropped; its threads end on their own.
pub fn shutdown(runtime: Runtime) {
    runtime.shutdown_background();
}

/// Moves the calling thread (only it) into the network namespace bound at `path`.
fn enter(path: &Path) {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("netns: cannot open {}: {e}", path.display()));
    // SAFETY: setns(2) on a namespace file we hold open for the call; CLONE_NEWNET changes only
    // the calling thread's network namespace, which is this thread's alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "netns: setns({}): {} (entering a namespace needs root)",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `ip args…` and returns its output; its failure is the test's, with its stderr.
fn ip(args: &[&str]) -> String {
    let output = match Command::new("ip").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`ip` not found: run `apt-get install iproute2`")
        }
        Err(e) => panic!("netns: cannot run `ip {}`: {e}", args.join(" ")),
    };
    assert!(
        output.status.success(),
        "netns: `ip {}` failed ({}; creating namespaces needs root): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Deletes the namespaces of test processes that ended without dropping their [`Link`] (killed,
/// or aborted): `cp{pid}x{n}s`/`c` whose PID is no longer running. Once per test binary.
fn remove_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner(&name) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip")
                    .args(["netns", "del", name.as_str()])
                    .output();
            }
        }
    });
}

/// The PID in one of our namespace names, `cp{pid}x{n}s` or `cp{pid}x{n}c`; None for others.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_suffix('s').or_else(|| rest.strip_suffix('c'))?;
    let (pid, n) = rest.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}
