//! One RTSP connection: requests in (parsed with `rtsp-types`), responses and interleaved media
//! out through one bounded writer queue. A connection holds at most one session (one track);
//! the session ends with the connection, with TEARDOWN, or when its path is removed. Every bad
//! request gets a status and a reason; a malformed one also closes the connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use rtsp_types::{Message, Method, ParseError, Request, headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::server::Rtsp;
use super::session::{Media, Sink};
use super::transport::{self, Requested};
use super::{digest, sdp};
use crate::auth::{Credentials, Decision, Target};
use crate::config::Action;
use crate::path::{Entry, Joinable, Subscription};
use crate::status::ReaderKind;

/// A request (headers and body) larger than this is refused and the connection closed.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A connection that sends nothing (no request, no RTCP) for this long is closed; the session
/// timeout announced to readers, who send a keep-alive well within it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks (a response, or one frame's packets) waiting for the socket. A reader further behind
/// loses frames and skips to the next keyframe.
const WRITE_QUEUE: usize = 16;
/// A write to the reader that takes longer than this ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a DESCRIBE waits for the path's first keyframe (for `sprop-parameter-sets`).
const PARAMETER_SETS_TIMEOUT: Duration = Duration::from_secs(3);
const REALM: &str = "camportal";
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Serves one connection until it closes, idles out, or its path is removed.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, rtsp: Arc<Rtsp>) {
    // Decided before anything the client sent is read.
    if !rtsp.access.network_admits(peer.ip()) {
        info!(%peer, "RTSP connection refused: address not allowed");
        refuse(stream).await;
        return;
    }
    let local_ip = stream
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let (mut reader, mut writer) = stream.into_split();
    let (out, mut queued) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    // A reader that stops reading (a frozen player, a window of zero) is dropped after
    // WRITE_TIMEOUT: its connection, slot and queued frames are not held forever.
    let mut writing = AbortOnDrop(tokio::spawn(async move {
        while let Some(chunk) = queued.recv().await {
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    }));
    let (ended_tx, ended) = mpsc::channel(1);
    let mut connection = Connection {
        peer,
        local_ip,
        rtsp,
        out,
        nonce: Alphanumeric.sample_string(&mut rand::rng(), 24),
        session: None,
        next_channel: 0,
        ended_tx,
        ended,
    };
    let reason = connection.run(&mut reader).await;
    debug!(%peer, %reason, "RTSP connection ended");
    connection.stop_playing();
    drop(connection);
    // What was queued (a last answer) goes out, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut writing.0).await;
}

/// Answers `403` without reading a request, then closes gently: what the client sent meanwhile
/// is drained (briefly, a little) so that the close is no reset that could discard the answer.
async fn refuse(mut stream: TcpStream) {
    let answer = b"RTSP/1.0 403 Forbidden\r\nCSeq: 0\r\nContent-Length: 0\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink)).await;
}

/// A task that ends with its owner, also when the owner's own task is aborted (the server
/// stopping): nothing of a connection outlives it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Session {
    id: String,
    path: String,
    transport: Requested,
    ssrc: u32,
    sequence: u16,
    rtp_offset: u32,
    /// The media task, while it exists (from the first PLAY to TEARDOWN), and whether it is
    /// paused (PAUSE keeps it, so that sequence numbers and report counts go on).
    playing: Option<(AbortOnDrop, Arc<AtomicBool>)>,
}

struct Connection {
    peer: SocketAddr,
    local_ip: IpAddr,
    rtsp: Arc<Rtsp>,
    out: mpsc::Sender<Bytes>,
    /// This connection's Digest nonce.
    nonce: String,
    session: Option<Session>,
    next_channel: u8,
    ended_tx: mpsc::Sender<String>,
    /// Why the playing session ended by itself (its path was removed).
    ended: mpsc::Receiver<String>,
}

/// A response: status, reason phrase, headers (all written by us: no client text unchecked).
struct Reply {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
}

impl Reply {
    fn new(status: u16, reason: &'static str) -> Reply {
        Reply {
            status,
            reason,
            headers: Vec::new(),
            body: None,
        }
    }

