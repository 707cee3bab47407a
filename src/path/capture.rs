//! The capture child: runs a path's source on a thread of its own and puts each picture into the
//! newest-wins hand-off to the encoder. A source error fails this actor, and the path restarts it.
//! Once the source is open the path is told what it opened; its first picture ends the "camera
//! offline" pictures and is followed by a keyframe request, so viewers get a clean picture at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::config::PathConfig;
use crate::handoff::Latest;
use crate::path::PathMsg;
use crate::path::broadcaster::Fanout;
use crate::path::offline::Switch;
use crate::source::{self, Captured, SourceError};

/// How long stopping the capture waits for its thread (see `post_stop`).
const CAPTURE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub enum CaptureMsg {
    Failed(SourceError),
}

pub struct CaptureArgs {
    pub config: PathConfig,
    pub handoff: Arc<Latest<Captured>>,
    pub fanout: Arc<Fanout>,
    pub switch: Arc<Switch>,
    /// Told when the source is open, and with what.
    pub path: ActorRef<PathMsg>,
}

pub struct CaptureState {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct Capture;

impl Actor for Capture {
    type Msg = CaptureMsg;
    type State = CaptureState;
    type Arguments = CaptureArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CaptureArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = args.config.name.to_string();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("capture {path}"))
                .spawn(move || {
                    // Opening may block (a camera), so it happens here, not in the actor. A panic
                    // (a driver in a state a library did not expect) is reported like an error.
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let mut source = source::open(&args.config)?;
                        let _ = args
                            .path
                            .send_message(PathMsg::CaptureOpened(source.info()));
                        run(source.as_mut(), &args, &stop)
                    }))
                    .unwrap_or_else(|panic| {
                        Err(SourceError {
                            what: source::describe(&args.config),
                            message: format!("capture panicked: {}", panic_text(&panic)),
                        })
                    });
                    if let Err(err) = result
                        && !stop.load(Ordering::Acquire)
                    {
                        let _ = myself.send_message(CaptureMsg::Failed(err));
                    }
                })?
        };
        info!(%path, "capture started");
        Ok(CaptureState {
            stop,
            thread: Some(thread),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CaptureMsg::Failed(err) => Err(Box::new(err)),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.store(true, Ordering::Release);
        if let Some(thread) = state.thread.take() {
            let joined = tokio::task::spawn_blocking(move || {
                if thread.join().is_err() {
                    warn!("capture thread panicked");
                }
            });
            // The thread ends after its current `next()`. Waiting for it frees the camera for a
            // path restarted with a new configuration (a second open would find it busy); a
            // camera hung in the driver must not hold the path up, so the wait is bounded and
            // the join finishes in the background.
            if tokio::time::timeout(CAPTURE_STOP_WAIT, joined)
                .await
                .is_err()
            {
                warn!("capture thread still busy after stop; it finishes on its own");
            }
        }
        Ok(())
    }
}

fn run(
    source: &mut dyn source::Source,
    args: &CaptureArgs,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        let captured = source.next()?;
        if first {
            first = false;
            args.switch.put_camera(&args.handoff, captured);
            // After the put, so that no offline picture can take it: the keyframe is this
            // picture or, if the encoder already looked for a request, the next one.
            args.fanout.request_keyframe();
        } else {
            args.handoff.put(captured);
        }
    }
    Ok(())
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
