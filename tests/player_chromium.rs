//! The player page in a real browser: Debian's Chromium, headless, WebRTC defaults (mDNS host
//! candidates on), opens `/<path>/` and must play the path live at its configured size.

mod support;

use std::time::Duration;

use support::TestDaemon;
use support::chromium::Chromium;

#[tokio::test]
async fn the_player_plays_the_test_pattern_in_chromium() {
    let path = "source:\n  type: testsrc\nencoding:\n  width: 640\n  height: 360\n  fps: 30\n";
    let test = TestDaemon::start(&[("portal", path)]).await;
    let browser = Chromium::launch().await.expect("Chromium starts");
    let page = browser
        .open(&test.url("/portal/"))
        .await
        .expect("player opens");

    // Playing at the configured size…
    let size = page
        .wait_for(
            "(() => { const v = document.querySelector('video'); \
              return v && v.videoWidth > 0 && !v.paused && [v.videoWidth, v.videoHeight]; })()",
            Duration::from_secs(20),
        )
        .await
        .expect("video plays");
    assert_eq!(size, serde_json::json!([640, 360]));

    // …and live: decoded frames keep increasing.
    let decoded = "document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames";
    let first = page
        .eval(decoded)
        .await
        .expect("frames")
        .as_u64()
        .unwrap_or(0);
    let later = page
        .wait_for(
            &format!(
                "(() => {{ const n = document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames; \
                  return n >= {} && n; }})()",
                first + 30
            ),
            Duration::from_secs(10),
        )
        .await
        .expect("frames keep coming")
        .as_u64()
        .unwrap_or(0);
    println!("chromium frames decoded: {first} then {later}");
    assert!(later >= first + 30);

    let state = page.eval("window.camportal.state").await.expect("state");
    assert_eq!(state, serde_json::json!("playing"));
    drop(page);
    drop(browser);
    test.daemon.shutdown().await;
}

/// `?stats=1` shows how old the picture on screen is, from the capture time the server sends
/// with every picture (RTP header extension `abs-capture-time`).
#[tokio::test]
async fn the_player_shows_its_latency_with_stats() {
    let path = "source:\n  type: testsrc\nencoding:\n  width: 640\n  height: 360\n  fps: 30\n";
    let test = TestDaemon::start(&[("portal", path)]).await;
    let browser = Chromium::launch().await.expect("Chromium starts");
    let page = browser
        .open(&test.url("/portal/?stats=1"))
        .await
        .expect("player opens");
    let latency = page
        .wait_for(
            "typeof window.camportal.latencyMs === 'number' && window.camportal.latencyMs",
            Duration::from_secs(20),
        )
        .await
        .expect("the player knows the capture time of what it shows")
        .as_f64()
        .unwrap_or(f64::NAN);
    println!("player latency (capture → display): {latency:.1} ms");
    // Same machine, same clock: positive, and live rather than buffered.
    assert!(latency > 0.0 && latency < 2000.0, "latency {latency} ms");
    let shown = page
        .wait_for(
            "(() => { const t = document.getElementById('stats').textContent; \
              return /latency +\\d+ ms/.test(t) && t; })()",
            Duration::from_secs(5),
        )
        .await
        .expect("the stats box shows the latency");
    println!("{}", shown.as_str().unwrap_or_default());
    drop(page);
    drop(browser);
    test.daemon.shutdown().await;
}

/// A kiosk that loses power sends no goodbye: its viewer must still go, and soon, rather than
/// stream into the void.
#[tokio::test]
async fn a_viewer_whose_browser_dies_is_cleaned_up() {
    let path = "source:\n  type: testsrc\nencoding:\n  width: 320\n  height: 240\n  fps: 15\n";
    let test = TestDaemon::start(&[("portal", path)]).await;
    let browser = Chromium::launch().await.expect("Chromium starts");
    let page = browser
        .open(&test.url("/portal/"))
        .await
        .expect("player opens");
    page.wait_for(
        "window.camportal.state === 'playing'",
        Duration::from_secs(20),
    )
    .await
    .expect("video plays");
    let viewers = || test.daemon.board.snapshot().paths[0].viewers;
    assert_eq!(viewers(), 1);

    // SIGKILL: no DELETE, no DTLS close, no RTCP BYE.
    drop(browser);
    let killed = std::time::Instant::now();
    while viewers() != 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "the dead browser's viewer is still there after {:?}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "dead browser's viewer removed after {} ms",
        killed.elapsed().as_millis()
    );
    assert!(test.daemon.board.snapshot().paths[0].viewers == 0);
    drop(page);
    test.daemon.shutdown().await;
}
