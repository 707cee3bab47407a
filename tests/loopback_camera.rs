//! Compressed cameras through a real V4L2 driver: Debian's `v4l2loopback` in the QEMU guest (see
//! `support/vivid.rs`), fed one picture per `write()` by a small program as a webcam's firmware
//! would deliver them, captured by the daemon under test in the guest, and watched from the host
//! by the Rust WHEP viewer. One guest boot carries every scenario (TCG boots are slow):
//!
//! - MJPEG 4:2:2, with and without Huffman tables (webcams leave them out): plays, and the colours
//!   at the viewer are the JPEG's brought to limited range (what an H.264 stream without a range
//!   flag means), within ±2 levels;
//! - unplug and replug (the feeder stops and starts again): offline picture, then the camera back
//!   on the same session;
//! - H.264 passthrough in Baseline and Main profile: every picture the viewer decodes is one of
//!   the camera's own, bit for bit, and the WHEP answer names the profile actually sent (a viewer
//!   that offers only Constrained Baseline gets a 400 for the Main camera).
//!
//! The clips are made on the host by ffmpeg; what a picture should look like is read back with
//! ffmpeg too, never with the daemon's own code.

mod support;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use camportal::is_offline_picture;
use camportal_viewer::{DecodedPicture, Viewer, ViewerFrame};
use support::vivid::Guest;
use tokio::task::block_in_place;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const FPS: u32 = 15;
/// Pictures in each clip (the feeder loops it): two H.264 GOPs of 15.
const CLIP_PICTURES: usize = 30;
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(60);

/// Eight vertical stripes of known full-range YUV (as a JPEG holds it): black, white, two greys
/// near the ends, mid grey, and four colours with chroma out to the extremes.
const STRIPES: [(u8, u8, u8); 8] = [
    (0, 128, 128),
    (255, 128, 128),
    (40, 128, 128),
    (220, 128, 128),
    (128, 128, 128),
    (100, 60, 200),
    (150, 220, 30),
    (200, 0, 255),
];
/// The clips the guest gets, as `/clips/<name>/`.
const CLIP_NAMES: [&str; 4] = ["mjpeg", "mjpeg-no-dht", "baseline", "main"];
/// Rows the stripes fill; below them a square moves, so that pictures differ as a camera's do.
const STRIPE_ROWS: u32 = 400;

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run `apt-get install ffmpeg`"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The stripes as raw full-range 4:2:2 (`yuvj422p`), one picture per position of the square.
fn stripes_yuv422() -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let stripe = w / STRIPES.len();
    let mut raw = Vec::new();
    for n in 0..CLIP_PICTURES {
        let square = |x: usize, y: usize| {
            let left = n * (w - 32) / CLIP_PICTURES;
            y >= STRIPE_ROWS as usize + 16
                && y < STRIPE_ROWS as usize + 48
                && (left..left + 32).contains(&x)
        };
        for y in 0..h {
            for x in 0..w {
                let luma = if (y as u32) < STRIPE_ROWS {
                    STRIPES[x / stripe].0
                } else {
                    16
                };
                raw.push(if square(x, y) { 235 } else { luma });
            }
        }
        for plane in [1, 2] {
            for y in 0..h {
                for x in 0..w / 2 {
                    let (_, u, v) = STRIPES[2 * x / stripe];
                    let value = if plane == 1 { u } else { v };
                    raw.push(if (y as u32) < STRIPE_ROWS { value } else { 128 });
                }
            }
        }
    }
    raw
}

/// A JPEG without its DHT segments, as UVC webcams send them (the decoder then uses the
/// standard tables, which is what ffmpeg's `-huffman default` encoded with).
fn without_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        let marker = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        if marker == 0xDA {
            // Start of scan: the rest is entropy-coded data and the end marker.
            out.extend_from_slice(&jpeg[at..]);
            return out;
        }
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[at..at + 2 + length]);
        }
        at += 2 + length;
    }
    panic!("no start of scan in the JPEG");
}

/// The clips, one file per picture, in directories the guest gets as `/clips/<name>/`.
struct Clips {
    dir: tempfile::TempDir,
}

