//! Real cameras through a real V4L2 driver: the kernel's `vivid` webcam in a QEMU guest (see
//! `support/vivid.rs`), the daemon under test running in the guest, and the Rust WHEP viewer on
//! the host watching through forwarded ports, as a kiosk at another site would. Each scenario
//! asserts what the person at the kiosk notices: live pictures of the right size, a "camera
//! offline" picture while the camera is away, and the camera back on the same session by
//! itself.
//!
//! The guest runs under TCG (no KVM here): vivid sustains 640x480 at 25 fps there, and the
//! scenarios use that or less.

mod support;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use camportal::is_offline_picture;
use camportal_viewer::Viewer;
use support::vivid::Guest;
use tokio::sync::oneshot;
use tokio::task::block_in_place;

/// A viewer gives up on a silent path after this long (the offline picture keeps it busy).
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(60);

/// A camera path. Keyframes only on request (join, loss, a camera coming back), so that a
/// keyframe seen after a fault is the daemon's answer to it.
fn camera_path(device: &str, format: &str, width: u32, height: u32, fps: u32) -> String {
    format!(
        "source:\n  type: v4l2\n  device: {device}\n  format: {format}\nencoding:\n  width: \
         {width}\n  height: {height}\n  fps: {fps}\n  bitrate: 800k\n  keyframeInterval: 60s\n"
    )
}

/// One decoded picture as the viewer saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: SystemTime,
    keyframe: bool,
    width: u32,
    height: u32,
    offline: bool,
}

#[derive(Default)]
struct Record {
    seen: Vec<Seen>,
    /// Why the viewer stopped, if it did.
    ended: Option<String>,
}

/// A viewer read continuously in the background (a queue nobody reads drops pictures), with
/// everything it saw recorded.
struct Watch {
    record: Arc<Mutex<Record>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Viewer>,
    session: String,
}

