//! Cameras through Video4Linux2: open the configured device, negotiate a mode from what it
//! offers and what the path asks for, capture with mmap buffers, and turn each buffer into an
//! I420 picture (or pass the camera's own H.264 through), stamped with the buffer's capture
//! time.
//!
//! "Camera gone" (ENODEV, EIO, a buffer flagged as error, no picture for a few seconds) is an
//! error: the capture child fails and its path restarts it. `next` never blocks for longer than
//! that timeout, so a hung camera cannot hang the path.

pub(crate) mod convert;
pub(crate) mod device;
pub(crate) mod modes;
pub(crate) mod passthrough;

use std::io;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};
use v4l::buffer::{Metadata, Type};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC, Fraction};

use crate::config::{CaptureFormat, EncodingConfig, V4l2Config};
use crate::frame::{CaptureTime, RawFrame};
use crate::rtp::h264;
use crate::source::{Captured, Source, SourceError, SourceInfo};
use convert::MjpegDecoder;
use modes::{Mode, PixelFormat, Request};
use passthrough::Passthrough;

/// mmap buffers: enough that the driver always has one to fill while we convert another.
const BUFFERS: u32 = 4;
/// Cameras take a moment to start streaming (exposure, USB bandwidth negotiation).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// No picture for this long (or three frame intervals, if longer) means the camera is gone.
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);
/// Pictures to look through for the camera's H.264 parameter sets before giving up on them.
const H264_PROBE_FRAMES: u32 = 90;
/// V4L2_BUF_FLAG_TIMESTAMP_MASK and _MONOTONIC.
const TIMESTAMP_MASK: u32 = 0x0000_e000;
const TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
/// V4L2_BUF_FLAG_ERROR.
const BUF_FLAG_ERROR: u32 = 0x0000_0040;

/// How buffers become pictures, per negotiated format.
enum Picture {
    Yuyv,
    Nv12,
    Mjpeg(MjpegDecoder),
    H264(Passthrough),
}

pub(crate) struct V4l2Source {
    /// The camera, for errors: `/dev/video0 "vivid"`.
    what: String,
    /// `Option` so that `Drop` can take it and contain the v4l crate's panics on teardown.
    stream: Option<Stream<'static>>,
    /// Kept open for the stream's lifetime (the stream holds the same file descriptor); also
    /// where controls are set.
    device: Device,
    mode: Mode,
    /// Bytes per line of raw formats.
    stride: usize,
    picture: Picture,
    frame_timeout: Duration,
    /// A picture read while probing, handed out first.
    pending: Option<Captured>,
    started: bool,
    last_good: Instant,
    bad_pictures: u64,
    info: SourceInfo,
}

