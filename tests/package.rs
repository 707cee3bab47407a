//! The Debian package (`[package.metadata.deb]` in Cargo.toml, files in `debian/`): packs the
//! binary this test run built, without compiling anything (`cargo deb --no-build`), then checks
//! what is in the `.deb`: the binary, the two conffiles under /etc/camportal, the systemd unit
//! (its hardening, and `systemd-analyze verify` on it), the Depends line, and the maintainer
//! scripts that make the user `camportal` and enable and start the service.
//!
//! Needs `cargo-deb` (`cargo install cargo-deb --locked`), `dpkg-deb` (dpkg), `strip`
//! (binutils) and `systemd-analyze` (Debian's `systemd` package). Without one, it fails and says
//! what to install; it never skips.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = "camportal.service";

/// Runs `command`, panicking with its output unless it succeeds.
fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {shown}: {err}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The binary under test, and the cargo-deb arguments that package exactly it: its directory
/// is `<target dir>/<profile dir>/`, where the profile dir of `dev` (and `test`) is `debug`.
/// cargo-deb replaces the `target/release/` of the asset path with the dir of `--profile`
/// (`dev` -> `debug`), under the target dir Cargo reports, which `CARGO_TARGET_DIR` sets.
fn binary_and_profile() -> (PathBuf, PathBuf, String) {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_camportal"));
    let profile_dir = binary.parent().expect("the binary's directory");
    let target_dir = profile_dir
        .parent()
        .expect("the target directory")
        .to_owned();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(name) => name.to_owned(),
        None => panic!("unexpected binary path {}", binary.display()),
    };
    (binary, target_dir, profile)
}

