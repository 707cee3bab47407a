//! The player page in a real browser: Debian's Chromium, headless, WebRTC defaults (mDNS host
//! candidates on), opens `/<path>/` and must play the path live at its configured size.

mod support;

use std::time::Duration;

use support::TestDaemon;
use support::chromium::{Chromium, Page};

/// Frames the page's video has decoded so far.
const DECODED: &str = "document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames";

/// Pictures the player's video element has decoded so far.
async fn decoded(page: &Page) -> u64 {
    page.eval(DECODED)
        .await
        .expect("frames")
        .as_u64()
        .unwrap_or(0)
}

fn testsrc(width: u32, height: u32, fps: u32) -> String {
    format!(
        "source:\n  type: testsrc\nencoding:\n  width: {width}\n  height: {height}\n  fps: {fps}\n"
    )
}

/// A daemon serving the path `portal` configured by `yaml`, and Chromium showing its player.
async fn player(yaml: &str) -> (TestDaemon, Chromium, Page) {
    let test = TestDaemon::start(&[("portal", yaml)]).await;
    let browser = Chromium::launch().await.expect("Chromium starts");
    let page = browser
        .open(&test.url("/portal/"))
        .await
        .expect("player opens");
    (test, browser, page)
}

#[tokio::test]
async fn the_player_plays_the_test_pattern_in_chromium() {
    let (test, browser, page) = player(&testsrc(640, 360, 30)).await;

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
    let first = decoded(&page).await;
    let later = page
        .wait_for(
            &format!(
                "(() => {{ const n = {DECODED}; return n >= {} && n; }})()",
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
    let (test, browser, page) = player(&testsrc(320, 240, 15)).await;
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

/// A changed file restarts its path; the kiosk keeps its session and its page and carries on at
/// the new size.
#[tokio::test]
async fn the_player_keeps_playing_across_a_restart_of_its_path() {
    let (test, browser, page) = player(&testsrc(320, 240, 30)).await;
    page.wait_for(
        "(() => { const v = document.querySelector('video'); \
          return v && v.videoWidth === 320 && !v.paused; })()",
        Duration::from_secs(20),
    )
    .await
    .expect("video plays");
    let before = page
        .wait_for(
            &format!("(() => {{ const n = {DECODED}; return n >= 15 && n; }})()"),
            Duration::from_secs(10),
        )
        .await
        .expect("playing for a while")
        .as_u64()
        .unwrap_or(0);

    test.write_path("portal", &testsrc(480, 360, 30));
    page.wait_for(
        "document.querySelector('video').videoWidth === 480",
        Duration::from_secs(10),
    )
    .await
    .expect("the new size plays in the same page");
    let at_switch = decoded(&page).await;
    let after = page
        .wait_for(
            &format!(
                "(() => {{ const n = {DECODED}; return n >= {} && n; }})()",
                at_switch + 30
            ),
            Duration::from_secs(10),
        )
        .await
        .expect("frames keep coming after the restart")
        .as_u64()
        .unwrap_or(0);
    println!("chromium across a path restart: frames decoded {before} → {at_switch} → {after}");
    let reconnects = page.reconnects().await;
    assert_eq!(
        reconnects,
        serde_json::json!(0),
        "same session, no reconnect"
    );
    assert_eq!(
        page.eval("window.camportal.state").await.expect("state"),
        serde_json::json!("playing")
    );
    drop(page);
    drop(browser);
    test.daemon.shutdown().await;
}

/// The player asks the server about its session when no media has come for a second (a dead
/// session after a daemon restart): a live path at 1 picture a second must not look dead.
#[tokio::test]
async fn the_player_keeps_its_session_on_a_one_fps_path() {
    let (test, browser, page) = player(&testsrc(320, 240, 1)).await;
    page.wait_for(
        "window.camportal.state === 'playing'",
        Duration::from_secs(20),
    )
    .await
    .expect("video plays");
    let first = decoded(&page).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = decoded(&page).await;
    println!("chromium at 1 fps: frames decoded {first} then {later} six seconds later");
    assert!(
        later >= first + 4,
        "pictures keep coming: {first} → {later}"
    );
    assert_eq!(
        page.reconnects().await,
        serde_json::json!(0),
        "same session throughout; console:\n{}",
        page.console().join("\n")
    );
    assert_eq!(
        page.eval("window.camportal.state").await.expect("state"),
        serde_json::json!("playing")
    );
    assert_eq!(test.viewer_count().await, 1);
    drop(page);
    drop(browser);
    test.daemon.shutdown().await;
}
