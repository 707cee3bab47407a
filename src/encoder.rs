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
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_IDR_INTERVAL,
    ENCODER_OPTION_MAX_BITRATE, ENCODER_OPTION_TRACE_LEVEL, SBitrateInfo, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL, WELS_LOG_QUIET,
};

use crate::frame::{AccessUnit, RawFrame};

/// OpenH264's limit (level 5.2): 3840x2160 either way round.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;
const NAL_IDR: u8 = 5;
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

/// NAL unit types in an Annex B byte stream, in order.
fn nal_types(annexb: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        // Find the next 00 00 01; the header byte follows it.
        while i + 3 < annexb.len() {
            if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
                let header = annexb[i + 3];
                i += 3;
                return Some(header & 0x1F);
            }
            i += 1;
        }
        None
    })
}

fn contains_idr(annexb: &[u8]) -> bool {
    nal_types(annexb).any(|t| t == NAL_IDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::Decoder;
    use crate::frame::CaptureTime;
    use crate::source::testsrc::TestSrc;
    use crate::stamp::Stamp;
    use std::time::{Duration, SystemTime};

    fn settings(
        width: u32,
        height: u32,
        bitrate_bps: u32,
        keyframe_interval_frames: u32,
    ) -> EncoderSettings {
        EncoderSettings {
            width,
            height,
            fps: 30,
            bitrate_bps,
            keyframe_interval_frames,
        }
    }

    /// Pictures as the test pattern would yield them at 30 fps, without waiting for real time.
    fn pictures(width: u32, height: u32, n: u32) -> Vec<(RawFrame, Stamp)> {
        let src = TestSrc::new(width, height, 30);
        let (mono, wall) = (std::time::Instant::now(), SystemTime::now());
        (0..n)
            .map(|i| {
                let dt = Duration::from_secs(1) * i / 30;
                let capture = CaptureTime {
                    wall: wall + dt,
                    mono: mono + dt,
                };
                (src.render(i, capture), Stamp::new(i, capture.wall))
            })
            .collect()
    }

    /// SPS profile_idc, constraint flags and level_idc as the SDP's profile-level-id hex.
    fn profile_level_id(annexb: &[u8]) -> Option<String> {
        let pos = annexb
            .windows(4)
            .position(|w| w[0..3] == [0, 0, 1] && w[3] & 0x1F == 7)?;
        let sps = annexb.get(pos + 4..pos + 7)?;
        Some(format!("{:02x}{:02x}{:02x}", sps[0], sps[1], sps[2]))
    }

    fn round_trip(width: u32, height: u32, bitrate: u32, n: u32) {
        let mut enc = Encoder::new(&settings(width, height, bitrate, 60)).expect("encoder");
        let mut dec = Decoder::new().expect("decoder");
        let mut bytes = 0usize;
        for (i, (pic, stamp)) in pictures(width, height, n).into_iter().enumerate() {
            let au = enc
                .encode(&pic, false)
                .expect("encode")
                .expect("an access unit per picture");
            assert_eq!((au.width, au.height), (width, height));
            assert_eq!(au.keyframe, i % 60 == 0, "picture {i}");
            bytes += au.data.len();
            let out = dec
                .decode(&au.data)
                .expect("decode")
                .expect("a picture per access unit");
            assert_eq!((out.width, out.height), (width, height));
            assert_eq!(out.y.len(), (width * height) as usize);
            assert_eq!(out.stamp, Some(stamp), "{width}x{height} picture {i}");
        }
        let kbps = bytes as u64 * 8 * 30 / u64::from(n) / 1000;
        eprintln!("{width}x{height}@{bitrate}: {n} pictures, {kbps} kbit/s");
    }

    #[test]
    fn stamp_survives_compression_320x240_300k() {
        round_trip(320, 240, 300_000, 90);
    }

    #[test]
    fn stamp_survives_compression_1280x720_2m() {
        round_trip(1280, 720, 2_000_000, 45);
    }

    #[test]
    fn stamp_survives_compression_1920x1080_2m() {
        round_trip(1920, 1080, 2_000_000, 30);
    }

    #[test]
    fn stamp_survives_a_starved_encoder() {
        // Noise below the band leaves the rate control no choice but the coarsest quantiser.
        for (w, h, bitrate) in [
            (320, 240, 50_000),
            (640, 480, 100_000),
            (1920, 1080, 300_000),
        ] {
            let mut enc = Encoder::new(&settings(w, h, bitrate, 1000)).expect("encoder");
            let mut dec = Decoder::new().expect("decoder");
            let band = crate::stamp::band_height(w, h) as usize * w as usize;
            let mut state = 12345u32;
            let mut bytes = 0;
            for (i, (mut pic, stamp)) in pictures(w, h, 40).into_iter().enumerate() {
                for v in &mut pic.data[band..] {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *v = (state >> 24) as u8;
                }
                let au = enc.encode(&pic, false).expect("encode").expect("au");
                bytes += au.data.len();
                let out = dec.decode(&au.data).expect("decode").expect("picture");
                assert_eq!(out.stamp, Some(stamp), "{w}x{h} at {bitrate}: picture {i}");
            }
            eprintln!(
                "{w}x{h} noise at {bitrate}: {} kbit/s",
                bytes * 8 * 30 / 40 / 1000
            );
        }
    }

    #[test]
    fn constrained_baseline_with_sps_pps_before_every_idr() {
        for (w, h, want) in [
            (640, 480, "42c01e"),
            (1280, 720, "42c01f"),
            (1920, 1080, "42c028"),
        ] {
            let mut enc = Encoder::new(&settings(w, h, 2_000_000, 5)).expect("encoder");
            for (i, (pic, _)) in pictures(w, h, 11).into_iter().enumerate() {
                let au = enc.encode(&pic, false).expect("encode").expect("au");
                let types: Vec<u8> = nal_types(&au.data).collect();
                if au.keyframe {
                    let idr = types.iter().position(|&t| t == NAL_IDR).expect("idr");
                    assert!(
                        types[..idr].contains(&7) && types[..idr].contains(&8),
                        "{types:?}"
                    );
                    let id = profile_level_id(&au.data).expect("sps");
                    eprintln!("{w}x{h}: profile_level_id {id}");
                    assert_eq!(id, want, "{w}x{h}");
                } else {
                    assert!(
                        !types.contains(&7),
                        "SPS only with IDRs: picture {i} {types:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn keyframes_first_forced_periodic_and_no_scene_change() {
        let mut enc = Encoder::new(&settings(640, 480, 500_000, 30)).expect("encoder");
        let mut keyframes = Vec::new();
        // 100 pictures of the moving pattern; force one at 45.
        for (i, (pic, _)) in pictures(640, 480, 100).into_iter().enumerate() {
            let au = enc.encode(&pic, i == 45).expect("encode").expect("au");
            if au.keyframe {
                keyframes.push(i);
            }
        }
        eprintln!("keyframes at {keyframes:?}");
        assert_eq!(keyframes[0], 0, "first access unit is a keyframe");
        assert!(
            keyframes.contains(&45),
            "forced keyframe on that very picture"
        );
        assert!(keyframes.contains(&30), "periodic keyframe");
        // Nothing but the first, the periodic ones (the period may restart at a forced IDR)
        // and the forced one: no scene-change IDRs.
        for k in &keyframes {
            assert!(
                *k == 45 || *k % 30 == 0 || (*k > 45 && (*k - 45) % 30 == 0),
                "unexpected {k}"
            );
        }
    }

    #[test]
    fn scene_cut_does_not_cause_an_idr() {
        let mut enc = Encoder::new(&settings(640, 480, 500_000, 1000)).expect("encoder");
        for (i, (mut pic, _)) in pictures(640, 480, 10).into_iter().enumerate() {
            if i >= 5 {
                // A hard cut: invert the picture.
                pic.data.iter_mut().for_each(|v| *v = 255 - *v);
            }
            let au = enc.encode(&pic, false).expect("encode").expect("au");
            assert_eq!(au.keyframe, i == 0, "picture {i}");
        }
    }

    #[test]
    fn encoder_and_decoder_can_move_to_their_threads() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Encoder>();
        assert_send::<Decoder>();
        assert_send::<EncoderError>();
    }

    #[test]
    fn wrong_size_is_an_error_not_a_panic() {
        let mut enc = Encoder::new(&settings(320, 240, 300_000, 30)).expect("encoder");
        let (pic, _) = pictures(640, 480, 1).remove(0);
        let err = enc.encode(&pic, false).expect_err("size mismatch");
        assert!(err.to_string().contains("640x480"), "{err}");
        let (mut pic, _) = pictures(320, 240, 1).remove(0);
        pic.data.truncate(1000);
        assert!(matches!(
            enc.encode(&pic, false),
            Err(EncoderError::FrameData { .. })
        ));
        assert!(Encoder::new(&settings(321, 240, 300_000, 30)).is_err());
        assert!(Encoder::new(&settings(320, 240, 0, 30)).is_err());
        assert!(Encoder::new(&settings(320, 240, 300_000, 0)).is_err());
        assert!(Encoder::new(&settings(4096, 2304, 300_000, 30)).is_err());
    }

    #[test]
    fn bitrate_changes_live() {
        let (w, h) = (640, 480);
        let mut enc = Encoder::new(&settings(w, h, 800_000, 1000)).expect("encoder");
        enc.set_bitrate(1_000_000)
            .expect("before the first picture");
        let mut sizes = Vec::new();
        for (i, (pic, _)) in pictures(w, h, 180).iter().enumerate() {
            // The pattern needs ~200 kbit/s at 640x480: squeeze below that, then release.
            match i {
                60 => enc.set_bitrate(100_000).expect("lower"),
                120 => enc.set_bitrate(1_000_000).expect("raise"),
                _ => {}
            }
            let au = enc.encode(pic, false).expect("encode").expect("au");
            sizes.push(au.data.len());
        }
        let kbps = |r: std::ops::Range<usize>| sizes[r].iter().sum::<usize>() * 8 / 1000;
        let (before, low, after) = (kbps(30..60), kbps(90..120), kbps(150..180));
        eprintln!("kbit/s: {before} at 1M, {low} at 100k, {after} at 1M again");
        assert!(
            low * 3 < before * 2,
            "lowering had no effect: {before} -> {low}"
        );
        assert!(
            low * 3 < after * 2,
            "raising had no effect: {low} -> {after}"
        );
        assert!(enc.set_bitrate(0).is_err());
        assert_eq!(enc.settings().bitrate_bps, 1_000_000);
    }

    #[test]
    fn keyframe_interval_changes_live() {
        let (w, h) = (320, 240);
        let mut enc = Encoder::new(&settings(w, h, 300_000, 10)).expect("encoder");
        let keyframes: Vec<usize> = pictures(w, h, 60)
            .iter()
            .enumerate()
            .filter_map(|(i, (pic, _))| {
                if i == 25 {
                    enc.set_keyframe_interval(30).expect("live change");
                }
                let au = enc.encode(pic, false).expect("encode").expect("au");
                au.keyframe.then_some(i)
            })
            .collect();
        // Every 10 pictures, then (counting from the last IDR, at 20) every 30.
        assert_eq!(keyframes, [0, 10, 20, 50], "{keyframes:?}");
        assert!(enc.set_keyframe_interval(0).is_err());
        assert_eq!(enc.settings().keyframe_interval_frames, 30);
    }
}
