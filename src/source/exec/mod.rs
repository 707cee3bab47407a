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
mod stream;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::ChildStdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{EncodingConfig, ExecConfig, StreamFormat};
use crate::frame::{CaptureTime, RawFrame};
use crate::source::v4l2::convert::MjpegDecoder;
use crate::source::v4l2::passthrough::Passthrough;
use crate::source::{Captured, Source, SourceError, SourceInfo};
use process::{Process, invocation};
use stream::{Splitter, detect};

/// A program that writes no whole picture for this long is stuck: it is stopped and restarted.
/// Long enough for a slow start (a camera program opening its camera).
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a read waiting for output checks whether the path is stopping.
const STOP_POLL: Duration = Duration::from_millis(100);
const READ_SIZE: usize = 64 * 1024;
/// JPEGs in a row that may fail to decode before the source fails.
const MAX_BAD_PICTURES: u32 = 10;

pub(crate) struct ExecSource {
    what: String,
    /// Dropped before `process` (fields drop in order): with its reader gone, a program
    /// blocked writing ends at once (SIGPIPE) instead of waiting out SIGTERM's grace.
    stdout: ChildStdout,
    process: Process,
    /// The configured format, or the detected one once the first bytes are in.
    format: Option<StreamFormat>,
    /// The first bytes, until they tell the format.
    head: Vec<u8>,
    splitter: Option<Splitter>,
    width: u32,
    height: u32,
    decoder: Option<MjpegDecoder>,
    passthrough: Passthrough,
    stop: Arc<AtomicBool>,
    since_picture: Instant,
    read_buf: Vec<u8>,
    /// JPEGs in a row that did not decode.
    bad_pictures: u32,
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
            format: None,
            head: Vec::new(),
            splitter: None,
            width: encoding.width,
            height: encoding.height,
            decoder: None,
            passthrough: Passthrough::default(),
            stop,
            since_picture: Instant::now(),
            read_buf: vec![0; READ_SIZE],
            bad_pictures: 0,
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
        if format == StreamFormat::Mjpeg {
            self.decoder = Some(MjpegDecoder::new().map_err(|e| self.fail(e))?);
        }
        self.format = Some(format);
        let mut splitter = Splitter::new(format, RawFrame::i420_len(self.width, self.height));
        splitter.push(&std::mem::take(&mut self.head));
        self.splitter = Some(splitter);
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
        match &mut self.splitter {
            Some(splitter) => splitter.push(data),
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

    /// One cut picture as what the path takes; None for H.264 bytes that hold no picture and
    /// for a damaged JPEG.
    fn captured(&mut self, picture: Vec<u8>) -> Result<Option<Captured>, SourceError> {
        let capture = CaptureTime::now();
        let (width, height) = (self.width, self.height);
        let raw = |data| RawFrame {
            width,
            height,
            data,
            capture,
        };
        Ok(match self.format {
            Some(StreamFormat::H264) => self
                .passthrough
                .access_unit(&picture, width, height, capture)
                .map(Captured::H264),
            Some(StreamFormat::Mjpeg) => {
                let mut i420 = vec![0; RawFrame::i420_len(width, height)];
                let decoded = match self.decoder.as_mut() {
                    Some(decoder) => decoder.decode(&picture, width, height, &mut i420),
                    None => Err("no JPEG decoder".to_owned()),
                };
                if let Err(err) = decoded {
                    // One damaged picture is skipped; a stream of them is an error (a wrong
                    // size, not JPEG at all).
                    self.bad_pictures += 1;
                    if self.bad_pictures >= MAX_BAD_PICTURES {
                        return Err(self.fail(format!(
                            "{err} (MJPEG must be of the path's encoding.width x \
                             encoding.height)"
                        )));
                    }
                    tracing::debug!(program = %self.what, %err, "damaged JPEG skipped");
                    return Ok(None);
                }
                self.bad_pictures = 0;
                Some(Captured::Jpeg(raw(i420), Bytes::from(picture)))
            }
            Some(StreamFormat::I420) | None => Some(Captured::Raw(raw(picture))),
        })
    }
}

impl Source for ExecSource {
    fn next(&mut self) -> Result<Captured, SourceError> {
        loop {
            let picture = match &mut self.splitter {
                Some(splitter) => splitter.next_picture(),
                None => Ok(None),
            };
            match picture.map_err(|e| self.fail(e))? {
                Some(picture) => {
                    if let Some(captured) = self.captured(picture)? {
                        self.since_picture = Instant::now();
                        return Ok(captured);
                    }
                }
                None => self.read_more()?,
            }
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            camera: None,
            format: Some(self.format.map_or("auto".to_owned(), |f| f.to_string())),
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
