//! The capture: runs a path's source on a thread of its own (a [`Worker`](super::worker)) and
//! puts each picture into the newest-wins hand-off to the encoder. A source error fails the
//! worker, and the path restarts it. Once the source is open the path is told what it opened;
//! its first picture ends the "camera offline" pictures and is followed by a keyframe request, so
//! viewers get a clean picture at once. A source that passes its own H.264 through and can make
//! keyframes on request is asked here, on its own thread, when the encoder thread says so.

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
        let info = source.info();
        fanout.set_source_keyframes(info.keyframe_on_request);
        opened(info);
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
        if fanout.take_source_keyframe_request() {
            source.force_keyframe();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{CaptureTime, RawFrame};

    /// Stands in for a camera: ten pictures, then the stop flag; a keyframe is requested after
    /// the fifth (a viewer joining mid-stream). Counts how often it is asked for one.
    struct Camera {
        pictures: u32,
        forced: u32,
        stop: Arc<AtomicBool>,
        fanout: Arc<Fanout>,
    }

    impl source::Source for Camera {
        fn next(&mut self) -> Result<Captured, SourceError> {
            self.pictures += 1;
            match self.pictures {
                5 => {
                    self.fanout.request_source_keyframe();
                }
                10 => self.stop.store(true, Ordering::Release),
                _ => {}
            }
            Ok(Captured::Raw(RawFrame {
                width: 2,
                height: 2,
                data: vec![0; 6],
                capture: CaptureTime::now(),
            }))
        }

        fn force_keyframe(&mut self) {
            self.forced += 1;
        }
    }

    fn forced(on_request: bool) -> u32 {
        let fanout = Arc::new(Fanout::default());
        fanout.set_source_keyframes(on_request);
        let mut camera = Camera {
            pictures: 0,
            forced: 0,
            stop: Arc::new(AtomicBool::new(false)),
            fanout: Arc::clone(&fanout),
        };
        let (handoff, switch, stop) = (
            Latest::default(),
            Switch::default(),
            Arc::clone(&camera.stop),
        );
        run(&mut camera, &handoff, &fanout, &switch, &stop).expect("runs");
        camera.forced
    }

    #[test]
    fn a_keyframe_request_reaches_a_source_that_makes_them_once() {
        assert_eq!(forced(true), 1);
    }

    #[test]
    fn a_source_that_cannot_make_keyframes_is_not_asked() {
        assert_eq!(forced(false), 0);
        let fanout = Fanout::default();
        assert!(!fanout.request_source_keyframe(), "says it cannot");
        assert!(!fanout.take_source_keyframe_request());
    }
}
