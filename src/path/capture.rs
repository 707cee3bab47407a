//! The capture child: runs a path's source on a thread of its own and puts each picture into the
//! newest-wins hand-off to the encoder. A source error fails this actor, and the path restarts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::config::PathConfig;
use crate::handoff::Latest;
use crate::source::{self, Captured, SourceError};

pub enum CaptureMsg {
    Failed(SourceError),
}

pub struct CaptureArgs {
    pub config: PathConfig,
    pub handoff: Arc<Latest<Captured>>,
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
                    // Opening may block (a camera), so it happens here, not in the actor.
                    let result = source::open(&args.config)
                        .and_then(|mut source| run(source.as_mut(), &args.handoff, &stop));
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
            // The thread ends after its current `next()`; a source blocked for long (a hung
            // camera) must not hold up the actor, so it is joined in the background.
            tokio::task::spawn_blocking(move || {
                if thread.join().is_err() {
                    warn!("capture thread panicked");
                }
            });
        }
        Ok(())
    }
}

fn run(
    source: &mut dyn source::Source,
    handoff: &Latest<Captured>,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    while !stop.load(Ordering::Acquire) {
        handoff.put(source.next()?);
    }
    Ok(())
}
