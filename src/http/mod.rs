//! The HTTP side (`webrtcAddress`, `:8889` by default): the index, a player per path, WHEP, the
//! status API and the player's static files, all embedded in the binary so the daemon runs from
//! anywhere, with no CDN (kiosks may have no internet).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use serde::Serialize;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

mod listener;
mod tls;

pub(crate) use listener::serve;
pub(crate) use tls::{CertFiles, acceptor as tls_acceptor, host_name};

use crate::auth::http::Caller;
use crate::auth::{Decision, Target};
use crate::config::{Action, PathName};
use crate::whep::{self, MAX_OFFER_BYTES, Whep};

/// `(name, content type, body)` of every file under `web/`.
const STATIC_FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "player.html",
        "text/html; charset=utf-8",
        include_str!("../../web/player.html"),
    ),
    (
        "index.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/index.js"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/player.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

fn static_file(name: &str) -> Response {
    match STATIC_FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => {
            let mut response = (*body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            // Small files, and an upgrade must reach kiosks without a cache flush.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ViewerInfo {
    id: String,
    path: String,
    /// The viewer's bandwidth as its congestion controller estimates it (after its feedback).
    estimate_kbps: Option<u64>,
    rtt_ms: Option<f64>,
    /// Fraction of packets lost, as the estimator measures it.
    loss: f64,
}

async fn api_paths(State(whep): State<Whep>) -> Response {
    Json(whep.board.snapshot()).into_response()
}

/// `GET /_paths`, for the index page: what `/api/paths` says, about the paths this client may
/// watch only; the configuration's errors only to a client that may use the API.
async fn readable_paths(
    State(whep): State<Whep>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut snapshot = whep.board.snapshot();
    let may = |decision: Decision| matches!(decision, Decision::Allow { .. });
    let mut readable = Vec::with_capacity(snapshot.paths.len());
    for path in snapshot.paths {
        let target = Target::On(Action::Read, Some(&path.name));
        if may(whep
            .access
            .decide(caller.ip, target, caller.credentials())
            .await)
        {
            readable.push(path);
        }
    }
    snapshot.paths = readable;
    let api = Target::On(Action::Api, None);
    if !may(whep
        .access
        .decide(caller.ip, api, caller.credentials())
        .await)
    {
        snapshot.config_errors.clear();
    }
    Json(snapshot).into_response()
}

async fn api_viewers(State(whep): State<Whep>) -> Response {
    let mut viewers: Vec<ViewerInfo> = whep
        .sessions
        .entries()
        .into_iter()
        .map(|(id, session)| ViewerInfo {
            id,
            path: session.path,
            estimate_kbps: session.estimate.bps().map(|bps| bps / 1000),
            rtt_ms: session.estimate.rtt_ms(),
            loss: session.estimate.loss(),
        })
        .collect();
    viewers.sort_by(|a, b| (&a.path, &a.id).cmp(&(&b.path, &b.id)));
    Json(viewers).into_response()
}

/// `/<path>` → `/<path>/`, for path names only. Anything else is not a path: redirecting it
/// could leave the origin (`/%2Fevil.example` → `//evil.example/`) or make a header of a
/// control character (`/%0d%0a`).
async fn to_player(Path(path): Path<String>) -> Response {
    match PathName::new(&path) {
        Ok(name) => Redirect::permanent(&format!("/{}/", name.as_str())).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
    }
}

/// Every route, behind the access guard. Only WHEP answers other origins (CORS, as configured
/// in `webrtcAllowOrigins`), so a page elsewhere cannot read the API or the session list.
pub(crate) fn router(whep: Whep) -> Router {
    let access = Arc::clone(&whep.access);
    let origins = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        origin
            .to_str()
            .is_ok_and(|origin| access.origin_allowed(origin))
    });
    // A player on another origin must see Location (to DELETE) and Link, and may send
    // Authorization (not covered by a `*` of allowed headers, hence mirrored).
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([header::LOCATION, header::LINK]);
    let whep_routes = Router::new()
        .route(
            "/{path}/whep",
            post(whep::post_offer).options(whep::options),
        )
        .route(
            "/{path}/whep/{session}",
            get(whep::session_exists)
                .delete(whep::delete_session)
                .patch(whep::patch_session),
        )
        .layer(cors);
    Router::new()
        .route("/", get(|| async { static_file("index.html") }))
        .route("/_paths", get(readable_paths))
        .route(
            "/_static/{file}",
            get(|Path(file): Path<String>| async move { static_file(&file) }),
        )
        .route("/api/paths", get(api_paths))
        .route("/api/viewers", get(api_viewers))
        .route("/{path}", get(to_player))
        .route("/{path}/", get(|| async { static_file("player.html") }))
        .route("/{path}/frame.jpeg", get(crate::jpeg::snapshot))
        .route("/{path}/stream.mjpeg", get(crate::jpeg::mjpeg))
        .merge(whep_routes)
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(RequestBodyTimeoutLayer::new(listener::BODY_TIMEOUT))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&whep.access),
            crate::auth::http::guard,
        ))
        .with_state(whep)
}
