//! What a camera offers (pixel formats, sizes, frame rates) and the choice of one mode from what a
//! path asks for. Pure: the device layer fills [`FormatOffer`]s, and `negotiate` and `suggest`
//! only reason about them, so they are tested without a camera.

use std::fmt;

use crate::config::CaptureFormat;

/// A pixel format camportal can take from a camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Encoded by the camera: passed through, not re-encoded.
    H264,
    /// Motion JPEG: decoded to planar YUV with libjpeg-turbo.
    Mjpeg,
    /// Raw 4:2:0, Y plane then interleaved UV.
    Nv12,
    /// Raw packed 4:2:2.
    Yuyv,
}

/// `auto`'s order: what costs the box least first. NV12 before YUYV: a third less data per
/// picture over USB, and cheaper to bring to I420.
const AUTO_ORDER: [PixelFormat; 4] = [
    PixelFormat::H264,
    PixelFormat::Mjpeg,
    PixelFormat::Nv12,
    PixelFormat::Yuyv,
];

impl PixelFormat {
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<PixelFormat> {
        match &fourcc {
            b"H264" => Some(PixelFormat::H264),
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"NV12" => Some(PixelFormat::Nv12),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    /// The `format:` key's value for this format.
    pub fn config_name(self) -> CaptureFormat {
        match self {
            PixelFormat::H264 => CaptureFormat::H264,
            PixelFormat::Mjpeg => CaptureFormat::Mjpeg,
            PixelFormat::Nv12 => CaptureFormat::Nv12,
            PixelFormat::Yuyv => CaptureFormat::Yuyv,
        }
    }

    fn chosen_by(self, choice: CaptureFormat) -> bool {
        choice == CaptureFormat::Auto || choice == self.config_name()
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::H264 => "H264",
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Yuyv => "YUYV",
        })
    }
}

/// A frame interval in seconds, `num / den`, as V4L2 gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub num: u32,
    pub den: u32,
}

impl Interval {
    pub fn fps(self) -> f64 {
        if self.num == 0 {
            0.0
        } else {
            f64::from(self.den) / f64::from(self.num)
        }
    }

    fn of_fps(fps: u32) -> Interval {
        Interval { num: 1, den: fps }
    }
}

/// The frame rates a camera offers for one size.
#[derive(Clone, Debug, PartialEq)]
pub enum Rates {
    Discrete(Vec<Interval>),
    /// Any interval from `min` (fastest) to `max` (slowest).
    Range {
        min: Interval,
        max: Interval,
    },
}

impl Rates {
    /// The interval to ask for `fps` with, if offered. Cameras often say 30 fps as 333333/10000000
    /// or 1001/30000: within 1% counts as the same rate.
    fn interval_for(&self, fps: u32) -> Option<Interval> {
        let wanted = f64::from(fps);
        let close = |i: &Interval| (i.fps() - wanted).abs() <= wanted * 0.01;
        match self {
            Rates::Discrete(list) => list.iter().copied().find(close),
            Rates::Range { min, max } => (max.fps() * 0.99 <= wanted && wanted <= min.fps() * 1.01)
                .then(|| Interval::of_fps(fps)),
        }
    }

    /// Whole-number rates offered, highest first (the config's `fps` is an integer).
    fn whole_fps(&self) -> Vec<u32> {
        let mut out: Vec<u32> = match self {
            Rates::Discrete(list) => list
                .iter()
                .filter_map(|i| {
                    let fps = i.fps();
                    let rounded = fps.round();
                    ((fps - rounded).abs() <= rounded * 0.01 && rounded >= 1.0)
                        .then_some(rounded as u32)
                })
                .collect(),
            Rates::Range { min, max } => {
                let (lo, hi) = (max.fps().ceil().max(1.0) as u32, min.fps().floor() as u32);
                [hi, 60, 30, 25, 15, 10, 5, lo]
                    .into_iter()
                    .filter(|f| (lo..=hi).contains(f))
                    .collect()
            }
        };
        out.sort_unstable_by(|a, b| b.cmp(a));
        out.dedup();
        out
    }
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rates::Discrete(list) => {
                let mut fps: Vec<f64> = list.iter().map(|i| i.fps()).collect();
                fps.sort_by(|a, b| b.total_cmp(a));
                fps.dedup();
                let text: Vec<String> = fps.iter().map(|f| format_fps(*f)).collect();
                write!(f, "{} fps", text.join(", "))
            }
            Rates::Range { min, max } => {
                write!(f, "{}-{} fps", format_fps(max.fps()), format_fps(min.fps()))
            }
        }
    }
}

