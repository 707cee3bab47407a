//! From RTP to decodable H.264: access units assembled from RTP payloads (RFC 6184: single NAL,
//! STAP-A, FU-A), one per RTP timestamp, and the gate that lets through only what can be decoded
//! (nothing after a loss until the next intact IDR, and nothing before the first).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use camportal::rtp::h264::{NAL_FU_A, NAL_IDR, NAL_STAP_A};
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::sequence::{Seen, Sequence};

/// An access unit that grows past this without a marker bit is garbage, not video.
const MAX_AU_BYTES: usize = 16 << 20;
/// A browser-like cap on automatic keyframe requests while the picture is broken.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// Decides which access units reach the decoder: none from a loss (or a skipped one) until the
/// next intact IDR, and none before the first.
#[derive(Debug)]
pub(crate) struct KeyframeGate {
    need_idr: bool,
    last_pli: Option<Instant>,
}

impl Default for KeyframeGate {
    fn default() -> Self {
        Self {
            need_idr: true,
            last_pli: None,
        }
    }
}

impl KeyframeGate {
    pub(crate) fn broken(&mut self) {
        self.need_idr = true;
    }

    pub(crate) fn admit(&mut self, keyframe: bool, damaged: bool) -> bool {
        if damaged {
            self.need_idr = true;
            return false;
        }
        if keyframe {
            self.need_idr = false;
        }
        !self.need_idr
    }

    /// Whether to ask for a keyframe now (only while one is needed, at most every
    /// `PLI_INTERVAL`).
    pub(crate) fn pli_due(&mut self, now: Instant) -> bool {
        let due = self.need_idr
            && self
                .last_pli
                .is_none_or(|last| now.duration_since(last) >= PLI_INTERVAL);
        if due {
            self.last_pli = Some(now);
        }
        due
    }
}

/// One H.264 access unit in Annex B form, as assembled from RTP.
#[derive(Debug)]
pub(crate) struct AssembledAu {
    pub(crate) data: Vec<u8>,
    /// Has an IDR slice (NAL type 5).
    pub(crate) keyframe: bool,
    /// Packets were lost in or just before it, or it was malformed: not decodable as is.
    pub(crate) damaged: bool,
    pub(crate) received: SystemTime,
    pub(crate) capture_time: Option<SystemTime>,
}

/// RTP payloads (RFC 6184: single NAL, STAP-A, FU-A) → access units, one per RTP timestamp,
/// complete at the marker bit. The `rtc` crate's `H264Packet` does the depacketizing; this adds
/// what it leaves out: access unit boundaries, loss, and a structural check of each payload
/// (its STAP-A walk indexes past the end of a truncated payload).
#[derive(Default)]
pub(crate) struct AuAssembler {
    depacketizer: H264Packet,
    sequence: Sequence,
    current: Option<PartialAu>,
    /// A loss happened while no access unit was open: the next one is damaged.
    loss_pending: bool,
}

struct PartialAu {
    rtp_timestamp: u32,
    data: Vec<u8>,
    keyframe: bool,
    damaged: bool,
    capture_time: Option<SystemTime>,
}

impl PartialAu {
    fn finish(self) -> AssembledAu {
        AssembledAu {
            data: self.data,
            keyframe: self.keyframe,
            damaged: self.damaged,
            received: SystemTime::now(),
            capture_time: self.capture_time,
        }
    }
}

/// What the assembler needs of an RTP header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rtp {
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    pub(crate) marker: bool,
    /// From `abs-capture-time`, if the packet carries it.
    pub(crate) capture_time: Option<SystemTime>,
}

impl AuAssembler {
    /// Takes one packet; emits each access unit it completes. Returns what the packet's
    /// sequence number said (losses are counted by the caller).
    pub(crate) fn push(
        &mut self,
        rtp: Rtp,
        payload: &Bytes,
        mut emit: impl FnMut(AssembledAu),
    ) -> Seen {
        let Rtp {
            seq,
            timestamp,
            marker,
            capture_time,
        } = rtp;
        let seen = self.sequence.see(seq);
        match seen {
            Seen::Late => return seen,
            Seen::Next { lost: 0 } => {}
            Seen::Next { .. } => self.lost(),
        }

        if self
            .current
            .as_ref()
            .is_some_and(|au| au.rtp_timestamp != timestamp)
        {
            // The marker of the previous access unit never came; what we have is all there is.
            if let Some(au) = self.current.take() {
                emit(au.finish());
            }
        }
        let au = self.current.get_or_insert_with(|| {
            // Fresh state per access unit: no fragment of an earlier one can leak in.
            self.depacketizer = H264Packet::default();
            PartialAu {
                rtp_timestamp: timestamp,
                data: Vec::new(),
                keyframe: false,
                damaged: std::mem::take(&mut self.loss_pending),
                capture_time: None,
            }
        });
        if au.capture_time.is_none() {
            au.capture_time = capture_time;
        }

        match payload_nal_types(payload) {
            Some(types) if !au.damaged => {
                au.keyframe |= types.contains(&NAL_IDR);
                match self.depacketizer.depacketize(payload) {
                    Ok(nals) if au.data.len() + nals.len() <= MAX_AU_BYTES => {
                        au.data.extend_from_slice(&nals);
                    }
                    Ok(_) | Err(_) => au.damaged = true,
                }
            }
            Some(types) => au.keyframe |= types.contains(&NAL_IDR),
            None => au.damaged = true,
        }
        if au.damaged {
            au.data = Vec::new();
        }

        if marker && let Some(au) = self.current.take() {
            emit(au.finish());
        }
        seen
    }