impl Clips {
    fn make() -> Clips {
        let dir = tempfile::tempdir().expect("temp dir");
        let clips = Clips { dir };
        let raw = clips.dir.path().join("stripes.yuv");
        std::fs::write(&raw, stripes_yuv422()).expect("write the raw clip");
        let size = format!("{WIDTH}x{HEIGHT}");
        let fps = FPS.to_string();
        for name in CLIP_NAMES {
            std::fs::create_dir(clips.path(name)).expect("clip dir");
        }
        let out = |name: &str, ext: &str| {
            clips
                .path(name)
                .join(format!("p%03d.{ext}"))
                .display()
                .to_string()
        };
        run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuvj422p",
                "-s",
                &size,
                "-r",
                &fps,
                "-i",
                &raw.display().to_string(),
                "-c:v",
                "mjpeg",
                "-q:v",
                "2",
                "-huffman",
                "default",
                "-f",
                "image2",
                &out("mjpeg", "jpg"),
            ],
        );
        for picture in clips.pictures("mjpeg") {
            let jpeg = std::fs::read(&picture).expect("read a JPEG");
            let name = picture.file_name().expect("file name");
            std::fs::write(
                clips.path("mjpeg-no-dht").join(name),
                without_huffman_tables(&jpeg),
            )
            .expect("write a JPEG");
        }
        // x264 as a camera's encoder: parameter sets with every keyframe, no B-frames, a keyframe
        // every second. `main` makes x264 use CABAC, a Main-profile tool.
        for (name, profile) in [("baseline", "baseline"), ("main", "main")] {
            run(
                "ffmpeg",
                &[
                    "-v",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    &format!("testsrc2=size={size}:rate={fps}"),
                    "-frames:v",
                    &CLIP_PICTURES.to_string(),
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-profile:v",
                    profile,
                    "-pix_fmt",
                    "yuv420p",
                    "-g",
                    "15",
                    "-bf",
                    "0",
                    "-x264-params",
                    "repeat-headers=1",
                    "-f",
                    "image2",
                    &out(name, "h264"),
                ],
            );
        }
        clips
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pictures(&self, name: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path(name))
            .expect("clip dir")
            .map(|e| e.expect("clip file").path())
            .collect();
        files.sort();
        files
    }

    fn for_guest(&self) -> Vec<(&'static str, PathBuf)> {
        CLIP_NAMES
            .into_iter()
            .map(|name| (name, self.path(name)))
            .collect()
    }

    /// The H.264 clip decoded by ffmpeg: one hash per picture over its I420 planes.
    fn decoded_h264(&self, name: &str) -> HashSet<u64> {
        let stream = self.dir.path().join(format!("{name}.h264"));
        let mut bytes = Vec::new();
        for picture in self.pictures(name) {
            bytes.extend(std::fs::read(picture).expect("read an access unit"));
        }
        std::fs::write(&stream, bytes).expect("write the stream");
        let raw = run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-i",
                &stream.display().to_string(),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuv420p",
                "-",
            ],
        );
        let frame = (WIDTH * HEIGHT * 3 / 2) as usize;
        assert_eq!(
            raw.len(),
            frame * CLIP_PICTURES,
            "ffmpeg decodes every picture"
        );
        raw.chunks(frame).map(planes_hash).collect()
    }

    /// The first JPEG of `name` decoded by ffmpeg, as raw full-range 4:2:2.
    fn decoded_jpeg(&self, name: &str) -> Vec<u8> {
        let first = self.pictures(name).remove(0);
        run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-i",
                &first.display().to_string(),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuvj422p",
                "-",
            ],
        )
    }
}

fn planes_hash(planes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    planes.hash(&mut hasher);
    hasher.finish()
}

fn picture_hash(picture: &DecodedPicture) -> u64 {
    planes_hash(&[&picture.y[..], &picture.u[..], &picture.v[..]].concat())
}

/// The median of a `size` x `size` block of a plane centred on (x, y).
fn median(plane: &[u8], stride: usize, x: usize, y: usize, size: usize) -> u8 {
    let mut values: Vec<u8> = (y - size / 2..y + size / 2)
        .flat_map(|row| plane[row * stride + x - size / 2..row * stride + x + size / 2].to_vec())
        .collect();
    values.sort_unstable();
    values[values.len() / 2]
}

/// Full range → limited range, as H.264 without a range flag is read (ITU-R BT.601).
fn limited_luma(full: u8) -> i32 {
    (16.0 + f64::from(full) * 219.0 / 255.0).round() as i32
}

fn limited_chroma(full: u8) -> i32 {
    (128.0 + (f64::from(full) - 128.0) * 224.0 / 255.0).round() as i32
}

