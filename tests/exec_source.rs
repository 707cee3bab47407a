//! Exec sources and on-demand paths with Debian's ffmpeg as the user's program: H.264, MJPEG
//! and raw I420 on its stdout play to a real WHEP viewer; a killed program is restarted while
//! the viewer stays; a killed daemon leaves no program behind; an on-demand path runs its
//! program only while someone watches.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use camportal::is_offline_picture;
use camportal::status::PathState;
use camportal_viewer::{Viewer, ViewerFrame};
use support::TestDaemon;
use support::chromium::Chromium;
use support::process::{DaemonProcess, http_get};

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails (never skips) without ffmpeg, saying what to install.
fn require_ffmpeg() {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    assert!(
        found,
        "ffmpeg not found: the exec source tests run it as the user's program \
         (`apt-get install ffmpeg`, or `./dev test`)"
    );
}

/// An ffmpeg command writing a 320x240 25 fps test pattern to stdout in `output` form. `tag` is
/// an inert argument that finds the process in /proc.
fn ffmpeg(tag: &str, output: &str) -> String {
    format!(
        "ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi \
         -i testsrc2=size=320x240:rate=25 -metadata comment={tag} {output} -"
    )
}

const H264_OUT: &str =
    "-c:v libx264 -preset ultrafast -tune zerolatency -g 25 -bf 0 -pix_fmt yuv420p -f h264";
const MJPEG_OUT: &str = "-c:v mjpeg -pix_fmt yuvj422p -q:v 5 -f mjpeg";
const RAW_OUT: &str = "-pix_fmt yuv420p -f rawvideo";

fn exec_path(command: &str, extra: &str) -> String {
    format!(
        "source:\n  type: exec\n  command: \"{command}\"\n{extra}encoding:\n  width: 320\n  \
         height: 240\n  fps: 25\n  bitrate: 300k\n"
    )
}

/// Live processes whose command line holds `tag` (zombies, which only wait to be reaped, do not
/// count).
fn processes_tagged(tag: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && String::from_utf8_lossy(&cmdline).contains(tag) {
            found.push(pid);
        }
    }
    found
}

fn unique_tag(what: &str) -> String {
    format!("camportal-test-{what}-{}", std::process::id())
}

/// [`eventually`] for async tests: the runtime (a test's single thread) runs on meanwhile.
async fn eventually_async(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Waits up to `timeout` for `condition`; false if it never held.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

fn is_live(frame: &ViewerFrame) -> bool {
    let p = &frame.picture;
    !is_offline_picture(&p.y, p.width, p.height)
}

/// Frames until `count` live (not "offline") pictures have come; returns how long the first
/// live one took.
async fn live_pictures(viewer: &mut Viewer, count: usize) -> Duration {
    let start = Instant::now();
    let mut first = None;
    let mut live = 0;
    while live < count {
        let frame = viewer
            .next_frame(FRAME_TIMEOUT)
            .await
            .expect("frames keep coming");
        if is_live(&frame) {
            assert_eq!((frame.picture.width, frame.picture.height), (320, 240));
            first.get_or_insert_with(|| start.elapsed());
            live += 1;
        }
    }
    first.unwrap_or_default()
}

#[tokio::test]
async fn h264_mjpeg_and_raw_output_play_to_a_viewer() {
    require_ffmpeg();
    // H.264 detected from its first bytes; MJPEG (4:2:2, as webcams send it) and raw named.
    let paths = [
        ("h264", exec_path(&ffmpeg("h264", H264_OUT), "")),
        (
            "mjpeg",
            exec_path(&ffmpeg("mjpeg", MJPEG_OUT), "  format: mjpeg\n"),
        ),
        (
            "raw",
            exec_path(&ffmpeg("raw", RAW_OUT), "  format: i420\n"),
        ),
    ];
    let list: Vec<(&str, &str)> = paths.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let daemon = TestDaemon::start(&list).await;
    for (name, _) in &paths {
        let mut viewer = Viewer::connect(&daemon.whep_url(name))
            .await
            .expect("WHEP session");
        let first = live_pictures(&mut viewer, 25).await;
        println!(
            "exec {name}: first live picture {} ms after connect",
            first.as_millis()
        );
        let status = daemon.status(name).expect("listed");
        assert_eq!(status.state, PathState::Running, "{status:?}");
        assert_eq!(status.source, "exec ffmpeg");
        // Passed through, the program's keyframes (-g 25 at 25 fps) are what new viewers wait
        // for, and the status says how long that is (once two have come).
        if *name == "h264" {
            daemon
                .wait_for("the source's keyframe interval", |s| {
                    s.paths.iter().any(|p| {
                        p.name == "h264"
                            && p.source_keyframe_interval_ms
                                .is_some_and(|ms| (800..=1200).contains(&ms))
                    })
                })
                .await;
        } else {
            assert_eq!(status.source_keyframe_interval_ms, None, "{status:?}");
        }
        viewer.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_killed_program_is_restarted_and_its_viewer_kept() {
    require_ffmpeg();
    let tag = unique_tag("restart");
    let daemon = TestDaemon::start(&[("cam", &exec_path(&ffmpeg(&tag, H264_OUT), ""))]).await;
    let mut viewer = Viewer::connect(&daemon.whep_url("cam"))
        .await
        .expect("WHEP session");
    let session = viewer.session_url().to_owned();
    live_pictures(&mut viewer, 10).await;
    let pids = processes_tagged(&tag);
    assert_eq!(pids.len(), 1, "one program runs: {pids:?}");
    // SAFETY: a process this test's daemon started, by its PID.
    unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) };

    // The viewer sees "offline" pictures, then the restarted program's, on the same session.
    let killed = Instant::now();
    let mut offline = 0;
    loop {
        let frame = viewer
            .next_frame(FRAME_TIMEOUT)
            .await
            .expect("the viewer keeps getting pictures");
        if !is_live(&frame) {
            offline += 1;
        } else if offline > 0 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no live picture again"
        );
    }
    println!(
        "program killed: live again after {} ms ({offline} offline pictures)",
        killed.elapsed().as_millis()
    );
    assert_eq!(viewer.session_url(), session);
    let status = daemon.status("cam").expect("listed");
    assert!(status.restarts >= 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("killed by signal 9"),
        "{status:?}"
    );
    let now = processes_tagged(&tag);
    assert_eq!(now.len(), 1, "one new program: {now:?}");
    assert_ne!(now, pids);
    viewer.close().await.expect("close");
}