    fn lost(&mut self) {
        match &mut self.current {
            Some(au) => au.damaged = true,
            None => self.loss_pending = true,
        }
        self.depacketizer = H264Packet::default();
    }
}

/// The NAL unit types an RTP payload carries (for a FU-A, only its first fragment names one),
/// or None if it is not a well-formed packetization-mode 1 payload.
fn payload_nal_types(payload: &[u8]) -> Option<Vec<u8>> {
    let (&header, rest) = payload.split_first()?;
    if header & 0x80 != 0 {
        return None; // forbidden_zero_bit
    }
    match header & 0x1f {
        nal @ 1..=23 => (!rest.is_empty() || nal == 9).then(|| vec![nal]),
        NAL_STAP_A => {
            let mut types = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let (size, tail) = rest.split_first_chunk::<2>()?;
                let size = usize::from(u16::from_be_bytes(*size));
                if size == 0 || size > tail.len() {
                    return None;
                }
                types.push(tail[0] & 0x1f);
                rest = &tail[size..];
            }
            (!types.is_empty()).then_some(types)
        }
        NAL_FU_A => {
            let (&fu_header, data) = rest.split_first()?;
            if data.is_empty() {
                return None;
            }
            let start = fu_header & 0x80 != 0;
            Some(if start {
                vec![fu_header & 0x1f]
            } else {
                Vec::new()
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xaa];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0x44];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02, 0x03];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
            .collect()
    }

    fn stap_a(nals: &[&[u8]]) -> Bytes {
        let mut out = vec![0x78];
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out.into()
    }

    /// FU-A fragments of `nal`, `chunk` bytes of its body each.
    fn fu_a(nal: &[u8], chunk: usize) -> Vec<Bytes> {
        let indicator = (nal[0] & 0xe0) | NAL_FU_A;
        let body = &nal[1..];
        let pieces: Vec<_> = body.chunks(chunk).collect();
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut header = nal[0] & 0x1f;
                if i == 0 {
                    header |= 0x80;
                }
                if i == pieces.len() - 1 {
                    header |= 0x40;
                }
                [&[indicator, header][..], piece].concat().into()
            })
            .collect()
    }

    struct Feed {
        assembler: AuAssembler,
        seq: u16,
        out: Vec<AssembledAu>,
    }

    impl Feed {
        fn new(seq: u16) -> Self {
            Self {
                assembler: AuAssembler::default(),
                seq,
                out: Vec::new(),
            }
        }

        fn push(&mut self, timestamp: u32, marker: bool, payload: Bytes) -> Seen {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            self.push_seq(seq, timestamp, marker, payload)
        }

        fn push_seq(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) -> Seen {
            let out = &mut self.out;
            let rtp = Rtp {
                seq,
                timestamp,
                marker,
                capture_time: None,
            };
            self.assembler.push(rtp, &payload, |au| out.push(au))
        }
    }

    #[test]
    fn stap_a_and_fu_a_make_one_keyframe() {
        let big_idr: Vec<u8> = [&[0x65u8][..], &[7u8; 3000]].concat();
        let mut feed = Feed::new(65534); // crosses the sequence number wrap
        feed.push(1000, false, stap_a(&[SPS, PPS]));
        let fragments = fu_a(&big_idr, 1000);
        let last = fragments.len() - 1;
        for (i, fragment) in fragments.into_iter().enumerate() {
            feed.push(1000, i == last, fragment);
        }
        assert_eq!(feed.out.len(), 1);
        let au = &feed.out[0];
        assert!(au.keyframe && !au.damaged);
        assert_eq!(au.data, annexb(&[SPS, PPS, &big_idr]));
    }

    #[test]
    fn single_nal_p_frames_split_on_marker() {
        let mut feed = Feed::new(10);
        feed.push(1000, true, Bytes::from_static(SLICE));
        feed.push(4000, true, Bytes::from_static(SLICE));
        assert_eq!(feed.out.len(), 2);
        assert!(feed.out.iter().all(|au| !au.keyframe && !au.damaged));
        assert_eq!(feed.out[1].data, annexb(&[SLICE]));
    }

    #[test]
    fn missing_marker_ends_the_unit_at_the_next_timestamp() {
        let mut feed = Feed::new(0);
        feed.push(1000, false, Bytes::from_static(IDR));
        assert!(feed.out.is_empty());
        feed.push(4000, true, Bytes::from_static(SLICE));
        assert_eq!(feed.out.len(), 2);
        assert!(feed.out[0].keyframe && !feed.out[0].damaged);
        assert_eq!(feed.out[0].data, annexb(&[IDR]));
    }

    #[test]
    fn loss_inside_a_unit_damages_it_and_is_counted() {
        let nal: Vec<u8> = [&[0x65u8][..], &[1u8; 300]].concat();
        let fragments = fu_a(&nal, 100);
        let mut feed = Feed::new(100);
        feed.push_seq(100, 1000, false, fragments[0].clone());
        let seen = feed.push_seq(102, 1000, true, fragments[2].clone());
        assert_eq!(seen, Seen::Next { lost: 1 });
        assert_eq!(feed.out.len(), 1);
        assert!(feed.out[0].damaged);
        // The next unit is clean again.
        feed.push_seq(103, 4000, true, Bytes::from_static(SLICE));
        assert!(!feed.out[1].damaged);
    }

    #[test]
    fn loss_between_units_damages_the_next() {
        let mut feed = Feed::new(0);
        feed.push_seq(0, 1000, true, Bytes::from_static(IDR));
        let seen = feed.push_seq(5, 4000, true, Bytes::from_static(SLICE));
        assert_eq!(seen, Seen::Next { lost: 4 });
        assert!(!feed.out[0].damaged && feed.out[1].damaged);
    }

    #[test]
    fn late_and_duplicate_packets_are_ignored() {
        let mut feed = Feed::new(0);
        feed.push_seq(10, 1000, true, Bytes::from_static(SLICE));
        let late = Seen::Late;
        assert_eq!(
            feed.push_seq(10, 1000, true, Bytes::from_static(SLICE)),
            late
        );
        assert_eq!(
            feed.push_seq(9, 1000, true, Bytes::from_static(SLICE)),
            late
        );
        assert_eq!(feed.out.len(), 1);
    }

    #[test]
    fn malformed_payloads_damage_without_panicking() {
        for bad in [
            &[0x78, 0x00][..],             // STAP-A cut inside a size
            &[0x78, 0x00, 0x05, 0x67][..], // STAP-A size past the end
            &[0x78, 0x00, 0x00][..],       // STAP-A empty NAL
            &[0x7c][..],                   // FU-A without its header
            &[0x7c, 0x85][..],             // FU-A without data
            &[0x79, 0x00, 0x01][..],       // STAP-B: not in packetization-mode 1
            &[0xe5, 0x01, 0x02][..],       // forbidden bit
            &[0x65][..],                   // header only
        ] {
            let mut feed = Feed::new(0);
            feed.push(1000, true, Bytes::copy_from_slice(bad));
            assert_eq!(feed.out.len(), 1, "{bad:02x?}");
            assert!(feed.out[0].damaged, "{bad:02x?}");
        }
    }

    #[test]
    fn runaway_unit_is_capped() {
        let mut feed = Feed::new(0);
        let chunk = Bytes::from([&[0x41u8][..], &vec![3u8; 1 << 20]].concat());
        for _ in 0..(MAX_AU_BYTES >> 20) + 2 {
            feed.push(1000, false, chunk.clone());
        }
        let au = feed.assembler.current.as_ref().expect("still open");
        assert!(au.damaged && au.data.is_empty());
    }

    #[test]
    fn gate_waits_for_an_intact_idr() {
        let mut gate = KeyframeGate::default();
        assert!(!gate.admit(false, false), "nothing before the first IDR");
        assert!(gate.admit(true, false));
        assert!(gate.admit(false, false));
        assert!(!gate.admit(false, true), "damaged");
        assert!(!gate.admit(false, false), "broken chain");
        assert!(!gate.admit(true, true), "a damaged IDR does not repair it");
        assert!(gate.admit(true, false));
        gate.broken();
        assert!(!gate.admit(false, false));
    }

    #[test]
    fn pli_is_rate_limited_and_only_while_broken() {
        let mut gate = KeyframeGate::default();
        let t0 = Instant::now();
        assert!(gate.pli_due(t0));
        assert!(!gate.pli_due(t0 + PLI_INTERVAL / 2));
        assert!(gate.pli_due(t0 + PLI_INTERVAL));
        assert!(gate.admit(true, false));
        assert!(!gate.pli_due(t0 + PLI_INTERVAL * 3));
    }
}
