//! A thin link between the portal and its kiosk: the daemon in one network namespace, headless
//! Chromium playing the shipped player in another, a veth pair between them shaped with `tbf` on
//! the daemon's side. The path sends noisy content at 2 Mbit/s (the encoder really needs its
//! bitrate), so without adaptation a 1 Mbit/s kiosk decodes nothing; with it, the encoder follows
//! the browser's bandwidth estimate and the picture stays smooth: at 1 Mbit/s, at 400 kbit/s (at
//! fewer pictures a second), and back at the full rate when the link grows again. A free link
//! keeps the full configured rate. With two kiosks, one thin and one free, the thin one sets the
//! rate for both (the README's policy) and both play smoothly. A passed-through camera's H.264,
//! which cannot be made smaller, reaches the thin kiosk as its keyframes alone.
//! (`adaptiveBitrate` is off by default; the paths here turn it on.)

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use support::TestDaemon;
use support::chromium::{Chromium, Page};
use support::netns::{Link, shutdown};
use support::thin_link::{Inbound, KEEP_PC, inbound, noisy_path, shape};
use tokio::runtime::Runtime;

/// Watches the player for `settle + measure` seconds, printing a line every 2 s; returns its
/// counts at the start and at the end of the measured part.
async fn watch(page: &Page, daemon: &TestDaemon, settle: u64, measure: u64) -> (Inbound, Inbound) {
    let mut previous = inbound(page).await;
    let mut start = previous;
    for step in 1..=(settle + measure) / 2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = inbound(page).await;
        let status = daemon.status("cam").expect("listed");
        println!(
            "{:>2} s: {}; encoder {} kbit/s, estimate {:?}",
            2 * step,
            now.since(&previous, 2.0),
            status.target_bitrate_kbps,
            status.bandwidth_estimate_kbps,
        );
        previous = now;
        if 2 * step == settle {
            start = now;
        }
    }
    (start, previous)
}

/// The tests here measure what a kiosk sees, which takes the machine's whole attention: two
/// Chromiums and two daemons at once on two cores freeze pictures for want of CPU, not of
/// bandwidth. They take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fails (never skips) without ffmpeg, which makes the paths' pictures.
fn require_ffmpeg() {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    assert!(
        found,
        "ffmpeg not found: `apt-get install ffmpeg` (or `./dev test`)"
    );
}

/// The daemon in `link`'s server namespace serving `yaml` as the path `cam`, UDP on the
/// server's address; HTTP there too, or on every address of the namespace with
/// `http_everywhere` (its loopback included: the API answers loopback clients only).
async fn daemon_in(
    link: &Link,
    server: &Runtime,
    yaml: String,
    http_everywhere: bool,
) -> TestDaemon {
    let ip = link.server_ip;
    server
        .spawn(async move {
            TestDaemon::start_with(&[("cam", &yaml)], |s| {
                let http_ip = if http_everywhere {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    ip
                };
                s.http_address = SocketAddr::new(http_ip, 0);
                s.udp_address = SocketAddr::new(ip, 0);
                s.rtsp = false;
            })
            .await
        })
        .await
        .expect("daemon starts in its namespace")
}

/// The player at `http://SERVER_IP:PORT/cam/` in a Chromium started in `netns` (whose
/// runtime is `runtime`), with its peer connection kept for `getStats()`.
async fn kiosk(
    runtime: &Runtime,
    netns: &str,
    link: &Link,
    daemon: &TestDaemon,
) -> (Chromium, Page) {
    let netns = netns.to_owned();
    let browser = runtime
        .spawn(async move { Chromium::launch_in(Some(&netns), &[]).await })
        .await
        .expect("launch task")
        .expect("Chromium starts in its namespace");
    let url = format!(
        "http://{}/cam/",
        SocketAddr::new(link.server_ip, daemon.daemon.http_addr.port())
    );
    let page = browser
        .open_with_script(&url, Some(KEEP_PC))
        .await
        .expect("player opens");
    (browser, page)
}

