//! Lets a viewer's keyframe requests through to camportal. The rtc core ends every inbound RTCP
//! packet inside its interceptor chain unless an interceptor marks it for the application; this
//! one marks compound packets that carry a PLI or FIR, so the viewer can ask its broadcaster for a
//! keyframe (receiver reports and the rest stay where they are consumed).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

#[derive(Default)]
pub(super) struct KeyframeFeedback {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// Whether an RTCP compound packet asks for a keyframe.
pub(super) fn asks_for_keyframe(packets: &[Box<dyn rtc::rtcp::packet::Packet>]) -> bool {
    packets
        .iter()
        .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && asks_for_keyframe(packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, Registry, Slot};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::shared::TransportContext;

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::packet::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn pli_and_fir_reach_the_application_reports_do_not() {
        let mut chain = Registry::new()
            .with(Slot::Custom(20_000), KeyframeFeedback::default())
            .build();
        chain
            .handle_read(rtcp(vec![Box::new(ReceiverReport::default())]))
            .unwrap();
        assert!(chain.poll_read().is_none());
        chain
            .handle_read(rtcp(vec![
                Box::new(ReceiverReport::default()),
                Box::new(PictureLossIndication::default()),
            ]))
            .unwrap();
        assert!(chain.poll_read().is_some());
        chain
            .handle_read(rtcp(vec![Box::new(FullIntraRequest::default())]))
            .unwrap();
        assert!(chain.poll_read().is_some());
    }
}
