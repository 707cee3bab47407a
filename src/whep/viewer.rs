//! One viewer: a WebRTC peer watching a path. The actor (under the root supervisor, not under the
//! path) is the control side; its task drives the sans-IO peer connection: datagrams in from the
//! UDP mux, RTP out from the path's fan-out, timers, RTCP feedback. Viewers find their path's
//! broadcaster in the root's [`Directory`], so when a path restarts its viewers rejoin the new
//! one on their own and keep their peer connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::estimate::Estimate;
use super::feedback::asks_for_keyframe;
use super::keyframes_only::KeyframesOnly;
use super::nomination::DeferredNomination;
use super::peer::Answered;
use super::udp_mux::{Inbound, UdpMux};
use crate::metrics::Traffic;
use crate::path::{Directory, Event, Subscription, VideoFrame};
use crate::status::ReaderKind;

/// A viewer whose ICE and DTLS have not completed by then is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A viewer that has sent nothing at all by then (a browser's first ICE check comes within
/// milliseconds of the answer) is given up sooner: an offer nobody follows up costs little.
const ICE_START_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum ViewerMsg {
    /// Close the session (DELETE, path removed, shutdown).
    Close(String),
    /// The task ended by itself (peer gone, ICE failed, timeout).
    Ended(String),
}

pub(super) struct ViewerArgs {
    pub id: String,
    pub path: String,
    /// Set once ICE and DTLS are done (the session no longer counts as pending).
    pub connected: Arc<AtomicBool>,
    pub answered: Answered,
    /// The local address reported to the ICE agent (see `IceAddresses::local_addr_for_agent`).
    pub ice_local_addr: SocketAddr,
    pub mux: Arc<UdpMux>,
    /// Where the path's broadcaster is (and whether the path is coming back when it is away).
    pub directory: Directory,
    /// Called once the viewer has stopped (the session registry forgets it).
    pub on_stop: Box<dyn FnOnce() + Send>,
    /// What this session sent (`/metrics`).
    pub sent: Arc<Traffic>,
}

