//! The decoding viewer: a WHEP session (RFC 9725) on the async `webrtc` stack that depacketizes
//! the RTP it gets into access units and decodes them, so a test sees what a browser would show:
//! decoded pictures, keyframes first, each with the stamp and capture time it carries.
//!
//! Three stages, each bounded: the track reader task (RTP → access units, keyframe gating, PLI),
//! a decoder thread (openh264 is CPU-bound and not `Send`-friendly, so it gets a thread of its
//! own), and the frame queue that [`Viewer::next_frame`] reads.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use camportal::rtp::abs_capture_time;
use reqwest::Url;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfiguration,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::assembler::{AssembledAu, AuAssembler, KeyframeGate, Rtp};
use crate::decoder::{DecodedPicture, Decoder};
use crate::local_address;
use crate::offer::{self, Feedback};
use crate::sequence::Seen;
use crate::whep::{self, WhepClient};

/// Complete access units waiting for the decoder thread.
const AU_QUEUE: usize = 16;
/// Decoded pictures waiting for `next_frame`; when full, new pictures are dropped (and counted).
const FRAME_QUEUE: usize = 8;
/// Host candidates only, so gathering is quick; this only bounds a broken stack.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// ICE consent timers, shorter than the defaults (5 s + 25 s): a server that closes us sends a
/// DTLS close_notify, which does not change the connection state in webrtc 0.21, so the viewer
/// only learns it is closed when consent checks stop being answered (~keepalive + 2 + 3 s).
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(2);
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(3);
const ICE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
const ICE_CHECKS: u16 = 28;

/// One decoded picture as the viewer received it.
#[derive(Debug, Clone)]
pub struct ViewerFrame {
    pub picture: DecodedPicture,
    /// The access unit carried an IDR slice (NAL type 5).
    pub keyframe: bool,
    /// When the access unit's last RTP packet was read from the track (before decoding).
    pub received: SystemTime,
    /// The capture time the server sent in the RTP header extension `abs-capture-time`.
    pub capture_time: Option<SystemTime>,
}

/// Counters since connect, for diagnostics and the `view` example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerStats {
    pub rtp_packets: u64,
    /// Packets never seen (gaps in the RTP sequence numbers).
    pub rtp_lost: u64,
    /// Duplicate or out-of-order packets (e.g. NACK retransmissions), ignored.
    pub rtp_late: u64,
    pub access_units: u64,
    /// Access units not decoded: damaged by loss, undecodable while waiting for an IDR, or the
    /// decoder queue was full.
    pub access_units_dropped: u64,
    pub frames_decoded: u64,
    /// Decoded pictures discarded because the frame queue was full (nobody calling `next_frame`).
    pub frames_dropped: u64,
    pub decode_errors: u64,
    /// Keyframe requests sent, automatic ones and `send_pli`.
    pub plis_sent: u64,
}

#[derive(Default)]
struct Counters {
    rtp_packets: AtomicU64,
    rtp_lost: AtomicU64,
    rtp_late: AtomicU64,
    access_units: AtomicU64,
    access_units_dropped: AtomicU64,
    frames_decoded: AtomicU64,
    frames_dropped: AtomicU64,
    decode_errors: AtomicU64,
    plis_sent: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ViewerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ViewerStats {
            rtp_packets: get(&self.rtp_packets),
            rtp_lost: get(&self.rtp_lost),
            rtp_late: get(&self.rtp_late),
            access_units: get(&self.access_units),
            access_units_dropped: get(&self.access_units_dropped),
            frames_decoded: get(&self.frames_decoded),
            frames_dropped: get(&self.frames_dropped),
            decode_errors: get(&self.decode_errors),
            plis_sent: get(&self.plis_sent),
        }
    }
}

