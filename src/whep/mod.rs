//! WHEP (RFC 9725): a viewer POSTs an SDP offer to `/<path>/whep` and gets `201 Created`, the
//! SDP answer and a `Location` for its session; DELETE on that location ends it. Every bad
//! request gets a status and a plain-text reason a person can act on; none of them costs
//! anything that was working.

pub(crate) mod addresses;
mod estimate;
mod feedback;
mod keyframes_only;
mod nomination;
mod offer;
pub(crate) mod peer;
mod queuing;
mod retransmit;
mod sessions;
pub(crate) mod udp_mux;
mod viewer;

pub(crate) use sessions::{Pending, Sessions};
pub use viewer::CONNECT_TIMEOUT;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ractor::{Actor, ActorCell};
use rand::distr::{Alphanumeric, SampleString};
use tracing::{info, warn};

use crate::auth::Access;
use crate::config::IceServer;
use crate::metrics::Traffic;
use crate::path::{Directory, Entry};
use crate::status::StatusBoard;
use offer::StreamProfile;
use peer::{AnswerError, IceAddresses};
use sessions::Session;
use udp_mux::UdpMux;
use viewer::{Viewer, ViewerArgs, ViewerMsg};

/// Largest SDP offer accepted; browsers send a few KiB.
pub(crate) const MAX_OFFER_BYTES: usize = 64 * 1024;
/// What a client over its pending-session limit is told to wait: about how long a session that
/// never connects is kept.
const PENDING_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many sessions still connecting (each holds a peer connection) are accepted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingLimits {
    pub per_client: usize,
    pub total: usize,
}

/// Why a new offer is refused for now, if it is: a client may not pile up half-open sessions.
fn over_limit(pending: Pending, limits: PendingLimits) -> Option<String> {
    if pending.from_client >= limits.per_client {
        Some(format!(
            "too many sessions still connecting from your address ({}); retry later",
            pending.from_client
        ))
    } else if pending.total >= limits.total {
        Some(format!(
            "too many sessions still connecting ({}); retry later",
            pending.total
        ))
    } else {
        None
    }
}

#[derive(Clone)]
pub(crate) struct Whep {
    pub mux: Arc<UdpMux>,
    pub addresses: IceAddresses,
    pub sessions: Sessions,
    pub board: StatusBoard,
    pub directory: Directory,
    /// The viewers' parent.
    pub root: ActorCell,
    pub ice_servers: Vec<IceServer>,
    pub pending_limits: PendingLimits,
    /// The access rules; the index asks them about each path.
    pub access: Arc<Access>,
    /// `jpegQuality`, for the JPEG endpoints that share this state.
    pub jpeg_quality: u8,
}

fn plain(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason,
    )
        .into_response()
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"))
}

/// `Link` headers announcing the configured ICE servers to the viewer (RFC 9725 §4.4).
fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .filter_map(|server| {
            let mut link = format!("<{}>; rel=\"ice-server\"", server.url);
            if let (Some(user), Some(password)) = (&server.username, &server.password) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{password}\"; credential-type=\"password\""
                ));
            }
            HeaderValue::from_str(&link).ok()
        })
        .collect()
}

/// The `profile-level-id` of what the path sends, from its last SPS; until it sent one, what
/// the encoder makes (a camera's own H.264 is known once the camera delivered a keyframe).
fn stream_profile(whep: &Whep, path: &str) -> StreamProfile {
    match &*whep.directory.watch(path).borrow() {
        Entry::Running(joinable) => joinable
            .parameter_sets()
            .and_then(|sets| StreamProfile::from_sps(&sets.sps))
            .unwrap_or(StreamProfile::DEFAULT),
        _ => StreamProfile::DEFAULT,
    }
}

