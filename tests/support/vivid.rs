//! A real V4L2 driver for the camera tests: Debian's stock kernel booted in QEMU (TCG: KVM is not
//! available here) with a small initramfs — busybox-static, the `vivid` module (the kernel's
//! Virtual Video Test Driver, which emulates webcams) and its dependencies, `v4l2-ctl` and the
//! camportal binary under test. The guest's HTTP and UDP ports are forwarded to host loopback,
//! so the host's Rust WHEP viewer watches the daemon in the guest like a kiosk at another site.
//!
//! The kernel comes from `apt-get download` and the image is built from installed Debian
//! packages, both cached under `target/tmp/vivid-rig/`, so reruns boot in seconds. Anything
//! missing is a failure that says what to install, never a skip.
//!
//! The guest runs a shell loop on its serial console: [`Guest::sh`] sends a command and reads
//! its output up to an end marker carrying the exit status.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Ports inside the guest.
const GUEST_HTTP_PORT: u16 = 8889;
/// Guest RAM: the initramfs lives in it, plus camportal's working set.
const GUEST_MEMORY_MB: u32 = 768;
/// TCG boots the guest to its shell in ~6 s on an idle machine; leave room for a busy one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
/// Console lines kept for failure messages.
const LOG_TAIL: usize = 80;

/// Kernel modules the guest needs besides vivid's own dependencies: the NIC QEMU emulates.
const EXTRA_MODULES: [&str; 1] = ["e1000"];

/// The guest's /init. Changing it changes the cached image's name, so it is rebuilt.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
stty -echo -onlcr 2>/dev/null
ip link set lo up
modprobe e1000
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo RIG-READY
while IFS= read -r line; do eval "$line"; done
poweroff -f
"#;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One guest at a time: under TCG two would starve each other on a two-core machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static GUEST: Mutex<()> = Mutex::new(());
    lock(&GUEST)
}

fn rig_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vivid-rig")
}

fn fail(message: impl std::fmt::Display) -> ! {
    panic!("vivid rig: {message}")
}

/// Runs a host command for the image build; its failure is the test's, with its output.
fn host(program: &str, args: &[&str], cwd: Option<&Path>, hint: &str) -> String {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| fail(format!("cannot run {program} ({e}): {hint}")));
    if !output.status.success() {
        fail(format!(
            "`{program} {}` failed ({}): {}{}\n{hint}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn need_tool(path: &str, package: &str) {
    if !Path::new(path).exists() {
        fail(format!("{path} not found: run `apt-get install {package}`"));
    }
}

/// The kernel and its modules: the current Debian 12 kernel package, downloaded once.
struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn kernel() -> Kernel {
    let dir = rig_dir().join("kernel");
    // A kernel unpacked earlier is kept: the rig needs a kernel, not the newest one.
    if let Some(kernel) = unpacked_kernel(&dir) {
        return kernel;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(format!("{}: {e}", dir.display())));
    let depends = host(
        "apt-cache",
        &["depends", "linux-image-amd64"],
        None,
        "apt-cache is Debian's; run `apt-get update` first",
    );
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| {
            fail(format!(
                "no kernel package behind linux-image-amd64 (run `apt-get update`): {depends}"
            ))
        })
        .to_owned();
    let download = tempfile::tempdir_in(&dir).unwrap_or_else(|e| fail(e));
    let unpacked = download_deb(&package, download.path());
    let target = dir.join(&package);
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&unpacked, &target).unwrap_or_else(|e| fail(format!("{e}")));
    unpacked_kernel(&dir).unwrap_or_else(|| fail(format!("{package} has no vmlinuz or modules")))
}

fn unpacked_kernel(dir: &Path) -> Option<Kernel> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let root = entry.path();
        let Ok(boot) = std::fs::read_dir(root.join("boot")) else {
            continue;
        };
        for file in boot.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("vmlinuz-") {
                let modules = root.join("lib/modules").join(version);
                if modules.is_dir() {
                    return Some(Kernel {
                        version: version.to_owned(),
                        vmlinuz: file.path(),
                        modules,
                    });
                }
            }
        }
    }
    None
}

/// A name for cached files that changes when what made them does.
fn digest(what: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    what.hash(&mut hasher);
    hasher.finish()
}

/// The first entry of `dir` that `wanted` accepts.
fn first_entry(dir: &Path, wanted: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| wanted(path))
}

