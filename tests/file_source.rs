//! The `file` source with the formats cameras send, made by Debian's ffmpeg: an MJPEG file
//! (4:2:2 JPEGs, as a webcam's) and an H.264 Annex B file play to a real viewer, in a loop.

mod support;

use std::process::Command;
use std::time::Duration;

use camportal::is_offline_picture;
use camportal_viewer::Viewer;
use support::TestDaemon;

/// Writes one second (25 pictures) of a 320x240 test pattern with ffmpeg's `output` options.
fn clip(path: &std::path::Path, output: &[&str]) {
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc2=size=320x240:rate=25", "-frames:v", "25"])
        .args(output)
        .arg(path)
        .status()
        .expect(
            "ffmpeg not found: the file source tests make their clips with it \
             (`apt-get install ffmpeg`, or `./dev test`)",
        );
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        path.display()
    );
}

#[tokio::test]
async fn mjpeg_and_h264_files_play_in_a_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mjpeg = dir.path().join("clip.mjpeg");
    let h264 = dir.path().join("clip.h264");
    clip(
        &mjpeg,
        &["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-f", "mjpeg"],
    );
    clip(
        &h264,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-bf",
            "0",
            "-f",
            "h264",
        ],
    );
    let path = |file: &std::path::Path, format: &str| {
        format!(
            "source:\n  type: file\n  path: {}\n{format}encoding: {{width: 320, height: 240, \
             fps: 25, bitrate: 300k}}\n",
            file.display()
        )
    };
    // The MJPEG format is read from the file's first bytes; the H.264 one is given.
    let daemon = TestDaemon::start(&[
        ("mjpeg", &path(&mjpeg, "")),
        ("h264", &path(&h264, "  format: h264\n")),
    ])
    .await;
    for name in ["mjpeg", "h264"] {
        let mut viewer = Viewer::connect(&daemon.whep_url(name))
            .await
            .expect("WHEP session");
        // More pictures than the file holds: it loops.
        let mut live = 0;
        while live < 40 {
            let frame = viewer
                .next_frame(Duration::from_secs(10))
                .await
                .expect("frames keep coming");
            let p = &frame.picture;
            if !is_offline_picture(&p.y, p.width, p.height) {
                assert_eq!((p.width, p.height), (320, 240));
                live += 1;
            }
        }
        let status = daemon.status(name).expect("listed");
        assert_eq!(status.restarts, 0, "{status:?}");
        viewer.close().await.expect("close");
    }
}
