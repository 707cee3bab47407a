//! Pictures of a camera whose own H.264 is passed through, for JPEG readers (a snapshot, an
//! MJPEG stream): the access units since the last keyframe are kept, and decoded with OpenH264
//! from that keyframe on only while someone reads pictures. Nobody reading, no decoding.

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use crate::frame::{AccessUnit, RawFrame};

/// Access units kept since the last keyframe (20 s at 30 fps). A stream with keyframes further
/// apart is decoded from its next keyframe on instead.
const MAX_KEPT: usize = 600;

#[derive(Default)]
pub(super) struct PassthroughPictures {
    since_keyframe: Vec<AccessUnit>,
    /// Whether `since_keyframe` starts at a keyframe and holds everything after it.
    whole: bool,
    /// While pictures are wanted: a decoder that has seen everything since a keyframe.
    decoder: Option<Decoder>,
}

impl PassthroughPictures {
    /// Takes the next access unit; returns the picture it decodes to if pictures are `wanted`.
    pub(super) fn push(&mut self, unit: &AccessUnit, wanted: bool) -> Option<RawFrame> {
        if unit.keyframe {
            self.since_keyframe.clear();
            self.whole = true;
        }
        if self.since_keyframe.len() < MAX_KEPT {
            // A clone shares the bytes.
            self.since_keyframe.push(unit.clone());
        } else {
            self.whole = false;
        }
        if !wanted {
            self.decoder = None;
            return None;
        }
        if let Some(decoder) = &mut self.decoder {
            return decode(decoder, unit);
        }
        if !self.whole {
            return None;
        }
        let mut decoder = Decoder::new().ok()?;
        let mut last = None;
        for kept in &self.since_keyframe {
            last = decode(&mut decoder, kept).or(last);
        }
        self.decoder = Some(decoder);
        last
    }
}

/// The picture `unit` completes, as tightly packed I420 with the unit's capture time.
fn decode(decoder: &mut Decoder, unit: &AccessUnit) -> Option<RawFrame> {
    let yuv = decoder.decode(&unit.data).ok()??;
    let (width, height) = yuv.dimensions();
    let (y_stride, u_stride, v_stride) = yuv.strides();
    let mut data = Vec::with_capacity(RawFrame::i420_len(width as u32, height as u32));
    let planes = [
        (yuv.y(), y_stride, width, height),
        (yuv.u(), u_stride, width / 2, height / 2),
        (yuv.v(), v_stride, width / 2, height / 2),
    ];
    for (plane, stride, w, h) in planes {
        for row in plane.chunks(stride.max(1)).take(h) {
            data.extend_from_slice(row.get(..w)?);
        }
    }
    let whole = data.len() == RawFrame::i420_len(width as u32, height as u32);
    whole.then_some(RawFrame {
        width: width as u32,
        height: height as u32,
        data,
        capture: unit.capture,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{Encoder, EncoderSettings};
    use crate::frame::CaptureTime;
    use crate::source::testsrc::TestSrc;

    #[test]
    fn decodes_from_the_last_keyframe_only_while_wanted() {
        let settings = EncoderSettings {
            width: 160,
            height: 120,
            fps: 30,
            bitrate_bps: 300_000,
            keyframe_interval_frames: 10,
        };
        let mut encoder = Encoder::new(&settings).unwrap();
        let source = TestSrc::new(160, 120, 30);
        let mut pictures = PassthroughPictures::default();
        let mut decoded = 0;
        for n in 0..25u32 {
            let frame = source.render(n, CaptureTime::now());
            let Some(unit) = encoder.encode(&frame, n == 0).unwrap() else {
                continue;
            };
            // Wanted from the 15th on: mid-GOP, so the decoder starts from the kept keyframe.
            let wanted = n >= 15;
            match pictures.push(&unit, wanted) {
                Some(picture) => {
                    assert!(wanted, "decoded while nobody wanted pictures");
                    assert_eq!((picture.width, picture.height), (160, 120));
                    decoded += 1;
                }
                None => assert!(!wanted, "no picture for frame {n}"),
            }
        }
        assert_eq!(decoded, 10);
        assert!(pictures.since_keyframe.len() <= 10);
    }
}