/// Each stripe's centre at the viewer against the JPEG's, brought to limited range. Returns the
/// largest difference seen, in levels.
fn check_colours(what: &str, picture: &DecodedPicture, jpeg_422: &[u8]) -> i32 {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let stripe = w / STRIPES.len();
    let y_row = STRIPE_ROWS as usize / 2;
    let (jpeg_u, jpeg_v) = (
        &jpeg_422[w * h..w * h + w * h / 2],
        &jpeg_422[w * h + w * h / 2..],
    );
    let mut worst = 0;
    let mut report = Vec::new();
    for i in 0..STRIPES.len() {
        let x = i * stripe + stripe / 2;
        let sent = [
            limited_luma(median(jpeg_422, w, x, y_row, 16)),
            limited_chroma(median(jpeg_u, w / 2, x / 2, y_row, 8)),
            limited_chroma(median(jpeg_v, w / 2, x / 2, y_row, 8)),
        ];
        let got = [
            i32::from(median(&picture.y, w, x, y_row, 16)),
            i32::from(median(&picture.u, w / 2, x / 2, y_row / 2, 8)),
            i32::from(median(&picture.v, w / 2, x / 2, y_row / 2, 8)),
        ];
        for (s, g) in sent.iter().zip(got) {
            worst = worst.max((s - g).abs());
        }
        report.push(format!("{sent:?}→{got:?}"));
    }
    println!(
        "{what}: stripes (JPEG in limited range → viewer, Y U V): {}",
        report.join(" ")
    );
    assert!(
        worst <= 2,
        "{what}: colours off by up to {worst} levels: {}",
        report.join(" ")
    );
    worst
}

/// A path file for a camera on `device` in `format` at the clips' size and rate.
fn camera_path(device: &str, format: &str) -> String {
    format!(
        "source:\n  type: v4l2\n  device: {device}\n  format: {format}\nencoding:\n  width: \
         {WIDTH}\n  height: {HEIGHT}\n  fps: {FPS}\n  bitrate: 2M\n"
    )
}

/// Drops a path file into the running daemon's config.d (written aside, then renamed, as an
/// editor or a deployment tool would).
fn add_path(guest: &mut Guest, name: &str, yaml: &str) {
    let text = yaml.replace('\n', "\\n");
    guest.ok(&format!(
        "printf '{text}' > /etc/camportal/config.d/.{name}.tmp && \
         mv /etc/camportal/config.d/.{name}.tmp /etc/camportal/config.d/{name}.yml"
    ));
    guest.wait_status(name, "running", WAIT, |s| s["state"] == "running");
}

fn remove_path(guest: &mut Guest, name: &str) {
    guest.ok(&format!("rm /etc/camportal/config.d/{name}.yml"));
}

fn is_camera(frame: &ViewerFrame) -> bool {
    let p = &frame.picture;
    !is_offline_picture(&p.y, p.width, p.height)
}

/// Reads pictures until `done` says the last one is what was waited for; returns it.
async fn next_where(
    guest: &Guest,
    viewer: &mut Viewer,
    what: &str,
    done: impl Fn(&ViewerFrame) -> bool,
) -> ViewerFrame {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match viewer.next_frame(FRAME_TIMEOUT).await {
            Ok(frame) if done(&frame) => return frame,
            Ok(_) => {}
            Err(err) => guest.fail(&format!("{what}: the viewer stopped: {err:#}")),
        }
        if tokio::time::Instant::now() > deadline {
            guest.fail(&format!("{what}: not within {WAIT:?}"));
        }
    }
}

/// `n` camera pictures in a row; all must be among the clip's own (`clip`).
async fn bit_exact(guest: &Guest, viewer: &mut Viewer, what: &str, clip: &HashSet<u64>, n: usize) {
    next_where(guest, viewer, &format!("{what}: a keyframe"), |f| {
        f.keyframe
    })
    .await;
    for i in 0..n {
        let frame = viewer
            .next_frame(FRAME_TIMEOUT)
            .await
            .unwrap_or_else(|e| guest.fail(&format!("{what}: picture {i}: {e:#}")));
        assert!(
            clip.contains(&picture_hash(&frame.picture)),
            "{what}: picture {i} at the viewer is not one of the camera's"
        );
    }
}

fn answered_profile(viewer: &Viewer) -> String {
    viewer
        .answer_sdp()
        .lines()
        .find_map(|l| l.split("profile-level-id=").nth(1))
        .map(|p| p.chars().take(6).collect())
        .unwrap_or_default()
}

