//! The two kinds of picture that move through the data plane.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

/// When a picture was captured, on both clocks: `wall` goes into the stamp and the RTP
/// `abs-capture-time` extension (receivers compare it with their own wall clock); `mono` drives
/// pacing and RTP timestamps, which must never jump backwards.
#[derive(Debug, Clone, Copy)]
pub struct CaptureTime {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl CaptureTime {
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

/// One uncompressed picture in I420: the Y plane, then U, then V, each tightly packed
/// (strides equal to widths). Width and height are even.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    pub capture: CaptureTime,
}

impl RawFrame {
    /// Byte length of an I420 picture of this size.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// The three planes (Y, U, V).
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (y, uv) = self.data.split_at(w * h);
        let (u, v) = uv.split_at((w / 2) * (h / 2));
        (y, u, v)
    }
}

/// One encoded H.264 picture in Annex B form (start codes, SPS/PPS before every IDR), shared by
/// reference between all viewers of a path: encode once, fan out.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub data: Bytes,
    pub keyframe: bool,
    pub width: u32,
    pub height: u32,
    pub capture: CaptureTime,
}
