//! Encode once, fan out: each encoded picture is packetized into RTP payloads once and shared by
//! reference with every reader (WHEP viewer, RTSP session) through a bounded broadcast ring. The
//! encoder never waits: a reader that falls more than [`RING_FRAMES`] behind loses the oldest
//! frames (it sees `Lagged`), skips to the next keyframe and asks for one. The raw pictures go
//! to JPEG readers the same way, newest wins, only while someone asks. The broadcaster actor is
//! the control side: it alone decides when the encoder forces a keyframe, and publishes the
//! reader counts.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::directory::Directory;
use crate::bandwidth::Estimates;
use crate::frame::{AccessUnit, CaptureTime, RawFrame};
use crate::jpeg::JpegCache;
use crate::keyframe::{Decision, KeyframePolicy};
use crate::metrics::{KeyframeReason, PathCounters};
use crate::rtp::abs_capture_time;
use crate::rtp::h264::{self, Packetizer};
use crate::status::{ReaderKind, StatusBoard};

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
    /// The source's own H.264, sent as it came: its rate cannot follow the viewers.
    pub passed_through: bool,
}

/// The stream's SPS and PPS (NAL units without start codes), for an RTSP DESCRIBE.
#[derive(Clone, Debug)]
pub(crate) struct ParameterSets {
    pub sps: Bytes,
    pub pps: Bytes,
}

/// The data-plane half, shared by the encoder (publishes) and the broadcaster actor.
pub(crate) struct Fanout {
    frames: broadcast::Sender<Arc<VideoFrame>>,
    packetizer: Mutex<Packetizer>,
    /// A keyframe is wanted, and why ([`KeyframeReason::code`]; 0: none).
    force_keyframe: AtomicU8,
    /// The source makes keyframes of its own H.264 when asked (set by the capture).
    source_keyframes: AtomicBool,
    /// A keyframe is wanted from the source itself (taken by the capture).
    source_keyframe_wanted: AtomicBool,
    /// The newest raw picture, while someone (a snapshot, an MJPEG reader) watches it.
    pictures: watch::Sender<Option<Arc<RawFrame>>>,
    /// The last picture compressed to JPEG, for all JPEG readers.
    jpeg: Arc<JpegCache>,
    /// The last keyframe's SPS and PPS.
    parameter_sets: Mutex<Option<ParameterSets>>,
    /// Readers by kind (indexed by `ReaderKind as usize`). Apart from the fan-out, so that a
    /// reader's count does not keep a replaced path's fan-out (and its channels) alive.
    readers: Arc<ReaderCounts>,
    /// What `/metrics` shows of the path; readers add what they send.
    counters: Arc<PathCounters>,
    /// The broadcaster running now, which publishes reader counts (it may have been restarted
    /// since a reader joined).
    current: Current,
    /// The slowest viewer's bandwidth estimate and when it was taken, for the encoder.
    slowest: Mutex<Option<(u64, Instant)>>,
    /// The bit rate the encoder aims at now (0 until it runs).
    encoder_bitrate: AtomicU32,
}

type Current = Arc<Mutex<Option<ActorRef<BroadcasterMsg>>>>;

/// Tells the current broadcaster that the reader counts changed.
fn recount(current: &Current) {
    if let Some(actor) = &*current.lock().unwrap_or_else(PoisonError::into_inner) {
        let _ = actor.cast(BroadcasterMsg::Recount);
    }
}

type ReaderCounts = [AtomicUsize; ReaderKind::COUNT];

impl Default for Fanout {
    fn default() -> Self {
        Self {
            frames: broadcast::channel(RING_FRAMES).0,
            packetizer: Mutex::new(Packetizer::default()),
            force_keyframe: AtomicU8::new(0),
            source_keyframes: AtomicBool::new(false),
            source_keyframe_wanted: AtomicBool::new(false),
            pictures: watch::Sender::new(None),
            jpeg: Arc::default(),
            parameter_sets: Mutex::new(None),
            readers: Arc::default(),
            counters: Arc::default(),
            current: Arc::default(),
            slowest: Mutex::new(None),
            encoder_bitrate: AtomicU32::new(0),
        }
    }
}

