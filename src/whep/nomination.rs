//! A nomination the ICE agent put off, handed to it again.
//!
//! The browser nominates at once (Chromium's default "semi-aggressive" nomination puts
//! USE-CANDIDATE on its first check). rtc-ice 0.21's controlled agent, getting that request on a
//! pair it has not checked itself yet, only sends a triggered check: it neither answers the
//! request (RFC 8445 §7.3.1.4: a request is always answered) nor nominates the pair when its
//! check succeeds (§7.3.1.5). The browser then waits for its next check, ~50 ms later in
//! Chromium, before ICE and then DTLS can start: measured, half of a viewer's time to first
//! frame.
//!
//! So a nominating request the agent did not answer is kept until a Binding success response
//! comes from the same peer (the triggered check succeeded, the pair is valid), and then given
//! to the agent once more: now it answers it and selects the pair. A request the agent did
//! answer (the pair had been checked already) is forgotten, so no peer gets a second response.

use std::net::SocketAddr;

use bytes::BytesMut;
use rtc::stun::attributes::ATTR_USE_CANDIDATE;
use rtc::stun::message::{
    BINDING_REQUEST, BINDING_SUCCESS, Message, TransactionId, is_stun_message,
};

#[derive(Default)]
pub(crate) struct DeferredNomination {
    /// The last nominating request the agent has not answered, and who sent it.
    pending: Option<Pending>,
    /// A nomination was answered (at once or replayed): later checks are answered as they
    /// come, and datagrams are no longer looked at.
    done: bool,
}

struct Pending {
    peer: SocketAddr,
    transaction: TransactionId,
    request: BytesMut,
}

/// A STUN message, if `data` is one.
fn stun(data: &[u8]) -> Option<Message> {
    if !is_stun_message(data) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(data).ok()?;
    Some(message)
}

impl DeferredNomination {
    /// Looks at an inbound datagram before the agent gets it; returns the request to give the
    /// agent again right after it, if this datagram was the success response it waited for.
    pub(crate) fn inbound(&mut self, data: &[u8], peer: SocketAddr) -> Option<BytesMut> {
        if self.done {
            return None;
        }
        let message = stun(data)?;
        if message.typ == BINDING_REQUEST && message.contains(ATTR_USE_CANDIDATE) {
            self.pending = Some(Pending {
                peer,
                transaction: message.transaction_id,
                request: BytesMut::from(data),
            });
            return None;
        }
        if message.typ == BINDING_SUCCESS && self.pending.as_ref().is_some_and(|p| p.peer == peer) {
            self.done = true;
            return self.pending.take().map(|p| p.request);
        }
        None
    }

    /// Looks at a datagram the agent sends: a response to the kept request means it was
    /// answered after all (the pair had been checked), and there is nothing left to do.
    pub(crate) fn outbound(&mut self, data: &[u8]) {
        let Some(pending) = &self.pending else {
            return;
        };
        if let Some(message) = stun(data)
            && message.typ == BINDING_SUCCESS
            && message.transaction_id == pending.transaction
        {
            self.pending = None;
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use rtc::ice::attributes::use_candidate::UseCandidateAttr;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::Setter;
    use rtc::stun::textattrs::Username;

    fn build(setters: Vec<Box<dyn Setter>>) -> Vec<u8> {
        let mut message = Message::new();
        message.build(&setters).expect("build STUN");
        message.raw
    }

    fn request(nominating: bool) -> Vec<u8> {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, "server:browser".to_owned())),
        ];
        if nominating {
            setters.push(Box::new(UseCandidateAttr::new()));
        }
        build(setters)
    }

    fn success() -> Vec<u8> {
        build(vec![
            Box::new(BINDING_SUCCESS),
            Box::new(TransactionId::new()),
        ])
    }

    /// The agent's answer to `request`.
    fn answer(request: &[u8]) -> Vec<u8> {
        let transaction = stun(request).expect("a request").transaction_id;
        build(vec![Box::new(BINDING_SUCCESS), Box::new(transaction)])
    }

    const BROWSER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 50000);
    const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 50000);

    #[test]
    fn the_nominating_request_is_replayed_once_after_the_success_response() {
        let mut deferred = DeferredNomination::default();
        let nominating = request(true);
        assert_eq!(deferred.inbound(&nominating, BROWSER), None);
        assert_eq!(
            deferred.inbound(&success(), OTHER),
            None,
            "another peer's response"
        );
        assert_eq!(
            deferred.inbound(&success(), BROWSER).as_deref(),
            Some(&nominating[..])
        );
        // Done: later nominations are answered by the agent itself.
        assert_eq!(deferred.inbound(&request(true), BROWSER), None);
        assert_eq!(deferred.inbound(&success(), BROWSER), None);
    }

    #[test]
    fn a_request_the_agent_answered_is_not_replayed() {
        let mut deferred = DeferredNomination::default();
        let nominating = request(true);
        assert_eq!(deferred.inbound(&nominating, BROWSER), None);
        deferred.outbound(&success());
        deferred.outbound(&[0x80, 0x60, 0, 1]);
        deferred.outbound(&answer(&nominating));
        assert_eq!(deferred.inbound(&success(), BROWSER), None);
    }

    #[test]
    fn plain_checks_media_and_garbage_replay_nothing() {
        let mut deferred = DeferredNomination::default();
        assert_eq!(deferred.inbound(&request(false), BROWSER), None);
        assert_eq!(deferred.inbound(&success(), BROWSER), None);
        assert_eq!(deferred.inbound(&[0x80, 0x60, 0, 1], BROWSER), None);
        assert_eq!(deferred.inbound(&[0, 1, 0], BROWSER), None);
        assert_eq!(deferred.inbound(&[], BROWSER), None);
    }
}
