//! H.264 decoding with OpenH264, for the decoding viewer and tests: Annex B in, the picture's
//! planes and the [`stamp`](camportal::stamp) it carries out.

use openh264::decoder::Decoder as H264Decoder;
use openh264::formats::YUVSource;

use camportal::stamp::{self, Stamp};

/// One decoded picture: its I420 planes, tightly packed, and the stamp read from it (if any).
#[derive(Debug, Clone)]
pub struct DecodedPicture {
    pub width: u32,
    pub height: u32,
    /// Luma, stride = width.
    pub y: Vec<u8>,
    /// Chroma, (width + 1) / 2 by (height + 1) / 2 each, stride = (width + 1) / 2.
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    pub stamp: Option<Stamp>,
}

#[derive(Debug, thiserror::Error)]
#[error("openh264 {context}: {source}")]
pub struct DecoderError {
    context: &'static str,
    #[source]
    source: openh264::Error,
}

pub struct Decoder {
    inner: H264Decoder,
}

impl Decoder {
    pub fn new() -> Result<Decoder, DecoderError> {
        let inner = H264Decoder::new().map_err(|source| DecoderError {
            context: "creating the decoder",
            source,
        })?;
        Ok(Decoder { inner })
    }

    /// Decodes one access unit (or any run of whole NAL units, start codes included). Returns the
    /// picture it completes, or `None` if it completes none (parameter sets alone, or a picture
    /// the decoder cannot show yet, e.g. P frames before the first IDR).
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<DecodedPicture>, DecoderError> {
        let decoded = self.inner.decode(annexb).map_err(|source| DecoderError {
            context: "decoding an access unit",
            source,
        })?;
        let Some(yuv) = decoded else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (y_stride, u_stride, v_stride) = yuv.strides();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y = packed(yuv.y(), y_stride, w, h)?;
        let u = packed(yuv.u(), u_stride, cw, ch)?;
        let v = packed(yuv.v(), v_stride, cw, ch)?;
        let (width, height) = (w as u32, h as u32);
        let stamp = stamp::read(&y, w, width, height);
        Ok(Some(DecodedPicture {
            width,
            height,
            y,
            u,
            v,
            stamp,
        }))
    }
}

/// A `width` x `height` plane without the decoder's row padding.
fn packed(
    plane: &[u8],
    stride: usize,
    width: usize,
    height: usize,
) -> Result<Vec<u8>, DecoderError> {
    let mut out = Vec::with_capacity(width * height);
    for row in plane.chunks(stride).take(height) {
        let Some(row) = row.get(..width) else { break };
        out.extend_from_slice(row);
    }
    if out.len() != width * height {
        return Err(DecoderError {
            context: "copying the picture",
            source: openh264::Error::msg_string(format!(
                "a plane of {} bytes is too short for {width}x{height} with stride {stride}",
                plane.len()
            )),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_or_nothing_not_a_panic() {
        let mut dec = Decoder::new().expect("decoder");
        assert!(matches!(dec.decode(&[]), Ok(None) | Err(_)));
        let junk: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = dec.decode(&junk);
        let mut with_start = vec![0, 0, 0, 1, 0x65];
        with_start.extend_from_slice(&junk);
        let _ = dec.decode(&with_start);
    }
}
