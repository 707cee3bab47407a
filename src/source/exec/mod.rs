//! `source: {type: exec, command: "..."}`: a program of the user's writes pictures to its
//! standard output (MediaMTX's `runOnInit` with ffmpeg, go2rtc's `exec:`, `libcamera-vid`, a
//! GStreamer pipeline). H.264 Annex B is passed through as the program encoded it, MJPEG is
//! decoded and encoded like a webcam's, raw I420 is encoded. The program paces the pictures.
//!
//! The program is this source's for its whole life: started when the source opens, stopped
//! (SIGTERM, then SIGKILL) when it is dropped. It ending, or writing no picture for
//! [`STALL_TIMEOUT`], fails the source, and the path restarts it with backoff while its viewers
//! see the offline picture.

mod process;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::ChildStdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{EncodingConfig, ExecConfig, StreamFormat};
use crate::frame::CaptureTime;
use crate::source::stream::{PictureStream, detect};
use crate::source::{Captured, Source, SourceError, SourceInfo};
use process::{Process, invocation};

/// A program that writes no whole picture for this long is stuck: it is stopped and restarted.
/// Long enough for a slow start (a camera program opening its camera).
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a read waiting for output checks whether the path is stopping.
const STOP_POLL: Duration = Duration::from_millis(100);
const READ_SIZE: usize = 64 * 1024;

pub(crate) struct ExecSource {
    what: String,
    /// Dropped before `process` (fields drop in order): with its reader gone, a program
    /// blocked writing ends at once (SIGPIPE) instead of waiting out SIGTERM's grace.
    stdout: ChildStdout,
    process: Process,
    /// The first bytes, until they tell the format (when it is not configured).
    head: Vec<u8>,
    /// The pictures, once the format is known.
    pictures: Option<PictureStream>,
    width: u32,
    height: u32,
    stop: Arc<AtomicBool>,
    since_picture: Instant,
    read_buf: Vec<u8>,
}

/// The program's name, for logs and the status API (the whole command line may hold a
/// password, e.g. in an RTSP URL, so it is never shown).
pub(crate) fn program_name(command: &str) -> &str {
    // `NAME=value` words before it set variables, which may hold a password.
    command
        .split_whitespace()
        .find(|word| !word.contains('='))
        .unwrap_or("")
}

impl ExecSource {
    /// Starts the program. `stop` is the capture thread's stop flag: a read waiting for output
    /// gives up when it is set.
    pub(crate) fn open(
        path: &str,
        config: &ExecConfig,
        encoding: &EncodingConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<ExecSource, SourceError> {
        let what = format!("exec {}", program_name(&config.command));
        let fail = |message: String| SourceError {
            what: what.clone(),
            message,
        };
        let invocation = invocation(&config.command).map_err(fail)?;
        let mut process = Process::start(path, &invocation).map_err(fail)?;
        let stdout = process
            .stdout()
            .ok_or_else(|| fail("no standard output to read".to_owned()))?;
        tracing::info!(%path, program = %what, pid = process.id(), "program started");
        let mut source = ExecSource {
            what,
            stdout,
            process,
            head: Vec::new(),
            pictures: None,
            width: encoding.width,
            height: encoding.height,
            stop,
            since_picture: Instant::now(),
            read_buf: vec![0; READ_SIZE],
        };
        if let Some(format) = config.format {
            source.set_format(format)?;
        }
        Ok(source)
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError {
            what: self.what.clone(),
            message,
        }
    }

    fn set_format(&mut self, format: StreamFormat) -> Result<(), SourceError> {
        let mut pictures =
            PictureStream::new(format, self.width, self.height).map_err(|e| self.fail(e))?;
        pictures.push(&std::mem::take(&mut self.head));
        self.pictures = Some(pictures);
        Ok(())
    }

    /// Waits for output (checking the stop flag and the stall timer) and hands it on.
    fn read_more(&mut self) -> Result<(), SourceError> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Err(self.fail("stopped".to_owned()));
            }
            if self.since_picture.elapsed() >= STALL_TIMEOUT {
                return Err(self.fail(format!(
                    "no picture for {} s: the program is stuck or writes something else \
                     (check `format`)",
                    STALL_TIMEOUT.as_secs()
                )));
            }
            if readable(&self.stdout, STOP_POLL).map_err(|e| self.fail(e))? {
                break;
            }
        }
        let n = match self.stdout.read(&mut self.read_buf) {
            Ok(0) => {
                let why = self.process.ended();
                return Err(self.fail(why));
            }
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(self.fail(format!("cannot read its output: {err}"))),
        };
        let data = &self.read_buf[..n];
        match &mut self.pictures {
            Some(pictures) => pictures.push(data),
            None => {
                self.head.extend_from_slice(data);
                if let Some(format) = detect(&self.head).map_err(|e| self.fail(e))? {
                    tracing::debug!(program = %self.what, %format, "output format detected");
                    self.set_format(format)?;
                }
            }
        }
        Ok(())
    }
}

impl Source for ExecSource {
    fn next(&mut self) -> Result<Captured, SourceError> {
        loop {
            let picture = match &mut self.pictures {
                // Stamped when cut: the program paces its pictures.
                Some(pictures) => pictures.next(CaptureTime::now),
                None => Ok(None),
            };
            match picture.map_err(|e| self.fail(e))? {
                Some(captured) => {
                    self.since_picture = Instant::now();
                    return Ok(captured);
                }
                None => self.read_more()?,
            }
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            camera: None,
            format: Some(
                self.pictures
                    .as_ref()
                    .map_or("auto".to_owned(), |p| p.format().to_string()),
            ),
            // A program's H.264 cannot be asked for a keyframe.
            keyframe_on_request: false,
        }
    }
}

/// Whether `pipe` has data (or its end) within `timeout`.
fn readable(pipe: &ChildStdout, timeout: Duration) -> Result<bool, String> {
    let mut fd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the length given.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    if ready < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(format!("cannot wait for its output: {err}"));
    }
    Ok(ready > 0)
}
