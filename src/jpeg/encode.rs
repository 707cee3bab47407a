//! I420 → JPEG with libjpeg-turbo (4:2:0 kept as it is: no conversion), once per picture.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::frame::RawFrame;

/// A path's last picture as JPEG: the first reader to want a picture compresses it, the others
/// (at the same time or later) get the same bytes.
#[derive(Default)]
pub(crate) struct JpegCache {
    /// The picture's capture instant and quality (`None`: the camera's own JPEG, whatever
    /// quality is asked), and its JPEG.
    last: Mutex<Option<(Instant, Option<u8>, Bytes)>>,
}

impl JpegCache {
    /// `jpeg` is `picture` already (the camera's own): given out as it is.
    pub(crate) fn prime(&self, picture: &RawFrame, jpeg: Bytes) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((picture.capture.mono, None, jpeg));
    }

    /// `picture` as JPEG at `quality`. Blocks (compression takes milliseconds): call it off the
    /// async threads.
    pub(crate) fn get(&self, picture: &RawFrame, quality: u8) -> Result<Bytes, String> {
        // Held while compressing: a second reader waits for these bytes instead of making its own.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((captured, made_at, jpeg)) = last.as_ref()
            && *captured == picture.capture.mono
            && made_at.is_none_or(|made_at| made_at == quality)
        {
            return Ok(jpeg.clone());
        }
        let jpeg = Bytes::from(encode(picture, quality)?);
        *last = Some((picture.capture.mono, Some(quality), jpeg.clone()));
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

    #[test]
    fn a_picture_is_compressed_once_and_a_cameras_own_jpeg_is_given_as_it_is() {
        let picture = RawFrame {
            width: 64,
            height: 48,
            data: vec![100; RawFrame::i420_len(64, 48)],
            capture: CaptureTime::now(),
        };
        let cache = JpegCache::default();
        let first = cache.get(&picture, 80).unwrap();
        let again = cache.get(&picture, 80).unwrap();
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "the same bytes, not a second compression"
        );
        cache.prime(&picture, Bytes::from_static(b"camera's own"));
        assert_eq!(&cache.get(&picture, 50).unwrap()[..], b"camera's own");
    }
}