#[test]
fn a_killed_daemon_leaves_no_program_behind() {
    require_ffmpeg();
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).expect("config.d");
    // One program run directly, and a pipeline through a shell (its programs are not the
    // daemon's children: they end by SIGPIPE once nobody reads).
    let direct = unique_tag("orphan-direct");
    let piped = unique_tag("orphan-piped");
    std::fs::write(
        config_dir.join("direct.yml"),
        exec_path(&ffmpeg(&direct, H264_OUT), ""),
    )
    .expect("path file");
    std::fs::write(
        config_dir.join("piped.yml"),
        exec_path(&format!("{} | cat", ffmpeg(&piped, H264_OUT)), ""),
    )
    .expect("path file");
    let mut daemon = DaemonProcess::spawn(&config_dir, "127.0.0.1:0", "127.0.0.1:0");
    let host = daemon.address.trim_start_matches("http://").to_owned();
    assert!(
        eventually(Duration::from_secs(20), || {
            let text = http_get(&host, "/api/paths").unwrap_or_default();
            text.matches("\"state\":\"running\"").count() == 2
        }),
        "both paths run: {:?}",
        http_get(&host, "/api/paths")
    );
    assert_eq!(processes_tagged(&direct).len(), 1);
    assert_eq!(processes_tagged(&piped).len(), 2, "sh and ffmpeg");

    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    let gone = eventually(Duration::from_secs(5), || {
        processes_tagged(&direct).is_empty() && processes_tagged(&piped).is_empty()
    });
    assert!(
        gone,
        "programs outlived the daemon: {:?} {:?}",
        processes_tagged(&direct),
        processes_tagged(&piped)
    );
}

#[tokio::test]
async fn an_on_demand_program_runs_only_while_someone_watches() {
    require_ffmpeg();
    let tag = unique_tag("on-demand");
    let yaml = format!(
        "{}sourceOnDemand: yes\nsourceOnDemandCloseAfter: 1s\n",
        exec_path(&ffmpeg(&tag, H264_OUT), "")
    );
    let pattern = "source: testsrc\nencoding: {width: 320, height: 240, fps: 25, bitrate: 300k}\n\
                   sourceOnDemand: yes\n";
    let daemon = TestDaemon::start(&[]).await;
    daemon.write_path("cam", &yaml);
    daemon.write_path("pattern", pattern);
    daemon
        .wait_for("both paths idle", |s| {
            s.paths.len() == 2 && s.paths.iter().all(|p| p.state == PathState::Idle)
        })
        .await;
    let api = daemon.get_text("/api/paths").await;
    assert!(api.contains("\"state\":\"idle\""), "{api}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        processes_tagged(&tag).is_empty(),
        "no program before a viewer"
    );

    for name in ["pattern", "cam"] {
        let connect = Instant::now();
        let mut viewer = Viewer::connect(&daemon.whep_url(name))
            .await
            .expect("answered at once");
        let answered = connect.elapsed();
        let first = viewer
            .next_frame(FRAME_TIMEOUT)
            .await
            .expect("a first picture");
        let first_any = connect.elapsed();
        let first_live = if is_live(&first) {
            first_any
        } else {
            live_pictures(&mut viewer, 1).await + first_any
        };
        println!(
            "on demand {name}: answered in {} ms, first picture {} ms, first live picture {} ms",
            answered.as_millis(),
            first_any.as_millis(),
            first_live.as_millis()
        );
        live_pictures(&mut viewer, 10).await;
        if name == "cam" {
            assert_eq!(processes_tagged(&tag).len(), 1, "the program runs");
        }
        viewer.close().await.expect("close");
    }

    // Gone `sourceOnDemandCloseAfter` (1 s) after the last viewer left.
    let left = Instant::now();
    assert!(
        eventually_async(Duration::from_secs(6), || processes_tagged(&tag).is_empty()).await,
        "the program still runs: {:?}",
        daemon.status("cam")
    );
    println!(
        "on demand: program gone {} ms after the viewer left (closeAfter 1 s)",
        left.elapsed().as_millis()
    );
    assert!(
        left.elapsed() >= Duration::from_millis(900),
        "not before closeAfter"
    );
    daemon
        .wait_for("cam idle again", |s| {
            s.paths
                .iter()
                .any(|p| p.name == "cam" && p.state == PathState::Idle)
        })
        .await;
}