impl Fanout {
    /// Packetizes and sends one picture to every current reader.
    pub(super) fn publish(&self, unit: &AccessUnit, passed_through: bool) -> Result<(), String> {
        let payloads = self
            .packetizer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .packetize(&unit.data)?;
        if payloads.is_empty() {
            return Ok(());
        }
        self.counters
            .ready_to_send_after(unit.capture.mono.elapsed());
        // No receivers is normal: the last viewer may have left since the encoder looked.
        let _ = self.frames.send(Arc::new(VideoFrame {
            keyframe: unit.keyframe,
            capture: unit.capture,
            abs_capture_time: Bytes::copy_from_slice(&abs_capture_time::payload(unit.capture.wall)),
            payloads,
            passed_through,
        }));
        Ok(())
    }

    /// Keeps the SPS and PPS of a keyframe, for RTSP's DESCRIBE and WHEP's answer (the profile
    /// sent). The encoder thread calls it for every keyframe it has, published or not (a
    /// camera's own H.264 nobody watches yet).
    pub(super) fn remember_parameter_sets(&self, annexb: &[u8]) {
        let find = |kind| {
            h264::nal_units(annexb)
                .find(|nal| h264::nal_type(nal) == kind)
                .map(Bytes::copy_from_slice)
        };
        if let (Some(sps), Some(pps)) = (find(h264::NAL_SPS), find(h264::NAL_PPS)) {
            *self
                .parameter_sets
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(ParameterSets { sps, pps });
        }
    }