fn format_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.005 {
        format!("{}", fps.round() as u64)
    } else {
        format!("{fps:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// One picture size and its rates.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeOffer {
    pub width: u32,
    pub height: u32,
    pub rates: Rates,
}

/// Sizes given as a range (rare for webcams, which list discrete sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

impl SizeRange {
    pub fn contains(&self, width: u32, height: u32) -> bool {
        let fits = |v: u32, min: u32, max: u32, step: u32| {
            (min..=max).contains(&v) && (v - min).is_multiple_of(step.max(1))
        };
        fits(width, self.min_width, self.max_width, self.step_width)
            && fits(height, self.min_height, self.max_height, self.step_height)
    }
}

/// One pixel format as the camera offers it (`VIDIOC_ENUM_FMT` and what follows).
#[derive(Clone, Debug, PartialEq)]
pub struct FormatOffer {
    pub fourcc: [u8; 4],
    /// The driver's description, e.g. "Motion-JPEG".
    pub description: String,
    /// Discrete sizes, and for a range-of-sizes camera the sizes the device layer asked about.
    pub sizes: Vec<SizeOffer>,
    pub range: Option<SizeRange>,
}

impl FormatOffer {
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        PixelFormat::from_fourcc(self.fourcc)
    }

    /// The four characters, e.g. `YUYV`; V4L2 marks big-endian variants with the top bit of the
    /// last byte (shown as `-BE`).
    pub fn fourcc_text(&self) -> String {
        let big_endian = self.fourcc[3] & 0x80 != 0;
        let mut text: String = self
            .fourcc
            .iter()
            .map(|b| b & 0x7f)
            .map(|b| if b.is_ascii_graphic() { b as char } else { ' ' })
            .collect::<String>()
            .trim_end()
            .to_owned();
        if big_endian {
            text.push_str("-BE");
        }
        text
    }
}

/// What a path asks of its camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// The mode chosen: set on the device with a new `Format::new(width, height, fourcc)` and the
/// interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    pub pixel: PixelFormat,
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    pub interval: Interval,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{} @ {} fps",
            self.pixel,
            self.width,
            self.height,
            format_fps(self.interval.fps())
        )
    }
}

/// Chooses the mode for `request` among `offers`, skipping the formats in `exclude` (H.264 a
/// browser cannot decode). The error names what the camera can do instead.
pub(crate) fn negotiate(
    offers: &[FormatOffer],
    request: &Request,
    exclude: &[PixelFormat],
) -> Result<Mode, String> {
    let usable = usable_in_order(offers, exclude);
    let candidates: Vec<&(PixelFormat, &FormatOffer)> = usable
        .iter()
        .filter(|(pixel, _)| pixel.chosen_by(request.format))
        .collect();
    if candidates.is_empty() {
        let can = if usable.is_empty() {
            "none camportal can use (it takes H264, MJPEG, NV12 and YUYV)".to_owned()
        } else {
            let names: Vec<String> = usable.iter().map(|(p, _)| p.to_string()).collect();
            names.join(", ")
        };
        let what = match request.format {
            CaptureFormat::Auto => "a format camportal can use".to_owned(),
            other => other.to_string().to_uppercase(),
        };
        return Err(format!("the camera offers no {what}; it offers {can}"));
    }
    for (pixel, offer) in &candidates {
        let size = offer
            .sizes
            .iter()
            .find(|s| (s.width, s.height) == (request.width, request.height));
        if let Some(interval) = size.and_then(|s| s.rates.interval_for(request.fps)) {
            return Ok(Mode {
                pixel: *pixel,
                fourcc: offer.fourcc,
                width: request.width,
                height: request.height,
                interval,
            });
        }
    }
    let offered: Vec<String> = candidates
        .iter()
        .map(|(pixel, offer)| format!("{pixel} {}", describe_sizes(offer)))
        .collect();
    Err(format!(
        "the camera cannot send {}x{} at {} fps{}; it offers {} (set encoding width, height and \
         fps to one of these)",
        request.width,
        request.height,
        request.fps,
        match request.format {
            CaptureFormat::Auto => String::new(),
            other => format!(" as {}", other.to_string().to_uppercase()),
        },
        offered.join("; ")
    ))
}