/// State shared by the viewer handle, the peer connection's event handler, the track reader and
/// the decoder thread.
struct Shared {
    closed: watch::Sender<bool>,
    close_reason: Mutex<Option<String>>,
    state: Mutex<RTCPeerConnectionState>,
    gathered: Notify,
    track: Mutex<Option<Arc<dyn TrackRemote>>>,
    media_ssrc: Mutex<Option<u32>>,
    /// The id the server's answer gave `abs-capture-time`, if it sends it.
    abs_capture_time_id: Mutex<Option<u8>>,
    /// Set by the decoder thread: the reference chain is broken, wait for an IDR.
    decode_failed: AtomicBool,
    counters: Counters,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing held under these locks can be left half-updated by a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new() -> Self {
        Self {
            closed: watch::Sender::new(false),
            close_reason: Mutex::new(None),
            state: Mutex::new(RTCPeerConnectionState::New),
            gathered: Notify::new(),
            track: Mutex::new(None),
            media_ssrc: Mutex::new(None),
            abs_capture_time_id: Mutex::new(None),
            decode_failed: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    fn mark_closed(&self, reason: &str) {
        lock(&self.close_reason).get_or_insert_with(|| reason.to_owned());
        self.closed.send_replace(true);
    }

    fn describe(&self) -> String {
        let state = *lock(&self.state);
        let reason = lock(&self.close_reason).clone();
        let stats = self.counters.snapshot();
        match reason {
            Some(reason) => format!("{reason}; state {state}; {stats:?}"),
            None => format!("connection {state}; {stats:?}"),
        }
    }
}

/// A WHEP session watching one path.
pub struct Viewer {
    pc: Arc<dyn PeerConnection>,
    session_url: String,
    whep: WhepClient,
    frames: mpsc::Receiver<ViewerFrame>,
    closed: watch::Receiver<bool>,
    shared: Arc<Shared>,
    posted: Instant,
    answer_sdp: String,
    /// `close` ran; `Drop` has nothing left to do.
    closed_by_us: bool,
}

impl Viewer {
    /// POSTs an offer (one recvonly H.264 video transceiver, Constrained Baseline) to
    /// `whep_url`, applies the answer; Err says the HTTP status and the server's text body on
    /// non-201.
    pub async fn connect(whep_url: &str) -> anyhow::Result<Viewer> {
        Self::connect_offering(whep_url, offer::CONSTRAINED_BASELINE).await
    }

    /// [`Viewer::connect`] offering these H.264 `profile-level-id`s, in this order (a browser
    /// offers several: `42e01f`, `4d001f`, …). The decoder takes Main and High without B-frames
    /// (openh264).
    pub async fn connect_offering(
        whep_url: &str,
        profile_level_ids: &[&str],
    ) -> anyhow::Result<Viewer> {
        let url = whep::parse_url(whep_url)?;
        let whep = WhepClient::new()?;
        let shared = Arc::new(Shared::new());
        let (frames_tx, frames) = mpsc::channel(FRAME_QUEUE);
        let (au_tx, au_rx) = mpsc::channel(AU_QUEUE);
        // Before the POST: a decoder that cannot start must not leave a session behind.
        start_decoder(au_rx, frames_tx, Arc::clone(&shared)).await?;

        let handler = Arc::new(Handler {
            shared: Arc::clone(&shared),
            au_tx: Mutex::new(Some(au_tx)),
        });
        let local_ip = local_address::towards(&url).await?;
        let pc = build_peer_connection(local_ip, handler, profile_level_ids).await?;
        match negotiate(pc.as_ref(), &whep, &url, &shared).await {
            Ok((session_url, posted, answer_sdp)) => {
                info!(%session_url, "WHEP session established");
                let closed = shared.closed.subscribe();
                Ok(Viewer {
                    pc,
                    session_url,
                    whep,
                    frames,
                    closed,
                    shared,
                    posted,
                    answer_sdp,
                    closed_by_us: false,
                })
            }
            Err(err) => {
                if let Err(close_err) = pc.close().await {
                    debug!(%close_err, "closing the peer connection of a failed connect");
                }
                Err(err)
            }
        }
    }

    /// Next decoded picture (depacketized H.264 → access units → decoder); Err on timeout or if
    /// the connection failed/closed. Pictures come in order, the first one an IDR; if nobody
    /// reads, the newest pictures are the ones dropped (see [`ViewerStats::frames_dropped`]).
    pub async fn next_frame(&mut self, timeout: Duration) -> anyhow::Result<ViewerFrame> {
        let mut closed = self.closed.clone();
        tokio::select! {
            // Closed wins over queued pictures: a closed viewer should say so at once.
            biased;
            _ = closed.wait_for(|closed| *closed) => {
                bail!("viewer of {} is closed ({})", self.session_url, self.shared.describe())
            }
            frame = self.frames.recv() => frame.ok_or_else(|| {
                anyhow!("viewer of {} stopped ({})", self.session_url, self.shared.describe())
            }),
            () = tokio::time::sleep(timeout) => bail!(
                "no picture within {timeout:?} from {} ({})",
                self.session_url,
                self.shared.describe()
            ),
        }
    }

    /// When the offer was POSTed: where a viewer's wait for its first picture starts.
    pub fn offer_posted(&self) -> Instant {
        self.posted
    }

    /// The server's SDP answer, as received.
    pub fn answer_sdp(&self) -> &str {
        &self.answer_sdp
    }

    /// The session's absolute URL (the server's `Location`, resolved against the WHEP URL).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// Requests a keyframe the way a browser does (RTCP PLI) — the server should answer with an
    /// IDR. Err until the first RTP packet has been received (no track to address yet).
    pub async fn send_pli(&self) -> anyhow::Result<()> {
        let track = lock(&self.shared.track)
            .clone()
            .ok_or_else(|| anyhow!("no video track yet: nothing received from the server"))?;
        write_pli(track.as_ref(), &self.shared).await
    }

    /// DELETE the session (best effort) and close the peer connection.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.closed_by_us = true;
        match self.whep.delete(&self.session_url).await {
            Ok(()) => debug!(session_url = %self.session_url, "session deleted"),
            Err(err) => warn!(%err, "the session was not deleted"),
        }
        self.shared.mark_closed("closed by the viewer");
        self.pc.close().await.context("closing the peer connection")
    }

    /// True once the peer connection state is Failed/Closed or the track ended (server closed
    /// us). See `ICE_*` above for how long that takes after the server goes away.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Counters since connect.
    pub fn stats(&self) -> ViewerStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for Viewer {
    /// A dropped peer connection keeps its driver task (and socket) running on the runtime, so a
    /// viewer dropped without `close` still closes it. No DELETE: the server sees the DTLS close.
    fn drop(&mut self) {
        if self.closed_by_us {
            return;
        }
        self.shared.mark_closed("viewer dropped");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            runtime.spawn(async move {
                if let Err(err) = pc.close().await {
                    debug!(%err, "closing the peer connection of a dropped viewer");
                }
            });
        }
    }
}

async fn build_peer_connection(
    local_ip: IpAddr,
    handler: Arc<Handler>,
    profile_level_ids: &[&str],
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut media_engine = offer::media_engine(Feedback::Browser, profile_level_ids)?;
    // NACK generator, receiver reports, TWCC feedback: what a browser sends back.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .context("registering interceptors")?;
    let settings = SettingEngineBuilder::new()
        // No mDNS socket (port 5353, multicast): loopback and plain host candidates only.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            Some(ICE_KEEPALIVE_INTERVAL),
        )
        // Checks paced as browsers pace them (RFC 8445's Ta), for as long as the default.
        // This also bounds a stall of webrtc 0.21: as the DTLS client it leaves its
        // ClientHello queued until its next timer, by default 200 ms later.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfiguration::default())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(local_ip, 0).to_string()])
        .build()
        .await
        .with_context(|| format!("building the peer connection (UDP on {local_ip})"))?;
    Ok(Arc::new(pc))
}