/// Shuts the daemon down in its namespace and ends both namespaces' runtimes.
async fn finish(daemon: TestDaemon, server: Runtime, client: Runtime) {
    let shut = server.spawn(async move { daemon.daemon.shutdown().await });
    let _ = shut.await;
    shutdown(server);
    shutdown(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_link_gets_a_smooth_picture_and_a_free_link_the_full_rate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_ffmpeg();
    let link = Link::new("192.168.77.1", "192.168.77.2");
    let server = link.server.runtime();
    let client = link.client.runtime();

    let daemon = daemon_in(&link, &server, noisy_path(true), false).await;
    let (browser, page) = kiosk(&client, &link.client.name, &link, &daemon).await;

    // The free link: once the browser's estimate is in, the encoder keeps the configured rate.
    let mut free = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = daemon.status("cam").expect("listed");
        if status.bandwidth_estimate_kbps.is_some() && inbound(&page).await.frames > 30.0 {
            free = Some(status);
            break;
        }
    }
    assert!(
        free.is_some(),
        "the browser's bandwidth estimate reaches the path"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let free = daemon.status("cam").expect("listed");
    println!(
        "free link: estimate {:?} kbit/s, encoder {} kbit/s",
        free.bandwidth_estimate_kbps, free.target_bitrate_kbps
    );
    assert_eq!(free.target_bitrate_kbps, 2000, "{free:?}");

    // 1 Mbit/s from the daemon to the kiosk from now on.
    shape(&link, 1000, 32);
    // 10 s of settling, then 20 s measured.
    let (start, end) = watch(&page, &daemon, 10, 20).await;
    let fps = (end.frames - start.frames) / 20.0;
    let frozen = end.frozen - start.frozen;
    println!(
        "1 Mbit/s link, 20 s after 10 s of settling: {}",
        end.since(&start, 20.0)
    );
    // Without adaptation this link decodes nothing (issue 13 measured 0 fps).
    assert!(fps >= 24.0, "{fps:.1} fps");
    assert!(frozen <= 1.0, "{frozen:.2} s frozen");
    let status = daemon.status("cam").expect("listed");
    assert!(
        status.target_bitrate_kbps < 2000,
        "the encoder came down: {status:?}"
    );

    // The link shrinks to 400 kbit/s: the picture keeps playing (at fewer pictures a second:
    // the rate is far below the configured one).
    shape(&link, 400, 32);
    let (start, end) = watch(&page, &daemon, 6, 10).await;
    let fps = (end.frames - start.frames) / 10.0;
    println!(
        "400 kbit/s link, 10 s after 6 s: {}",
        end.since(&start, 10.0)
    );
    assert!(fps >= 10.0, "{fps:.1} fps");

    // And grows to 4 Mbit/s: the encoder is back at the configured rate within seconds.
    shape(&link, 4000, 64);
    let grown = std::time::Instant::now();
    let mut back = None;
    for tick in 1..=80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = daemon.status("cam").expect("listed");
        if tick % 8 == 0 {
            println!(
                "{:>2} s: encoder {} kbit/s, estimate {:?}",
                tick / 4,
                status.target_bitrate_kbps,
                status.bandwidth_estimate_kbps
            );
        }
        if status.target_bitrate_kbps == 2000 {
            back = Some(grown.elapsed());
            break;
        }
    }
    let before = inbound(&page).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "4 Mbit/s link: back at 2000 kbit/s after {back:?}; then {}",
        inbound(&page).await.since(&before, 2.0)
    );
    // Measured 8–10 s (the cap on the estimate rises 25 % a second beyond the old ceiling).
    let back = back.expect("the encoder returns to the configured rate within 20 s");
    assert!(back <= Duration::from_secs(15), "{back:?}");

    drop((page, browser));
    finish(daemon, server, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thin_kiosk_sets_the_rate_and_both_play_smoothly() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_ffmpeg();
    let link = Link::new("192.168.79.1", "192.168.79.2");
    shape(&link, 1000, 32);
    let server = link.server.runtime();
    let client = link.client.runtime();
    let daemon = daemon_in(&link, &server, noisy_path(true), true).await;
    let port = daemon.daemon.http_addr.port();

    // The thin kiosk behind the shaped link; the free one beside the daemon (no shaping there).
    let (thin_browser, thin) = kiosk(&client, &link.client.name, &link, &daemon).await;
    let (free_browser, free) = kiosk(&server, &link.server.name, &link, &daemon).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let thin0 = inbound(&thin).await;
    let free0 = inbound(&free).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let thin1 = inbound(&thin).await;
    let free1 = inbound(&free).await;
    let status = daemon.status("cam").expect("listed");
    println!(
        "thin kiosk (1 Mbit/s), 20 s after 10 s: {}",
        thin1.since(&thin0, 20.0)
    );
    println!("free kiosk, same 20 s: {}", free1.since(&free0, 20.0));
    println!(
        "encoder {} kbit/s, slowest estimate {:?} kbit/s",
        status.target_bitrate_kbps, status.bandwidth_estimate_kbps
    );
    for (name, start, end) in [("thin", thin0, thin1), ("free", free0, free1)] {
        let fps = (end.frames - start.frames) / 20.0;
        let frozen = end.frozen - start.frozen;
        assert!(fps >= 24.0, "{name} kiosk: {fps:.1} fps");
        assert!(frozen <= 1.0, "{name} kiosk: {frozen:.2} s frozen");
    }
    // Each viewer's estimate and round trip are in the API.
    let viewers = server
        .spawn(async move {
            let url = format!("http://127.0.0.1:{port}/api/viewers");
            reqwest::get(url).await?.text().await
        })
        .await
        .expect("API task")
        .expect("/api/viewers answers");
    let viewers: serde_json::Value = serde_json::from_str(&viewers).expect("JSON");
    println!("/api/viewers: {viewers}");
    let viewers = viewers.as_array().expect("a list");
    assert_eq!(viewers.len(), 2, "{viewers:?}");
    for viewer in viewers {
        let number = |key: &str| viewer.get(key).and_then(serde_json::Value::as_f64);
        assert!(number("estimateKbps").is_some_and(|k| k > 0.0), "{viewer}");
        assert!(number("rttMs").is_some_and(|ms| ms > 0.0), "{viewer}");
        assert!(number("loss").is_some(), "{viewer}");
    }
    // The policy: the encoder follows the slowest kiosk, so the free one gets that rate too.
    assert!(status.target_bitrate_kbps < 1000, "{status:?}");
    let free_kbps = (free1.bytes - free0.bytes) * 8.0 / 20.0 / 1000.0;
    assert!(
        free_kbps < 1200.0,
        "free kiosk received {free_kbps:.0} kbit/s"
    );

    drop((thin, free, thin_browser, free_browser));
    finish(daemon, server, client).await;
}

