//! A WHEP viewer in Rust (RFC 9725) for integration tests, benchmarks and examples: it offers one
//! receive-only H.264 video transceiver, depacketizes the RTP it gets into access units and
//! decodes them, so a caller sees what a browser would see: decoded pictures, keyframes first.
//!
//! Three stages, each bounded: the track reader task (RTP → access units, keyframe gating, PLI),
//! a decoder thread (openh264 is CPU-bound and not `Send`-friendly, so it gets a thread of its
//! own), and the frame queue that [`Viewer::next_frame`] reads.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{StatusCode, Url};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

use crate::decoder::{DecodedPicture, Decoder};
use crate::whep::abs_capture_time;

/// What we offer: Constrained Baseline, packetization-mode 1, as Chromium does.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
/// Complete access units waiting for the decoder thread.
const AU_QUEUE: usize = 16;
/// Decoded pictures waiting for `next_frame`; when full, new pictures are dropped (and counted).
const FRAME_QUEUE: usize = 8;
/// An access unit that grows past this without a marker bit is garbage, not video.
const MAX_AU_BYTES: usize = 16 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Host candidates only, so gathering is quick; this only bounds a broken stack.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// A browser-like cap on automatic keyframe requests while the picture is broken.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
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
    http: reqwest::Client,
    frames: mpsc::Receiver<ViewerFrame>,
    closed: watch::Receiver<bool>,
    shared: Arc<Shared>,
    posted: Instant,
    /// `close` ran; `Drop` has nothing left to do.
    closed_by_us: bool,
}