/// JPEG is full range, H.264 without a range signalled is taken as limited range: an MJPEG
/// source's black and white must reach the viewer as 16 and 235, not 0 and 255 (which a decoder
/// would show with shadows and highlights clipped).
#[tokio::test]
async fn mjpeg_colours_reach_the_viewer_in_limited_range() {
    require_ffmpeg();
    // Left half black, right half white, as 4:2:2 JPEGs as webcams send them.
    let command = "ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi \
                   -i color=c=white:s=320x240:r=25,drawbox=x=0:y=0:w=160:h=240:color=black:t=fill \
                   -c:v mjpeg -pix_fmt yuvj422p -q:v 2 -f mjpeg -";
    let daemon = TestDaemon::start(&[("cam", &exec_path(command, ""))]).await;
    let mut viewer = Viewer::connect(&daemon.whep_url("cam"))
        .await
        .expect("WHEP session");
    let mut frame = None;
    for _ in 0..30 {
        let f = viewer.next_frame(FRAME_TIMEOUT).await.expect("frames");
        if is_live(&f) {
            frame = Some(f);
        }
    }
    let frame = frame.expect("live pictures");
    let p = &frame.picture;
    let luma = |x: u32, y: u32| p.y[(y * p.width + x) as usize];
    let (black, white) = (luma(80, 120), luma(240, 120));
    println!("MJPEG black/white at the viewer: luma {black} / {white} (limited range: 16 / 235)");
    assert!(black.abs_diff(16) <= 2, "black arrived as {black}");
    assert!(white.abs_diff(235) <= 2, "white arrived as {white}");
    viewer.close().await.expect("close");
}

/// A program's own H.264 in Main profile (as many cameras send it) is passed through: the WHEP
/// answer must name the profile actually sent, and Chromium plays it.
#[tokio::test]
async fn main_profile_passthrough_is_answered_as_main_and_plays_in_chromium() {
    require_ffmpeg();
    let main = "-c:v libx264 -preset superfast -tune zerolatency -profile:v main -g 25 -bf 0 \
                -pix_fmt yuv420p -f h264";
    let daemon = TestDaemon::start(&[("cam", &exec_path(&ffmpeg("main", main), ""))]).await;
    // The first keyframe has come through (x264 starts with one): its SPS is known. (x264
    // writes the profile its tools need: superfast uses CABAC, which is Main.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let browser = Chromium::launch().await.expect("Chromium starts");
    // Keeps the answer the player receives, to read its profile.
    let keep_answer = "const set = RTCPeerConnection.prototype.setRemoteDescription; \
        RTCPeerConnection.prototype.setRemoteDescription = function (d) { \
          window.__answer = d && d.sdp; return set.apply(this, arguments); };";
    let page = browser
        .open_with_script(&daemon.url("/cam/"), Some(keep_answer))
        .await
        .expect("player opens");
    let decoded = "document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames";
    page.wait_for(
        &format!("(() => {{ const n = {decoded}; return n >= 30 && n; }})()"),
        Duration::from_secs(20),
    )
    .await
    .expect("Chromium decodes the Main-profile stream");
    let answer = page.eval("window.__answer").await.expect("the answer");
    let answer = answer.as_str().unwrap_or_default();
    let profile = answer
        .lines()
        .find_map(|l| l.split("profile-level-id=").nth(1))
        .map(|p| p.trim().chars().take(6).collect::<String>())
        .unwrap_or_default();
    println!("Main-profile passthrough answered with profile-level-id={profile}");
    assert!(
        profile.starts_with("4d"),
        "the answer says {profile}:\n{answer}"
    );
    drop(page);
    drop(browser);
}
