//! H.264 encoding of raw pictures with OpenH264, set up for live WebRTC viewing: Constrained
//! Baseline (what every browser decodes), bitrate rate control without frame skipping, no
//! scene-change IDRs, a periodic IDR with SPS/PPS in front of it, low complexity.
//!
//! Threads: one. OpenH264 only parallelises across slices, so more threads would mean several
//! slices per picture (more bits, visible seams at low bitrates) for a gain the box cannot
//! afford anyway: it has two cores shared by the capture thread, the network stack and possibly
//! other paths' encoders. Single-threaded Low complexity encodes 1080p well within a 30 fps
//! budget on this machine.

use std::ffi::c_void;
use std::time::Instant;

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder as H264Encoder, EncoderConfig, FrameRate, FrameType,
    IntraFramePeriod, Profile, QpRange, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, ENCODER_OPTION_IDR_INTERVAL,
    ENCODER_OPTION_MAX_BITRATE, ENCODER_OPTION_TRACE_LEVEL, SBitrateInfo, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL, WELS_LOG_QUIET,
};

use crate::frame::{AccessUnit, RawFrame};
use crate::rtp::h264::contains_idr;

/// OpenH264's limit (level 5.2): 3840x2160 either way round.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;
const MIN_QP: u8 = 12;
const MAX_QP: u8 = 51;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// An IDR every this many pictures (and whenever one is forced).
    pub keyframe_interval_frames: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("invalid encoder settings: {0}")]
    Settings(String),
    #[error("picture is {got_w}x{got_h} but the encoder was set up for {want_w}x{want_h}")]
    FrameSize {
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
    #[error("{width}x{height} I420 picture has {got} bytes, expected {want}")]
    FrameData {
        width: u32,
        height: u32,
        got: usize,
        want: usize,
    },
    #[error("openh264 {context}: {source}")]
    OpenH264 {
        context: &'static str,
        #[source]
        source: openh264::Error,
    },
}

pub struct Encoder {
    settings: EncoderSettings,
    config: EncoderConfig,
    inner: H264Encoder,
    /// Monotonic time of the first picture: OpenH264 timestamps are milliseconds from it.
    started: Option<Instant>,
}