fn status_text(status: &serde_json::Value, key: &str) -> String {
    status[key].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_and_h264_cameras_play_through_v4l2loopback() {
    let clips = block_in_place(Clips::make);
    let mut guest = block_in_place(|| Guest::boot_with_loopback(&[], &clips.for_guest()));
    let feeders = [
        ("/dev/video0", "MJPG", "mjpeg"),
        ("/dev/video1", "MJPG", "mjpeg-no-dht"),
        ("/dev/video2", "H264", "baseline"),
        ("/dev/video3", "H264", "main"),
    ];
    let devices = block_in_place(|| {
        guest.load_loopback("devices=4 exclusive_caps=1,1,1,1 max_buffers=2");
        for (device, fourcc, clip) in feeders {
            guest.start_feeder(device, fourcc, (WIDTH, HEIGHT), FPS, clip);
        }
        guest.ok("camportal devices")
    });
    println!("{devices}");
    for (device, _, _) in feeders {
        assert!(
            devices.contains(&format!("{device}: ")),
            "{device} listed:\n{devices}"
        );
    }
    assert!(devices.contains("format: mjpeg"), "{devices}");
    assert!(devices.contains("format: h264"), "{devices}");
    block_in_place(|| guest.start_daemon());

    // MJPEG 4:2:2 with Huffman tables, and without (as webcams send them).
    for (name, device, clip) in [
        ("mjpeg", "/dev/video0", "mjpeg"),
        ("nodht", "/dev/video1", "mjpeg-no-dht"),
    ] {
        let status = block_in_place(|| {
            add_path(&mut guest, name, &camera_path(device, "mjpeg"));
            guest.path_status(name)
        });
        assert_eq!(
            status_text(&status, "format"),
            "MJPEG 640x480 @ 15 fps",
            "{status}"
        );
        let mut viewer = Viewer::connect(&guest.whep_url(name))
            .await
            .expect("WHEP session");
        // A few pictures in, so the encoder's rate control has settled on the still stripes.
        for _ in 0..20 {
            next_where(&guest, &mut viewer, name, is_camera).await;
        }
        let frame = next_where(&guest, &mut viewer, name, is_camera).await;
        check_colours(name, &frame.picture, &clips.decoded_jpeg(clip));

        if name == "mjpeg" {
            // Unplugged: the camera stops sending. The viewer is shown the offline picture, then
            // the camera again on the same session once it is back.
            block_in_place(|| guest.stop_feeder(device));
            next_where(&guest, &mut viewer, "the offline picture", |f| {
                !is_camera(f)
            })
            .await;
            let status = block_in_place(|| guest.path_status(name));
            println!("unplugged: {}", status_text(&status, "lastError"));
            block_in_place(|| guest.start_feeder(device, "MJPG", (WIDTH, HEIGHT), FPS, clip));
            next_where(&guest, &mut viewer, "the camera back", is_camera).await;
            let frame = next_where(&guest, &mut viewer, "the camera back", is_camera).await;
            check_colours(
                "mjpeg after replug",
                &frame.picture,
                &clips.decoded_jpeg(clip),
            );
            let status = block_in_place(|| guest.path_status(name));
            assert!(status["restarts"].as_u64() >= Some(1), "{status}");
            assert_eq!(status["viewers"], 1, "the same session: {status}");
        }
        viewer.close().await.expect("DELETE the session");
        block_in_place(|| remove_path(&mut guest, name));
    }

    // H.264 passed through: Baseline to a viewer offering Constrained Baseline, as Chromium
    // would; Main only to a viewer that offers Main.
    for (name, device, clip, offer, profile) in [
        (
            "baseline",
            "/dev/video2",
            "baseline",
            &["42e01f"][..],
            "42e01f",
        ),
        (
            "main",
            "/dev/video3",
            "main",
            &["42e01f", "4d001f"][..],
            "4d001f",
        ),
    ] {
        let status = block_in_place(|| {
            add_path(&mut guest, name, &camera_path(device, "h264"));
            guest.wait_status(name, "the camera's keyframe interval", WAIT, |s| {
                s["sourceKeyframeIntervalMs"].as_u64().is_some()
            })
        });
        assert_eq!(
            status_text(&status, "format"),
            "H264 640x480 @ 15 fps",
            "{status}"
        );
        let gop = status["sourceKeyframeIntervalMs"]
            .as_u64()
            .unwrap_or_default();
        assert!(
            (700..=1400).contains(&gop),
            "a 1 s GOP measured as {gop} ms: {status}"
        );
        if name == "main" {
            let refused = Viewer::connect(&guest.whep_url(name))
                .await
                .err()
                .map(|e| format!("{e:#}"));
            let refused = refused.expect("a Constrained-Baseline-only viewer is refused");
            assert!(refused.contains("400"), "{refused}");
            println!("main: a Constrained-Baseline-only offer: {refused}");
        }
        let mut viewer = Viewer::connect_offering(&guest.whep_url(name), offer)
            .await
            .expect("WHEP session");
        assert_eq!(
            answered_profile(&viewer),
            profile,
            "{}",
            viewer.answer_sdp()
        );
        let what = format!("{name} passthrough");
        bit_exact(
            &guest,
            &mut viewer,
            &what,
            &clips.decoded_h264(clip),
            2 * CLIP_PICTURES,
        )
        .await;
        println!(
            "{what}: {} pictures bit-exact, answered {profile}, camera GOP {gop} ms",
            2 * CLIP_PICTURES
        );
        viewer.close().await.expect("DELETE the session");
        block_in_place(|| remove_path(&mut guest, name));
    }
}
