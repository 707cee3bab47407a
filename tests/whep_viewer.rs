//! End to end with a real WebRTC client (camportal's Rust viewer: the webrtc crate as the
//! offering peer, H.264 depacketized and decoded with openh264, the stamp read back).

mod support;

use std::time::{Duration, Instant};

use camportal_viewer::Viewer;
use support::{TestDaemon, small_path};

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_viewer_gets_a_decodable_live_picture_at_once() {
    let test = TestDaemon::start(&[("cam", &small_path(640, 480))]).await;

    let started = Instant::now();
    let mut viewer = Viewer::connect(&test.whep_url("cam"))
        .await
        .expect("WHEP session");
    let first = viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let time_to_first_frame = started.elapsed();
    println!(
        "time to first frame: {} ms",
        time_to_first_frame.as_millis()
    );

    assert!(
        first.keyframe,
        "the first frame a viewer gets is a keyframe"
    );
    assert_eq!((first.picture.width, first.picture.height), (640, 480));
    let mut last = first
        .picture
        .stamp
        .expect("stamp readable in the first frame")
        .frame;

    // Thirty more frames: the counter only goes up, and the picture is live (captured just now).
    for _ in 0..30 {
        let frame = viewer.next_frame(FRAME_TIMEOUT).await.expect("frame");
        let stamp = frame.picture.stamp.expect("stamp readable");
        assert!(stamp.frame > last, "stamp {} after {}", stamp.frame, last);
        // A join costs one keyframe (the next periodic one is 2 s away).
        assert!(!frame.keyframe, "a second keyframe right after the first");
        last = stamp.frame;
        let received_micros = frame
            .received
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let latency_ms = received_micros.saturating_sub(stamp.unix_micros) / 1000;
        assert!(latency_ms < 2_000, "picture is {latency_ms} ms old");
        // abs-capture-time tells the receiver the capture time the stamp shows.
        let sent = frame
            .capture_time
            .expect("abs-capture-time on every picture");
        let sent_micros = sent
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(
            sent_micros.abs_diff(stamp.unix_micros) <= 1,
            "abs-capture-time {sent_micros} µs, stamp {} µs",
            stamp.unix_micros
        );
    }

    // The session is listed, and DELETE ends it.
    let viewers = test.get_text("/api/viewers").await;
    let viewers: serde_json::Value = serde_json::from_str(&viewers).unwrap();
    assert_eq!(viewers.as_array().map(Vec::len), Some(1), "{viewers}");
    viewer.close().await.expect("DELETE");
    wait_until(|| test.daemon.board.snapshot().paths[0].viewers == 0).await;
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn twenty_viewers_at_once_all_receive_frames() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let url = test.whep_url("cam");
    let joins = (0..20).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut viewer = Viewer::connect(&url).await.expect("WHEP session");
            let first = viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
            assert!(first.keyframe);
            for _ in 0..10 {
                let frame = viewer.next_frame(FRAME_TIMEOUT).await.expect("frame");
                assert_eq!((frame.picture.width, frame.picture.height), (320, 240));
            }
            viewer
        })
    });
    let mut viewers = Vec::new();
    for join in joins {
        viewers.push(join.await.expect("viewer task"));
    }
    assert_eq!(test.daemon.board.snapshot().paths[0].viewers, 20);
    for viewer in viewers {
        viewer.close().await.expect("close");
    }
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn a_picture_loss_indication_brings_a_keyframe() {
    // Periodic keyframes a minute apart: any keyframe seen here answers the PLI.
    let path = format!("{}  keyframeInterval: 60s\n", small_path(320, 240));
    let test = TestDaemon::start(&[("cam", &path)]).await;
    let mut viewer = Viewer::connect(&test.whep_url("cam"))
        .await
        .expect("WHEP session");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    for _ in 0..5 {
        viewer.next_frame(FRAME_TIMEOUT).await.expect("frame");
    }
    viewer.send_pli().await.expect("PLI");
    let asked = Instant::now();
    let mut frames = 0;
    loop {
        let frame = viewer.next_frame(FRAME_TIMEOUT).await.expect("frame");
        if frame.keyframe {
            break;
        }
        frames += 1;
        assert!(frames < 300, "no keyframe in 300 frames after the PLI");
    }
    println!("keyframe {} ms after PLI", asked.elapsed().as_millis());
    viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

/// A viewer sending keyframe requests at 50 Hz raises another viewer's keyframe rate to about
/// one a second at most (it was 3.3/s; the path's own interval is one per 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_storm_from_one_viewer_spares_the_others() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let url = test.whep_url("cam");
    let mut calm = Viewer::connect(&url).await.expect("WHEP session");
    let mut noisy = Viewer::connect(&url).await.expect("WHEP session");
    calm.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    noisy.next_frame(FRAME_TIMEOUT).await.expect("first frame");

    const STORM: Duration = Duration::from_secs(6);
    let storm = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let until = Instant::now() + STORM;
        while Instant::now() < until {
            tick.tick().await;
            let _ = noisy.send_pli().await;
        }
    };
    let watch = async {
        let until = Instant::now() + STORM;
        let (mut frames, mut keyframes) = (0u32, 0u32);
        while Instant::now() < until {
            let frame = calm.next_frame(FRAME_TIMEOUT).await.expect("frames flow");
            frames += 1;
            keyframes += u32::from(frame.keyframe);
        }
        (frames, keyframes)
    };
    let ((), (frames, keyframes)) = tokio::join!(storm, watch);
    let rate = f64::from(keyframes) / STORM.as_secs_f64();
    eprintln!(
        "PLI storm from another viewer: {keyframes} keyframes in {frames} frames, {rate:.2}/s; \
         {} PLIs sent",
        noisy.stats().plis_sent
    );
    assert!(
        frames > 120,
        "the calm viewer kept its frame rate: {frames}"
    );
    assert!(rate <= 1.7, "keyframe rate {rate:.2}/s");
    test.daemon.shutdown().await;
}
