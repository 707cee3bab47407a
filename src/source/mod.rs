//! Where a path's pictures come from. Every source runs on a thread of its own and blocks in
//! [`Source::next`]; the capture child moves what it yields into a newest-frame-wins hand-off.

pub mod file;
mod pacer;
pub mod testsrc;

use crate::config::{PathConfig, SourceConfig};
use crate::frame::{AccessUnit, RawFrame};

/// What a source yields: raw pictures to encode, or (cameras with H.264 on board, later)
/// pictures already encoded, which are passed through.
#[derive(Debug)]
pub enum Captured {
    Raw(RawFrame),
    H264(AccessUnit),
}

/// A source failed: the capture child stops with this error and its path restarts it with
/// backoff. `what` names the source (a device, a command) so the log and status API can say
/// which one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct SourceError {
    pub what: String,
    pub message: String,
}

pub trait Source: Send + 'static {
    /// Blocks until the next picture is ready; a source paces itself (a camera by its clock,
    /// the test pattern by its configured fps).
    fn next(&mut self) -> Result<Captured, SourceError>;
}

/// Opens the source a path is configured with.
pub fn open(config: &PathConfig) -> Result<Box<dyn Source>, SourceError> {
    let encoding = &config.encoding;
    match &config.source {
        SourceConfig::TestSrc => Ok(Box::new(testsrc::TestSrc::new(
            encoding.width,
            encoding.height,
            encoding.fps,
        ))),
        SourceConfig::File(file) => Ok(Box::new(file::FileSource::open(
            &file.path,
            encoding.width,
            encoding.height,
            encoding.fps,
        )?)),
    }
}

/// A short description of a path's source for logs and the status API.
pub fn describe(config: &PathConfig) -> String {
    match &config.source {
        SourceConfig::TestSrc => "testsrc".to_owned(),
        SourceConfig::File(file) => format!("file {}", file.path.display()),
    }
}