/// "640x480 (25, 15 fps), 1280x720 (10 fps)".
pub(crate) fn describe_sizes(offer: &FormatOffer) -> String {
    let mut parts: Vec<String> = offer
        .sizes
        .iter()
        .map(|s| format!("{}x{} ({})", s.width, s.height, s.rates))
        .collect();
    if let Some(r) = offer.range {
        parts.push(format!(
            "any size {}x{} to {}x{} in steps of {}x{}",
            r.min_width, r.min_height, r.max_width, r.max_height, r.step_width, r.step_height
        ));
    }
    parts.join(", ")
}

fn usable_in_order<'a>(
    offers: &'a [FormatOffer],
    exclude: &[PixelFormat],
) -> Vec<(PixelFormat, &'a FormatOffer)> {
    AUTO_ORDER
        .iter()
        .filter(|pixel| !exclude.contains(pixel))
        .filter_map(|pixel| {
            offers
                .iter()
                .find(|o| o.pixel_format() == Some(*pixel))
                .map(|o| (*pixel, o))
        })
        .collect()
}

/// The size a suggested config aims at: large enough to read, small enough to encode on a small
/// box.
const SUGGEST_MAX: (u32, u32) = (1280, 720);
/// The lowest rate a suggestion accepts if a larger size would need a lower one.
const SUGGEST_MIN_FPS: u32 = 15;
const SUGGEST_MAX_FPS: u32 = 30;