/// Debian's `package` (`apt-get download`, no install) unpacked into `work/root`; returns that.
fn download_deb(package: &str, work: &Path) -> PathBuf {
    host(
        "apt-get",
        &["download", package],
        Some(work),
        "needs Debian's package lists: run `apt-get update`",
    );
    let deb = first_entry(work, |path| path.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| fail(format!("apt-get download {package} left no file")));
    let unpacked = work.join("root");
    host(
        "dpkg-deb",
        &[
            "-x",
            &deb.display().to_string(),
            &unpacked.display().to_string(),
        ],
        None,
        "dpkg-deb is Debian's",
    );
    unpacked
}

/// `vivid` plus `extra`, with everything they depend on, as paths under `modules`.
fn module_closure(modules: &Path, wanted: &[&str]) -> Vec<PathBuf> {
    let mut by_name = std::collections::HashMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                by_name.insert(stem.replace('_', "-"), path.clone());
            }
        }
    }
    let mut todo: Vec<String> = wanted.iter().map(|m| m.replace('_', "-")).collect();
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let path = by_name
            .get(&name)
            .unwrap_or_else(|| fail(format!("module {name} not in the kernel package")));
        let depends = host(
            "modinfo",
            &["-F", "depends", &path.display().to_string()],
            None,
            "run `apt-get install kmod`",
        );
        todo.extend(
            depends
                .trim()
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('_', "-")),
        );
        found.push(path.clone());
    }
    found
}

/// Copies `file` (following links) to the same absolute path under `root`.
fn copy_into(root: &Path, file: &Path) {
    let target = root.join(file.strip_prefix("/").unwrap_or(file));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| fail(e));
    }
    std::fs::copy(file, &target).unwrap_or_else(|e| fail(format!("copy {}: {e}", file.display())));
}

/// A dynamically linked program and the libraries `ldd` says it loads.
fn copy_program(root: &Path, program: &Path) {
    copy_into(root, program);
    copy_libraries(root, program);
}

/// The libraries `ldd` says `program` loads, to the same paths under `root`.
fn copy_libraries(root: &Path, program: &Path) {
    let ldd = host(
        "ldd",
        &[&program.display().to_string()],
        None,
        "ldd is part of libc-bin",
    );
    for word in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        copy_into(root, Path::new(word));
    }
}

/// Packs `root` as a newc cpio archive (what the kernel unpacks as its initramfs).
fn cpio(root: &Path, out: &Path) {
    need_tool("/usr/bin/cpio", "cpio");
    let files = host(
        "find",
        &[".", "-mindepth", "1"],
        Some(root),
        "find is part of findutils",
    );
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot run cpio: {e}")));
    let mut stdin = child.stdin.take().unwrap_or_else(|| fail("cpio stdin"));
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(files.as_bytes());
    });
    let mut archive = Vec::new();
    child
        .stdout
        .take()
        .unwrap_or_else(|| fail("cpio stdout"))
        .read_to_end(&mut archive)
        .unwrap_or_else(|e| fail(e));
    let _ = feeder.join();
    let status = child.wait().unwrap_or_else(|e| fail(e));
    if !status.success() {
        fail(format!("cpio failed: {status}"));
    }
    std::fs::write(out, archive).unwrap_or_else(|e| fail(e));
}

/// The kernel and the part of the initramfs that does not change between test runs.
struct Base {
    vmlinuz: PathBuf,
    cpio: PathBuf,
    kernel_version: String,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(build_base)
}

