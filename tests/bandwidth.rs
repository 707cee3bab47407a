//! A thin link between the portal and its kiosk: the daemon in one network namespace, headless
//! Chromium playing the shipped player in another, a veth pair between them shaped to 1 Mbit/s
//! with `tbf` on the daemon's side. The path sends noisy content at 2 Mbit/s (the encoder really
//! needs its bitrate), so without adaptation the kiosk decodes nothing; with it, the encoder
//! follows the browser's bandwidth estimate (GCC over transport-wide feedback) and the picture
//! stays smooth. Before the link is shaped, the free link keeps the full configured rate.
//! (`adaptiveBitrate` is off by default for now; the path here turns it on.)

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::TestDaemon;
use support::chromium::{Chromium, Page};
use support::netns::{Link, shutdown};

/// 640x360 at 30 fps with strong temporal noise, as raw I420 from ffmpeg.
const NOISY: &str = "source:\n  type: exec\n  format: i420\n  command: \"ffmpeg -hide_banner \
    -loglevel error -nostdin -re -f lavfi -i testsrc2=size=640x360:rate=30,noise=alls=24:allf=t \
    -pix_fmt yuv420p -f rawvideo -\"\nencoding:\n  width: 640\n  height: 360\n  fps: 30\n  \
    bitrate: 2M\n  adaptiveBitrate: yes\n";

/// Captures the player's peer connection, so its `getStats()` can be read.
const KEEP_PC: &str = "(() => { const Orig = window.RTCPeerConnection; \
    window.RTCPeerConnection = function (...args) { \
      const pc = new Orig(...args); window.__pc = pc; return pc; }; \
    window.RTCPeerConnection.prototype = Orig.prototype; })();";

/// What the player's video receiver says so far: frames decoded, freezes and their total
/// duration in seconds, bytes received.
async fn inbound(page: &Page) -> (f64, f64, f64, f64) {
    let stats = page
        .eval(
            "(async () => { if (!window.__pc) return null; \
               const stats = await window.__pc.getStats(); let out = null; \
               stats.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') \
                 out = [r.framesDecoded || 0, r.freezeCount || 0, \
                        r.totalFreezesDuration || 0, r.bytesReceived || 0]; }); \
               return out; })()",
        )
        .await
        .expect("getStats");
    let get = |i: usize| stats.get(i).and_then(Value::as_f64).unwrap_or(0.0);
    (get(0), get(1), get(2), get(3))
}

fn tc(link: &Link, args: &str) {
    let status = link
        .server
        .command("tc")
        .args(args.split_whitespace())
        .status()
        .expect("tc (iproute2) runs");
    assert!(status.success(), "tc {args} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_link_gets_a_smooth_picture_and_a_free_link_the_full_rate() {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    assert!(
        found,
        "ffmpeg not found: `apt-get install ffmpeg` (or `./dev test`)"
    );
    let link = Link::new("192.168.77.1", "192.168.77.2");
    let server = link.server.runtime();
    let client = link.client.runtime();

    let daemon = server
        .spawn(TestDaemon::start_with(&[("cam", NOISY)], |s| {
            s.http_address = "192.168.77.1:0".parse().unwrap();
            s.udp_address = "192.168.77.1:0".parse().unwrap();
            s.rtsp = false;
        }))
        .await
        .expect("daemon starts in its namespace");
    let url = format!("http://{}/cam/", daemon.daemon.http_addr);
    let netns = link.client.name.clone();
    let browser = client
        .spawn(async move { Chromium::launch_in(Some(&netns), &[]).await })
        .await
        .expect("launch task")
        .expect("Chromium starts in its namespace");
    let page = browser
        .open_with_script(&url, Some(KEEP_PC))
        .await
        .expect("player opens");

    // The free link: once the browser's estimate is in, the encoder keeps the configured rate.
    let mut free = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = daemon.status("cam").expect("listed");
        if status.bandwidth_estimate_kbps.is_some() && inbound(&page).await.0 > 30.0 {
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
    tc(
        &link,
        "qdisc add dev cp-server root tbf rate 1mbit burst 32kbit latency 300ms",
    );
    for _ in 0..5 {
        let before = inbound(&page).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = inbound(&page).await;
        let status = daemon.status("cam").expect("listed");
        println!(
            "settling: {:.0} fps, {:.0} kbit/s received, freezes {}, encoder {} kbit/s, \
             estimate {:?}",
            (after.0 - before.0) / 2.0,
            (after.3 - before.3) * 8.0 / 2000.0,
            after.1,
            status.target_bitrate_kbps,
            status.bandwidth_estimate_kbps,
        );
    }
    let (frames0, freezes0, frozen0, bytes0) = inbound(&page).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (frames1, freezes1, frozen1, bytes1) = inbound(&page).await;
    let status = daemon.status("cam").expect("listed");
    let fps = (frames1 - frames0) / 20.0;
    let kbps = (bytes1 - bytes0) * 8.0 / 20.0 / 1000.0;
    println!(
        "1 Mbit/s link, 20 s after 10 s of settling: {fps:.1} fps decoded, {} freezes, \
         {:.2} s frozen, {kbps:.0} kbit/s received; encoder {} kbit/s, estimate {:?} kbit/s",
        freezes1 - freezes0,
        frozen1 - frozen0,
        status.target_bitrate_kbps,
        status.bandwidth_estimate_kbps
    );
    // Without adaptation this link decodes nothing (issue 13 measured 0 fps). The goal
    // is at most 1 s of freezes; here 0.25–4.9 s of 20 s were still frozen (see the README), so
    // the bounds guard the mechanism, not the goal.
    assert!(fps >= 20.0, "{fps:.1} fps");
    let frozen = frozen1 - frozen0;
    assert!(frozen <= 10.0, "{frozen:.2} s frozen");
    assert!(
        status.target_bitrate_kbps < 2000,
        "the encoder came down: {status:?}"
    );

    drop(page);
    drop(browser);
    let shut = server.spawn(async move { daemon.daemon.shutdown().await });
    let _ = shut.await;
    shutdown(server);
    shutdown(client);
}