impl V4l2Source {
    /// Finds and opens the camera, negotiates a mode and starts streaming.
    pub(crate) fn open(
        config: &V4l2Config,
        encoding: &EncodingConfig,
    ) -> Result<V4l2Source, SourceError> {
        let named = crate::source::describe_device(&config.device);
        let fail = |what: &str, message: String| SourceError {
            what: what.to_owned(),
            message,
        };
        let node = device::find(&config.device).map_err(|m| fail(&named, m))?;
        let (dev, node_info) = device::probe(&node).map_err(|e| fail(&named, open_error(&e)))?;
        let what = node_info.describe();
        if !node_info.capture {
            let cameras: Vec<String> = device::cameras()
                .iter()
                .map(|(_, info)| info.describe())
                .collect();
            return Err(fail(
                &what,
                format!(
                    "not a video capture node (a metadata or output node?); capture nodes: {}",
                    if cameras.is_empty() {
                        "none".to_owned()
                    } else {
                        cameras.join(", ")
                    }
                ),
            ));
        }
        let request = Request {
            format: config.format,
            width: encoding.width,
            height: encoding.height,
            fps: encoding.fps,
        };
        let offers = device::offers(&dev, Some((request.width, request.height)))
            .map_err(|e| fail(&what, format!("cannot list formats: {}", io_error(&e))))?;

        let mut exclude = Vec::new();
        loop {
            let mode = modes::negotiate(&offers, &request, &exclude).map_err(|m| fail(&what, m))?;
            let (mut stream, stride) = start(&dev, &mode).map_err(|m| fail(&what, m))?;
            let mut pending = None;
            if mode.pixel == PixelFormat::H264 {
                let (profile, first) = match probe_h264(&mut stream, &mode) {
                    Ok(probed) => probed,
                    Err(message) => {
                        contain_teardown(stream);
                        return Err(fail(&what, message));
                    }
                };
                match profile {
                    Some(profile) if !h264::browser_decodes(profile) => {
                        let message = format!(
                            "the camera's H.264 is profile {profile} (High or above), which \
                             browsers here cannot decode"
                        );
                        if config.format == CaptureFormat::Auto {
                            info!(camera = %what, %message, "trying the next format");
                            exclude.push(PixelFormat::H264);
                            contain_teardown(stream);
                            continue;
                        }
                        contain_teardown(stream);
                        return Err(fail(&what, format!("{message}; use format: mjpeg")));
                    }
                    _ => pending = first.map(Captured::H264),
                }
            }
            let picture = match mode.pixel {
                PixelFormat::Yuyv => Picture::Yuyv,
                PixelFormat::Nv12 => Picture::Nv12,
                PixelFormat::Mjpeg => {
                    Picture::Mjpeg(MjpegDecoder::new().map_err(|m| fail(&what, m))?)
                }
                PixelFormat::H264 => Picture::H264(Passthrough::default()),
            };
            let interval = Duration::from_secs_f64(1.0 / mode.interval.fps().max(0.01));
            // Tried once here (a keyframe at the start does no harm): a camera that takes it
            // answers a joining viewer at once instead of at its next GOP.
            let keyframe_on_request =
                mode.pixel == PixelFormat::H264 && device::force_keyframe(&dev).is_ok();
            info!(camera = %what, mode = %mode, keyframe_on_request, "camera opened");
            return Ok(V4l2Source {
                info: SourceInfo {
                    camera: Some(what.clone()),
                    format: Some(mode.to_string()),
                    keyframe_on_request,
                },
                what,
                stream: Some(stream),
                device: dev,
                mode,
                stride,
                picture,
                frame_timeout: FRAME_TIMEOUT.max(interval * 3),
                pending,
                started: false,
                last_good: Instant::now(),
                bad_pictures: 0,
            });
        }
    }

    fn error(&self, message: String) -> SourceError {
        SourceError {
            what: self.what.clone(),
            message,
        }
    }
}

/// Sets the mode (a new `Format`, not an edited copy of the current one: its stride would
/// stick) and the frame interval, and maps the buffers. Returns the stream and the stride.
fn start(dev: &Device, mode: &Mode) -> Result<(Stream<'static>, usize), String> {
    let wanted = Format::new(mode.width, mode.height, FourCC::new(&mode.fourcc));
    let got = dev
        .set_format(&wanted)
        .map_err(|e| format!("cannot set {mode}: {}", io_error(&e)))?;
    if (got.width, got.height, got.fourcc) != (wanted.width, wanted.height, wanted.fourcc) {
        return Err(format!(
            "asked for {mode}, the camera answered {} {}x{}",
            got.fourcc, got.width, got.height
        ));
    }
    let interval = Fraction::new(mode.interval.num, mode.interval.den);
    match dev.set_params(&Parameters::new(interval)) {
        Ok(params)
            if (params.interval.numerator, params.interval.denominator)
                != (interval.numerator, interval.denominator) =>
        {
            warn!(
            asked = %interval, got = %params.interval,
                "the camera chose another frame interval"
            )
        }
        Ok(_) => {}
        // Some cameras have one fixed rate and no S_PARM.
        Err(err) => warn!(%err, "cannot set the frame interval; the camera keeps its own"),
    }
    let mut stream = Stream::with_buffers(dev, Type::VideoCapture, BUFFERS)
        .map_err(|e| format!("cannot map capture buffers: {}", io_error(&e)))?;
    stream.set_timeout(FIRST_FRAME_TIMEOUT);
    Ok((stream, got.stride as usize))
}

