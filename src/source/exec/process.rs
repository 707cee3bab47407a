//! The program an exec source runs: started in a process group of its own, directly or (when
//! the command needs one) through `/bin/sh -c`; its stderr logged line by line under the path's
//! name; stopped with SIGTERM, then SIGKILL, as a whole group. It dies with the daemon even when
//! the daemon is killed: the child has `PR_SET_PDEATHSIG`, and whatever it started loses its
//! reader (SIGPIPE on its next write).

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// How long the program has to end after SIGTERM before it gets SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);
/// A program's log lines are cut to this length.
const MAX_LINE: usize = 500;
/// At most this many stderr lines are logged per [`LOG_WINDOW`]; the rest are counted.
const LOG_LINES: u32 = 50;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// How a command line is run.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Invocation {
    /// The program and its arguments, as a shell would split them.
    Direct(Vec<String>),
    /// Through `/bin/sh -c`, for pipes, redirections, variables, globs and the like.
    Shell(String),
}

/// Characters that need a shell: without them a command is split into words and run directly
/// (no shell process in between, and what the words say is exactly what runs).
const SHELL_SYNTAX: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '~', '#', '\n',
];

pub(super) fn invocation(command: &str) -> Result<Invocation, String> {
    // `NAME=value program ...` sets a variable: a shell's job.
    let assigns = command
        .split_whitespace()
        .next()
        .is_some_and(|first| first.contains('='));
    if assigns || command.contains(SHELL_SYNTAX) {
        return Ok(Invocation::Shell(command.to_owned()));
    }
    match shlex::split(command) {
        Some(words) if !words.is_empty() => Ok(Invocation::Direct(words)),
        Some(_) => Err("the command is empty".to_owned()),
        None => Err("the command has an unclosed quote".to_owned()),
    }
}

/// The running program.
pub(super) struct Process {
    child: Child,
    /// Its last stderr line, to say why it ended.
    last_line: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `invocation` for the path `path`; its stdout is what [`Process::stdout`] gives.
    pub(super) fn start(path: &str, invocation: &Invocation) -> Result<Process, String> {
        let mut command = match invocation {
            Invocation::Direct(words) => {
                let mut command = Command::new(&words[0]);
                command.args(&words[1..]);
                command
            }
            Invocation::Shell(line) => {
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(line);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: stopping it reaches whatever it started too.
            .process_group(0);
        // The service manager's channels are the daemon's, not the program's.
        for name in SERVICE_VARIABLES {
            command.env_remove(name);
        }
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid, syscall, fcntl, _exit) between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Killed when the thread that started it (the capture thread) or the daemon
                // ends, also by SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The daemon died between fork and prctl: nobody would ever read us.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                close_on_exec_from(3);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start: {err}"))?;
        let last_line = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let path = path.to_owned();
            let last = Arc::clone(&last_line);
            let spawned = std::thread::Builder::new()
                .name(format!("exec log {path}"))
                .spawn({
                    let path = path.clone();
                    move || log_lines(&path, stderr, &last)
                });
            if let Err(err) = spawned {
                warn!(%path, %err, "cannot log the program's stderr");
            }
        }
        Ok(Process { child, last_line })
    }

    pub(super) fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Why the program ended, once it has (its output closed): its exit status and last words.
    pub(super) fn ended(&mut self) -> String {
        // Its stdout closed; its exit follows at once, but give it a moment.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break None,
            }
        };
        let said = self
            .last_line
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let how = status.map_or_else(|| "closed its output".to_owned(), describe_exit);
        if said.is_empty() {
            how
        } else {
            format!("{how}; it said: {said}")
        }
    }

    /// SIGTERM to the group, SIGKILL after the grace period (to the group too: what the
    /// program started, even once the program itself is gone), and the child reaped.
    fn terminate(&mut self) {
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill has no memory effects. The group is the child's own; while any member
        // lives, the kernel does not give its id to another process.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + TERMINATE_GRACE;
        let mut ended = false;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !ended {
            warn!(
                pid = self.child.id(),
                "the program ignored SIGTERM; killing it"
            );
        }
        // SAFETY: as above; members that ignored SIGTERM end here.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

/// Logs the program's stderr under the path's name, a bounded number of lines per window, and
/// keeps the last line. Carriage returns (progress lines) end lines too; a line is cut at
/// [`MAX_LINE`] bytes, so a program that never ends one costs no memory. URLs lose their
/// user and password (`rtsp://admin:secret@cam/` is what ffmpeg says when a camera fails).
fn log_lines(path: &str, stderr: std::process::ChildStderr, last: &Mutex<String>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(MAX_LINE);
    let mut window = Instant::now();
    let (mut logged, mut dropped) = (0u32, 0u64);
    let mut emit = |raw: &[u8]| {
        let line = redact_userinfo(String::from_utf8_lossy(raw).trim());
        if line.is_empty() {
            return;
        }
        if window.elapsed() >= LOG_WINDOW {
            if dropped > 0 {
                info!(%path, dropped, "more lines from the program were not logged");
            }
            (window, logged, dropped) = (Instant::now(), 0, 0);
        }
        if logged < LOG_LINES {
            logged += 1;
            info!(%path, "program: {line}");
        } else {
            dropped += 1;
        }
        *last.lock().unwrap_or_else(PoisonError::into_inner) = line;
    };
    loop {
        let consumed = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(data) => {
                for &byte in data {
                    if byte == b'\n' || byte == b'\r' {
                        emit(&line);
                        line.clear();
                    } else if line.len() < MAX_LINE {
                        line.push(byte);
                    }
                }
                data.len()
            }
        };
        reader.consume(consumed);
    }
    emit(&line);
}

