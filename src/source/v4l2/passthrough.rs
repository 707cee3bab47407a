//! H.264 a camera encodes itself, passed through: each buffer is one access unit in Annex B.
//! What the byte stream says (keyframe, parameter sets, profile) is read with `rtp::h264`.

use bytes::Bytes;

use crate::frame::{AccessUnit, CaptureTime};
use crate::rtp::h264::{NAL_IDR, NAL_PPS, NAL_SPS, nal_type, nal_units};

/// Turns camera buffers into access units, keeping the last parameter sets so that every IDR
/// carries them (a viewer joining at an IDR needs them; some cameras send them only once).
#[derive(Default)]
pub(crate) struct Passthrough {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl Passthrough {
    pub(crate) fn access_unit(
        &mut self,
        data: &[u8],
        width: u32,
        height: u32,
        capture: CaptureTime,
    ) -> Option<AccessUnit> {
        let (mut keyframe, mut has_sps, mut has_pps) = (false, false, false);
        for nal in nal_units(data) {
            match nal_type(nal) {
                NAL_IDR => keyframe = true,
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                _ => {}
            }
        }
        if !data.windows(3).any(|w| w == [0, 0, 1]) {
            return None;
        }
        let mut out = Vec::with_capacity(data.len() + 64);
        if keyframe {
            for (present, set) in [(has_sps, &self.sps), (has_pps, &self.pps)] {
                if let (false, Some(set)) = (present, set) {
                    out.extend_from_slice(&[0, 0, 0, 1]);
                    out.extend_from_slice(set);
                }
            }
        }
        out.extend_from_slice(data);
        Some(AccessUnit {
            data: Bytes::from(out),
            keyframe,
            width,
            height,
            capture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::h264::sample::{IDR, P, PPS, SPS, annexb};

    #[test]
    fn parameter_sets_are_repeated_before_idrs() {
        let mut pass = Passthrough::default();
        let t = CaptureTime::now();
        let first = pass
            .access_unit(&annexb(&[&SPS, &PPS, &IDR]), 640, 480, t)
            .unwrap();
        assert!(first.keyframe);
        let p = pass.access_unit(&annexb(&[&P]), 640, 480, t).unwrap();
        assert!(!p.keyframe);
        assert_eq!(p.data.len(), annexb(&[&P]).len());
        let bare_idr = pass.access_unit(&annexb(&[&IDR]), 640, 480, t).unwrap();
        assert!(bare_idr.keyframe);
        let nals: Vec<&[u8]> = nal_units(&bare_idr.data).collect();
        assert_eq!(nals, [&SPS[..], &PPS[..], &IDR[..]]);
        assert!(pass.access_unit(b"garbage", 640, 480, t).is_none());
    }
}
