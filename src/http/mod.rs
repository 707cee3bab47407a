//! The HTTP side (`webrtcAddress`, `:8889` by default): the index, a player per path, WHEP, the
//! status API and the player's static files, all embedded in the binary so the daemon runs from
//! anywhere, with no CDN (kiosks may have no internet).

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

mod listener;

pub(crate) use listener::serve;

use crate::config::PathName;
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
}

async fn api_paths(State(whep): State<Whep>) -> Response {
    Json(whep.board.snapshot()).into_response()
}

async fn api_viewers(State(whep): State<Whep>) -> Response {
    let mut viewers: Vec<ViewerInfo> = whep
        .sessions
        .entries()
        .into_iter()
        .map(|(id, session)| ViewerInfo {
            id,
            path: session.path,
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

pub(crate) fn router(whep: Whep) -> Router {
    // A player on another origin may use WHEP: it must see Location (to DELETE) and Link.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::LOCATION, header::LINK]);
    Router::new()
        .route("/", get(|| async { static_file("index.html") }))
        .route(
            "/_static/{file}",
            get(|Path(file): Path<String>| async move { static_file(&file) }),
        )
        .route("/api/paths", get(api_paths))
        .route("/api/viewers", get(api_viewers))
        .route("/{path}", get(to_player))
        .route("/{path}/", get(|| async { static_file("player.html") }))
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
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(RequestBodyTimeoutLayer::new(listener::BODY_TIMEOUT))
        .layer(cors)
        .with_state(whep)
}
