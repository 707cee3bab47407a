//! Snapshots and MJPEG as dashboards read them: `frame.jpeg` decoded by Debian's `ffprobe`,
//! `stream.mjpeg` counted part by part, the index's thumbnails in headless Chromium.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::chromium::Chromium;
use support::{TestDaemon, small_path};

fn testsrc(width: u32, height: u32, fps: u32) -> String {
    format!(
        "source: testsrc\nencoding:\n  width: {width}\n  height: {height}\n  fps: {fps}\n  bitrate: 300k\n"
    )
}

/// `(width, height)` of the picture in `jpeg`, as ffprobe reads it.
fn ffprobe_size(jpeg: &[u8]) -> (u32, u32) {
    let file = tempfile::Builder::new()
        .suffix(".jpg")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), jpeg).expect("write");
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("ffprobe not found ({e}): run `apt-get install ffmpeg`"));
    assert!(
        output.status.success(),
        "ffprobe cannot read the snapshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let (w, h) = text.trim().split_once(',').expect("width,height");
    (w.parse().expect("width"), h.parse().expect("height"))
}

#[tokio::test]
async fn a_snapshot_is_the_current_picture_at_the_path_size() {
    let test = TestDaemon::start(&[("cam", &testsrc(320, 240, 30))]).await;
    let mut times = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let response = reqwest::get(test.url("/cam/frame.jpeg"))
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        let jpeg = response.bytes().await.expect("body");
        times.push(asked.elapsed());
        assert_eq!(ffprobe_size(&jpeg), (320, 240));
    }
    println!("snapshot latencies: {times:?}");
    // Nobody watches pictures any more: the path keeps none.
    let status = test.status("cam").expect("status");
    assert_eq!(status.readers.mjpeg, 0);

    let missing = reqwest::get(test.url("/nope/frame.jpeg"))
        .await
        .expect("answer");
    assert_eq!(missing.status(), 404);
}

/// Reads `stream.mjpeg` for `window` and returns the JPEG parts seen.
async fn read_parts(url: &str, window: Duration) -> Vec<Vec<u8>> {
    let mut response = reqwest::get(url).await.expect("answer");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let boundary = content_type
        .split_once("boundary=")
        .map(|(_, b)| b.to_string())
        .expect("a boundary");
    assert!(content_type.starts_with("multipart/x-mixed-replace"));
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        buffer.extend_from_slice(&chunk);
    }
    let marker = format!("--{boundary}\r\n");
    let text = buffer.as_slice();
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = find(rest, marker.as_bytes()) {
        rest = &rest[at + marker.len()..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let Some(length) = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
        else {
            break;
        };
        let body = &rest[head_end + 4..];
        if body.len() < length {
            break;
        }
        parts.push(body[..length].to_vec());
        rest = &body[length..];
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn an_mjpeg_stream_follows_the_path_and_counts_as_a_reader() {
    let test = TestDaemon::start(&[("cam", &testsrc(160, 120, 10))]).await;
    let url = test.url("/cam/stream.mjpeg");
    let reading = tokio::spawn({
        let url = url.clone();
        async move { read_parts(&url, Duration::from_secs(3)).await }
    });
    test.wait_for("one MJPEG reader listed", |s| {
        s.paths
            .iter()
            .any(|p| p.name == "cam" && p.readers.mjpeg == 1)
    })
    .await;
    let parts = reading.await.expect("reader");
    // 10 fps for 3 s: close to 30 parts (a loaded machine may take a little longer to start).
    assert!(
        parts.len() >= 15,
        "only {} parts in 3 s at 10 fps",
        parts.len()
    );
    assert_eq!(ffprobe_size(&parts[parts.len() - 1]), (160, 120));
    test.wait_for("the reader is gone", |s| {
        s.paths
            .iter()
            .any(|p| p.name == "cam" && p.readers.mjpeg == 0)
    })
    .await;

    // ?fps= caps the rate.
    let capped = read_parts(&format!("{url}?fps=2"), Duration::from_secs(3)).await;
    assert!(
        (3..=8).contains(&capped.len()),
        "{} parts in 3 s at fps=2",
        capped.len()
    );
    let bad = reqwest::get(format!("{url}?fps=-1")).await.expect("answer");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_index_shows_a_live_thumbnail_of_each_path() {
    let test = TestDaemon::start(&[
        ("front", &small_path(320, 180)),
        ("back", &small_path(160, 120)),
    ])
    .await;
    let browser = Chromium::launch().await.expect("chromium");
    let page = browser.open(&test.url("/")).await.expect("index");
    let sizes = page
        .wait_for(
            "(() => { const imgs = [...document.querySelectorAll('img.thumb')]; \
              return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0) \
                && imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight]); })()",
            Duration::from_secs(15),
        )
        .await
        .expect("both thumbnails render");
    let sizes = sizes.to_string();
    assert!(sizes.contains("[\"back now\",160,120]"), "{sizes}");
    assert!(sizes.contains("[\"front now\",320,180]"), "{sizes}");
    let png = page.screenshot_png().await.expect("screenshot");
    assert!(png.len() > 1000, "a screenshot");
    page.close().await.ok();
}