impl Watch {
    async fn start(url: &str) -> Watch {
        let mut viewer = Viewer::connect(url).await.expect("WHEP session");
        let session = viewer.session_url().to_owned();
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop, mut stopped) = oneshot::channel();
        let task = {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        frame = viewer.next_frame(FRAME_TIMEOUT) => {
                            let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
                            match frame {
                                Ok(frame) => {
                                    let picture = &frame.picture;
                                    record.seen.push(Seen {
                                        at: frame.received,
                                        keyframe: frame.keyframe,
                                        width: picture.width,
                                        height: picture.height,
                                        offline: is_offline_picture(
                                            &picture.y,
                                            picture.width,
                                            picture.height,
                                        ),
                                    });
                                }
                                Err(err) => {
                                    record.ended = Some(format!("{err:#}"));
                                    break;
                                }
                            }
                        }
                    }
                }
                viewer
            })
        };
        Watch {
            record,
            stop: Some(stop),
            task,
            session,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .clone()
    }

    fn ended(&self) -> Option<String> {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended
            .clone()
    }

    /// Waits until `done` holds for what was seen; fails if the viewer stopped first.
    async fn wait_for(&self, guest: &Guest, what: &str, done: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return;
            }
            if let Some(why) = self.ended() {
                guest.fail(&format!("{what}: the viewer stopped: {why}"));
            }
            if tokio::time::Instant::now() > deadline {
                guest.fail(&format!(
                    "{what}: not within {WAIT:?}; the viewer saw {} pictures, the last ones {:?}",
                    seen.len(),
                    &seen[seen.len().saturating_sub(5)..]
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let viewer = self.task.await.expect("viewer task");
        viewer.close().await.expect("DELETE the session");
    }
}

/// Camera pictures (not the offline one) seen from index `from` on.
fn camera_pictures(seen: &[Seen], from: usize) -> impl Iterator<Item = &Seen> {
    seen.iter().skip(from).filter(|s| !s.offline)
}

/// After a fault at index `from`: a camera keyframe, then `n` more camera pictures.
fn back_live(seen: &[Seen], from: usize, n: usize) -> bool {
    let mut after = seen
        .iter()
        .skip(from)
        .skip_while(|s| s.offline || !s.keyframe);
    after.next().is_some() && after.filter(|s| !s.offline).count() >= n
}

/// A guest with one vivid webcam as path `cam` (640x360 at 15 fps in `format`), the daemon
/// running, and a viewer on the host that has seen live camera pictures.
async fn one_camera_streaming(format: &str) -> (Guest, Watch) {
    let mut guest = Guest::boot(&[("cam", &camera_path("/dev/video0", format, 640, 360, 15))]);
    block_in_place(|| {
        guest.load_vivid("node_types=0x1");
        guest.start_daemon();
        guest.wait_status("cam", "running", WAIT, |s| s["state"] == "running");
    });
    let watch = Watch::start(&guest.whep_url("cam")).await;
    watch
        .wait_for(&guest, "live pictures", |seen| {
            camera_pictures(seen, 0).count() >= 10
        })
        .await;
    (guest, watch)
}

fn status_text(status: &serde_json::Value, key: &str) -> String {
    status[key].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yuyv_and_nv12_cameras_reach_a_viewer_at_their_size() {
    let ambiguous = "source:\n  type: v4l2\n  card: vivid\nencoding:\n  width: 320\n  height: \
                     180\n  fps: 5\n";
    let mut guest = Guest::boot(&[
        ("yuyv", &camera_path("/dev/video0", "yuyv", 640, 480, 25)),
        ("nv12", &camera_path("/dev/video1", "nv12", 640, 480, 15)),
        ("bycard", ambiguous),
    ]);
    block_in_place(|| {
        // Two webcams, capture nodes only: /dev/video0 and /dev/video1.
        guest.load_vivid("n_devs=2 node_types=0x1,0x1");
        guest.start_daemon();
    });

    for (name, node, format) in [
        ("yuyv", "/dev/video0", "YUYV 640x480 @ 25 fps"),
        ("nv12", "/dev/video1", "NV12 640x480 @ 15 fps"),
    ] {
        let status = block_in_place(|| {
            guest.wait_status(name, "running", WAIT, |s| s["state"] == "running")
        });
        assert_eq!(status_text(&status, "format"), format, "{status}");
        assert_eq!(
            status_text(&status, "camera"),
            format!("{node} \"vivid\""),
            "{status}"
        );

        let watch = Watch::start(&guest.whep_url(name)).await;
        watch
            .wait_for(&guest, &format!("{name}: 50 pictures"), |seen| {
                seen.len() >= 50
            })
            .await;
        let seen = watch.seen();
        assert!(seen[0].keyframe, "{name}: the first picture is a keyframe");
        assert!(
            seen.iter().all(|s| (s.width, s.height) == (640, 480)),
            "{name}: every picture is 640x480: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| !s.offline),
            "{name}: the camera's pictures, not the offline one"
        );
        let span = seen[49]
            .at
            .duration_since(seen[0].at)
            .unwrap_or_default()
            .as_secs_f64();
        println!(
            "{name}: {format} from vivid under TCG: {:.1} pictures/s at the viewer",
            49.0 / span.max(0.001)
        );
        watch.close().await;
    }

    // Both webcams are "vivid": a match on the card name alone cannot choose, and says so.
    let status = block_in_place(|| {
        guest.wait_status("bycard", "an ambiguity error", WAIT, |s| {
            status_text(s, "lastError").contains("card \"vivid\": 2 cameras match: /dev/video0")
        })
    });
    assert_ne!(status["state"], "running", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_camera_comes_back_on_the_same_session() {
    let (mut guest, watch) = one_camera_streaming("yuyv").await;

    // As if the USB cable were pulled and put back at once.
    let from = watch.seen().len();
    block_in_place(|| guest.ok("v4l2-ctl -d /dev/video0 -c disconnect=1"));
    let status = block_in_place(|| {
        guest.wait_status("cam", "a restart", WAIT, |s| {
            s["restarts"].as_u64() >= Some(1)
        })
    });
    assert!(
        status_text(&status, "lastError").contains("ENODEV"),
        "the status says why: {status}"
    );
    watch
        .wait_for(&guest, "a keyframe and live pictures again", |seen| {
            back_live(seen, from, 20)
        })
        .await;
    let seen = watch.seen();
    assert!(seen.iter().all(|s| (s.width, s.height) == (640, 360)));
    assert_eq!(watch.ended(), None, "the viewer stayed connected");
    let status = block_in_place(|| guest.path_status("cam"));
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["viewers"], 1, "the same session: {status}");
    println!(
        "disconnect: {} offline pictures shown, then live again on session {}",
        seen[from..].iter().filter(|s| s.offline).count(),
        watch.session
    );

    // A changed file (a new size) restarts the camera path: the camera is reopened (the old
    // capture let go of it) and the same session carries on at the new size.
    let from = watch.seen().len();
    let changed = camera_path("/dev/video0", "yuyv", 320, 180, 15).replace('\n', "\\n");
    block_in_place(|| {
        guest.ok(&format!(
            "printf '{changed}' > /etc/camportal/config.d/.cam.yml.tmp && \
             mv /etc/camportal/config.d/.cam.yml.tmp /etc/camportal/config.d/cam.yml"
        ))
    });
    watch
        .wait_for(&guest, "the new size from the camera", |seen| {
            camera_pictures(seen, from)
                .filter(|s| (s.width, s.height) == (320, 180))
                .count()
                >= 10
        })
        .await;
    let seen = watch.seen();
    let first_new = seen[from..]
        .iter()
        .find(|s| s.width == 320)
        .expect("a picture at the new size");
    assert!(
        first_new.keyframe,
        "the new pipeline starts with a keyframe"
    );
    assert!(
        seen[from..].iter().all(|s| !s.offline),
        "the camera reopened at once (no 'camera offline' in between)"
    );
    assert_eq!(watch.ended(), None, "the viewer stayed connected");
    let status = block_in_place(|| guest.path_status("cam"));
    assert_eq!(
        status_text(&status, "format"),
        "YUYV 320x180 @ 15 fps",
        "{status}"
    );
    assert_eq!(status["viewers"], 1, "the same session: {status}");
    watch.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_errors_restart_the_capture_and_the_viewer_carries_on() {
    let (mut guest, watch) = one_camera_streaming("nv12").await;

    // DQBUF fails with EIO; then a buffer comes back flagged V4L2_BUF_FLAG_ERROR, as a USB
    // camera's do when it is unplugged.
    for (restarts, control, error) in [
        (1, "inject_fatal_streaming_error", "EIO"),
        (2, "inject_v4l2_buf_flag_error", "flagged as error"),
    ] {
        let from = watch.seen().len();
        block_in_place(|| guest.ok(&format!("v4l2-ctl -d /dev/video0 -c {control}=1")));
        let status = block_in_place(|| {
            guest.wait_status("cam", "a restart", WAIT, |s| {
                s["restarts"].as_u64() >= Some(restarts)
            })
        });
        assert!(
            status_text(&status, "lastError").contains(error),
            "{control}: the status says why: {status}"
        );
        watch
            .wait_for(&guest, &format!("{control}: live again"), |seen| {
                back_live(seen, from, 20)
            })
            .await;
    }
    assert_eq!(watch.ended(), None, "the viewer stayed connected");
    assert!(
        watch
            .seen()
            .iter()
            .all(|s| (s.width, s.height) == (640, 360))
    );
    watch.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_node_that_reappears_is_back_within_a_second() {
    let (mut guest, watch) = one_camera_streaming("yuyv").await;

    // Unplug for real: the node goes away. rmmod needs every descriptor closed, so the camera
    // is disconnected first and the module removed while the capture is down.
    let from = watch.seen().len();
    block_in_place(|| {
        guest.ok("v4l2-ctl -d /dev/video0 -c disconnect=1; \
             until rmmod vivid 2>/dev/null; do usleep 20000; done; \
             test ! -e /dev/video0")
    });
    // Leave it away until the backoff has grown: the next retry is then 8 s off.
    let status = block_in_place(|| {
        guest.wait_status("cam", "six failed restarts", WAIT, |s| {
            s["restarts"].as_u64() >= Some(6)
        })
    });
    assert_eq!(status["state"], "restarting", "{status}");
    assert!(
        status_text(&status, "lastError").contains("no such device"),
        "{status}"
    );
    watch
        .wait_for(&guest, "the offline picture", |seen| {
            seen.iter().skip(from).filter(|s| s.offline).count() >= 5
        })
        .await;

    // Plug back in.
    let sent = SystemTime::now();
    block_in_place(|| guest.ok("modprobe vivid node_types=0x1"));
    let loaded = SystemTime::now();
    watch
        .wait_for(&guest, "live pictures after the node came back", |seen| {
            back_live(seen, from, 20)
        })
        .await;
    let seen = watch.seen();
    let first = seen
        .iter()
        .skip(from)
        .find(|s| !s.offline && s.at > sent)
        .copied()
        .expect("a camera picture after the node came back");
    let since_sent = first.at.duration_since(sent).unwrap_or_default();
    let since_loaded = first.at.duration_since(loaded).unwrap_or_default();
    println!(
        "node reappeared → first camera picture at the viewer: {} ms after modprobe returned \
         ({} ms after it was sent); the backoff alone would have waited up to 8000 ms",
        since_loaded.as_millis(),
        since_sent.as_millis()
    );
    // The backoff's next step was seconds away: only the device watch explains this.
    assert!(
        since_loaded < Duration::from_secs(4),
        "back after {since_loaded:?}: the device watch did not restart the capture"
    );
    // The keyframe is requested as the camera's first picture is handed to the encoder: it is
    // that picture or, if the encoder had already looked, the next one.
    let back: Vec<&Seen> = seen
        .iter()
        .skip(from)
        .filter(|s| !s.offline && s.at >= first.at)
        .take(2)
        .collect();
    assert!(
        back.iter().any(|s| s.keyframe),
        "a keyframe among the first pictures back: {back:?}"
    );
    assert!(seen.iter().all(|s| (s.width, s.height) == (640, 360)));
    assert_eq!(watch.ended(), None, "the viewer stayed connected");
    let status = block_in_place(|| guest.path_status("cam"));
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["viewers"], 1, "the same session: {status}");
    assert_eq!(status_text(&status, "format"), "YUYV 640x360 @ 15 fps");
    watch.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camportal_devices_lists_the_webcam_with_a_path_file_that_works() {
    let mut guest = Guest::boot(&[]);
    let (status, output) = block_in_place(|| guest.sh("camportal devices", WAIT));
    assert_eq!(status, 1, "no camera yet: exit 1: {output}");
    assert!(output.contains("No video capture device found"), "{output}");

    // Default vivid: a capture node, an output node and two metadata nodes.
    let output = block_in_place(|| {
        guest.load_vivid("");
        guest.ok("camportal devices")
    });
    println!("{output}");
    for expected in [
        "/dev/video0: \"vivid\"",
        "  driver vivid, bus platform:vivid-000",
        "    YUYV (YUYV 4:2:2, format: yuyv): 320x180 (60, 50, 40, 30, 25, 15, 12.5, 10, 5, 4, \
         2, 1 fps), 640x360 (",
        " 640x480 (25, 15, 12.5, 10, 5, 4, 2, 1 fps), 1280x720 (12.5, 10, 5, 4, 2, 1 fps)",
        "    NV12 (Y/UV 4:2:0, format: nv12): 320x180 (",
        "formats camportal does not take: UYVY ",
        "  config.d/vivid.yml:",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    for not_a_camera in ["/dev/video1:", "/dev/video2:", "/dev/video3:"] {
        assert!(
            !output.contains(not_a_camera),
            "{not_a_camera} is not a capture node:\n{output}"
        );
    }

    // The suggested file, dropped into config.d as it is, makes a working path.
    let file: String = output
        .lines()
        .skip_while(|l| *l != "  config.d/vivid.yml:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let parsed = camportal::config::parse_path_file(std::path::Path::new("vivid.yml"), &file)
        .unwrap_or_else(|e| panic!("{e}:\n{file}"));
    let encoding = &parsed.encoding;
    assert_eq!(
        (encoding.width, encoding.height, encoding.fps),
        (640, 480, 25)
    );
    block_in_place(|| {
        let mut command = String::from("printf '");
        command.push_str(&file.replace('\n', "\\n"));
        command.push_str("' > /etc/camportal/config.d/vivid.yml");
        guest.ok(&command);
        guest.start_daemon();
        guest.wait_status("vivid", "running", WAIT, |s| s["state"] == "running");
    });
    let watch = Watch::start(&guest.whep_url("vivid")).await;
    watch
        .wait_for(&guest, "pictures from the suggested path", |seen| {
            camera_pictures(seen, 0).count() >= 10
        })
        .await;
    assert!(
        watch
            .seen()
            .iter()
            .all(|s| (s.width, s.height) == (640, 480))
    );
    watch.close().await;
}