/// `scheme://user:password@host` → `scheme://***@host`, wherever it appears in `line`.
fn redact_userinfo(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or blank; userinfo is before its '@'.
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Variables the service manager gives the daemon, for it alone.
const SERVICE_VARIABLES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Marks every descriptor from `first` on close-on-exec, so the program inherits none of the
/// daemon's (a camera held open would stay busy while the program runs). Between fork and exec:
/// system calls only.
fn close_on_exec_from(first: libc::c_uint) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags of this (forked) process.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !marked {
        // Kernels before 5.11: one by one, as far as descriptors are usually numbered.
        for fd in first as libc::c_int..4096 {
            // SAFETY: fcntl on a descriptor number that may not be open is harmless (EBADF).
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_run_directly_and_shell_syntax_gets_a_shell() {
        assert_eq!(
            invocation("ffmpeg -i 'my clip.mp4' -f h264 -").unwrap(),
            Invocation::Direct(
                ["ffmpeg", "-i", "my clip.mp4", "-f", "h264", "-"]
                    .map(String::from)
                    .to_vec()
            )
        );
        for line in ["a | b", "a > /dev/null", "echo $HOME", "cat *.h264", "a; b"] {
            assert_eq!(invocation(line).unwrap(), Invocation::Shell(line.into()));
        }
        assert!(invocation("ffmpeg 'unclosed").is_err());
        assert!(invocation("   ").is_err());
    }

    #[test]
    fn passwords_in_urls_are_not_repeated() {
        assert_eq!(
            redact_userinfo("rtsp://admin:s3cret@10.0.0.5:554/stream: Connection refused"),
            "rtsp://***@10.0.0.5:554/stream: Connection refused"
        );
        assert_eq!(
            redact_userinfo("a http://x/y?u=a@b and rtsp://u:p@h"),
            "a http://x/y?u=a@b and rtsp://***@h"
        );
        assert_eq!(redact_userinfo("no url here"), "no url here");
    }

    #[test]
    fn variables_before_the_program_need_a_shell() {
        assert_eq!(
            invocation("LIBCAMERA_LOG_LEVELS=ERROR libcamera-vid -o -").unwrap(),
            Invocation::Shell("LIBCAMERA_LOG_LEVELS=ERROR libcamera-vid -o -".into())
        );
    }

    #[test]
    fn the_program_inherits_no_descriptor_of_the_daemon() {
        let file = tempfile::tempfile().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // Not close-on-exec in the daemon (like a camera opened by the v4l crate).
        // SAFETY: clearing the flag of our own open descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let mut process = Process::start(
            "test",
            &invocation(&format!("ls /proc/self/fd/{fd}")).unwrap(),
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut process.stdout().unwrap(), &mut out).unwrap();
        let why = process.ended();
        assert!(
            why.starts_with("exited with status 2"),
            "ls found it: {why} {out}"
        );
    }

    #[test]
    fn an_ended_program_says_how_and_its_last_words() {
        let mut process = Process::start(
            "test",
            &invocation("echo 'no such camera' >&2; exit 3").unwrap(),
        )
        .unwrap();
        let mut out = process.stdout().unwrap();
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut sink).unwrap();
        // The log thread may still be reading the last line.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut why = process.ended();
        while !why.contains("no such camera") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            why = process.ended();
        }
        assert_eq!(why, "exited with status 3; it said: no such camera");
    }

    #[test]
    fn stopping_ends_the_whole_group_even_if_sigterm_is_ignored() {
        let mut process = Process::start(
            "test",
            &invocation("trap '' TERM; sleep 30 & echo ready; sleep 30; wait").unwrap(),
        )
        .unwrap();
        // Once it says so, it ignores SIGTERM and has a child.
        let mut ready = String::new();
        BufReader::new(process.stdout().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let group = process.id() as libc::pid_t;
        let started = Instant::now();
        drop(process);
        assert!(
            started.elapsed() >= TERMINATE_GRACE,
            "waited for SIGTERM first"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while group_alive(group) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!group_alive(group), "no process of the group is left");
    }

    /// Whether a process of group `group` lives (zombies, which only wait to be reaped by
    /// whoever adopted them, do not count).
    fn group_alive(group: libc::pid_t) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        entries.flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // After the command name in parentheses: state, ppid, pgrp.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
        })
    }
}
