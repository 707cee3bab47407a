//! H.264 as it travels: the Annex B byte stream (start codes, NAL unit types, the SPS's profile)
//! and its RTP packetization (RFC 6184, packetization-mode 1). Only what camportal needs is
//! parsed: keyframes, parameter sets, and whether a browser decodes the profile.

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// NAL unit types (ITU-T H.264 table 7-1).
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
/// RTP payload types that aggregate or fragment NAL units (RFC 6184 §5.7, §5.8).
pub const NAL_STAP_A: u8 = 24;
pub const NAL_FU_A: u8 = 28;

/// RTP payload size: leaves room for RTP/SRTP/UDP/IP headers under a 1280-byte path MTU.
const RTP_PAYLOAD_MTU: usize = 1150;

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

/// The type of a NAL unit (without its start code; never empty, see [`nal_units`]).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |header| header & 0x1f)
}

/// The NAL unit types of an Annex B buffer, in order.
pub fn nal_types(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    nal_units(data).map(nal_type)
}

/// Whether an access unit carries an IDR slice: a viewer can start decoding there.
pub fn contains_idr(data: &[u8]) -> bool {
    nal_types(data).any(|t| t == NAL_IDR)
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

/// Access units to RTP payloads (single NAL units, STAP-A for the parameter sets, FU-A for the
/// rest), sized for any path MTU a viewer is likely to have.
#[derive(Default)]
pub struct Packetizer {
    payloader: H264Payloader,
}

impl Packetizer {
    /// The payloads of one access unit, in order; the last one gets the marker bit.
    pub fn packetize(&mut self, access_unit: &Bytes) -> Result<Vec<Bytes>, String> {
        self.payloader
            .payload(RTP_PAYLOAD_MTU, access_unit)
            .map_err(|err| format!("cannot packetize H.264: {err}"))
    }
}

/// A tiny H.264 stream for tests: real NAL headers, bodies cut short.
#[cfg(test)]
pub(crate) mod sample {
    pub(crate) const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    pub(crate) const PPS: [u8; 3] = [0x68, 0xce, 0x3c];
    pub(crate) const IDR: [u8; 4] = [0x65, 0x88, 0x84, 0x00];
    pub(crate) const P: [u8; 3] = [0x41, 0x9a, 0x02];

    /// Annex B with 4- and 3-byte start codes mixed.
    pub(crate) fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, nal) in nals.iter().enumerate() {
            if i % 2 == 0 {
                out.push(0);
            }
            out.extend_from_slice(&[0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::sample::*;
    use super::*;

    #[test]
    fn splits_nal_units() {
        let data = annexb(&[&SPS, &PPS, &IDR]);
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, [&SPS[..], &PPS[..], &IDR[..]]);
        assert_eq!(
            nal_types(&data).collect::<Vec<_>>(),
            [NAL_SPS, NAL_PPS, NAL_IDR]
        );
        assert!(contains_idr(&data) && !contains_idr(&annexb(&[&P])));
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(sps_profile(&data), Some(66));
        assert_eq!(sps_profile(&annexb(&[&P])), None);
        assert!(browser_decodes(66) && browser_decodes(77));
        assert!(!browser_decodes(100));
    }

    #[test]
    fn a_large_access_unit_is_fragmented_under_the_mtu() {
        let idr: Vec<u8> = [&IDR[..1], &[7u8; 5000]].concat();
        let au = Bytes::from(annexb(&[&SPS, &PPS, &idr]));
        let payloads = Packetizer::default().packetize(&au).expect("packetize");
        assert!(payloads.len() >= 5, "{}", payloads.len());
        assert!(payloads.iter().all(|p| p.len() <= RTP_PAYLOAD_MTU));
        assert_eq!(nal_type(&payloads[1]), NAL_FU_A);
    }
}