    /// The SPS and PPS of the last keyframe sent, if there was one.
    pub(crate) fn parameter_sets(&self) -> Option<ParameterSets> {
        self.parameter_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Readers of the encoded stream: while there is one, the encoder encodes.
    pub(super) fn viewers(&self) -> usize {
        self.frames.receiver_count()
    }

    /// Offers a raw picture to whoever watches pictures; with nobody watching, none is kept.
    pub(super) fn offer_picture(&self, picture: &Arc<RawFrame>) {
        if self.pictures.receiver_count() > 0 {
            self.pictures.send_replace(Some(Arc::clone(picture)));
        } else if self.pictures.borrow().is_some() {
            self.pictures.send_replace(None);
        }
    }

    /// The camera's own JPEG of `picture`: JPEG readers get it instead of a new compression.
    pub(super) fn offer_camera_jpeg(&self, picture: &RawFrame, jpeg: Bytes) {
        self.jpeg.prime(picture, jpeg);
    }

    /// Drops the newest raw picture (an on-demand path going idle).
    pub(super) fn forget_picture(&self) {
        self.pictures.send_replace(None);
    }

    /// Whether anyone reads raw pictures now.
    pub(super) fn pictures_wanted(&self) -> bool {
        self.pictures.receiver_count() > 0
    }

    fn reader_counts(&self) -> [usize; ReaderKind::COUNT] {
        std::array::from_fn(|kind| self.readers[kind].load(Ordering::Relaxed))
    }

    /// The encoder asks before each picture whether it must be a keyframe, and why.
    pub(super) fn take_keyframe_request(&self) -> Option<KeyframeReason> {
        KeyframeReason::from_code(self.force_keyframe.swap(0, Ordering::AcqRel))
    }

    /// The next picture is encoded as a keyframe (the broadcaster's policy, and a camera that
    /// has just come back).
    pub(super) fn request_keyframe(&self, reason: KeyframeReason) {
        self.force_keyframe.store(reason.code(), Ordering::Release);
    }

    /// The capture says whether its source makes keyframes when asked.
    pub(super) fn set_source_keyframes(&self, on_request: bool) {
        self.source_keyframes.store(on_request, Ordering::Release);
        self.source_keyframe_wanted.store(false, Ordering::Release);
    }

    pub(super) fn source_keyframes(&self) -> bool {
        self.source_keyframes.load(Ordering::Acquire)
    }

    /// A passed-through stream needs a keyframe: the source is asked for one, if it can make
    /// one. Returns whether it can.
    pub(super) fn request_source_keyframe(&self) -> bool {
        let can = self.source_keyframes();
        if can {
            self.source_keyframe_wanted.store(true, Ordering::Release);
        }
        can
    }

    /// The capture asks after each picture whether to ask its source for a keyframe.
    pub(super) fn take_source_keyframe_request(&self) -> bool {
        self.source_keyframe_wanted.swap(false, Ordering::AcqRel)
    }

    /// The slowest viewer's bandwidth estimate, unless it is stale.
    pub(super) fn slowest_estimate(&self) -> Option<u64> {
        let slowest = *self.slowest.lock().unwrap_or_else(PoisonError::into_inner);
        slowest
            .filter(|(_, at)| at.elapsed() < crate::bandwidth::STALE_AFTER)
            .map(|(bps, _)| bps)
    }

    /// The encoder says what it aims at.
    pub(super) fn set_encoder_bitrate(&self, bps: u32) {
        self.encoder_bitrate.store(bps, Ordering::Relaxed);
    }

    pub(super) fn counters(&self) -> &Arc<PathCounters> {
        &self.counters
    }
}

pub(crate) enum BroadcasterMsg {
    /// A reader of the encoded stream joined: it needs a keyframe soon.
    Joined,
    /// The reader counts changed.
    Recount,
    /// A reader lost a keyframe's worth of data (PLI/FIR, or it lagged).
    KeyframeWanted(KeyframeReason),
    /// The merged keyframe request scheduled by the policy is due.
    ScheduledKeyframe,
    /// A WebRTC viewer's bandwidth estimate, in bit/s.
    Estimate { reader: u64, bps: u64 },
}

/// A running path as readers find it in the directory: its broadcaster and its data plane.
/// Readers take what they need from it and do not keep it: a path that is replaced must be
/// able to drop its channels, which is how its readers learn that it went away.
#[derive(Clone)]
pub(crate) struct Joinable {
    pub actor: ActorRef<BroadcasterMsg>,
    fanout: Arc<Fanout>,
}

/// One reader counted on a path, until dropped (also when its task is cancelled or panics).
pub(crate) struct Counted {
    readers: Arc<ReaderCounts>,
    current: Current,
    kind: ReaderKind,
    counters: Arc<PathCounters>,
}

impl Counted {
    /// What the reader sent, for the path's outbound traffic.
    pub(crate) fn sent(&self, bytes: usize, packets: u64) {
        self.counters.sent.add(bytes, packets);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.readers[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
        recount(&self.current);
    }
}

impl Joinable {
    /// Counts a reader of `kind` (e.g. an MJPEG client, which reads pictures, not frames).
    pub(crate) fn count(&self, kind: ReaderKind) -> Counted {
        self.fanout.readers[kind as usize].fetch_add(1, Ordering::Relaxed);
        let _ = self.actor.cast(BroadcasterMsg::Recount);
        Counted {
            readers: Arc::clone(&self.fanout.readers),
            current: Arc::clone(&self.fanout.current),
            kind,
            counters: Arc::clone(&self.fanout.counters),
        }
    }

    /// Joins the encoded stream: frames from now on, and a keyframe soon. Synchronous, so a
    /// reader's task cannot be cancelled half-way through it.
    pub(crate) fn join(&self, kind: ReaderKind) -> (broadcast::Receiver<Arc<VideoFrame>>, Counted) {
        let frames = self.fanout.frames.subscribe();
        let counted = self.count(kind);
        let _ = self.actor.cast(BroadcasterMsg::Joined);
        (frames, counted)
    }