    fn ok() -> Reply {
        Reply::new(200, "OK")
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// A plain-text body saying why.
    fn because(mut self, why: impl Into<String>) -> Reply {
        let mut why = why.into();
        why.push('\n');
        self.body = Some(("text/plain; charset=utf-8", why.into_bytes()));
        self
    }

    fn to_bytes(&self, cseq: &str) -> Bytes {
        let mut text = format!(
            "RTSP/1.0 {} {}\r\nCSeq: {cseq}\r\nServer: camportal\r\n",
            self.status, self.reason
        );
        for (name, value) in &self.headers {
            // Values are ours; a stray line break would still end the header block.
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut bytes = text.into_bytes();
        match &self.body {
            Some((content_type, body)) => {
                bytes.extend_from_slice(
                    format!(
                        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                bytes.extend_from_slice(body);
            }
            None => bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        Bytes::from(bytes)
    }
}

/// The path a request URI names: its first segment (`rtsp://host/cam/trackID=0` → `cam`).
fn path_of(uri_path: &str) -> Option<&str> {
    let name = uri_path.trim_start_matches('/').split('/').next()?;
    (!name.is_empty()).then_some(name)
}

fn header<'a>(request: &'a Request<Vec<u8>>, name: &headers::HeaderName) -> Option<&'a str> {
    request.header(name).map(|value| value.as_str())
}

impl Connection {
    async fn run(&mut self, reader: &mut tokio::net::tcp::OwnedReadHalf) -> String {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            // rtsp-types parses from the start each time: try only once the headers can be
            // complete (or an interleaved frame may be), not on every partial read.
            while complete_enough(&buf) {
                match Message::<Vec<u8>>::parse(&buf[..]) {
                    Ok((message, used)) => {
                        buf.drain(..used);
                        // Interleaved RTCP from the reader (receiver reports) only shows it is
                        // alive; responses are not expected.
                        if let Message::Request(request) = message
                            && let Some(close) = self.handle(request).await
                        {
                            return close;
                        }
                    }
                    Err(ParseError::Incomplete(_)) => break,
                    Err(_) => {
                        let reply = Reply::new(400, "Bad Request")
                            .because("malformed RTSP request (RTSP/1.0 with an absolute rtsp:// URL expected)");
                        self.send(&reply, "0").await;
                        return "malformed request".into();
                    }
                }
            }
            if buf.len() > MAX_REQUEST_BYTES {
                let reply = Reply::new(400, "Bad Request")
                    .because(format!("request larger than {MAX_REQUEST_BYTES} bytes"));
                self.send(&reply, "0").await;
                return "request too large".into();
            }
            tokio::select! {
                read = tokio::time::timeout(IDLE_TIMEOUT, reader.read_buf(&mut buf)) => match read {
                    Err(_) => return format!("nothing from the reader for {} s", IDLE_TIMEOUT.as_secs()),
                    Ok(Ok(0)) => return "closed by the reader".into(),
                    Ok(Err(err)) => return err.to_string(),
                    Ok(Ok(_)) => {}
                },
                Some(reason) = self.ended.recv() => {
                    info!(peer = %self.peer, %reason, "RTSP session ended");
                    return reason;
                }
            }
        }
    }

    async fn send(&self, reply: &Reply, cseq: &str) {
        let _ = self.out.send(reply.to_bytes(cseq)).await;
    }

    /// Answers one request; `Some(reason)` closes the connection after the answer (a request
    /// that is not one).
    async fn handle(&mut self, request: Request<Vec<u8>>) -> Option<String> {
        let Some(cseq) = header(&request, &headers::CSEQ)
            .map(str::trim)
            .filter(|c| !c.is_empty() && c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
        else {
            let reply = Reply::new(400, "Bad Request").because("a request needs a numeric CSeq");
            self.send(&reply, "0").await;
            return Some("request without CSeq".into());
        };
        let reply = self.answer(&request).await;
        self.send(&reply, &cseq).await;
        None
    }

    async fn answer(&mut self, request: &Request<Vec<u8>>) -> Reply {
        let method = request.method().clone();
        let path = request
            .request_uri()
            .and_then(|uri| path_of(uri.path()).map(str::to_owned));
        match method {
            Method::Options => return Reply::ok().header("Public", PUBLIC),
            Method::GetParameter | Method::SetParameter => {
                return self.keep_alive(request);
            }
            Method::Teardown => {
                self.stop_playing();
                self.session = None;
                return Reply::ok();
            }
            Method::Pause => {
                return match &self.session {
                    Some(session) => {
                        if let Some((_, paused)) = &session.playing {
                            paused.store(true, Ordering::Relaxed);
                        }
                        Reply::ok().header("Session", session.id.clone())
                    }
                    None => Reply::new(454, "Session Not Found"),
                };
            }
            Method::Describe | Method::Setup | Method::Play => {}
            _ => {
                return Reply::new(405, "Method Not Allowed")
                    .header("Allow", PUBLIC)
                    .because("camportal serves its paths; it does not take streams or changes");
            }
        }
        let Some(path) = path else {
            return Reply::new(404, "Not Found")
                .because("the URL names no path: rtsp://HOST:8554/<path>");
        };
        if let Err(reply) = self.authorize(request, &method, &path).await {
            return reply;
        }
        match method {
            Method::Describe => self.describe(request, &path).await,
            Method::Setup => self.setup(request, &path),
            Method::Play => self.play(request, &path),
            _ => Reply::new(500, "Internal Server Error"),
        }
    }

    fn keep_alive(&self, request: &Request<Vec<u8>>) -> Reply {
        match (header(request, &headers::SESSION), &self.session) {
            (None, _) => Reply::ok(),
            (Some(given), Some(session)) if session_id(given) == session.id => {
                Reply::ok().header("Session", session.id.clone())
            }
            (Some(_), _) => Reply::new(454, "Session Not Found"),
        }
    }

    /// The credentials of a request (Basic, or Digest for users with a plain password), then
    /// the access decision; `Err` is the answer for a reader that may not read `path`.
    async fn authorize(
        &self,
        request: &Request<Vec<u8>>,
        method: &Method,
        path: &str,
    ) -> Result<(), Reply> {
        let given = header(request, &headers::AUTHORIZATION)
            .and_then(|value| self.credentials(value, method));
        let credentials = given
            .as_ref()
            .map(|(user, pass)| Credentials { user, pass });
        let target = Target::On(Action::Read, Some(path));
        match self
            .rtsp
            .access
            .decide(self.peer.ip(), target, credentials)
            .await
        {
            Decision::Allow { .. } => Ok(()),
            Decision::Unauthorized => {
                if header(request, &headers::AUTHORIZATION).is_some() {
                    let user = given.as_ref().map_or("?", |(user, _)| user.as_str());
                    warn!(client = %self.peer.ip(), %user, %path, "RTSP authentication failed");
                    crate::auth::delay_failure().await;
                }
                let mut reply = Reply::new(401, "Unauthorized")
                    .header("WWW-Authenticate", digest::challenge(REALM, &self.nonce))
                    .header("WWW-Authenticate", format!("Basic realm=\"{REALM}\""));
                reply = reply.because("sign in: this needs a user name and password");
                Err(reply)
            }
            Decision::Forbidden(reason) => {
                info!(client = %self.peer.ip(), %path, %reason, "RTSP request refused");
                Err(Reply::new(403, "Forbidden").because(reason))
            }
        }
    }

    /// `(user, password)` from an Authorization header: Basic as sent; Digest checked here
    /// against the user's plain password (hashed passwords can only be checked with Basic).
    fn credentials(&self, value: &str, method: &Method) -> Option<(String, String)> {
        if let Some(user_pass) = crate::auth::basic_credentials(value) {
            return Some(user_pass);
        }
        let response = digest::parse(value)?;
        if response.realm != REALM || response.nonce != self.nonce {
            return None;
        }
        let password = self.rtsp.access.plain_password(&response.username)?;
        let method_name: &str = method.into();
        let verified = digest::verify(&response, method_name, &password);
        verified.then_some((response.username, password))
    }

    /// The path's running side, or the answer for a path that has none.
    fn running(&self, path: &str) -> Result<Joinable, Reply> {
        match self.rtsp.directory.watch(path).borrow().clone() {
            Entry::Running(joinable) => Ok(joinable),
            Entry::Away => Err(Reply::new(503, "Service Unavailable")
                .header("Retry-After", "1")
                .because(format!("path '{path}' is starting or restarting"))),
            Entry::Removed => {
                Err(Reply::new(404, "Not Found").because(format!("no path named '{path}'")))
            }
        }
    }

    async fn describe(&self, request: &Request<Vec<u8>>, path: &str) -> Reply {
        let joinable = match self.running(path) {
            Ok(joinable) => joinable,
            Err(reply) => return reply,
        };
        let sets = match joinable.parameter_sets() {
            Some(sets) => Some(sets),
            None => first_parameter_sets(&joinable).await,
        };
        let sdp = sdp::describe(
            sets.as_ref().map(|s| &s.sps[..]),
            sets.as_ref().map(|s| &s.pps[..]),
            self.local_ip,
            path,
        );
        let base = request
            .request_uri()
            .map(|uri| {
                let text = uri.as_str();
                if text.ends_with('/') {
                    text.to_owned()
                } else {
                    format!("{text}/")
                }
            })
            .unwrap_or_default();
        let mut reply = Reply::ok().header("Content-Base", base);
        reply.body = Some(("application/sdp", sdp.into_bytes()));
        reply
    }

    fn setup(&mut self, request: &Request<Vec<u8>>, path: &str) -> Reply {
        if let Err(reply) = self.running(path) {
            return reply;
        }
        if let Some(session) = &self.session
            && session.path != path
        {
            return Reply::new(459, "Aggregate Operation Not Allowed")
                .because("one path per connection");
        }
        let Some(asked) = header(request, &headers::TRANSPORT) else {
            return Reply::new(400, "Bad Request").because("SETUP needs a Transport header");
        };
        let mut allowed = self.rtsp.allowed;
        allowed.udp &= self.rtsp.udp.is_some();
        let requested = match transport::parse(asked, allowed, self.next_channel) {
            Ok(requested) => requested,
            Err(why) => return Reply::new(461, "Unsupported Transport").because(why),
        };
        if let Requested::Tcp { interleaved } = requested {
            self.next_channel = interleaved.1.saturating_add(1);
        }
        let server_ports = self.rtsp.udp.as_ref().map_or((0, 0), |udp| udp.ports());
        self.stop_playing();
        let session = self.session.get_or_insert_with(|| Session {
            id: Alphanumeric.sample_string(&mut rand::rng(), 16),
            path: path.to_owned(),
            transport: requested,
            ssrc: rand::random(),
            sequence: rand::random(),
            rtp_offset: rand::random(),
            playing: None,
        });
        session.transport = requested;
        Reply::ok()
            .header(
                "Transport",
                transport::reply(&requested, server_ports, session.ssrc),
            )
            .header(
                "Session",
                format!("{};timeout={}", session.id, IDLE_TIMEOUT.as_secs()),
            )
    }

    fn play(&mut self, request: &Request<Vec<u8>>, path: &str) -> Reply {
        let given = header(request, &headers::SESSION).map(session_id);
        let Some(session) = self
            .session
            .as_mut()
            .filter(|s| given == Some(s.id.as_str()))
        else {
            return Reply::new(454, "Session Not Found")
                .because("PLAY needs the session of a SETUP");
        };
        if session.path != path {
            return Reply::new(404, "Not Found").because("the session is for another path");
        }
        let rtptime = session
            .rtp_offset
            .wrapping_add(crate::rtp::clock_90k(std::time::Instant::now()));
        let uri = request
            .request_uri()
            .map(|u| u.as_str().trim_end_matches('/').to_owned());
        if let Some((_, paused)) = &session.playing {
            paused.store(false, Ordering::Relaxed);
        } else {
            let sink = match session.transport {
                Requested::Tcp { interleaved } => Sink::Tcp {
                    out: self.out.clone(),
                    channels: interleaved,
                },
                Requested::Udp { client_ports } => {
                    let Some(udp) = &self.rtsp.udp else {
                        return Reply::new(461, "Unsupported Transport");
                    };
                    // Only ever to the reader's own address (as IPv4 if it came mapped).
                    let ip = self.peer.ip().to_canonical();
                    Sink::Udp {
                        rtp: Arc::clone(&udp.rtp),
                        rtcp: Arc::clone(&udp.rtcp),
                        to_rtp: SocketAddr::new(ip, client_ports.0),
                        to_rtcp: SocketAddr::new(ip, client_ports.1),
                    }
                }
            };
            let subscription = Subscription::new(&self.rtsp.directory, path, ReaderKind::Rtsp);
            let paused = Arc::new(AtomicBool::new(false));
            let media = Media::new(
                subscription,
                sink,
                session.ssrc,
                session.sequence,
                session.rtp_offset,
                Arc::clone(&paused),
            );
            let task = tokio::spawn(media.run(self.ended_tx.clone()));
            session.playing = Some((AbortOnDrop(task), paused));
            info!(peer = %self.peer, %path, transport = ?session.transport, "RTSP reader playing");
        }
        let track = uri.map_or_else(String::new, |uri| {
            format!("url={uri}/{};", sdp::TRACK_CONTROL)
        });
        Reply::ok()
            .header("Session", session.id.clone())
            .header("Range", "npt=0.000-")
            .header(
                "RTP-Info",
                format!("{track}seq={};rtptime={rtptime}", session.sequence),
            )
    }

    fn stop_playing(&mut self) {
        if let Some(session) = &mut self.session {
            // Dropping the task's handle aborts it.
            session.playing = None;
        }
    }
}

/// Whether `buf` may hold a whole message: an interleaved frame, or headers up to their end.
fn complete_enough(buf: &[u8]) -> bool {
    match buf.first() {
        None => false,
        Some(b'$') => true,
        Some(_) => buf.windows(4).any(|w| w == b"\r\n\r\n"),
    }
}

/// `abc123;timeout=60` → `abc123`.
fn session_id(header: &str) -> &str {
    header.split(';').next().unwrap_or("").trim()
}

/// The path's SPS and PPS, waiting for its first keyframe (a DESCRIBE before anyone watched:
/// joining makes the encoder start with one).
async fn first_parameter_sets(joinable: &Joinable) -> Option<crate::path::ParameterSets> {
    let (mut frames, _counted) = joinable.join(ReaderKind::Rtsp);
    let deadline = tokio::time::Instant::now() + PARAMETER_SETS_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, frames.recv()).await {
            Ok(Ok(frame)) if frame.keyframe => return joinable.parameter_sets(),
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            _ => return joinable.parameter_sets(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_request_urls() {
        assert_eq!(path_of("/cam"), Some("cam"));
        assert_eq!(path_of("/cam/"), Some("cam"));
        assert_eq!(path_of("/cam/trackID=0"), Some("cam"));
        assert_eq!(path_of("/"), None);
        assert_eq!(path_of(""), None);
    }

    #[test]
    fn replies_carry_cseq_and_length_and_drop_line_breaks() {
        let reply = Reply::new(401, "Unauthorized")
            .header("WWW-Authenticate", "Basic realm=\"x\"\r\nEvil: 1")
            .because("sign in");
        let text = String::from_utf8(reply.to_bytes("7").to_vec()).unwrap();
        assert!(
            text.starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 7\r\n"),
            "{text}"
        );
        assert!(
            text.contains("WWW-Authenticate: Basic realm=\"x\"Evil: 1\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Content-Length: 8\r\n\r\nsign in\n"),
            "{text}"
        );
        assert_eq!(session_id("abc;timeout=60"), "abc");
    }
}