/// Offer, wait for our candidates, POST, apply the answer. Returns the session URL and when the
/// offer was posted.
async fn negotiate(
    pc: &dyn PeerConnection,
    whep: &WhepClient,
    url: &Url,
    shared: &Shared,
) -> anyhow::Result<(String, Instant, String)> {
    pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(offer::receive_video()))
        .await
        .context("adding the video transceiver")?;
    let offer = pc.create_offer(None).await.context("creating the offer")?;
    pc.set_local_description(offer)
        .await
        .context("applying the offer")?;
    // Non-trickle: the offer goes out with all of our candidates in it.
    tokio::time::timeout(GATHER_TIMEOUT, shared.gathered.notified())
        .await
        .context("ICE gathering did not complete")?;
    let offer_sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description after gathering"))?
        .sdp;

    let session = whep.post_offer(url, offer_sdp).await?;
    *lock(&shared.abs_capture_time_id) = abs_capture_time::id_in_sdp(&session.answer_sdp);
    let applied = async {
        let answer = RTCSessionDescription::answer(session.answer_sdp.clone())
            .context("parsing the answer SDP")?;
        pc.set_remote_description(answer)
            .await
            .context("applying the answer")
    }
    .await;
    if let Err(err) = applied {
        // The server holds a session for us: give it back.
        if let Err(delete_err) = whep.delete(&session.url).await {
            debug!(%delete_err, "DELETE after a bad answer failed");
        }
        return Err(err);
    }
    Ok((session.url, session.posted, session.answer_sdp))
}

