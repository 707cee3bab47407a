//! H.264 a camera encodes itself, passed through: each buffer is one access unit in Annex B.
//! Only the little that passthrough needs is parsed: NAL unit types (keyframe, parameter sets)
//! and the SPS's profile (whether a browser decodes it).

use bytes::Bytes;

use crate::frame::{AccessUnit, CaptureTime};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B buffer, without their start codes.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|next| {
            // The start code of the next unit, and a fourth leading zero if it has one.
            let mut end = next - 3;
            while end > 0 && data[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| &data[start..end.max(start)])
        .filter(|nal| !nal.is_empty())
}

fn nal_type(nal: &[u8]) -> u8 {
    nal[0] & 0x1f
}

/// `profile_idc` of the first SPS in `data`, if it carries one.
pub fn sps_profile(data: &[u8]) -> Option<u8> {
    nal_units(data)
        .find(|nal| nal_type(nal) == NAL_SPS)
        .and_then(|sps| sps.get(1).copied())
}

/// Profiles the kiosk's browser decodes: Baseline/Constrained Baseline (66) and Main (77), not
/// High (100) and up.
pub fn browser_decodes(profile_idc: u8) -> bool {
    matches!(profile_idc, 66 | 77)
}

/// Turns camera buffers into access units, keeping the last parameter sets so that every IDR
/// carries them (a viewer joining at an IDR needs them; some cameras send them only once).
#[derive(Default)]
pub struct Passthrough {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl Passthrough {
    pub fn access_unit(
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

    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS: [u8; 3] = [0x68, 0xce, 0x3c];
    const IDR: [u8; 4] = [0x65, 0x88, 0x84, 0x00];
    const P: [u8; 3] = [0x41, 0x9a, 0x02];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, nal) in nals.iter().enumerate() {
            // Mix 4- and 3-byte start codes.
            if i % 2 == 0 {
                out.push(0);
            }
            out.extend_from_slice(&[0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn splits_nal_units() {
        let data = annexb(&[&SPS, &PPS, &IDR]);
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, [&SPS[..], &PPS[..], &IDR[..]]);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(sps_profile(&data), Some(66));
        assert_eq!(sps_profile(&annexb(&[&P])), None);
        assert!(browser_decodes(66) && browser_decodes(77));
        assert!(!browser_decodes(100));
    }

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
