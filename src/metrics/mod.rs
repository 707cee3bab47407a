//! Prometheus metrics (`metrics: yes`, on `metricsAddress`, MediaMTX's `:9998`): `GET /metrics`
//! answers OpenMetrics text computed from the daemon's state at that moment (see
//! `collector.rs`). Who may scrape is the `metrics` permission (loopback only by default).
//! `?sessions=1` adds one series per WHEP session, which is off by default: session ids churn,
//! and every id would become a series of its own in Prometheus.

mod collector;
mod counters;

pub(crate) use counters::{DaemonCounters, KeyframeReason, PathCounters, Traffic};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::Access;
use crate::status::StatusBoard;
use crate::whep::Sessions;
use collector::{Scrape, SessionView};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct Sources {
    board: StatusBoard,
    sessions: Sessions,
}

#[derive(Deserialize)]
struct ScrapeOptions {
    #[serde(default)]
    sessions: Option<String>,
}

async fn scrape(State(sources): State<Sources>, Query(options): Query<ScrapeOptions>) -> Response {
    let per_session = matches!(options.sessions.as_deref(), Some("1" | "yes" | "true"));
    let sessions = sources
        .sessions
        .entries()
        .into_iter()
        .map(|(id, session)| SessionView {
            id,
            path: session.path,
            remote: session.client,
            connected: session.connected.load(Ordering::Relaxed),
            bytes: session.sent.bytes(),
            packets: session.sent.packets(),
        })
        .collect();
    let scrape = Scrape {
        snapshot: sources.board.snapshot(),
        counters: sources.board.counters(),
        daemon: sources.board.daemon_counters(),
        sessions,
        per_session,
    };
    match collector::render(scrape) {
        Ok(text) => {
            let mut response = text.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// The metrics listener, running.
pub(crate) struct MetricsServer {
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<()>,
}

/// Listens on `address` and serves `/metrics` until stopped.
pub(crate) async fn start(
    address: SocketAddr,
    access: Arc<Access>,
    board: StatusBoard,
    sessions: Sessions,
) -> anyhow::Result<MetricsServer> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::auth::http::metrics_guard,
        ))
        .with_state(Sources { board, sessions });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(crate::http::serve(listener, app, None, stopped));
    tracing::info!(metrics = %addr, "metrics listening: http://{addr}/metrics");
    Ok(MetricsServer { addr, stop, task })
}
