//! The encoder: takes the newest picture from the hand-off, encodes it with openh264 on a thread
//! of its own (a [`Worker`](super::worker); forcing a keyframe when the broadcaster asks) and
//! publishes it to the fan-out. Pictures the camera already encoded are passed through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info};

use super::broadcaster::Fanout;
use super::passthrough::PassthroughPictures;
use super::worker::Work;
use crate::bandwidth;
use crate::config::EncodingConfig;
use crate::encoder::{Encoder, EncoderSettings};
use crate::frame::{AccessUnit, RawFrame};
use crate::handoff::{Latest, Taken};
use crate::metrics::KeyframeReason;
use crate::source::Captured;
use crate::status::StatusBoard;

/// How often a thread with nothing to do checks whether it must stop.
const IDLE_POLL: Duration = Duration::from_millis(200);

pub(super) struct EncodeArgs {
    pub path: String,
    /// The path's encoding settings; a new value (a config reload) is applied live.
    pub encoding: watch::Receiver<EncodingConfig>,
    pub handoff: Arc<Latest<Captured>>,
    pub fanout: Arc<Fanout>,
    /// Where a passed-through source's keyframe interval is shown.
    pub board: StatusBoard,
}

/// The encoder thread's work.
pub(super) fn work(args: EncodeArgs) -> Work {
    Box::new(move |stop| run(&args, stop))
}

fn keyframe_frames(encoding: &EncodingConfig) -> u32 {
    (encoding.keyframe_interval.as_secs_f64() * f64::from(encoding.fps))
        .round()
        .max(1.0) as u32
}

fn settings_for(encoding: &EncodingConfig, frame: &RawFrame) -> EncoderSettings {
    let keyframe_frames = keyframe_frames(encoding);
    EncoderSettings {
        // The picture decides the size: a camera may deliver another size than configured.
        width: frame.width,
        height: frame.height,
        fps: encoding.fps,
        bitrate_bps: encoding.bitrate_bps,
        keyframe_interval_frames: keyframe_frames,
    }
}

/// Applies a reloaded configuration's rate settings to the running encoder: no restart, no
/// keyframe. (Anything else that changed restarts the whole path; see `config::classify`.)
fn apply_live(path: &str, encoder: &mut Encoder, encoding: &EncodingConfig) -> Result<(), String> {
    let fail = |err| format!("path {path}: cannot apply the new encoding settings: {err}");
    if encoder.settings().bitrate_bps != encoding.bitrate_bps {
        encoder.set_bitrate(encoding.bitrate_bps).map_err(fail)?;
    }
    let frames = keyframe_frames(encoding);
    if encoder.settings().keyframe_interval_frames != frames {
        encoder.set_keyframe_interval(frames).map_err(fail)?;
    }
    info!(
        path,
        bitrate = encoding.bitrate_bps,
        keyframe_interval_frames = frames,
        "encoder settings updated live"
    );
    Ok(())
}

/// Retunes the encoder to the slowest viewer's bandwidth (see `bandwidth.rs`).
fn follow_bandwidth(
    path: &str,
    encoder: &mut Encoder,
    encoding: &EncodingConfig,
    fanout: &Fanout,
) -> Result<(), String> {
    let estimate = fanout
        .slowest_estimate()
        .filter(|_| encoding.adaptive_bitrate);
    let wanted = bandwidth::target(estimate, encoding.bitrate_bps, encoding.min_bitrate_bps);
    let current = encoder.settings().bitrate_bps;
    if bandwidth::worth_changing(current, wanted, encoding.bitrate_bps) {
        encoder
            .set_bitrate(wanted)
            .map_err(|err| format!("path {path}: cannot set the bit rate: {err}"))?;
        // A keyframe costs several pictures' worth of bits in one burst, which a thin link's
        // buffer may not hold: fewer of them while the rate is down (viewers that join or lose
        // a picture still get one at once).
        let frames =
            bandwidth::keyframe_interval(keyframe_frames(encoding), encoding.bitrate_bps, wanted);
        if encoder.settings().keyframe_interval_frames != frames {
            encoder
                .set_keyframe_interval(frames)
                .map_err(|err| format!("path {path}: cannot set the keyframe interval: {err}"))?;
        }
        debug!(
            path,
            from = current,
            to = wanted,
            keyframe_interval_frames = frames,
            "encoder follows the viewers' bandwidth"
        );
    }
    fanout.set_encoder_bitrate(encoder.settings().bitrate_bps);
    Ok(())
}