pub(crate) async fn post_offer(
    State(whep): State<Whep>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.ip();
    if let Some(reason) = over_limit(whep.sessions.pending(client), whep.pending_limits) {
        info!(%client, %path, %reason, "WHEP offer refused");
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, reason);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(PENDING_RETRY_AFTER.as_secs()),
        );
        return response;
    }
    if !whep.board.has_path(&path) {
        return plain(StatusCode::NOT_FOUND, format!("no path named '{path}'"));
    }
    if !is_sdp(&headers) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer must be sent with Content-Type: application/sdp",
        );
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8 text");
    };
    let stream = stream_profile(&whep, &path);
    let rate = whep
        .board
        .path(&path)
        .map(|status| peer::PathRate {
            bitrate: status.bitrate_kbps.saturating_mul(1000),
            adaptive: status.adaptive_bitrate,
        })
        .unwrap_or_default();
    let answered = match peer::answer(offer, &whep.addresses, stream, rate) {
        Ok(answered) => answered,
        Err(AnswerError::Internal(err)) => {
            warn!(%path, %err, "cannot answer a WHEP offer");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, err);
        }
        Err(err) => {
            info!(%path, %err, "WHEP offer rejected");
            return plain(StatusCode::BAD_REQUEST, err.to_string());
        }
    };
    let answer_sdp = answered.answer_sdp.clone();
    let id = Alphanumeric.sample_string(&mut rand::rng(), 20);
    let forget = {
        let (sessions, id) = (whep.sessions.clone(), id.clone());
        Box::new(move || {
            sessions.remove(&id);
        })
    };
    let connected = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Traffic::default());
    let estimate = Arc::clone(&answered.estimate);
    let args = ViewerArgs {
        id: id.clone(),
        path: path.clone(),
        connected: Arc::clone(&connected),
        answered,
        ice_local_addr: whep.addresses.local_addr_for_agent(whep.mux.local_addr()),
        mux: Arc::clone(&whep.mux),
        directory: whep.directory.clone(),
        on_stop: forget,
        sent: Arc::clone(&sent),
    };
    let viewer = match Actor::spawn_linked(None, Viewer, args, whep.root.clone()).await {
        Ok((viewer, _)) => viewer,
        Err(err) => {
            warn!(%path, %err, "cannot start a viewer");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            );
        }
    };
    whep.sessions.insert(
        id.clone(),
        Session {
            path: path.clone(),
            viewer,
            client,
            connected,
            sent,
            estimate,
        },
    );

    let mut response = (StatusCode::CREATED, answer_sdp).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/{path}/whep/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    for link in ice_server_links(&whep.ice_servers) {
        headers.append(header::LINK, link);
    }
    response
}

pub(crate) async fn delete_session(
    State(whep): State<Whep>,
    Path((path, id)): Path<(String, String)>,
) -> Response {
    match whep.sessions.get(&id) {
        Some(session) if session.path == path => {
            let _ = session
                .viewer
                .send_message(ViewerMsg::Close("the viewer ended the session".into()));
            whep.sessions.remove(&id);
            StatusCode::OK.into_response()
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            format!("no session '{id}' on path '{path}'"),
        ),
    }
}

/// `GET` (and `HEAD`) on a session: `204` while it exists, `404` once it does not. A player whose
/// media stops asks, to tell a path that is restarting (its session lives on) from a server
/// that restarted (it does not know the session) without waiting for ICE to time out.
pub(crate) async fn session_exists(
    State(whep): State<Whep>,
    Path((path, id)): Path<(String, String)>,
) -> Response {
    match whep.sessions.get(&id) {
        Some(session) if session.path == path => StatusCode::NO_CONTENT.into_response(),
        _ => plain(
            StatusCode::NOT_FOUND,
            format!("no session '{id}' on path '{path}'"),
        ),
    }
}

/// Trickle ICE and ICE restarts are not needed: viewers reach us through the candidates in the
/// answer (peer-reflexive from their side), so a PATCH is answered clearly rather than ignored.
pub(crate) async fn patch_session() -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restart are not supported: send a new offer to start a new session",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, DELETE"));
    response
}

/// `OPTIONS /<path>/whep`: what a WHEP client may POST.
pub(crate) async fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    headers.insert("accept-post", HeaderValue::from_static("application/sdp"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_must_be_sdp() {
        let mut headers = HeaderMap::new();
        assert!(!is_sdp(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/SDP; charset=utf-8"),
        );
        assert!(is_sdp(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_sdp(&headers));
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_server_links(&[IceServer {
            url: "turn:turn.example:3478".into(),
            username: Some("u".into()),
            password: Some("p".into()),
        }]);
        let link = links[0].to_str().unwrap();
        assert!(
            link.starts_with("<turn:turn.example:3478>; rel=\"ice-server\""),
            "{link}"
        );
        assert!(link.contains("username=\"u\""));
    }

    #[test]
    fn pending_sessions_are_capped_per_client_then_in_all() {
        let limits = PendingLimits {
            per_client: 2,
            total: 3,
        };
        let pending = |from_client, total| Pending { from_client, total };
        assert_eq!(over_limit(pending(1, 2), limits), None);
        let refused = over_limit(pending(2, 2), limits).expect("per client");
        assert!(refused.contains("from your address"), "{refused}");
        let refused = over_limit(pending(0, 3), limits).expect("in all");
        assert!(!refused.contains("your address"), "{refused}");
    }
}