/// A camera's own H.264 (here ffmpeg's libx264: noisy 640x360 at 30 fps, 2 Mbit/s, a keyframe a
/// second), passed through: the path cannot lower its rate, so the kiosk behind 1 Mbit/s gets its
/// keyframes only, a picture a second that stays whole.
const PASSED_THROUGH: &str = "source:\n  type: exec\n  format: h264\n  command: \"ffmpeg \
    -hide_banner -loglevel error -nostdin -re -f lavfi \
    -i testsrc2=size=640x360:rate=30,noise=alls=24:allf=t -c:v libx264 -preset ultrafast \
    -tune zerolatency -g 30 -bf 0 -b:v 2M -maxrate 2M -bufsize 700k -pix_fmt yuv420p -f h264 -\"\n\
    encoding:\n  bitrate: 2M\n  adaptiveBitrate: yes\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_camera_behind_a_thin_link_plays_its_keyframes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_ffmpeg();
    let link = Link::new("192.168.80.1", "192.168.80.2");
    shape(&link, 1000, 32);
    let server = link.server.runtime();
    let client = link.client.runtime();
    let daemon = daemon_in(&link, &server, PASSED_THROUGH.to_owned(), false).await;
    let (browser, page) = kiosk(&client, &link.client.name, &link, &daemon).await;

    let (start, end) = watch(&page, &daemon, 10, 20).await;
    println!(
        "passed through at 2 Mbit/s, 1 Mbit/s link, 20 s after 10 s: {}",
        end.since(&start, 20.0)
    );
    let keyframes = end.keyframes - start.keyframes;
    let fps = (end.frames - start.frames) / 20.0;
    // A keyframe a second at the source: most of them get through, and little else.
    assert!(keyframes >= 10.0, "{keyframes} keyframes decoded in 20 s");
    assert!((0.5..=5.0).contains(&fps), "{fps:.1} fps");

    drop((page, browser));
    finish(daemon, server, client).await;
}
