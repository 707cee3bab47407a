//! Which of a viewer's NACKs are answered. The rtc crate's NACK responder resends every packet a
//! NACK names, every time it is named; Chromium names a missing packet again every ~100 ms
//! until it arrives. On a link whose queue holds a few hundred milliseconds (a thin uplink),
//! every lost packet was then sent three or four times, the retransmissions kept the link full
//! long after the encoder had come down, and the picture froze for seconds (measured on a
//! 1 Mbit/s link: the wire full for 11 s while the encoder made 400 kbit/s).
//!
//! This interceptor sits wire-ward of the responder and strikes packets from a NACK before the
//! responder sees it: a packet sent (or resent) less than one round trip ago, which cannot have
//! been missed yet; and whatever would take the retransmissions above a share of the viewer's
//! estimated bandwidth, or of the path's configured rate while there is no estimate (a viewer
//! that NACKs everything, buggy or hostile, cannot make the daemon resend its whole buffer
//! every few milliseconds). The round trip comes from the viewer's
//! receiver reports against our sender reports, and is published for `/api/viewers`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::packet::Packet as RtcpPacket;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use super::estimate::Estimate;

/// The round trip assumed until the first receiver report tells (Chromium's own default).
const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// A packet is resent at most once per round trip, but not sooner than this apart (a LAN's round
/// trip is well under a millisecond; the viewer's NACKs come no faster than this anyway) nor
/// later (a round trip this long is a link that is failing, not one to wait for).
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(10);
const MAX_RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// Retransmissions may take at most this share of the viewer's estimated bandwidth (or of the
/// path's rate).
const BUDGET_SHARE: f64 = 0.5;
/// The budget saves up at most this long's worth (a burst of losses after a quiet spell).
const BUDGET_WINDOW: Duration = Duration::from_millis(500);
/// Packets remembered: more than the responder keeps (1024), indexed by sequence number.
const HISTORY: usize = 2048;
/// Sender reports remembered, to match a receiver report's "last SR" against.
const SENDER_REPORTS: usize = 8;

/// When each recent packet was last sent, and how big it is.
#[derive(Debug)]
pub(crate) struct History {
    slots: Vec<Option<(u16, Instant, usize)>>,
}

impl Default for History {
    fn default() -> History {
        History {
            slots: vec![None; HISTORY],
        }
    }
}

impl History {
    pub(crate) fn sent(&mut self, seq: u16, size: usize, now: Instant) {
        self.slots[usize::from(seq) % HISTORY] = Some((seq, now, size));
    }

    fn get(&self, seq: u16) -> Option<(Instant, usize)> {
        match self.slots[usize::from(seq) % HISTORY] {
            Some((s, at, size)) if s == seq => Some((at, size)),
            _ => None,
        }
    }
}

/// Bytes retransmissions may still take: refilled at a share of the estimate.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    bytes: f64,
    refilled: Option<Instant>,
}

impl Budget {
    /// Tops the budget up for the time since the last call, at `share × bps`.
    fn refill(&mut self, now: Instant, bps: u64) {
        let rate = BUDGET_SHARE * bps as f64 / 8.0;
        let elapsed = self
            .refilled
            .map_or(BUDGET_WINDOW, |at| now.saturating_duration_since(at));
        self.bytes =
            (self.bytes + rate * elapsed.as_secs_f64()).min(rate * BUDGET_WINDOW.as_secs_f64());
        self.refilled = Some(now);
    }
}

/// The decision: which of `requested` to resend now. Those allowed are marked as sent now (the
/// responder resends them at once) and paid for from the budget when there is one (`bps`: the
/// viewer's estimate, or the path's rate). Unknown packets are kept: the responder decides.
pub(crate) fn allowed(
    requested: &[u16],
    history: &mut History,
    budget: &mut Budget,
    bps: Option<u64>,
    rtt: Duration,
    now: Instant,
) -> Vec<u16> {
    let interval = rtt.clamp(MIN_RESEND_INTERVAL, MAX_RESEND_INTERVAL);
    if let Some(bps) = bps {
        budget.refill(now, bps);
    }
    let mut kept = Vec::with_capacity(requested.len());
    for &seq in requested {
        let Some((last, size)) = history.get(seq) else {
            kept.push(seq);
            continue;
        };
        if now.saturating_duration_since(last) < interval {
            continue;
        }
        if bps.is_some() {
            if budget.bytes < size as f64 {
                continue;
            }
            budget.bytes -= size as f64;
        }
        history.sent(seq, size, now);
        kept.push(seq);
    }
    kept
}

/// The round trip a receiver report shows: its "last SR" field is the middle 32 bits of our
/// sender report's NTP time, its "delay" how long the viewer held the report (1/65536 s).
fn round_trip(
    reports: &VecDeque<(u32, Instant)>,
    last_sr: u32,
    delay: u32,
    now: Instant,
) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    let (_, sent) = reports.iter().find(|(middle, _)| *middle == last_sr)?;
    let held = Duration::from_secs_f64(f64::from(delay) / 65536.0);
    now.saturating_duration_since(*sent).checked_sub(held)
}