    /// The newest raw picture from now on (the current one, if someone watched already), and
    /// where its JPEG is made once for all readers.
    pub(crate) fn pictures(&self) -> (watch::Receiver<Option<Arc<RawFrame>>>, Arc<JpegCache>) {
        (
            self.fanout.pictures.subscribe(),
            Arc::clone(&self.fanout.jpeg),
        )
    }

    pub(crate) fn parameter_sets(&self) -> Option<ParameterSets> {
        self.fanout.parameter_sets()
    }
}

pub(super) struct BroadcasterArgs {
    pub path: String,
    pub fanout: Arc<Fanout>,
    pub board: StatusBoard,
    /// Viewers find this broadcaster here while it runs.
    pub directory: Directory,
    /// Told the number of readers of every kind whenever it changes (an on-demand path starts
    /// and stops its source by it).
    pub readers_changed: Box<dyn Fn(usize) + Send + Sync>,
}

pub(super) struct BroadcasterState {
    args: BroadcasterArgs,
    policy: KeyframePolicy,
    /// Why the scheduled keyframe is wanted (the latest request merged into it).
    scheduled_reason: KeyframeReason,
    /// The WebRTC viewers' latest bandwidth estimates.
    estimates: Estimates,
    /// The total last told through `readers_changed`.
    told: Option<usize>,
}

impl BroadcasterState {
    fn want_keyframe(&mut self, myself: &ActorRef<BroadcasterMsg>, reason: KeyframeReason) {
        match self.policy.request(Instant::now()) {
            Decision::Now => self.args.fanout.request_keyframe(reason),
            Decision::After(delay) => {
                self.scheduled_reason = reason;
                myself.send_after(delay, || BroadcasterMsg::ScheduledKeyframe);
            }
            Decision::Merged => self.scheduled_reason = reason,
        }
    }

    fn publish_reader_counts(&mut self) {
        let counts = self.args.fanout.reader_counts();
        self.args.board.update_path(&self.args.path, |status| {
            status.set_readers(counts);
        });
        let total = counts.iter().sum();
        if self.told != Some(total) {
            self.told = Some(total);
            (self.args.readers_changed)(total);
        }
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
            scheduled_reason: KeyframeReason::Join,
            estimates: Estimates::default(),
            told: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        *state
            .args
            .fanout
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(myself.clone());
        // Readers may have come or gone while no broadcaster ran (a restart).
        state.publish_reader_counts();
        let joinable = Joinable {
            actor: myself,
            fanout: Arc::clone(&state.args.fanout),
        };
        state.args.directory.enter(&state.args.path, joinable);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BroadcasterMsg::Joined => {
                state.want_keyframe(&myself, KeyframeReason::Join);
                state.publish_reader_counts();
            }
            BroadcasterMsg::Recount => state.publish_reader_counts(),
            BroadcasterMsg::KeyframeWanted(reason) => state.want_keyframe(&myself, reason),
            BroadcasterMsg::Estimate { reader, bps } => {
                let now = Instant::now();
                state.estimates.report(reader, bps, now);
                let slowest = state.estimates.slowest(now);
                let fanout = &state.args.fanout;
                *fanout
                    .slowest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = slowest.map(|bps| (bps, now));
                let target = fanout.encoder_bitrate.load(Ordering::Relaxed);
                state.args.board.update_path(&state.args.path, |status| {
                    status.bandwidth_estimate_kbps =
                        slowest.map(|bps| u32::try_from(bps / 1000).unwrap_or(u32::MAX));
                    if target > 0 {
                        status.target_bitrate_kbps = target / 1000;
                    }
                });
            }
            BroadcasterMsg::ScheduledKeyframe => {
                if state.policy.fire(Instant::now()) {
                    state.args.fanout.request_keyframe(state.scheduled_reason);
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
