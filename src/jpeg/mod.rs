//! Still pictures for dashboards: `GET /<path>/frame.jpeg` (the current picture) and
//! `GET /<path>/stream.mjpeg` (a multipart stream of them). Both read the raw pictures the
//! encoder takes, newest wins, only while someone asks; each picture is compressed to JPEG at
//! most once, however many read it (the path's data plane keeps the last one).

mod encode;
mod stream;

pub(crate) use encode::JpegCache;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::path::{Entry, Joinable};
use crate::whep::Whep;

/// A snapshot waits at most this long for a picture (a path just starting, a camera that
/// stalls); a running path gives one within a frame interval.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);

/// The range of `?fps=` on an MJPEG stream.
const MIN_FPS: f64 = 0.01;
const MAX_FPS: f64 = 1000.0;

fn plain(status: StatusCode, reason: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason + "\n",
    )
        .into_response()
}

/// The path's joinable side now, or the status and reason for a path that has none.
fn running(whep: &Whep, path: &str) -> Result<Joinable, (StatusCode, String)> {
    match whep.directory.watch(path).borrow().clone() {
        Entry::Running(joinable) => Ok(joinable),
        Entry::Away => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("path '{path}' is starting or restarting; retry in a moment"),
        )),
        Entry::Removed => Err((StatusCode::NOT_FOUND, format!("no path named '{path}'"))),
    }
}

/// `GET /<path>/frame.jpeg`: the next picture the path captures, as JPEG.
pub(crate) async fn snapshot(State(whep): State<Whep>, Path(path): Path<String>) -> Response {
    let joinable = match running(&whep, &path) {
        Ok(joinable) => joinable,
        Err((status, reason)) => return plain(status, reason),
    };
    let (mut pictures, cache) = joinable.pictures();
    drop(joinable);
    let picture =
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, pictures.wait_for(Option::is_some)).await {
            Ok(Ok(picture)) => picture.clone(),
            _ => None,
        };
    drop(pictures);
    let Some(picture) = picture else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "path '{path}' gave no picture within {} s",
                SNAPSHOT_TIMEOUT.as_secs()
            ),
        );
    };
    let quality = whep.jpeg_quality;
    let jpeg = tokio::task::spawn_blocking(move || cache.get(&picture, quality)).await;
    match jpeg {
        Ok(Ok(jpeg)) => {
            let mut response = Body::from(jpeg).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(Err(err)) => {
            tracing::warn!(%path, %err, "cannot make a snapshot");
            plain(StatusCode::INTERNAL_SERVER_ERROR, err)
        }
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct StreamOptions {
    /// At most this many pictures per second (the path's rate if absent or higher).
    fps: Option<f64>,
}

/// `GET /<path>/stream.mjpeg[?fps=N]`: `multipart/x-mixed-replace`, one JPEG per picture.
pub(crate) async fn mjpeg(
    State(whep): State<Whep>,
    Path(path): Path<String>,
    Query(options): Query<StreamOptions>,
) -> Response {
    if let Err((status, reason)) = running(&whep, &path) {
        return plain(status, reason);
    }
    let fps = match options.fps {
        None => None,
        Some(fps) if (MIN_FPS..=MAX_FPS).contains(&fps) => Some(fps),
        Some(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("fps must be a number from {MIN_FPS} to {MAX_FPS}"),
            );
        }
    };
    let reader = stream::MjpegReader::new(&whep.directory, &path, whep.jpeg_quality, fps);
    let mut response = Body::from_stream(reader.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!(
            "multipart/x-mixed-replace; boundary={}",
            stream::BOUNDARY
        ))
        .unwrap_or(HeaderValue::from_static("multipart/x-mixed-replace")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