pub(super) struct ViewerState {
    id: String,
    path: String,
    ufrag: String,
    mux: Arc<UdpMux>,
    on_stop: Option<Box<dyn FnOnce() + Send>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub(super) struct Viewer;

impl Actor for Viewer {
    type Msg = ViewerMsg;
    type State = ViewerState;
    type Arguments = ViewerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ViewerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let inbox = args
            .mux
            .register(&args.answered.ufrag, &args.answered.ice_password);
        let (stop_tx, stop_rx) = oneshot::channel();
        let ufrag = args.answered.ufrag.clone();
        let mut link = Link {
            path: args.path.clone(),
            local_addr: args.ice_local_addr,
            mux: Arc::clone(&args.mux),
            pc: args.answered.pc,
            sender: args.answered.sender,
            ssrc: args.answered.ssrc,
            payload_type: args.answered.payload_type,
            abs_capture_time_id: args.answered.abs_capture_time_id,
            sequence: rand::random(),
            rtp_offset: rand::random(),
            subscription: Subscription::new(&args.directory, &args.path, ReaderKind::Webrtc),
            connected: args.connected,
            sent: args.sent,
            estimate: args.answered.estimate,
            keyframes_only: KeyframesOnly::default(),
            nomination: DeferredNomination::default(),
        };
        let task = tokio::spawn(async move {
            let reason = link.run(inbox, stop_rx).await;
            let _ = myself.send_message(ViewerMsg::Ended(reason));
        });
        info!(viewer = %args.id, path = %args.path, "viewer created");
        Ok(ViewerState {
            id: args.id,
            path: args.path,
            ufrag,
            mux: args.mux,
            on_stop: Some(args.on_stop),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let reason = match message {
            ViewerMsg::Close(reason) | ViewerMsg::Ended(reason) => reason,
        };
        info!(viewer = %state.id, path = %state.path, %reason, "viewer closing");
        myself.stop(Some(reason));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = state.task.take() {
            // The task closes the peer connection (DTLS close_notify) and returns at once.
            if tokio::time::timeout(Duration::from_millis(500), task)
                .await
                .is_err()
            {
                warn!(viewer = %state.id, "viewer task did not stop in time");
            }
        }
        state.mux.unregister(&state.ufrag);
        if let Some(on_stop) = state.on_stop.take() {
            on_stop();
        }
        debug!(viewer = %state.id, "viewer gone");
        Ok(())
    }
}

/// The data-plane side of a viewer: owns the sans-IO peer connection.
struct Link {
    path: String,
    local_addr: SocketAddr,
    mux: Arc<UdpMux>,
    pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    abs_capture_time_id: Option<u8>,
    sequence: u16,
    rtp_offset: u32,
    /// The path's frames (from a keyframe on), once connected.
    subscription: Subscription,
    /// Shared with the session registry: set once ICE and DTLS are done.
    connected: Arc<AtomicBool>,
    /// What this session sent (`/metrics`).
    sent: Arc<Traffic>,
    /// Its bandwidth estimate, told to the path every [`ESTIMATE_INTERVAL`].
    estimate: Arc<Estimate>,
    /// Whether its link is too thin for the stream, so that it gets keyframes only.
    keyframes_only: KeyframesOnly,
    /// The browser's first nomination, given to the ICE agent again once it can take it.
    nomination: DeferredNomination,
}

/// How often a viewer tells its path its bandwidth estimate (the path forgets viewers silent
/// for `bandwidth::STALE_AFTER`); a link that filled up cannot wait long.
const ESTIMATE_INTERVAL: Duration = Duration::from_millis(250);

impl Link {
    /// Runs until the viewer ends; returns why.
    async fn run(
        &mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut stop: oneshot::Receiver<()>,
    ) -> String {
        let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let ice_start_deadline = tokio::time::Instant::now() + ICE_START_TIMEOUT;
        let mut connected = false;
        let mut heard_from = false;
        let mut estimate_tick = tokio::time::interval(ESTIMATE_INTERVAL);
        estimate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Some(event) = self.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                    debug!(path = %self.path, %state, "viewer connection state");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            connected = true;
                            self.connected.store(true, Ordering::Relaxed);
                        }
                        RTCPeerConnectionState::Failed => return "connection failed".into(),
                        RTCPeerConnectionState::Closed => return "peer closed".into(),
                        _ => {}
                    }
                }
            }
            while let Some(message) = self.pc.poll_read() {
                if let RTCMessage::RtcpPacket(_, packets) = message.message
                    && asks_for_keyframe(&packets)
                {
                    self.subscription.want_keyframe();
                }
            }
            // Last, after events and reads: handling them queues datagrams too.
            self.flush();
            let timeout = self
                .pc
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));

            tokio::select! {
                _ = &mut stop => {
                    let _ = self.pc.close();
                    self.flush();
                    return "closed by server".into();
                }
                datagram = inbox.recv() => {
                    let Some(datagram) = datagram else { return "UDP mux closed".into() };
                    heard_from = true;
                    let replay = self.nomination.inbound(&datagram.data, datagram.peer);
                    self.read(datagram.peer, datagram.data);
                    if let Some(request) = replay {
                        self.read(datagram.peer, request);
                    }
                }
                _ = tokio::time::sleep_until(timeout) => {
                    if let Err(err) = self.pc.handle_timeout(Instant::now()) {
                        debug!(path = %self.path, %err, "timeout handling failed");
                    }
                }
                _ = tokio::time::sleep_until(connect_deadline), if !connected => {
                    return format!("not connected within {} s", CONNECT_TIMEOUT.as_secs());
                }
                _ = tokio::time::sleep_until(ice_start_deadline), if !heard_from => {
                    return format!("no ICE from the viewer within {} s", ICE_START_TIMEOUT.as_secs());
                }
                _ = estimate_tick.tick(), if connected => {
                    if let Some(bps) = self.estimate.bps() {
                        self.subscription.report_estimate(bps);
                    }
                }
                event = self.subscription.next(), if connected => match event {
                    Event::Frame(frame) => self.offer_frame(&frame),
                    Event::Removed => {
                        return "the path was removed from the configuration".into();
                    }
                },
            }
        }
    }

    /// Hands one inbound datagram to the peer connection.
    fn read(&mut self, peer: SocketAddr, data: BytesMut) {
        let message = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if let Err(err) = self.pc.handle_read(message) {
            debug!(path = %self.path, %err, "dropped an inbound datagram");
        }
    }

    /// Sends `frame` unless it is a passed-through stream's, the viewer's link is too thin for
    /// it and it is not a keyframe (see `keyframes_only.rs`). An encoded stream follows the
    /// slowest viewer's estimate instead.
    fn offer_frame(&mut self, frame: &VideoFrame) {
        if !frame.passed_through {
            self.send_frame(frame);
            return;
        }
        let bytes = frame.payloads.iter().map(Bytes::len).sum();
        let estimate = self.estimate.bps();
        let was = self.keyframes_only.is_on();
        let send = self
            .keyframes_only
            .send(frame.keyframe, bytes, estimate, Instant::now());
        if self.keyframes_only.is_on() != was {
            let keyframes_only = !was;
            info!(path = %self.path, keyframes_only, estimate_bps = estimate,
                  "viewer's link and the stream's rate: keyframes only, or everything again");
        }
        if send {
            self.send_frame(frame);
        }
    }

    fn send_frame(&mut self, frame: &VideoFrame) {
        let now = Instant::now();
        let timestamp = self
            .rtp_offset
            .wrapping_add(crate::rtp::clock_90k(frame.capture.mono));
        let Some(mut sender) = self.pc.rtp_sender(self.sender) else {
            return;
        };
        let last = frame.payloads.len().saturating_sub(1);
        for (index, payload) in frame.payloads.iter().enumerate() {
            let mut header = rtp::header::Header {
                version: 2,
                marker: index == last,
                payload_type: self.payload_type,
                sequence_number: self.sequence,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            };
            if index == 0
                && let Some(id) = self.abs_capture_time_id
                && let Err(err) = header.set_extension(id, frame.abs_capture_time.clone())
            {
                debug!(path = %self.path, %err, "cannot add abs-capture-time");
            }
            let packet = rtp::Packet {
                header,
                payload: payload.clone(),
            };
            self.sequence = self.sequence.wrapping_add(1);
            if let Err(err) = sender.write_rtp(now, packet) {
                debug!(path = %self.path, %err, "RTP write failed");
                return;
            }
            self.sent.add(0, 1);
            self.subscription.sent(0, 1);
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            self.nomination.outbound(&out.message);
            self.mux.send_to(&out.message, out.transport.peer_addr);
            self.sent.add(out.message.len(), 0);
            self.subscription.sent(out.message.len(), 0);
        }
    }
}