impl Encoder {
    pub fn new(settings: &EncoderSettings) -> Result<Encoder, EncoderError> {
        validate(settings)?;
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .skip_frames(false)
            .scene_change_detect(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval_frames,
            ))
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Low)
            // OpenH264 turns the crate's default 0..=51 into 12..=42, which overshoots on hard
            // content; without frame skipping the quantiser is the only brake left.
            .qp(QpRange::new(MIN_QP, MAX_QP))
            .num_threads(1);
        let inner = create(config)?;
        tracing::debug!(?settings, "h264 encoder created");
        Ok(Encoder {
            settings: *settings,
            config,
            inner,
            started: None,
        })
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Encodes one picture; `force_keyframe` makes this very picture an IDR (with SPS/PPS).
    /// Returns `None` if the encoder produced nothing for it.
    pub fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Option<AccessUnit>, EncoderError> {
        let s = &self.settings;
        if (frame.width, frame.height) != (s.width, s.height) {
            return Err(EncoderError::FrameSize {
                got_w: frame.width,
                got_h: frame.height,
                want_w: s.width,
                want_h: s.height,
            });
        }
        let want = RawFrame::i420_len(s.width, s.height);
        if frame.data.len() != want {
            return Err(EncoderError::FrameData {
                width: s.width,
                height: s.height,
                got: frame.data.len(),
                want,
            });
        }
        let (w, h) = (s.width as usize, s.height as usize);
        let yuv = YUVSlices::new(frame.planes(), (w, h), (w, w / 2, w / 2));

        // OpenH264 is initialised lazily by its first encode, which is an IDR anyway; forcing
        // before that would talk to an uninitialised encoder.
        let started = match self.started {
            Some(t) => {
                if force_keyframe {
                    self.inner.force_intra_frame();
                }
                t
            }
            None => *self.started.insert(frame.capture.mono),
        };
        let millis = frame
            .capture
            .mono
            .saturating_duration_since(started)
            .as_millis();
        let timestamp = Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));

        let stream =
            self.inner
                .encode_at(&yuv, timestamp)
                .map_err(|source| EncoderError::OpenH264 {
                    context: "encoding a picture",
                    source,
                })?;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            tracing::trace!(frame_type = ?stream.frame_type(), "h264 encoder produced no picture");
            return Ok(None);
        }
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        let keyframe = contains_idr(&data);
        Ok(Some(AccessUnit {
            data: Bytes::from(data),
            keyframe,
            width: s.width,
            height: s.height,
            capture: frame.capture,
        }))
    }

    /// Changes the target bitrate from the next picture on (rate control adapts over a few
    /// frames; no IDR is forced).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), EncoderError> {
        let new = EncoderSettings {
            bitrate_bps: bps,
            ..self.settings
        };
        validate(&new)?;
        if self.started.is_none() {
            // Not initialised yet: just start with the new rate.
            self.config = self.config.bitrate(BitRate::from_bps(bps));
            self.inner = create(self.config)?;
        } else {
            // The crate sets the layer's maximum equal to its target and OpenH264 rejects a target
            // above the maximum, so raise the maximum first or lower it last.
            let raising = bps > self.settings.bitrate_bps;
            if raising {
                self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps)?;
            }
            self.set_bitrate_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, bps)?;
            if !raising {
                self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, bps)?;
            }
        }
        tracing::debug!(
            from = self.settings.bitrate_bps,
            to = bps,
            "h264 encoder bitrate changed"
        );
        self.settings = new;
        Ok(())
    }

    /// Tells rate control how many pictures a second it gets from now on (the path sends fewer
    /// than its configured rate when its bitrate is far down), so that each gets its share of
    /// the bitrate. No IDR; the configured rate stays the one `settings()` shows.
    pub fn set_frame_rate(&mut self, fps: f32) -> Result<(), EncoderError> {
        if self.started.is_none() {
            self.config = self.config.max_frame_rate(FrameRate::from_hz(fps));
            self.inner = create(self.config)?;
            return Ok(());
        }
        let mut rate = fps;
        // SAFETY: the encoder is initialised (a picture was encoded); the option takes a float,
        // which lives across the call and is only read.
        let rc = unsafe {
            self.inner
                .raw_api()
                .set_option(ENCODER_OPTION_FRAME_RATE, (&raw mut rate).cast::<c_void>())
        };
        if rc != 0 {
            return Err(EncoderError::OpenH264 {
                context: "setting the frame rate",
                source: openh264::Error::msg_string(format!(
                    "SetOption(FRAME_RATE, {fps}) returned {rc}"
                )),
            });
        }
        tracing::debug!(fps, "h264 encoder frame rate changed");
        Ok(())
    }

    /// Changes the periodic IDR interval from the next picture on, without forcing one.
    pub fn set_keyframe_interval(&mut self, frames: u32) -> Result<(), EncoderError> {
        let new = EncoderSettings {
            keyframe_interval_frames: frames,
            ..self.settings
        };
        validate(&new)?;
        if self.started.is_none() {
            self.config = self
                .config
                .intra_frame_period(IntraFramePeriod::from_num_frames(frames));
            self.inner = create(self.config)?;
        } else {
            // The config allows at most 60 s at 60 fps; larger means "as rarely as possible".
            let mut period = i32::try_from(frames).unwrap_or(i32::MAX);
            // SAFETY: the encoder is initialised (a picture was encoded); the option takes an
            // int, which lives across the call and is only read.
            let rc = unsafe {
                self.inner.raw_api().set_option(
                    ENCODER_OPTION_IDR_INTERVAL,
                    (&raw mut period).cast::<c_void>(),
                )
            };
            if rc != 0 {
                return Err(EncoderError::OpenH264 {
                    context: "setting the keyframe interval",
                    source: openh264::Error::msg_string(format!(
                        "SetOption(IDR_INTERVAL, {frames}) returned {rc}"
                    )),
                });
            }
        }
        tracing::debug!(
            from = self.settings.keyframe_interval_frames,
            to = frames,
            "h264 encoder keyframe interval changed"
        );
        self.settings = new;
        Ok(())
    }

    fn set_bitrate_option(
        &mut self,
        option: ENCODER_OPTION,
        layer: i32,
        bps: u32,
    ) -> Result<(), EncoderError> {
        let mut info = SBitrateInfo {
            iLayer: layer,
            // validate() keeps it within i32.
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // SAFETY: the encoder is initialised (a picture was encoded), the option ids take an
        // SBitrateInfo, which lives across the call and is only read by OpenH264.
        let rc = unsafe {
            self.inner
                .raw_api()
                .set_option(option, (&raw mut info).cast::<c_void>())
        };
        if rc != 0 {
            return Err(EncoderError::OpenH264 {
                context: "setting the bitrate",
                source: openh264::Error::msg_string(format!(
                    "SetOption({option}, {bps} bps) returned {rc}"
                )),
            });
        }
        Ok(())
    }
}

/// Creates an OpenH264 encoder that keeps quiet on stderr. OpenH264 initialises itself at the
/// first picture and prints its warnings then (one says rate control needs frame skipping: we
/// bound the quantiser instead, see `Encoder::new`); the crate silences it only afterwards.
fn create(config: EncoderConfig) -> Result<H264Encoder, EncoderError> {
    let mut inner =
        H264Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|source| {
            EncoderError::OpenH264 {
                context: "creating the encoder",
                source,
            }
        })?;
    let mut level = WELS_LOG_QUIET;
    // SAFETY: the trace level is the one option OpenH264 takes before initialisation; it reads
    // an int that lives across the call.
    let rc = unsafe {
        inner.raw_api().set_option(
            ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast::<c_void>(),
        )
    };
    if rc != 0 {
        tracing::debug!(rc, "openh264 refused its trace level; it may log to stderr");
    }
    Ok(inner)
}

fn validate(s: &EncoderSettings) -> Result<(), EncoderError> {
    let fail = |m: String| Err(EncoderError::Settings(m));
    if s.width == 0 || s.height == 0 || !s.width.is_multiple_of(2) || !s.height.is_multiple_of(2) {
        return fail(format!(
            "size {}x{} must be non-zero and even",
            s.width, s.height
        ));
    }
    if s.width.max(s.height) > MAX_LONG_SIDE || s.width.min(s.height) > MAX_SHORT_SIDE {
        return fail(format!(
            "size {}x{} exceeds OpenH264's {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}",
            s.width, s.height
        ));
    }
    if s.fps == 0 || s.fps > 240 {
        return fail(format!("fps {} must be 1..=240", s.fps));
    }
    // OpenH264 refuses a bitrate below one bit per frame; below a few kbit/s nothing useful is
    // left anyway.
    if s.bitrate_bps < 10_000 || s.bitrate_bps > i32::MAX as u32 {
        return fail(format!(
            "bitrate {} bps must be 10000..={}",
            s.bitrate_bps,
            i32::MAX
        ));
    }
    if s.keyframe_interval_frames == 0 {
        return fail("keyframe interval must be at least 1 frame".to_owned());
    }
    Ok(())
}