/// The interceptor (see the module's comment).
pub(super) struct NackFilter {
    estimate: Arc<Estimate>,
    /// The path's configured bit/s: the budget's base until there is an estimate (0: none).
    path_bps: u64,
    history: History,
    budget: Budget,
    sender_reports: VecDeque<(u32, Instant)>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl NackFilter {
    pub(super) fn new(estimate: Arc<Estimate>, path_bps: u64) -> NackFilter {
        NackFilter {
            estimate,
            path_bps,
            history: History::default(),
            budget: Budget::default(),
            sender_reports: VecDeque::with_capacity(SENDER_REPORTS),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// `nack` with only the packets worth resending; `None` if none is.
    fn filter(&mut self, nack: &TransportLayerNack, now: Instant) -> Option<TransportLayerNack> {
        let requested: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
        let bps = self
            .estimate
            .bps()
            .or((self.path_bps > 0).then_some(self.path_bps));
        let rtt = self.estimate.rtt().unwrap_or(DEFAULT_RTT);
        let kept = allowed(
            &requested,
            &mut self.history,
            &mut self.budget,
            bps,
            rtt,
            now,
        );
        (!kept.is_empty()).then(|| TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&kept),
        })
    }

    fn receiver_report(&mut self, report: &ReceiverReport, now: Instant) {
        for block in &report.reports {
            if let Some(rtt) = round_trip(
                &self.sender_reports,
                block.last_sender_report,
                block.delay,
                now,
            ) {
                self.estimate.set_rtt(rtt);
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackFilter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let mut kept: Vec<Box<dyn RtcpPacket>> = Vec::with_capacity(packets.len());
            for packet in packets.drain(..) {
                if let Some(report) = packet.as_any().downcast_ref::<ReceiverReport>() {
                    self.receiver_report(report, now);
                }
                match packet.as_any().downcast_ref::<TransportLayerNack>() {
                    Some(nack) => {
                        if let Some(nack) = self.filter(nack, now) {
                            kept.push(Box::new(nack));
                        }
                    }
                    None => kept.push(packet),
                }
            }
            *packets = kept;
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        match &msg.message.packet {
            Packet::Rtp(packet) => {
                let size = packet.header.marshal_size() + packet.payload.len();
                self.history
                    .sent(packet.header.sequence_number, size, msg.now);
            }
            Packet::Rtcp(packets) => {
                for packet in packets {
                    if let Some(report) = packet.as_any().downcast_ref::<SenderReport>() {
                        if self.sender_reports.len() == SENDER_REPORTS {
                            self.sender_reports.pop_front();
                        }
                        let middle = (report.ntp_time >> 16) as u32;
                        self.sender_reports.push_back((middle, msg.now));
                    }
                }
            }
            _ => {}
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for NackFilter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_packet_is_resent_once_per_round_trip() {
        let t0 = Instant::now();
        let (mut history, mut budget) = (History::default(), Budget::default());
        history.sent(7, 1200, t0);
        let rtt = 300 * MS;
        // Named again and again while it is still on its way: sent once more, after a round trip.
        assert!(allowed(&[7], &mut history, &mut budget, None, rtt, t0 + 100 * MS).is_empty());
        assert_eq!(
            allowed(&[7], &mut history, &mut budget, None, rtt, t0 + 300 * MS),
            [7]
        );
        assert!(allowed(&[7], &mut history, &mut budget, None, rtt, t0 + 400 * MS).is_empty());
        assert_eq!(
            allowed(&[7], &mut history, &mut budget, None, rtt, t0 + 600 * MS),
            [7]
        );
        // A packet we do not remember is the responder's business.
        assert_eq!(allowed(&[9], &mut history, &mut budget, None, rtt, t0), [9]);
    }

    #[test]
    fn retransmissions_stay_within_a_share_of_the_estimate() {
        let t0 = Instant::now();
        let (mut history, mut budget) = (History::default(), Budget::default());
        let seqs: Vec<u16> = (0..100).collect();
        for &seq in &seqs {
            history.sent(seq, 1000, t0);
        }
        // 400 kbit/s estimated: half of it for 0.5 s is 12 500 bytes, 12 packets of 1000.
        let later = t0 + 200 * MS;
        let kept = allowed(
            &seqs,
            &mut history,
            &mut budget,
            Some(400_000),
            10 * MS,
            later,
        );
        assert_eq!(kept.len(), 12);
        // 100 ms later, 2 500 bytes more beside the 500 left.
        let kept = allowed(
            &seqs,
            &mut history,
            &mut budget,
            Some(400_000),
            10 * MS,
            later + 100 * MS,
        );
        assert_eq!(kept.len(), 3);
    }

    #[test]
    fn the_round_trip_comes_from_a_receiver_report() {
        let t0 = Instant::now();
        let reports = VecDeque::from([(0x1234_5678, t0), (0x1234_9999, t0 + 500 * MS)]);
        // Held 0.25 s by the viewer, answered 0.4 s after the first report.
        let rtt = round_trip(&reports, 0x1234_5678, 16384, t0 + 400 * MS);
        assert_eq!(rtt, Some(150 * MS));
        assert_eq!(round_trip(&reports, 0, 0, t0), None);
        assert_eq!(round_trip(&reports, 0x0bad_0bad, 0, t0), None);
    }
}