fn build_base() -> Base {
    need_tool("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    need_tool("/usr/bin/v4l2-ctl", "v4l-utils");
    let busybox = Path::new("/bin/busybox");
    let static_busybox = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false);
    if !static_busybox || !busybox.exists() {
        fail("busybox-static is not installed: run `apt-get install busybox-static`");
    }
    let kernel = kernel();
    let digest = digest((INIT, EXTRA_MODULES));
    let cpio_path = rig_dir().join(format!("base-{}-{digest:016x}.cpio", kernel.version));
    if cpio_path.exists() {
        return Base {
            vmlinuz: kernel.vmlinuz,
            cpio: cpio_path,
            kernel_version: kernel.version,
        };
    }
    let staging = tempfile::tempdir_in(rig_dir()).unwrap_or_else(|e| fail(e));
    let root = staging.path().join("root");
    for dir in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap_or_else(|e| fail(e));
    }
    copy_into(&root, busybox);
    let init = root.join("init");
    std::fs::write(&init, INIT).unwrap_or_else(|e| fail(e));
    set_executable(&init);

    let mut wanted = vec!["vivid"];
    wanted.extend(EXTRA_MODULES);
    let modules_root = root.join("lib/modules").join(&kernel.version);
    for module in module_closure(&kernel.modules, &wanted) {
        let relative = module
            .strip_prefix(&kernel.modules)
            .unwrap_or_else(|e| fail(e));
        let target = modules_root.join(relative);
        std::fs::create_dir_all(target.parent().unwrap_or(&modules_root))
            .unwrap_or_else(|e| fail(e));
        std::fs::copy(&module, &target).unwrap_or_else(|e| fail(e));
    }
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = kernel.modules.join(file);
        if from.exists() {
            std::fs::copy(&from, modules_root.join(file)).unwrap_or_else(|e| fail(e));
        }
    }
    host(
        "depmod",
        &["-b", &root.display().to_string(), &kernel.version],
        None,
        "run `apt-get install kmod`",
    );
    copy_program(&root, Path::new("/usr/bin/v4l2-ctl"));

    let partial = staging.path().join("base.cpio");
    cpio(&root, &partial);
    // Atomic: a concurrent run never boots a half-written image.
    std::fs::rename(&partial, &cpio_path).unwrap_or_else(|e| fail(e));
    Base {
        vmlinuz: kernel.vmlinuz,
        cpio: cpio_path,
        kernel_version: kernel.version,
    }
}

/// The feeder's source (a C program: see the file).
const FEEDER_SOURCE: &str = include_str!("v4l2_feeder.c");

/// Debian's v4l2loopback (the source that `v4l2loopback-dkms` installs), built against the guest
/// kernel's headers and cached beside the kernel.
fn v4l2loopback(kernel_version: &str) -> PathBuf {
    let module = rig_dir().join(format!("v4l2loopback-{kernel_version}.ko"));
    if module.exists() {
        return module;
    }
    let headers = PathBuf::from(format!("/usr/src/linux-headers-{kernel_version}"));
    if !headers.join("Makefile").exists() {
        fail(format!(
            "{} not found: v4l2loopback is built against the guest kernel's headers: run \
             `apt-get install linux-headers-{kernel_version}` (./dev installs \
             linux-headers-amd64, the same version unless the cached kernel under {} is older)",
            headers.display(),
            rig_dir().display()
        ));
    }
    need_tool("/usr/bin/make", "make");
    let work = tempfile::tempdir_in(rig_dir()).unwrap_or_else(|e| fail(e));
    let unpacked = download_deb("v4l2loopback-dkms", work.path());
    let source = first_entry(&unpacked.join("usr/src"), |path| {
        path.join("v4l2loopback.c").exists()
    })
    .unwrap_or_else(|| fail("v4l2loopback-dkms has no usr/src/v4l2loopback-*/"));
    host(
        "make",
        &[
            "-C",
            &headers.display().to_string(),
            &format!("M={}", source.display()),
            "modules",
        ],
        None,
        "building v4l2loopback needs make and gcc (`apt-get install make gcc`)",
    );
    // Atomic: a concurrent run never loads a half-written module.
    let partial = work.path().join("v4l2loopback.ko");
    std::fs::copy(source.join("v4l2loopback.ko"), &partial).unwrap_or_else(|e| fail(e));
    std::fs::rename(&partial, &module).unwrap_or_else(|e| fail(e));
    module
}

/// The feeder, linked statically (the guest has no C library of its own), cached by source.
fn feeder() -> PathBuf {
    let binary = rig_dir().join(format!("v4l2_feeder-{:016x}", digest(FEEDER_SOURCE)));
    if binary.exists() {
        return binary;
    }
    let work = tempfile::tempdir_in(rig_dir()).unwrap_or_else(|e| fail(e));
    let source = work.path().join("v4l2_feeder.c");
    std::fs::write(&source, FEEDER_SOURCE).unwrap_or_else(|e| fail(e));
    let partial = work.path().join("v4l2_feeder");
    host(
        "gcc",
        &[
            "-static",
            "-O2",
            "-Wall",
            "-o",
            &partial.display().to_string(),
            &source.display().to_string(),
        ],
        None,
        "the feeder needs gcc and the static C library (`apt-get install gcc libc6-dev`)",
    );
    std::fs::rename(&partial, &binary).unwrap_or_else(|e| fail(e));
    binary
}

