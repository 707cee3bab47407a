//! I420 → JPEG with libjpeg-turbo (4:2:0 kept as it is: no conversion), once per picture.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::frame::RawFrame;

/// A path's last picture as JPEG: the first reader to want a picture compresses it, the others
/// (at the same time or later) get the same bytes.
#[derive(Default)]
pub(crate) struct JpegCache {
    /// The picture's capture instant and quality, and its JPEG.
    last: Mutex<Option<(Instant, u8, Bytes)>>,
}

impl JpegCache {
    /// `picture` as JPEG at `quality`. Blocks (compression takes milliseconds): call it off the
    /// async threads.
    pub(crate) fn get(&self, picture: &RawFrame, quality: u8) -> Result<Bytes, String> {
        // Held while compressing: a second reader waits for these bytes instead of making its own.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((captured, made_at, jpeg)) = last.as_ref()
            && *captured == picture.capture.mono
            && *made_at == quality
        {
            return Ok(jpeg.clone());
        }
        let jpeg = Bytes::from(encode(picture, quality)?);
        *last = Some((picture.capture.mono, quality, jpeg.clone()));
        Ok(jpeg)
    }
}

/// Compresses `picture` at `quality` (1..=100).
pub(crate) fn encode(picture: &RawFrame, quality: u8) -> Result<Vec<u8>, String> {
    let image = turbojpeg::YuvImage {
        pixels: picture.data.as_slice(),
        width: picture.width as usize,
        align: 1,
        height: picture.height as usize,
        subsamp: turbojpeg::Subsamp::Sub2x2,
    };
    turbojpeg::compress_yuv(image, i32::from(quality))
        .map(|jpeg| jpeg.to_vec())
        .map_err(|err| format!("JPEG compression failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CaptureTime;

    #[test]
    fn a_grey_picture_round_trips() {
        let (width, height) = (64, 48);
        let picture = RawFrame {
            width,
            height,
            data: vec![128; RawFrame::i420_len(width, height)],
            capture: CaptureTime::now(),
        };
        let jpeg = encode(&picture, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "SOI");
        let header = turbojpeg::read_header(&jpeg).unwrap();
        assert_eq!((header.width, header.height), (64, 48));
    }
}
