//! Prometheus metrics as a scraper sees them: `/metrics` on `metricsAddress`, scraped while a
//! real WHEP viewer comes and goes and while a path is removed by hot reload.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use camportal_viewer::Viewer;
use support::{TestDaemon, small_path};

async fn scrape(addr: SocketAddr, query: &str) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics{query}"))
        .await
        .expect("the metrics port answers");
    assert_eq!(response.status(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.expect("body")
}

/// The value of the series written exactly `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Scrapes until `condition` holds (up to 10 s); returns the last scrape.
async fn scrape_until(addr: SocketAddr, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr, "").await;
        if condition(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not within 10 s: {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_follow_viewers_and_reloads() {
    let daemon = TestDaemon::start_with(
        &[
            ("cam", &small_path(320, 240)),
            ("gone", &small_path(160, 120)),
        ],
        |server| {
            server.metrics = true;
            server.metrics_address = "127.0.0.1:0".parse().unwrap();
        },
    )
    .await;
    let addr = daemon.daemon.metrics_addr.expect("metrics: yes listens");

    let idle = scrape(addr, "").await;
    assert_eq!(must(&idle, "paths{name=\"cam\",state=\"ready\"}"), 1.0);
    assert_eq!(must(&idle, "webrtc_sessions{path=\"cam\"}"), 0.0);
    assert_eq!(
        must(&idle, "paths_readers{name=\"cam\",state=\"ready\"}"),
        0.0
    );

    let mut viewer = Viewer::connect(&daemon.whep_url("cam"))
        .await
        .expect("WHEP session");
    for _ in 0..30 {
        viewer
            .next_frame(Duration::from_secs(10))
            .await
            .expect("frames");
    }
    let watched = scrape(addr, "").await;
    assert_eq!(must(&watched, "webrtc_sessions{path=\"cam\"}"), 1.0);
    assert_eq!(
        must(&watched, "paths_readers{name=\"cam\",state=\"ready\"}"),
        1.0
    );
    let sent = must(&watched, "webrtc_sessions_outbound_bytes{path=\"cam\"}");
    let packets = must(
        &watched,
        "webrtc_sessions_outbound_rtp_packets{path=\"cam\"}",
    );
    let path_bytes = must(
        &watched,
        "paths_outbound_bytes{name=\"cam\",state=\"ready\"}",
    );
    assert!(
        sent > 10_000.0 && packets >= 30.0,
        "{sent} bytes, {packets} packets"
    );
    assert!(
        path_bytes >= sent * 0.9,
        "path {path_bytes} vs session {sent}"
    );
    // The first viewer's keyframe comes from the encoder made for it ("start"); later ones
    // from joins.
    let keyframes = |reason: &str| {
        must(
            &watched,
            &format!("camportal_keyframes_total{{name=\"cam\",reason=\"{reason}\"}}"),
        )
    };
    assert!(keyframes("start") + keyframes("join") >= 1.0, "{watched}");
    assert!(must(&watched, "camportal_capture_frames_total{name=\"cam\"}") >= 30.0);
    assert!(must(&watched, "camportal_encode_seconds_count{name=\"cam\"}") >= 30.0);
    assert!(
        must(
            &watched,
            "camportal_capture_to_send_seconds_count{name=\"cam\"}"
        ) >= 30.0
    );
    println!("one viewer, 30 frames: session {sent} bytes / {packets} RTP packets");

    // Per-session series only when asked.
    assert!(!watched.contains("remoteAddr"), "no session ids by default");
    let detailed = scrape(addr, "?sessions=1").await;
    assert!(
        detailed
            .lines()
            .any(|l| l.starts_with("webrtc_sessions{id=\"")
                && l.contains("remoteAddr=\"127.0.0.1\"")),
        "{detailed}"
    );

    viewer.close().await.expect("close");
    let left = scrape_until(addr, "the viewer's session gone", |text| {
        value(text, "webrtc_sessions{path=\"cam\"}") == Some(0.0)
    })
    .await;
    // What the path sent stays counted.
    assert!(must(&left, "paths_outbound_bytes{name=\"cam\",state=\"ready\"}") >= path_bytes);

    daemon.remove_path("gone");
    let reloaded = scrape_until(addr, "the removed path's series gone", |text| {
        !text.contains("\"gone\"")
    })
    .await;
    assert!(must(&reloaded, "camportal_config_reloads_total{result=\"ok\"}") >= 1.0);
    assert_eq!(must(&reloaded, "paths{name=\"cam\",state=\"ready\"}"), 1.0);
}
