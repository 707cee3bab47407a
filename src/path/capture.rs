//! The capture: runs a path's source on a thread of its own (a [`Worker`](super::worker)) and
//! puts each picture into the newest-wins hand-off to the encoder. A source error fails the
//! worker, and the path restarts it. Once the source is open the path is told what it opened;
//! its first picture ends the "camera offline" pictures and is followed by a keyframe request, so
//! viewers get a clean picture at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::info;

use super::broadcaster::Fanout;
use super::offline::Switch;
use super::worker::Work;
use crate::config::PathConfig;
use crate::handoff::Latest;
use crate::metrics::KeyframeReason;
use crate::source::{self, Captured, SourceError, SourceInfo};

pub(super) struct CaptureArgs {
    pub config: PathConfig,
    pub handoff: Arc<Latest<Captured>>,
    pub fanout: Arc<Fanout>,
    pub switch: Arc<Switch>,
    /// Told once the source is open, with what it opened.
    pub opened: Box<dyn FnOnce(SourceInfo) + Send>,
}

/// The capture thread's work.
pub(super) fn work(args: CaptureArgs) -> Work {
    Box::new(move |stop| {
        // Opening may block (a camera), so it happens on the thread, not in an actor.
        let mut source = source::open(&args.config, stop).map_err(|err| err.to_string())?;
        info!(path = %args.config.name, "capture started");
        let CaptureArgs {
            handoff,
            fanout,
            switch,
            opened,
            ..
        } = args;
        opened(source.info());
        run(source.as_mut(), &handoff, &fanout, &switch, stop).map_err(|err| err.to_string())
    })
}

fn run(
    source: &mut dyn source::Source,
    handoff: &Latest<Captured>,
    fanout: &Fanout,
    switch: &Switch,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        let captured = source.next()?;
        fanout.counters().captured();
        if first {
            first = false;
            switch.put_camera(handoff, captured);
            // After the put, so that no offline picture can take it: the keyframe is this
            // picture or, if the encoder already looked for a request, the next one.
            fanout.request_keyframe(KeyframeReason::Source);
        } else {
            handoff.put(captured);
        }
    }
    Ok(())
}