/// Which pictures are encoded while the rate is far down (`bandwidth::picture_step`).
struct PictureStep {
    step: u32,
    seen: u64,
}

impl PictureStep {
    fn new() -> PictureStep {
        PictureStep { step: 1, seen: 0 }
    }

    /// Whether to encode this picture, at the encoder's bitrate against the `configured` one
    /// (a keyframe that is asked for always is); tells rate control when the step changes.
    fn encode(
        &mut self,
        path: &str,
        encoder: &mut Encoder,
        configured: u32,
        asked: bool,
    ) -> Result<bool, String> {
        let step = bandwidth::picture_step(configured, encoder.settings().bitrate_bps, self.step);
        if step != self.step {
            let fps = encoder.settings().fps as f32 / step as f32;
            encoder
                .set_frame_rate(fps)
                .map_err(|err| format!("path {path}: cannot set the frame rate: {err}"))?;
            debug!(
                path,
                fps, "pictures encoded per second changed with the bit rate"
            );
            self.step = step;
        }
        self.seen += 1;
        Ok(asked || self.seen.is_multiple_of(u64::from(step)))
    }
}

/// The interval between a passed-through source's keyframes, shown in the status API: how
/// long a new viewer may wait (when the source cannot be asked for a keyframe).
#[derive(Default)]
struct SourceKeyframes {
    last: Option<std::time::Instant>,
    shown: Option<u32>,
}

impl SourceKeyframes {
    fn seen(&mut self, at: std::time::Instant, path: &str, board: &StatusBoard) {
        if let Some(last) = self.last.replace(at) {
            let ms =
                u32::try_from(at.saturating_duration_since(last).as_millis()).unwrap_or(u32::MAX);
            // Shown again only when it changes by a tenth: the board is not written per GOP.
            let changed = self
                .shown
                .is_none_or(|shown| ms.abs_diff(shown) > shown / 10);
            if changed {
                self.shown = Some(ms);
                board.update_path(path, |status| status.source_keyframe_interval_ms = Some(ms));
            }
        }
    }
}

/// A picture as the encoder holds it: raw ones shared with JPEG readers.
enum Input {
    Raw(Arc<RawFrame>),
    H264(AccessUnit),
}

