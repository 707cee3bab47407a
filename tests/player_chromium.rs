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
