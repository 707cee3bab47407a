//! Every bad WHEP request gets a clear answer, and the daemon carries on serving.

mod support;

use std::time::{Duration, Instant};

use camportal_viewer::Viewer;
use reqwest::StatusCode;
use support::{TestDaemon, offer_sdp, small_path};

async fn post(url: &str, content_type: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("daemon answers")
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let whep = test.whep_url("cam");
    let good = offer_sdp(&["h264"]);

    let r = post(&test.whep_url("nope"), "application/sdp", good.clone()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("no path named 'nope'"));

    let r = post(&whep, "text/plain", good.clone()).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = post(&whep, "application/sdp", "x".repeat(200 * 1024)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = post(&whep, "application/sdp", "this is not SDP".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("malformed SDP"));

    // Offers that could never carry video to the viewer, each with its reason.
    for (from, to, reason) in [
        ("a=setup:actpass", "a=setup:passive", "setup:passive"),
        ("a=recvonly", "a=sendonly", "sendonly"),
        ("m=video 9 ", "m=video 0 ", "port 0"),
        ("UDP/TLS/RTP/SAVPF", "RTP/AVP", "RTP/AVP"),
    ] {
        let r = post(&whep, "application/sdp", good.replace(from, to)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{reason}");
        let text = r.text().await.unwrap();
        assert!(text.contains(reason), "{reason}: {text}");
    }

    let r = post(&whep, "application/sdp", offer_sdp(&["vp8"])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let reason = r.text().await.unwrap();
    assert!(
        reason.contains("H.264") && reason.contains("VP8"),
        "{reason}"
    );

    let client = reqwest::Client::new();
    let r = client
        .delete(test.url("/cam/whep/no-such-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = client
        .request(reqwest::Method::PATCH, test.url("/cam/whep/any"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Whether a session exists: the player asks when its media stops.
    let r = client
        .get(test.url("/cam/whep/no-such-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // CORS preflight from a player on another origin.
    let r = client
        .request(reqwest::Method::OPTIONS, &whep)
        .header("origin", "http://kiosk.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Allowed by the default `webrtcAllowOrigins: ['*']`, and named back (with Vary: Origin),
    // since the allowed origins can change on SIGHUP.
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://kiosk.example"
    );

    // After all of that, a good offer is still answered.
    let r = post(&whep, "application/sdp", good).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/cam/whep/"), "{location}");
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let r = client.get(test.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The same id on another path is not that session.
    let elsewhere = location.replacen("/cam/", "/other/", 1);
    let r = client.get(test.url(&elsewhere)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn audio_is_rejected_and_video_answered() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let r = post(
        &test.whep_url("cam"),
        "application/sdp",
        offer_sdp(&["audio", "h264"]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let answer = r.text().await.unwrap();
    assert!(
        answer.contains("m=audio 0 "),
        "audio must be rejected:\n{answer}"
    );
    assert!(answer.contains("a=rtpmap:102 H264/90000"), "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    // The viewer opens DTLS once its ICE is up (a server-sent ClientHello could beat it).
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(
        answer.contains("typ host"),
        "the answer carries host candidates:\n{answer}"
    );
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn a_viewer_that_never_connects_is_cleaned_up() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    // A valid offer from a peer that will never do ICE.
    let r = post(
        &test.whep_url("cam"),
        "application/sdp",
        offer_sdp(&["h264"]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(test.viewer_count().await, 1);

    let started = std::time::Instant::now();
    let deadline = camportal::CONNECT_TIMEOUT + std::time::Duration::from_secs(10);
    while test.viewer_count().await != 0 {
        assert!(
            started.elapsed() < deadline,
            "the unconnected viewer is still listed after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!(
        "unconnected viewer removed after {} ms",
        started.elapsed().as_millis()
    );
    // Nothing of it is left: its session is gone too.
    let r = reqwest::Client::new()
        .delete(test.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(test.daemon.board.snapshot().paths[0].viewers, 0);
    test.daemon.shutdown().await;
}

/// An offer flood from one client costs a bounded number of half-open sessions (20 from one
/// address by default: the rest get 503 with Retry-After), and a viewer already watching keeps
/// its picture throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_is_capped_and_a_watching_viewer_keeps_its_picture() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let whep = test.whep_url("cam");
    let mut viewer = Viewer::connect(&whep).await.expect("WHEP session");
    viewer
        .next_frame(Duration::from_secs(10))
        .await
        .expect("first frame");

    const OFFERS: usize = 300;
    let flood = async {
        let client = reqwest::Client::new();
        let (mut created, mut refused) = (0, 0);
        for _ in 0..OFFERS {
            let r = client
                .post(&whep)
                .header("content-type", "application/sdp")
                .body(offer_sdp(&["h264"]))
                .send()
                .await
                .expect("daemon answers");
            match r.status() {
                StatusCode::CREATED => created += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(r.headers().contains_key("retry-after"));
                    refused += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        (created, refused)
    };
    let watch = async {
        let until = Instant::now() + Duration::from_secs(4);
        let (mut frames, mut longest_gap, mut last) = (0u32, Duration::ZERO, Instant::now());
        while Instant::now() < until {
            viewer
                .next_frame(Duration::from_secs(5))
                .await
                .expect("frames flow during the flood");
            frames += 1;
            longest_gap = longest_gap.max(last.elapsed());
            last = Instant::now();
        }
        (frames, longest_gap)
    };
    let ((created, refused), (frames, longest_gap)) = tokio::join!(flood, watch);
    eprintln!(
        "offer flood: {created} created, {refused} refused; the viewer got {frames} frames, \
         longest gap {} ms",
        longest_gap.as_millis()
    );
    assert_eq!(created, 20, "the per-address cap");
    assert_eq!(refused, OFFERS - 20);
    assert!(longest_gap < Duration::from_secs(1), "{longest_gap:?}");
    test.daemon.shutdown().await;
}