/// The peer connection's callbacks. They run on its driver, so they only record and spawn.
struct Handler {
    shared: Arc<Shared>,
    /// Taken by the first (only) video track's reader.
    au_tx: Mutex<Option<mpsc::Sender<AssembledAu>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "viewer connection state");
        *lock(&self.shared.state) = state;
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.shared.mark_closed(&format!("connection {state}"));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(au_tx) = lock(&self.au_tx).take() else {
            warn!("ignoring an unexpected second remote track");
            return;
        };
        *lock(&self.shared.track) = Some(Arc::clone(&track));
        tokio::spawn(read_track(track, Arc::clone(&self.shared), au_tx));
    }
}

/// RTP → access units → decoder queue, dropping what cannot be decoded until the next IDR and
/// asking for one meanwhile.
async fn read_track(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Shared>,
    au_tx: mpsc::Sender<AssembledAu>,
) {
    let counters = &shared.counters;
    let mut assembler = AuAssembler::default();
    let mut gate = KeyframeGate::default();
    let mut ready = Vec::new();
    let capture_time_id = *lock(&shared.abs_capture_time_id);
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        bump(&counters.rtp_packets, 1);
        lock(&shared.media_ssrc).get_or_insert(packet.header.ssrc);
        let capture_time = capture_time_id
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|payload| abs_capture_time::parse(&payload));
        let pushed = assembler.push(
            Rtp {
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                capture_time,
            },
            &packet.payload,
            |au| ready.push(au),
        );
        match pushed {
            Seen::Next { lost } => bump(&counters.rtp_lost, lost),
            Seen::Late => bump(&counters.rtp_late, 1),
        }

        for au in ready.drain(..) {
            bump(&counters.access_units, 1);
            if shared.decode_failed.swap(false, Ordering::Relaxed) {
                gate.broken();
            }
            let admitted = gate.admit(au.keyframe, au.damaged)
                && match au_tx.try_send(au) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // A skipped picture breaks the reference chain as surely as a loss.
                        gate.broken();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                };
            if !admitted {
                bump(&counters.access_units_dropped, 1);
                if gate.pli_due(Instant::now())
                    && let Err(err) = write_pli(track.as_ref(), &shared).await
                {
                    debug!(%err, "automatic PLI failed");
                }
            }
        }
    }
    shared.mark_closed("the video track ended");
}

async fn write_pli(track: &dyn TrackRemote, shared: &Shared) -> anyhow::Result<()> {
    let known = *lock(&shared.media_ssrc);
    let media_ssrc = match known {
        Some(ssrc) => ssrc,
        None => track
            .ssrcs()
            .await
            .first()
            .copied()
            .ok_or_else(|| anyhow!("the video track has no SSRC yet"))?,
    };
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })])
        .await
        .context("sending RTCP PLI")?;
    bump(&shared.counters.plis_sent, 1);
    Ok(())
}

/// Starts the decoder thread and waits until its decoder exists.
async fn start_decoder(
    au_rx: mpsc::Receiver<AssembledAu>,
    frames_tx: mpsc::Sender<ViewerFrame>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("viewer-decode".to_owned())
        .spawn(move || {
            // Created here: the decoder never has to cross threads.
            match Decoder::new() {
                Ok(decoder) => {
                    let _ = ready_tx.send(Ok(()));
                    decode_loop(decoder, au_rx, frames_tx, &shared);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(anyhow!("cannot create the H.264 decoder: {err}")));
                }
            }
        })
        .context("spawning the decoder thread")?;
    ready_rx
        .await
        .context("the decoder thread died while starting")?
}

fn decode_loop(
    mut decoder: Decoder,
    mut au_rx: mpsc::Receiver<AssembledAu>,
    frames_tx: mpsc::Sender<ViewerFrame>,
    shared: &Shared,
) {
    let counters = &shared.counters;
    while let Some(au) = au_rx.blocking_recv() {
        match decoder.decode(&au.data) {
            Ok(Some(picture)) => {
                bump(&counters.frames_decoded, 1);
                let frame = ViewerFrame {
                    picture,
                    keyframe: au.keyframe,
                    received: au.received,
                    capture_time: au.capture_time,
                };
                match frames_tx.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.frames_dropped, 1),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // Parameter sets alone, or a picture the decoder keeps back.
            Ok(None) => {}
            Err(err) => {
                bump(&counters.decode_errors, 1);
                debug!(%err, keyframe = au.keyframe, "decoding an access unit failed");
                shared.decode_failed.store(true, Ordering::Relaxed);
            }
        }
    }
}