/// `Key=value` settings of the unit (comments and section headers left out), in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';', '[']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_debian_package_holds_a_hardened_service_and_its_configuration() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (binary, target_dir, profile) = binary_and_profile();

    let version = Command::new(cargo()).args(["deb", "--version"]).output();
    match &version {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "cargo-deb is needed to build the Debian package: run `cargo install cargo-deb \
             --locked` (`cargo deb --version` gave: {})",
            match &version {
                Ok(out) => text(&out.stderr),
                Err(err) => err.to_string(),
            }
        ),
    }

    let out = tempfile::tempdir().unwrap();
    let debs = out.path().join("debs");
    fs::create_dir(&debs).unwrap();
    // --no-build: package the binary this test run built; compile nothing. --fast: lighter
    // compression (the package is thrown away).
    run(Command::new(cargo())
        .args([
            "deb",
            "-p",
            "camportal",
            "--no-build",
            "--fast",
            "--profile",
            profile.as_str(),
        ])
        .arg("--output")
        .arg(&debs)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(repo));
    let found: Vec<PathBuf> = fs::read_dir(&debs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one .deb in {}, found {found:?}",
        debs.display()
    );
    let deb = &found[0];

    // The files.
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(deb)).stdout);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .collect();
    for wanted in [
        "./usr/bin/camportal",
        "./etc/camportal/camportal.yml",
        "./etc/camportal/config.d/test.yml",
        "./usr/share/doc/camportal/README.md",
    ] {
        assert!(
            paths.contains(&wanted),
            "{wanted} is not in the package:\n{listing}"
        );
    }
    let unit_path = ["./usr/lib/systemd/system/", "./lib/systemd/system/"]
        .iter()
        .map(|dir| format!("{dir}{UNIT}"))
        .find(|path| paths.contains(&path.as_str()))
        .unwrap_or_else(|| panic!("no {UNIT} under [/usr]/lib/systemd/system:\n{listing}"));

    // The control files.
    let control = out.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    let read = |name: &str| {
        fs::read_to_string(control.join(name))
            .unwrap_or_else(|err| panic!("no control file {name} in the package: {err}"))
    };
    let fields = read("control");
    let depends = fields
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))
        .unwrap_or_else(|| panic!("no Depends field:\n{fields}"));
    assert!(
        depends
            .split(',')
            .any(|dep| dep.trim().starts_with("adduser")),
        "Depends lacks adduser: {depends}"
    );
    let conffiles = read("conffiles");
    for wanted in [
        "/etc/camportal/camportal.yml",
        "/etc/camportal/config.d/test.yml",
    ] {
        assert!(
            conffiles.lines().any(|line| line.trim() == wanted),
            "{wanted} is not a conffile:\n{conffiles}"
        );
    }
    let postinst = read("postinst");
    assert!(
        postinst.contains("adduser --system") && postinst.contains("useradd --system"),
        "postinst does not make the system user:\n{postinst}"
    );
    assert!(
        postinst.contains(&format!("deb-systemd-helper enable {UNIT}")),
        "postinst does not enable {UNIT}:\n{postinst}"
    );
    assert!(
        postinst
            .lines()
            .any(|line| line.contains("deb-systemd-invoke") && line.contains(UNIT)),
        "postinst does not start {UNIT}:\n{postinst}"
    );
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "the DEBHELPER token was not replaced:\n{postinst}"
    );
    assert!(
        read("prerm").contains(UNIT),
        "prerm does not stop {UNIT}:\n{}",
        read("prerm")
    );

    // The tree: the packaged binary runs, the unit says what it must.
    let root = out.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let packaged = root.join("usr/bin/camportal");
    let help = text(&run(Command::new(&packaged).arg("--help")).stdout);
    assert!(
        help.contains("--config-dir"),
        "{} --help:\n{help}",
        packaged.display()
    );
    assert!(
        fs::metadata(&packaged).unwrap().len() <= fs::metadata(&binary).unwrap().len(),
        "the packaged binary is larger than the one built ({})",
        binary.display()
    );
    let unit = fs::read_to_string(root.join(&unit_path)).unwrap();
    let set = settings(&unit);
    for (key, wanted) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "always"),
        ("User", "camportal"),
        ("SupplementaryGroups", "video"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("DevicePolicy", "closed"),
        ("CapabilityBoundingSet", ""),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(values(&set, key), [wanted], "{key}= in the unit:\n{unit}");
    }
    let watchdog = values(&set, "WatchdogSec");
    assert!(
        watchdog.len() == 1 && !watchdog[0].is_empty() && watchdog[0] != "0",
        "WatchdogSec= in the unit: {watchdog:?}"
    );
    let devices = values(&set, "DeviceAllow");
    assert!(
        devices
            .iter()
            .any(|d| d.contains("video4linux") || d.contains("/dev/video")),
        "no DeviceAllow= for cameras: {devices:?}"
    );
    let exec_start = values(&set, "ExecStart");
    assert!(
        exec_start.len() == 1
            && exec_start[0].starts_with("/usr/bin/camportal ")
            && exec_start[0].contains("--config-dir /etc/camportal/config.d"),
        "ExecStart= in the unit: {exec_start:?}"
    );

    // systemd's own check, on a copy of the unit whose ExecStart is the extracted binary
    // (verify fails on a command that does not exist; `--root=` would look for everything,
    // /bin/kill and sysinit.target included, in the extracted tree).
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "systemd-analyze is needed to check the unit: install systemd (Debian's `systemd` \
             package); `systemd-analyze --version` gave: {other:?}"
        ),
    }
    let verify_dir = out.path().join("verify");
    fs::create_dir(&verify_dir).unwrap();
    let copy = verify_dir.join(UNIT);
    let rewritten = unit.replace(
        "ExecStart=/usr/bin/camportal ",
        &format!("ExecStart={} ", packaged.display()),
    );
    assert_ne!(
        rewritten, unit,
        "ExecStart=/usr/bin/camportal not found in the unit"
    );
    fs::write(&copy, rewritten).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = text(&verified.stderr);
    // Lines about other units of this machine (e.g. a broken unit elsewhere in
    // /usr/lib/systemd/system that verify loads for dependencies) are not ours to judge; every
    // line naming this unit or its file is a finding.
    let findings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("camportal"))
        .collect();
    assert!(
        verified.status.success() && findings.is_empty(),
        "systemd-analyze verify {} ({}):\n{stderr}",
        copy.display(),
        verified.status
    );
}
