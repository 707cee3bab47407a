//! Encode once, fan out: each encoded picture is packetized into RTP payloads once and shared by
//! reference with every viewer through a bounded broadcast ring. The encoder never waits: a viewer
//! that falls more than [`RING_FRAMES`] behind loses the oldest frames (it sees `Lagged`), skips
//! to the next keyframe and asks for one. The broadcaster actor is the control side: viewers join
//! and ask for keyframes through it, and it alone decides when the encoder forces one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::directory::Directory;
use crate::frame::{AccessUnit, CaptureTime};
use crate::keyframe::{Decision, KeyframePolicy};
use crate::rtp::abs_capture_time;
use crate::rtp::h264::Packetizer;
use crate::status::StatusBoard;

/// Frames a viewer may fall behind before it starts losing them (about 250 ms at 30 fps).
pub(super) const RING_FRAMES: usize = 8;
/// Keyframe requests closer together than this are merged (see `keyframe.rs`).
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(300);

/// One encoded picture, packetized once for all viewers.
#[derive(Debug)]
pub(crate) struct VideoFrame {
    pub keyframe: bool,
    pub capture: CaptureTime,
    /// The `abs-capture-time` header extension's payload for this picture.
    pub abs_capture_time: Bytes,
    /// RTP payloads in order; the last one carries the marker bit.
    pub payloads: Vec<Bytes>,
}

/// The data-plane half, shared by the encoder (publishes) and the broadcaster actor.
pub(super) struct Fanout {
    frames: broadcast::Sender<Arc<VideoFrame>>,
    packetizer: Mutex<Packetizer>,
    force_keyframe: AtomicBool,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            frames: broadcast::channel(RING_FRAMES).0,
            packetizer: Mutex::new(Packetizer::default()),
            force_keyframe: AtomicBool::new(false),
        }
    }
}

impl Fanout {
    /// Packetizes and sends one picture to every current viewer.
    pub(super) fn publish(&self, unit: &AccessUnit) -> Result<(), String> {
        let payloads = self
            .packetizer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .packetize(&unit.data)?;
        if payloads.is_empty() {
            return Ok(());
        }
        // No receivers is normal: the last viewer may have left since the encoder looked.
        let _ = self.frames.send(Arc::new(VideoFrame {
            keyframe: unit.keyframe,
            capture: unit.capture,
            abs_capture_time: Bytes::copy_from_slice(&abs_capture_time::payload(unit.capture.wall)),
            payloads,
        }));
        Ok(())
    }

    pub(super) fn viewers(&self) -> usize {
        self.frames.receiver_count()
    }

    /// The encoder asks before each picture whether it must be a keyframe.
    pub(super) fn take_keyframe_request(&self) -> bool {
        self.force_keyframe.swap(false, Ordering::AcqRel)
    }

    /// The next picture is encoded as a keyframe (the broadcaster's policy, and a camera that
    /// has just come back).
    pub(super) fn request_keyframe(&self) {
        self.force_keyframe.store(true, Ordering::Release);
    }
}

pub(crate) enum BroadcasterMsg {
    /// A viewer wants frames; it gets a receiver and a keyframe soon.
    Join(RpcReplyPort<broadcast::Receiver<Arc<VideoFrame>>>),
    /// A viewer left; only the viewer count changes.
    Left,
    /// A viewer lost a keyframe's worth of data (PLI/FIR, or it lagged).
    KeyframeWanted,
    /// The merged keyframe request scheduled by the policy is due.
    ScheduledKeyframe,
}

pub(super) struct BroadcasterArgs {
    pub path: String,
    pub fanout: Arc<Fanout>,
    pub board: StatusBoard,
    /// Viewers find this broadcaster here while it runs.
    pub directory: Directory,
}

pub(super) struct BroadcasterState {
    args: BroadcasterArgs,
    policy: KeyframePolicy,
}

impl BroadcasterState {
    fn want_keyframe(&mut self, myself: &ActorRef<BroadcasterMsg>) {
        match self.policy.request(Instant::now()) {
            Decision::Now => self.args.fanout.request_keyframe(),
            Decision::After(delay) => {
                myself.send_after(delay, || BroadcasterMsg::ScheduledKeyframe);
            }
            Decision::Merged => {}
        }
    }

    fn publish_viewer_count(&self) {
        let viewers = self.args.fanout.viewers();
        self.args
            .board
            .update_path(&self.args.path, |status| status.viewers = viewers);
    }
}

pub(super) struct Broadcaster;

impl Actor for Broadcaster {
    type Msg = BroadcasterMsg;
    type State = BroadcasterState;
    type Arguments = BroadcasterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: BroadcasterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(BroadcasterState {
            args,
            policy: KeyframePolicy::new(KEYFRAME_MIN_INTERVAL),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.directory.enter(&state.args.path, myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BroadcasterMsg::Join(reply) => {
                let receiver = state.args.fanout.frames.subscribe();
                if reply.send(receiver).is_err() {
                    debug!(path = %state.args.path, "viewer left before joining");
                }
                state.want_keyframe(&myself);
                state.publish_viewer_count();
            }
            BroadcasterMsg::Left => state.publish_viewer_count(),
            BroadcasterMsg::KeyframeWanted => state.want_keyframe(&myself),
            BroadcasterMsg::ScheduledKeyframe => {
                if state.policy.fire(Instant::now()) {
                    state.args.fanout.request_keyframe();
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .args
            .directory
            .leave(&state.args.path, myself.get_id());
        if state.args.fanout.viewers() > 0 {
            warn!(path = %state.args.path, "broadcaster stopped with viewers attached");
        }
        Ok(())
    }
}