impl Viewer {
    /// POSTs an offer (one recvonly H.264 video transceiver) to `whep_url`, applies the answer;
    /// Err says the HTTP status and the server's text body on non-201.
    pub async fn connect(whep_url: &str) -> anyhow::Result<Viewer> {
        let url = Url::parse(whep_url).with_context(|| format!("invalid WHEP URL {whep_url:?}"))?;
        let http = http_client()?;
        let shared = Arc::new(Shared::new());
        let (frames_tx, frames) = mpsc::channel(FRAME_QUEUE);
        let (au_tx, au_rx) = mpsc::channel(AU_QUEUE);
        // Before the POST: a decoder that cannot start must not leave a session behind.
        start_decoder(au_rx, frames_tx, Arc::clone(&shared)).await?;

        let handler = Arc::new(Handler {
            shared: Arc::clone(&shared),
            au_tx: Mutex::new(Some(au_tx)),
        });
        let pc = build_peer_connection(bind_address(&url), handler).await?;
        match negotiate(pc.as_ref(), &http, &url, &shared).await {
            Ok((session_url, posted)) => {
                info!(%session_url, "WHEP session established");
                let closed = shared.closed.subscribe();
                Ok(Viewer {
                    pc,
                    session_url,
                    http,
                    frames,
                    closed,
                    shared,
                    posted,
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
        match self.http.delete(&self.session_url).send().await {
            Ok(response) if response.status().is_success() => {
                debug!(session_url = %self.session_url, "session deleted");
            }
            Ok(response) => warn!(
                session_url = %self.session_url,
                status = %response.status(),
                "DELETE of the session was refused"
            ),
            Err(err) => {
                warn!(session_url = %self.session_url, %err, "DELETE of the session failed")
            }
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

/// A raw POST for bad-input tests: returns (status, headers, body).
pub async fn post_offer(
    whep_url: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<(u16, HeaderMap, String)> {
    let http = http_client()?;
    let response = http
        .post(whep_url)
        .header(CONTENT_TYPE, content_type)
        .body(body.to_owned())
        .send()
        .await
        .with_context(|| format!("POST {whep_url}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to POST {whep_url}"))?;
    Ok((status, headers, text))
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    // No proxy: a proxy from the environment must not intercept loopback / LAN requests.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// Loopback servers get a loopback host candidate (the webrtc crate skips loopback when it
/// expands a wildcard); anything else gets every non-loopback interface.
fn bind_address(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    // IPv6 literals come bracketed.
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    match ip {
        Some(IpAddr::V6(ip)) if ip.is_loopback() => "[::1]:0".to_owned(),
        Some(IpAddr::V6(_)) => "[::]:0".to_owned(),
        Some(ip) if ip.is_loopback() => "127.0.0.1:0".to_owned(),
        None if host.eq_ignore_ascii_case("localhost") => "127.0.0.1:0".to_owned(),
        _ => "0.0.0.0:0".to_owned(),
    }
}

async fn build_peer_connection(
    bind: String,
    handler: Arc<Handler>,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut media_engine = MediaEngine::default();
    let feedback = [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: feedback,
                },
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .context("registering H.264")?;
    // As the player asks for it: the server then sends each picture's capture time.
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: abs_capture_time::URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .context("registering abs-capture-time")?;
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
        .with_udp_addrs(vec![bind.clone()])
        .build()
        .await
        .with_context(|| format!("building the peer connection (UDP on {bind})"))?;
    Ok(Arc::new(pc))
}

/// Offer, wait for our candidates, POST, apply the answer. Returns the session URL and when the
/// offer was posted.
async fn negotiate(
    pc: &dyn PeerConnection,
    http: &reqwest::Client,
    url: &Url,
    shared: &Shared,
) -> anyhow::Result<(String, Instant)> {
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
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

    let posted = Instant::now();
    let response = http
        .post(url.clone())
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer_sdp)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let location = response.headers().get(LOCATION).cloned();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the answer to POST {url}"))?;
    if status != StatusCode::CREATED {
        bail!("POST {url} answered {status}: {}", body.trim());
    }
    let location =
        location.ok_or_else(|| anyhow!("POST {url} answered 201 without a Location header"))?;
    let location = location
        .to_str()
        .context("the Location header is not text")?;
    let session_url = url
        .join(location)
        .with_context(|| format!("bad Location {location:?}"))?
        .to_string();

    *lock(&shared.abs_capture_time_id) = abs_capture_time::id_in_sdp(&body);
    let applied = async {
        let answer = RTCSessionDescription::answer(body).context("parsing the answer SDP")?;
        pc.set_remote_description(answer)
            .await
            .context("applying the answer")
    }
    .await;
    if let Err(err) = applied {
        // The server holds a session for us: give it back.
        if let Err(delete_err) = http.delete(&session_url).send().await {
            debug!(%delete_err, %session_url, "DELETE after a bad answer failed");
        }
        return Err(err);
    }
    Ok((session_url, posted))
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
        bump(&counters.rtp_lost, pushed.lost);
        bump(&counters.rtp_late, u64::from(pushed.late));

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

/// Decides which access units reach the decoder: none from a loss (or a skipped one) until the
/// next intact IDR, and none before the first.
#[derive(Debug)]
struct KeyframeGate {
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
    fn broken(&mut self) {
        self.need_idr = true;
    }

    fn admit(&mut self, keyframe: bool, damaged: bool) -> bool {
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
    fn pli_due(&mut self, now: Instant) -> bool {
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
struct AssembledAu {
    data: Vec<u8>,
    /// Has an IDR slice (NAL type 5).
    keyframe: bool,
    /// Packets were lost in or just before it, or it was malformed: not decodable as is.
    damaged: bool,
    received: SystemTime,
    capture_time: Option<SystemTime>,
}

/// What one packet did to the sequence.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pushed {
    /// Packets missing before this one.
    lost: u64,
    /// This one was a duplicate or came after a later one, and was ignored.
    late: bool,
}

/// RTP payloads (RFC 6184: single NAL, STAP-A, FU-A) → access units, one per RTP timestamp,
/// complete at the marker bit. The `rtc` crate's `H264Packet` does the depacketizing; this adds
/// what it leaves out: access unit boundaries, loss, and a structural check of each payload
/// (its STAP-A walk indexes past the end of a truncated payload).
#[derive(Default)]
struct AuAssembler {
    depacketizer: H264Packet,
    last_seq: Option<u16>,
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
struct Rtp {
    seq: u16,
    timestamp: u32,
    marker: bool,
    /// From `abs-capture-time`, if the packet carries it.
    capture_time: Option<SystemTime>,
}

impl AuAssembler {
    fn push(&mut self, rtp: Rtp, payload: &Bytes, mut emit: impl FnMut(AssembledAu)) -> Pushed {
        let Rtp {
            seq,
            timestamp,
            marker,
            capture_time,
        } = rtp;
        let mut pushed = Pushed::default();
        if let Some(last) = self.last_seq {
            let delta = seq.wrapping_sub(last);
            if delta == 0 || delta >= 0x8000 {
                pushed.late = true;
                return pushed;
            }
            if delta > 1 {
                pushed.lost = u64::from(delta - 1);
                self.lost();
            }
        }
        self.last_seq = Some(seq);

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
        pushed
    }

    fn lost(&mut self) {
        match &mut self.current {
            Some(au) => au.damaged = true,
            None => self.loss_pending = true,
        }
        self.depacketizer = H264Packet::default();
    }
}

const NAL_IDR: u8 = 5;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

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

        fn push(&mut self, timestamp: u32, marker: bool, payload: Bytes) -> Pushed {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            self.push_seq(seq, timestamp, marker, payload)
        }

        fn push_seq(&mut self, seq: u16, timestamp: u32, marker: bool, payload: Bytes) -> Pushed {
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
        let pushed = feed.push_seq(102, 1000, true, fragments[2].clone());
        assert_eq!(pushed.lost, 1);
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
        let pushed = feed.push_seq(5, 4000, true, Bytes::from_static(SLICE));
        assert_eq!(pushed.lost, 4);
        assert!(!feed.out[0].damaged && feed.out[1].damaged);
    }

    #[test]
    fn late_and_duplicate_packets_are_ignored() {
        let mut feed = Feed::new(0);
        feed.push_seq(10, 1000, true, Bytes::from_static(SLICE));
        assert!(
            feed.push_seq(10, 1000, true, Bytes::from_static(SLICE))
                .late
        );
        assert!(feed.push_seq(9, 1000, true, Bytes::from_static(SLICE)).late);
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

    #[test]
    fn bind_address_follows_the_server() {
        let bind = |url: &str| bind_address(&Url::parse(url).expect("url"));
        assert_eq!(bind("http://127.0.0.1:8889/test/whep"), "127.0.0.1:0");
        assert_eq!(bind("http://localhost:8889/test/whep"), "127.0.0.1:0");
        assert_eq!(bind("http://[::1]:8889/test/whep"), "[::1]:0");
        assert_eq!(bind("http://192.168.1.20:8889/test/whep"), "0.0.0.0:0");
        assert_eq!(bind("http://camera.lan:8889/test/whep"), "0.0.0.0:0");
    }
}
