//! Where a path's pictures come from. Every source runs on a thread of its own and blocks in
//! [`Source::next`]; the capture child moves what it yields into a newest-frame-wins hand-off.

pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod font;
mod pacer;
pub(crate) mod stream;
pub(crate) mod testsrc;
pub(crate) mod v4l2;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{DeviceSelector, PathConfig, SourceConfig};
use crate::frame::{AccessUnit, RawFrame};

/// What a source yields: raw pictures to encode (from an MJPEG camera, with its JPEG), or
/// pictures a camera already encoded in H.264, which are passed through.
#[derive(Debug)]
pub(crate) enum Captured {
    Raw(RawFrame),
    /// A camera's MJPEG picture: decoded for the encoder, and its own JPEG, which snapshots
    /// and MJPEG readers get as it is (no second compression).
    Jpeg(RawFrame, bytes::Bytes),
    H264(AccessUnit),
}

/// A source failed: the capture child stops with this error and its path restarts it with
/// backoff. `what` names the source (a device, a command) so the log and status API can say
/// which one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub(crate) struct SourceError {
    pub what: String,
    pub message: String,
}

/// What an opened source says about itself, for the status API: which camera, in which mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourceInfo {
    pub camera: Option<String>,
    pub format: Option<String>,
    /// The source's own H.264 gets a keyframe when asked ([`Source::force_keyframe`]); without
    /// it, a new viewer of a passed-through stream waits for the source's next one.
    pub keyframe_on_request: bool,
}

pub(crate) trait Source: Send + 'static {
    /// Blocks until the next picture is ready; a source paces itself (a camera by its clock,
    /// the test pattern by its configured fps).
    fn next(&mut self) -> Result<Captured, SourceError>;

    fn info(&self) -> SourceInfo {
        SourceInfo::default()
    }

    /// Asks a source that sends its own H.264 for a keyframe soon (see
    /// [`SourceInfo::keyframe_on_request`]); the others ignore it.
    fn force_keyframe(&mut self) {}
}

/// Opens the source a path is configured with. `stop` is the capture thread's stop flag, for a
/// source whose `next` may wait long (a program's output).
pub(crate) fn open(
    config: &PathConfig,
    stop: &Arc<AtomicBool>,
) -> Result<Box<dyn Source>, SourceError> {
    let encoding = &config.encoding;
    match &config.source {
        SourceConfig::TestSrc => Ok(Box::new(testsrc::TestSrc::new(
            encoding.width,
            encoding.height,
            encoding.fps,
        ))),
        SourceConfig::V4l2(v4l2) => Ok(Box::new(v4l2::V4l2Source::open(v4l2, encoding)?)),
        SourceConfig::File(file) => file::open(
            &file.path,
            file.format,
            encoding.width,
            encoding.height,
            encoding.fps,
        ),
        SourceConfig::Exec(exec) => Ok(Box::new(exec::ExecSource::open(
            config.name.as_str(),
            exec,
            encoding,
            Arc::clone(stop),
        )?)),
    }
}

/// A short description of a path's source for logs and the status API.
pub(crate) fn describe(config: &PathConfig) -> String {
    match &config.source {
        SourceConfig::TestSrc => "testsrc".to_owned(),
        SourceConfig::V4l2(v4l2) => format!("v4l2 {}", describe_device(&v4l2.device)),
        SourceConfig::File(file) => format!("file {}", file.path.display()),
        SourceConfig::Exec(exec) => format!("exec {}", exec::program_name(&exec.command)),
    }
}

/// `/dev/video0`, or `card "HD Webcam C270", usb 046d:0825`.
pub(crate) fn describe_device(selector: &DeviceSelector) -> String {
    match selector {
        DeviceSelector::Path(path) => path.display().to_string(),
        DeviceSelector::Match(wanted) => v4l2::device::describe_match(wanted),
    }
}