/// v4l2loopback, the feeder and the clips it plays: `/lib/v4l2loopback.ko`, `/bin/v4l2_feeder`
/// and `/clips/<name>/` for each `(name, host directory)`.
fn loopback_cpio(dir: &Path, kernel_version: &str, clips: &[(&str, PathBuf)]) -> PathBuf {
    let root = dir.join("loopback");
    for sub in ["bin", "lib", "clips"] {
        std::fs::create_dir_all(root.join(sub)).unwrap_or_else(|e| fail(e));
    }
    std::fs::copy(
        v4l2loopback(kernel_version),
        root.join("lib/v4l2loopback.ko"),
    )
    .unwrap_or_else(|e| fail(e));
    let feeder_in_guest = root.join("bin/v4l2_feeder");
    std::fs::copy(feeder(), &feeder_in_guest).unwrap_or_else(|e| fail(e));
    set_executable(&feeder_in_guest);
    for (name, from) in clips {
        let to = root.join("clips").join(name);
        std::fs::create_dir_all(&to).unwrap_or_else(|e| fail(e));
        for entry in std::fs::read_dir(from)
            .unwrap_or_else(|e| fail(e))
            .flatten()
        {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap_or_else(|e| fail(e));
        }
    }
    let out = dir.join("loopback.cpio");
    cpio(&root, &out);
    out
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| fail(e));
}

/// camportal (stripped: the debug binary is 200+ MB with its debug info) and the path files.
fn app_cpio(dir: &Path, paths: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("app");
    let config = root.join("etc/camportal/config.d");
    std::fs::create_dir_all(root.join("bin")).unwrap_or_else(|e| fail(e));
    std::fs::create_dir_all(&config).unwrap_or_else(|e| fail(e));
    let binary = root.join("bin/camportal");
    host(
        "strip",
        &[
            "-o",
            &binary.display().to_string(),
            env!("CARGO_BIN_EXE_camportal"),
        ],
        None,
        "run `apt-get install binutils`",
    );
    set_executable(&binary);
    copy_libraries(&root, &binary);
    for (name, yaml) in paths {
        std::fs::write(config.join(format!("{name}.yml")), yaml).unwrap_or_else(|e| fail(e));
    }
    // The host reaches the guest through QEMU's port forwarding, so the daemon sees it at
    // 10.0.2.2 (the user-mode network's host address), not on loopback: grant it the API too,
    // as a user administering the box from another machine would.
    std::fs::write(
        root.join("etc/camportal/camportal.yml"),
        "authInternalUsers:\n\
         - user: any\n  ips: [10.0.2.2]\n  permissions:\n  - action: read\n  - action: api\n",
    )
    .unwrap_or_else(|e| fail(e));
    let out = dir.join("app.cpio");
    cpio(&root, &out);
    out
}

fn feeder_pid_file(device: &str) -> String {
    format!("/tmp/feeder-{}.pid", device.replace('/', "_"))
}