fn run(args: &EncodeArgs, stop: &AtomicBool) -> Result<(), String> {
    let mut encoding_rx = args.encoding.clone();
    let mut encoding = encoding_rx.borrow_and_update().clone();
    let mut encoder: Option<Encoder> = None;
    let mut passthrough = PassthroughPictures::default();
    let mut source_keyframes = SourceKeyframes::default();
    // Nobody watching: pictures are taken (so capture never backs up) but not encoded, which
    // saves a path's whole encoding cost on a box with cameras nobody looks at. A join needs a
    // keyframe anyway, so the first picture after idling is one and the join costs nothing.
    let mut idle = false;
    let mut pictures = PictureStep::new();
    while !stop.load(Ordering::Acquire) {
        let captured = match args.handoff.take(IDLE_POLL) {
            Taken::Item(captured) => captured,
            Taken::TimedOut => continue,
            Taken::Closed => break,
        };
        // JPEG readers take raw pictures, whether or not anyone reads H.264: a camera's own
        // H.264 is decoded for them, only while they are there.
        let captured = match captured {
            Captured::Raw(frame) => {
                let frame = Arc::new(frame);
                args.fanout.offer_picture(&frame);
                Input::Raw(frame)
            }
            Captured::Jpeg(frame, jpeg) => {
                let frame = Arc::new(frame);
                if args.fanout.pictures_wanted() {
                    args.fanout.offer_camera_jpeg(&frame, jpeg);
                }
                args.fanout.offer_picture(&frame);
                Input::Raw(frame)
            }
            Captured::H264(unit) => {
                if unit.keyframe {
                    // Known before anyone watches: the first viewer's answer names the profile.
                    args.fanout.remember_parameter_sets(&unit.data);
                    if !args.fanout.source_keyframes() {
                        source_keyframes.seen(unit.capture.mono, &args.path, &args.board);
                    }
                }
                let wanted = args.fanout.pictures_wanted();
                if let Some(picture) = passthrough.push(&unit, wanted) {
                    args.fanout.offer_picture(&Arc::new(picture));
                }
                Input::H264(unit)
            }
        };
        if args.fanout.viewers() == 0 {
            idle = true;
            continue;
        }
        if encoding_rx.has_changed().unwrap_or(false) {
            encoding = encoding_rx.borrow_and_update().clone();
            if let Some(encoder) = encoder.as_mut() {
                apply_live(&args.path, encoder, &encoding)?;
            }
        }
        match captured {
            Input::H264(unit) => {
                // A join (or a loss) wants a keyframe: a camera that can make one is asked; the
                // others' next one comes with their GOP.
                let requested = args
                    .fanout
                    .take_keyframe_request()
                    .or_else(|| std::mem::take(&mut idle).then_some(KeyframeReason::Join));
                if let Some(reason) = requested
                    && args.fanout.request_source_keyframe()
                {
                    debug!(path = %args.path, ?reason, "keyframe asked of the source");
                }
                if unit.keyframe {
                    args.fanout.counters().keyframe(KeyframeReason::Interval);
                }
                args.fanout.publish(&unit, true)?;
            }
            Input::Raw(frame) => {
                let fits = encoder.as_ref().is_some_and(|e| {
                    (e.settings().width, e.settings().height) == (frame.width, frame.height)
                });
                // Both taken, always: a join's request and the end of idling are one keyframe,
                // not two in a row.
                let requested = args.fanout.take_keyframe_request();
                let after_idle = std::mem::take(&mut idle);
                let mut reason = requested.or(after_idle.then_some(KeyframeReason::Join));
                if !fits {
                    let settings = settings_for(&encoding, &frame);
                    info!(path = %args.path, width = settings.width, height = settings.height,
                          fps = settings.fps, bitrate = settings.bitrate_bps, "encoder (re)created");
                    encoder = Some(Encoder::new(&settings).map_err(|err| {
                        format!("path {}: cannot create the H.264 encoder: {err}", args.path)
                    })?);
                    reason = Some(KeyframeReason::Start);
                    pictures = PictureStep::new();
                }
                let Some(encoder) = encoder.as_mut() else {
                    continue;
                };
                follow_bandwidth(&args.path, encoder, &encoding, &args.fanout)?;
                let asked = reason.is_some();
                if !pictures.encode(&args.path, encoder, encoding.bitrate_bps, asked)? {
                    continue;
                }
                let started = std::time::Instant::now();
                let unit = encoder
                    .encode(&frame, reason.is_some())
                    .map_err(|err| format!("path {}: encoding failed: {err}", args.path))?;
                let counters = args.fanout.counters();
                counters.encoded_in(started.elapsed());
                if let Some(unit) = unit {
                    if unit.keyframe {
                        counters.keyframe(reason.unwrap_or(KeyframeReason::Interval));
                        args.fanout.remember_parameter_sets(&unit.data);
                    }
                    args.fanout.publish(&unit, false)?;
                }
            }
        }
    }
    Ok(())
}