/// Reads pictures until the camera's SPS shows its profile; returns it with the access unit
/// that carried it (a keyframe, usually, worth handing out first).
fn probe_h264(
    stream: &mut Stream<'static>,
    mode: &Mode,
) -> Result<(Option<u8>, Option<crate::frame::AccessUnit>), String> {
    let mut passthrough = Passthrough::default();
    for _ in 0..H264_PROBE_FRAMES {
        let (data, meta) = stream.next().map_err(|e| io_error(&e))?;
        let used = (meta.bytesused as usize).min(data.len());
        if let Some(profile) = h264::sps_profile(&data[..used]) {
            let unit =
                passthrough.access_unit(&data[..used], mode.width, mode.height, capture_time(meta));
            return Ok((Some(profile), unit));
        }
    }
    debug!("no H.264 parameter set seen while probing; passing the stream through");
    Ok((None, None))
}

impl Source for V4l2Source {
    fn next(&mut self) -> Result<Captured, SourceError> {
        if let Some(first) = self.pending.take() {
            return Ok(first);
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.error("capture stream already closed".into()));
            };
            let waited = if self.started {
                self.frame_timeout
            } else {
                FIRST_FRAME_TIMEOUT
            };
            let (data, meta) = match stream.next() {
                Ok(buffer) => buffer,
                Err(err) => {
                    let message = if err.kind() == io::ErrorKind::TimedOut {
                        format!(
                            "no picture from the camera for {:.1} s (hung?)",
                            waited.as_secs_f64()
                        )
                    } else {
                        io_error(&err)
                    };
                    return Err(self.error(message));
                }
            };
            if meta.flags.bits() & BUF_FLAG_ERROR != 0 {
                return Err(
                    self.error("the camera returned a buffer flagged as error (unplugged?)".into())
                );
            }
            let used = (meta.bytesused as usize).min(data.len());
            let capture = capture_time(meta);
            let converted = convert(
                &mut self.picture,
                &data[..used],
                &self.mode,
                self.stride,
                capture,
            );
            if !self.started {
                self.started = true;
                stream.set_timeout(self.frame_timeout);
            }
            match converted {
                Ok(Some(captured)) => {
                    self.last_good = Instant::now();
                    return Ok(captured);
                }
                Ok(None) => {}
                Err(message) => {
                    // A damaged picture now and then (USB hiccups) is skipped, not fatal.
                    self.bad_pictures += 1;
                    if self.bad_pictures == 1 || self.bad_pictures.is_multiple_of(100) {
                        warn!(camera = %self.what, %message, skipped = self.bad_pictures,
                              "skipping a picture the camera sent");
                    }
                    if self.last_good.elapsed() > self.frame_timeout {
                        return Err(self.error(format!(
                            "no usable picture for {:.1} s: {message}",
                            self.frame_timeout.as_secs_f64()
                        )));
                    }
                }
            }
        }
    }

    fn info(&self) -> SourceInfo {
        self.info.clone()
    }

    fn force_keyframe(&mut self) {
        if !self.info.keyframe_on_request {
            return;
        }
        if let Err(err) = device::force_keyframe(&self.device) {
            // The next GOP comes anyway; a camera that stops taking it is not worth failing.
            debug!(camera = %self.what, error = %io_error(&err), "cannot force a keyframe");
        }
    }
}

fn convert(
    picture: &mut Picture,
    data: &[u8],
    mode: &Mode,
    stride: usize,
    capture: CaptureTime,
) -> Result<Option<Captured>, String> {
    if data.is_empty() {
        return Ok(None);
    }
    let (width, height) = (mode.width, mode.height);
    let raw = |fill: &mut dyn FnMut(&mut [u8]) -> Result<(), String>| {
        let mut out = vec![0u8; RawFrame::i420_len(width, height)];
        fill(&mut out)?;
        Ok(Some(Captured::Raw(RawFrame {
            width,
            height,
            data: out,
            capture,
        })))
    };
    match picture {
        Picture::Yuyv => raw(&mut |out| convert::yuyv_to_i420(data, stride, width, height, out)),
        Picture::Nv12 => raw(&mut |out| convert::nv12_to_i420(data, stride, width, height, out)),
        Picture::Mjpeg(decoder) => {
            let decoded = raw(&mut |out| decoder.decode(data, width, height, out))?;
            Ok(decoded.map(|captured| match captured {
                Captured::Raw(frame) => Captured::Jpeg(frame, bytes::Bytes::copy_from_slice(data)),
                other => other,
            }))
        }
        Picture::H264(passthrough) => Ok(passthrough
            .access_unit(data, width, height, capture)
            .map(Captured::H264)),
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            contain_teardown(stream);
        }
    }
}