/// A port the kernel says is free now (QEMU binds it a moment later).
fn free_port(udp: bool) -> u16 {
    let port = if udp {
        UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.unwrap_or_else(|e| fail(format!("no free port: {e}")))
        .port()
}

/// A booted guest. Dropping it kills QEMU (our child, by its PID).
pub struct Guest {
    qemu: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    console: Arc<Mutex<Vec<String>>>,
    /// Host loopback port forwarded to the guest's HTTP port.
    pub http_port: u16,
    /// The daemon's UDP port: the same number on the host and in the guest, since the guest
    /// advertises it with the host's 127.0.0.1 (NAT 1:1 keeps the port).
    pub udp_port: u16,
    next_marker: u64,
    _work: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Guest {
    /// Boots a guest whose `/etc/camportal/config.d` holds `paths`; the daemon is not started.
    pub fn boot(paths: &[(&str, &str)]) -> Guest {
        Self::boot_image(paths, None)
    }

    /// [`Guest::boot`] with v4l2loopback and its feeder for compressed cameras (see
    /// [`Guest::load_loopback`], [`Guest::start_feeder`]), and each `(name, host directory)` of
    /// `clips` at `/clips/<name>/`: one file per picture.
    pub fn boot_with_loopback(paths: &[(&str, &str)], clips: &[(&str, PathBuf)]) -> Guest {
        Self::boot_image(paths, Some(clips))
    }

    fn boot_image(paths: &[(&str, &str)], loopback: Option<&[(&str, PathBuf)]>) -> Guest {
        let turn = one_at_a_time();
        let base = base();
        let work = tempfile::tempdir_in(rig_dir()).unwrap_or_else(|e| fail(e));
        let app = app_cpio(work.path(), paths);
        // The kernel unpacks concatenated archives in turn.
        let initrd = work.path().join("initrd.cpio");
        let mut image = std::fs::read(&base.cpio).unwrap_or_else(|e| fail(e));
        image.extend(std::fs::read(&app).unwrap_or_else(|e| fail(e)));
        if let Some(clips) = loopback {
            let extra = loopback_cpio(work.path(), &base.kernel_version, clips);
            image.extend(std::fs::read(&extra).unwrap_or_else(|e| fail(e)));
        }
        std::fs::write(&initrd, image).unwrap_or_else(|e| fail(e));

        let mut last_error = String::new();
        // A forwarded port taken between our probe and QEMU's bind: try other ports.
        for _ in 0..3 {
            let (http_port, udp_port) = (free_port(false), free_port(true));
            match Self::start(&base.vmlinuz, &initrd, http_port, udp_port) {
                Ok((qemu, stdin, lines, console)) => {
                    return Guest {
                        qemu,
                        stdin,
                        lines,
                        console,
                        http_port,
                        udp_port,
                        next_marker: 0,
                        _work: work,
                        _turn: turn,
                    };
                }
                Err(err) => last_error = err,
            }
        }
        fail(format!("the guest did not boot: {last_error}"))
    }

    #[allow(clippy::type_complexity)]
    fn start(
        vmlinuz: &Path,
        initrd: &Path,
        http_port: u16,
        udp_port: u16,
    ) -> Result<(Child, ChildStdin, Receiver<String>, Arc<Mutex<Vec<String>>>), String> {
        let nic = format!(
            "user,model=e1000,hostfwd=tcp:127.0.0.1:{http_port}-:{GUEST_HTTP_PORT},\
             hostfwd=udp:127.0.0.1:{udp_port}-:{udp_port}"
        );
        let mut qemu = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-smp", "2", "-m"])
            .arg(GUEST_MEMORY_MB.to_string())
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
            .args(["-nic", &nic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start qemu-system-x86_64 ({e}): run `apt-get install qemu-system-x86`"
                )
            })?;
        let stdin = qemu.stdin.take().ok_or("no stdin")?;
        let console = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let readers = [
            qemu.stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            qemu.stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in readers.into_iter().flatten() {
            let tx = tx.clone();
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned();
                    let mut kept = lock(&console);
                    kept.push(line.clone());
                    let excess = kept.len().saturating_sub(10 * LOG_TAIL);
                    kept.drain(..excess);
                    drop(kept);
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // The readers hold the only senders: the channel ends when QEMU does.
        drop(tx);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match lines.recv_timeout(Duration::from_millis(500)) {
                Ok(line) if line.contains("RIG-READY") => return Ok((qemu, stdin, lines, console)),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = qemu.wait().map(|s| s.to_string()).unwrap_or_default();
                    let tail = lock(&console).join("\n");
                    return Err(format!("qemu exited ({status}):\n{tail}"));
                }
            }
            if Instant::now() > deadline {
                let _ = qemu.kill();
                let _ = qemu.wait();
                let tail = lock(&console).join("\n");
                return Err(format!(
                    "no shell within {BOOT_TIMEOUT:?}; console:\n{tail}"
                ));
            }
        }
    }

    /// Runs `command` in the guest's shell; returns its exit status and output (stdout and
    /// stderr, with any kernel or daemon message that came in between).
    pub fn sh(&mut self, command: &str, timeout: Duration) -> (i32, String) {
        match self.try_sh(command, timeout) {
            Ok(done) => done,
            Err(why) => self.fail(&why),
        }
    }

    fn try_sh(&mut self, command: &str, timeout: Duration) -> Result<(i32, String), String> {
        self.next_marker += 1;
        let marker = format!("@@end-{}", self.next_marker);
        // A subshell: `command` may end in `&` (a daemon), which `{ …; }` would not parse.
        let line = format!("( {command} ) </dev/null 2>&1; echo \"{marker} $?\"\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("cannot send `{command}` to the guest: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut output = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(status) = line.strip_prefix(&marker) {
                        let status = status.trim().parse().unwrap_or(-1);
                        return Ok((status, output.join("\n")));
                    }
                    output.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("`{command}` did not finish within {timeout:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the guest died running `{command}`"));
                }
            }
        }
    }

    /// [`Guest::sh`] that must succeed; returns the output.
    pub fn ok(&mut self, command: &str) -> String {
        let (status, output) = self.sh(command, Duration::from_secs(60));
        if status != 0 {
            self.fail(&format!("`{command}` exited {status}: {output}"));
        }
        output
    }

    /// Loads vivid with `options` (e.g. `n_devs=2 node_types=0x1,0x1`).
    pub fn load_vivid(&mut self, options: &str) {
        self.ok(&format!("modprobe vivid {options}"));
    }

    /// Loads v4l2loopback (booted with [`Guest::boot_with_loopback`]) with `options`, e.g.
    /// `devices=2 exclusive_caps=1,1`: output nodes that a feeder turns into cameras.
    pub fn load_loopback(&mut self, options: &str) {
        self.ok(&format!(
            "modprobe videodev && insmod /lib/v4l2loopback.ko {options}"
        ));
    }

    /// Plays `/clips/<clip>/*` on `device` in the background, one file per picture, looped
    /// (`fourcc` e.g. `MJPG` or `H264`), and waits until the driver offers it as a camera.
    pub fn start_feeder(
        &mut self,
        device: &str,
        fourcc: &str,
        size: (u32, u32),
        fps: u32,
        clip: &str,
    ) {
        let pid_file = feeder_pid_file(device);
        self.ok(&format!(
            "v4l2_feeder {device} {fourcc} {} {} {fps} /clips/{clip}/* >/dev/console 2>&1 & \
             echo $! > {pid_file}",
            size.0, size.1
        ));
        // With exclusive_caps the node says "capture" only once a writer has set it up.
        self.ok(&format!(
            "n=0; until v4l2-ctl -d {device} --all 2>/dev/null | grep -q 'Video Capture$'; do \
             n=$((n+1)); [ $n -lt 100 ] || exit 1; usleep 50000; done"
        ));
    }

    /// Stops the feeder of `device`: the camera stops sending, as an unplugged webcam does.
    pub fn stop_feeder(&mut self, device: &str) {
        let pid_file = feeder_pid_file(device);
        self.ok(&format!("kill $(cat {pid_file}) && rm {pid_file}"));
    }

    /// Starts the daemon in the guest, advertising the host's loopback, and waits until its
    /// status API answers through the forwarded port.
    pub fn start_daemon(&mut self) {
        let udp = self.udp_port;
        // Its log goes to the console (through a pipe: no colours), so failures show it.
        self.ok(&format!(
            "RUST_LOG=camportal=info camportal --config-dir /etc/camportal/config.d \
             --http-address :{GUEST_HTTP_PORT} --udp-address :{udp} \
             --additional-host 127.0.0.1 2>&1 | cat >/dev/console &"
        ));
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while Instant::now() < deadline {
            if self.http_get("/api/paths").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.fail("the daemon's HTTP port did not answer");
    }

    /// GET through the forwarded port: the body of a 200, or None.
    pub fn http_get(&self, path: &str) -> Option<String> {
        use std::net::TcpStream;
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.http_port
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_owned())
    }

    /// One path's entry of `GET /api/paths`.
    pub fn path_status(&self, name: &str) -> serde_json::Value {
        match self.try_path_status(name) {
            Ok(status) => status,
            Err(why) => self.fail(&why),
        }
    }

    fn try_path_status(&self, name: &str) -> Result<serde_json::Value, String> {
        let body = self
            .http_get("/api/paths")
            .ok_or("the status API does not answer")?;
        let all: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        all["paths"]
            .as_array()
            .and_then(|paths| paths.iter().find(|p| p["name"] == name))
            .cloned()
            .ok_or_else(|| format!("no path {name} in {body}"))
    }

    /// Polls the status API until `condition` holds for the path (which may not exist yet: a
    /// file just dropped into config.d); returns that status.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.try_path_status(name);
            if let Ok(status) = &status
                && condition(status)
            {
                return status.clone();
            }
            if Instant::now() > deadline {
                let last = status.unwrap_or_else(|why| why.into());
                self.fail(&format!(
                    "{name}: {what} did not happen within {timeout:?}: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn whep_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}/whep", self.http_port)
    }

    /// The console and the daemon's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let console = lock(&self.console);
        let tail = console[console.len().saturating_sub(LOG_TAIL)..].join("\n");
        format!("--- guest console (tail) ---\n{tail}")
    }

    /// Fails the test with the guest's console attached.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.diagnostics())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Our own child, by its PID; the guest has nothing to save.
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}