/// A good mode for a new path file (`camportal devices`): the preferred usable format (H.264
/// only if nothing else is offered, since not every camera's H.264 is a profile browsers
/// decode), the largest size up to 1280x720 that runs at 15 fps or more, at up to 30 fps. Only
/// sizes and rates the config can express (even sizes in range, whole fps).
pub(crate) fn suggest(offers: &[FormatOffer]) -> Option<Mode> {
    let usable = usable_in_order(offers, &[]);
    let non_h264: Vec<_> = usable
        .iter()
        .filter(|(p, _)| *p != PixelFormat::H264)
        .collect();
    let pick = if non_h264.is_empty() {
        usable.first()
    } else {
        non_h264.first().copied()
    }?;
    let (pixel, offer) = *pick;
    let expressible = |s: &&SizeOffer| {
        s.width.is_multiple_of(2)
            && s.height.is_multiple_of(2)
            && (160..=3840).contains(&s.width)
            && (120..=2160).contains(&s.height)
    };
    let best_fps = |s: &SizeOffer| {
        s.rates
            .whole_fps()
            .into_iter()
            .find(|f| (1..=SUGGEST_MAX_FPS).contains(f))
    };
    let mut sizes: Vec<(&SizeOffer, u32)> = offer
        .sizes
        .iter()
        .filter(expressible)
        .filter_map(|s| best_fps(s).map(|f| (s, f)))
        .collect();
    // Largest area first.
    sizes.sort_by_key(|(s, _)| std::cmp::Reverse(u64::from(s.width) * u64::from(s.height)));
    let fits = |(s, f): &&(&SizeOffer, u32)| {
        s.width <= SUGGEST_MAX.0 && s.height <= SUGGEST_MAX.1 && *f >= SUGGEST_MIN_FPS
    };
    let (size, fps) = sizes.iter().find(fits).or_else(|| sizes.last()).copied()?;
    let interval = size.rates.interval_for(fps)?;
    Some(Mode {
        pixel,
        fourcc: offer.fourcc,
        width: size.width,
        height: size.height,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(num: u32, den: u32) -> Interval {
        Interval { num, den }
    }

    fn size(width: u32, height: u32, fps: &[u32]) -> SizeOffer {
        SizeOffer {
            width,
            height,
            rates: Rates::Discrete(fps.iter().map(|f| iv(1, *f)).collect()),
        }
    }

    fn offer(fourcc: &[u8; 4], sizes: Vec<SizeOffer>) -> FormatOffer {
        FormatOffer {
            fourcc: *fourcc,
            description: String::new(),
            sizes,
            range: None,
        }
    }

    /// Like vivid's "Webcam 0": raw formats only, fewer rates at larger sizes.
    fn vivid() -> Vec<FormatOffer> {
        let sizes = || {
            vec![
                size(320, 180, &[60, 30, 25, 15, 5, 1]),
                size(640, 480, &[25, 15, 10, 5, 1]),
                size(1280, 720, &[10, 5, 1]),
            ]
        };
        vec![
            offer(b"YUYV", sizes()),
            offer(b"UYVY", sizes()),
            offer(b"NV12", sizes()),
        ]
    }

    fn webcam() -> Vec<FormatOffer> {
        vec![
            offer(b"YUYV", vec![size(640, 480, &[30]), size(1280, 720, &[10])]),
            offer(
                b"MJPG",
                vec![size(640, 480, &[30]), size(1280, 720, &[30, 15])],
            ),
        ]
    }

    fn request(format: CaptureFormat, width: u32, height: u32, fps: u32) -> Request {
        Request {
            format,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn auto_prefers_mjpeg_then_raw() {
        let mode = negotiate(&webcam(), &request(CaptureFormat::Auto, 1280, 720, 30), &[]).unwrap();
        assert_eq!(mode.pixel, PixelFormat::Mjpeg);
        assert_eq!(mode.fourcc, *b"MJPG");
        assert_eq!(mode.interval, iv(1, 30));
        assert_eq!(mode.to_string(), "MJPEG 1280x720 @ 30 fps");
        // Only raw offers it: auto falls through to raw.
        let mode = negotiate(&vivid(), &request(CaptureFormat::Auto, 640, 480, 25), &[]).unwrap();
        assert_eq!(mode.pixel, PixelFormat::Nv12);
    }

    #[test]
    fn auto_prefers_camera_h264_unless_excluded() {
        let mut offers = webcam();
        offers.push(offer(b"H264", vec![size(1280, 720, &[30])]));
        let ask = request(CaptureFormat::Auto, 1280, 720, 30);
        assert_eq!(
            negotiate(&offers, &ask, &[]).unwrap().pixel,
            PixelFormat::H264
        );
        assert_eq!(
            negotiate(&offers, &ask, &[PixelFormat::H264])
                .unwrap()
                .pixel,
            PixelFormat::Mjpeg
        );
    }

    #[test]
    fn explicit_format_is_taken_or_refused() {
        let mode = negotiate(&vivid(), &request(CaptureFormat::Yuyv, 640, 480, 25), &[]).unwrap();
        assert_eq!((mode.pixel, mode.fourcc), (PixelFormat::Yuyv, *b"YUYV"));
        let e = negotiate(&vivid(), &request(CaptureFormat::Mjpeg, 640, 480, 25), &[]).unwrap_err();
        assert_eq!(e, "the camera offers no MJPEG; it offers NV12, YUYV");
        let only_unusable = vec![offer(b"UYVY", vec![size(640, 480, &[30])])];
        let e = negotiate(
            &only_unusable,
            &request(CaptureFormat::Auto, 640, 480, 30),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("none camportal can use"), "{e}");
    }

    #[test]
    fn a_size_or_rate_not_offered_names_what_is() {
        let e = negotiate(&vivid(), &request(CaptureFormat::Yuyv, 1280, 720, 30), &[]).unwrap_err();
        assert_eq!(
            e,
            "the camera cannot send 1280x720 at 30 fps as YUYV; it offers YUYV 320x180 (60, 30, \
             25, 15, 5, 1 fps), 640x480 (25, 15, 10, 5, 1 fps), 1280x720 (10, 5, 1 fps) (set \
             encoding width, height and fps to one of these)"
        );
        let e = negotiate(&vivid(), &request(CaptureFormat::Auto, 800, 600, 30), &[]).unwrap_err();
        assert!(e.contains("it offers NV12 320x180"), "{e}");
        assert!(e.contains("; YUYV 320x180"), "{e}");
    }

    #[test]
    fn rates_match_within_one_percent_and_ranges() {
        let ntsc = Rates::Discrete(vec![iv(1001, 30000), iv(333_333, 10_000_000)]);
        assert_eq!(ntsc.interval_for(30), Some(iv(1001, 30000)));
        assert_eq!(ntsc.interval_for(25), None);
        let range = Rates::Range {
            min: iv(1, 60),
            max: iv(1, 1),
        };
        assert_eq!(range.interval_for(24), Some(iv(1, 24)));
        assert_eq!(range.interval_for(61), None);
        assert_eq!(range.to_string(), "1-60 fps");
        assert_eq!(
            Rates::Discrete(vec![iv(2, 25), iv(1, 30)]).to_string(),
            "30, 12.5 fps"
        );
        assert_eq!(
            Rates::Discrete(vec![iv(2, 25), iv(1, 30)]).whole_fps(),
            [30]
        );
        assert_eq!(range.whole_fps(), [60, 30, 25, 15, 10, 5, 1]);
    }

    #[test]
    fn fourcc_text() {
        assert_eq!(offer(b"YUYV", vec![]).fourcc_text(), "YUYV");
        assert_eq!(offer(b"Y10 ", vec![]).fourcc_text(), "Y10");
        assert_eq!(
            offer(&[b'Y', b'1', b'6', b' ' | 0x80], vec![]).fourcc_text(),
            "Y16-BE"
        );
    }

    #[test]
    fn size_ranges() {
        let r = SizeRange {
            min_width: 160,
            max_width: 1920,
            step_width: 16,
            min_height: 120,
            max_height: 1080,
            step_height: 8,
        };
        assert!(r.contains(640, 480));
        assert!(!r.contains(650, 480));
        assert!(!r.contains(3840, 480));
    }

    #[test]
    fn suggestions() {
        // vivid: 1280x720 only reaches 10 fps, so 640x480 at 25; NV12 is preferred over YUYV.
        let mode = suggest(&vivid()).unwrap();
        assert_eq!(mode.to_string(), "NV12 640x480 @ 25 fps");
        // A webcam with MJPEG: 1280x720 at 30.
        assert_eq!(
            suggest(&webcam()).unwrap().to_string(),
            "MJPEG 1280x720 @ 30 fps"
        );
        // H.264 only when nothing else is there.
        let mut offers = webcam();
        offers.insert(0, offer(b"H264", vec![size(1920, 1080, &[30])]));
        assert_eq!(suggest(&offers).unwrap().pixel, PixelFormat::Mjpeg);
        let only = vec![offer(b"H264", vec![size(1920, 1080, &[30])])];
        assert_eq!(
            suggest(&only).unwrap().to_string(),
            "H264 1920x1080 @ 30 fps"
        );
        // Nothing fits the aim: the smallest size there is.
        let big = vec![offer(
            b"YUYV",
            vec![size(3840, 2160, &[5]), size(1920, 1080, &[5])],
        )];
        assert_eq!(suggest(&big).unwrap().to_string(), "YUYV 1920x1080 @ 5 fps");
        assert_eq!(
            suggest(&[offer(b"UYVY", vec![size(640, 480, &[30])])]),
            None
        );
    }
}