/// Stops streaming and unmaps the buffers. The v4l crate panics if that fails with anything but
/// ENODEV (a camera in a strange state); the capture thread must survive it to report why it
/// stopped.
fn contain_teardown(stream: Stream<'static>) {
    if std::panic::catch_unwind(AssertUnwindSafe(move || drop(stream))).is_err() {
        warn!("stopping the camera stream failed; the device is closed anyway");
    }
}

/// The buffer's timestamp (CLOCK_MONOTONIC, when the driver says so) as a capture time on both
/// our clocks; the time of dequeueing when it is missing or implausible.
fn capture_time(meta: &Metadata) -> CaptureTime {
    let now = CaptureTime::now();
    if meta.flags.bits() & TIMESTAMP_MASK != TIMESTAMP_MONOTONIC {
        return now;
    }
    let (Ok(sec), Ok(usec)) = (
        u64::try_from(meta.timestamp.sec),
        u32::try_from(meta.timestamp.usec),
    ) else {
        return now;
    };
    let stamped = Duration::from_secs(sec) + Duration::from_micros(u64::from(usec));
    match monotonic_now().checked_sub(stamped) {
        Some(age) if age < Duration::from_secs(1) => CaptureTime {
            wall: now.wall.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH),
            mono: now.mono.checked_sub(age).unwrap_or(now.mono),
        },
        _ => now,
    }
}

fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// What an errno from a camera means to the person reading the status page.
fn io_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENODEV) => "the camera is gone (ENODEV: unplugged or disconnected)".into(),
        Some(libc::EIO) => "camera I/O error (EIO)".into(),
        Some(libc::EPIPE) => "the camera stream broke (EPIPE)".into(),
        _ => err.to_string(),
    }
}

/// Why a device could not be opened, with the likely fix.
fn open_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT) => "no such device (camera unplugged?)".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "permission denied (run camportal as a member of the `video` group)".into()
        }
        Some(libc::EBUSY) => "busy: another program is using the camera".into(),
        _ => format!("cannot open: {}", io_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v4l::Timestamp;

    fn meta(flags: u32, at: Duration) -> Metadata {
        Metadata {
            bytesused: 0,
            flags: flags.into(),
            field: 0,
            timestamp: Timestamp::new(at.as_secs() as _, at.subsec_micros() as _),
            sequence: 0,
        }
    }

    #[test]
    fn buffer_timestamps_become_capture_times() {
        let age = Duration::from_millis(80);
        let before = Instant::now();
        let capture = capture_time(&meta(TIMESTAMP_MONOTONIC, monotonic_now() - age));
        let after = Instant::now();
        // Captured about 80 ms before it was dequeued, on the monotonic and the wall clock.
        assert!(capture.mono + age <= after + Duration::from_millis(2));
        assert!(capture.mono + age + Duration::from_millis(2) >= before);
        let wall_age = SystemTime::now().duration_since(capture.wall).unwrap();
        assert!(wall_age >= age && wall_age < age + Duration::from_secs(1));
    }

    #[test]
    fn implausible_timestamps_mean_now() {
        for (case, meta) in [
            // Not monotonic (e.g. copied from an output device).
            meta(0x4000, monotonic_now() - Duration::from_millis(500)),
            // Older than a second: not this picture's.
            meta(
                TIMESTAMP_MONOTONIC,
                monotonic_now() - Duration::from_secs(5),
            ),
            // In the future.
            meta(
                TIMESTAMP_MONOTONIC,
                monotonic_now() + Duration::from_secs(5),
            ),
        ]
        .iter()
        .enumerate()
        {
            let capture = capture_time(meta);
            assert!(
                capture.mono.elapsed() < Duration::from_millis(100),
                "case {case}"
            );
        }
    }

    #[test]
    fn errno_messages_say_what_happened() {
        let err = |n| io::Error::from_raw_os_error(n);
        assert!(io_error(&err(libc::ENODEV)).contains("gone"));
        assert!(io_error(&err(libc::EIO)).contains("EIO"));
        assert!(open_error(&err(libc::ENOENT)).contains("no such device"));
        assert!(open_error(&err(libc::EACCES)).contains("`video` group"));
        assert!(open_error(&err(libc::EBUSY)).contains("another program"));
    }
}
