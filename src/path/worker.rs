//! A path child that is a thread. Capture and encoding block (a camera read, openh264), so each
//! runs on a thread of its own, and an actor is its control side: it lives while the thread's
//! work runs, fails when the work fails or panics (so the path restarts it with backoff), and on
//! stop tells the thread to end and waits for it a bounded time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

/// What the thread does: runs until it fails or the flag says stop.
pub(super) type Work = Box<dyn FnOnce(&Arc<AtomicBool>) -> Result<(), String> + Send>;

pub(super) struct WorkerArgs {
    /// The thread's name (in `top -H`, panics and logs), e.g. `capture cam`.
    pub name: String,
    pub work: Work,
    /// How long stopping waits for the thread (it ends after its current step); zero: not at
    /// all.
    pub stop_wait: Duration,
}

pub(super) enum WorkerMsg {
    Failed(String),
}

pub(super) struct WorkerState {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stop_wait: Duration,
}

pub(super) struct Worker;

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let work = args.work;
            std::thread::Builder::new()
                .name(args.name.clone())
                .spawn(move || {
                    // A panic (a driver in a state a library did not expect) is a failure too.
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(&stop)))
                        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
                    if let Err(err) = result
                        && !stop.load(Ordering::Acquire)
                    {
                        let _ = myself.send_message(WorkerMsg::Failed(err));
                    }
                })?
        };
        Ok(WorkerState {
            name: args.name,
            stop,
            thread: Some(thread),
            stop_wait: args.stop_wait,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Failed(err) => Err(err.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop.store(true, Ordering::Release);
        let Some(thread) = state.thread.take() else {
            return Ok(());
        };
        let name = state.name.clone();
        let joined = tokio::task::spawn_blocking(move || {
            if thread.join().is_err() {
                warn!(thread = %name, "thread panicked while stopping");
            }
        });
        // A thread hung in a driver must not hold the path up: the join then finishes in the
        // background.
        if !state.stop_wait.is_zero()
            && tokio::time::timeout(state.stop_wait, joined).await.is_err()
        {
            warn!(thread = %state.name, "thread still busy after stop; it finishes on its own");
        }
        Ok(())
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(work: Work) -> ActorRef<WorkerMsg> {
        let args = WorkerArgs {
            name: "test worker".into(),
            work,
            stop_wait: Duration::from_secs(1),
        };
        Actor::spawn(None, Worker, args).await.expect("spawn").0
    }

    #[tokio::test]
    async fn a_failing_or_panicking_thread_fails_its_actor() {
        for work in [
            Box::new(|_: &Arc<AtomicBool>| Err("camera gone".to_owned())) as Work,
            Box::new(|_: &Arc<AtomicBool>| -> Result<(), String> { panic!("driver state") })
                as Work,
        ] {
            let actor = run(work).await;
            let status =
                tokio::time::timeout(Duration::from_secs(5), actor.get_cell().wait(None)).await;
            assert!(status.is_ok(), "the actor ends when its thread fails");
        }
    }

    #[tokio::test]
    async fn stopping_ends_the_thread() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let actor = run(Box::new(move |stop: &Arc<AtomicBool>| {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = done_tx.send(());
            Ok(())
        }))
        .await;
        actor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await
            .expect("stops");
        done_rx
            .recv_timeout(Duration::from_secs(1))
            .expect("the thread saw the stop");
    }
}
