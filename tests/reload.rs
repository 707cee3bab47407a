//! Hot reload of `config.d/` on the real daemon with real viewers: a camera is added, changed or
//! removed by writing a file, and nothing else moves.

mod support;

use std::time::{Duration, Instant};

use camportal::status::PathState;
use camportal_viewer::{Viewer, ViewerFrame};
use support::TestDaemon;
use tokio::sync::oneshot;

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A small test-pattern path. Keyframes a minute apart: any keyframe a viewer sees after its
/// first one means its pipeline was rebuilt.
fn path_yaml(width: u32, height: u32, fps: u32) -> String {
    format!(
        "source: testsrc\nencoding:\n  width: {width}\n  height: {height}\n  fps: {fps}\n  \
         bitrate: 300k\n  keyframeInterval: 60s\n"
    )
}

fn frame_counter(frame: &ViewerFrame) -> u32 {
    frame.picture.stamp.expect("stamp readable").frame
}

/// Reads a viewer's frames on a task of its own until told to stop; returns the viewer and
/// every frame it got.
fn record(mut viewer: Viewer) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Recorded>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                frame = viewer.next_frame(FRAME_TIMEOUT) => {
                    frames.push((Instant::now(), frame.expect("frames keep coming")));
                }
            }
        }
        Recorded { viewer, frames }
    });
    (stop, task)
}

struct Recorded {
    viewer: Viewer,
    frames: Vec<(Instant, ViewerFrame)>,
}

impl Recorded {
    /// Frame counters that do not follow their predecessor by one (pictures never received).
    fn counter_gaps(&self) -> Vec<(u32, u32)> {
        self.frames
            .windows(2)
            .map(|w| (frame_counter(&w[0].1), frame_counter(&w[1].1)))
            .filter(|(a, b)| b.wrapping_sub(*a) != 1)
            .collect()
    }

    fn keyframes_after_the_first(&self) -> usize {
        self.frames
            .iter()
            .skip(1)
            .filter(|(_, f)| f.keyframe)
            .count()
    }

    fn longest_gap(&self) -> Duration {
        self.frames
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_dropped_file_plays_within_a_second() {
    let test = TestDaemon::start(&[("b", &path_yaml(320, 240, 15))]).await;
    let written = Instant::now();
    test.write_path("a", &path_yaml(320, 240, 30));

    // The path is there once WHEP stops answering 404.
    let mut viewer = loop {
        match Viewer::connect(&test.whep_url("a")).await {
            Ok(viewer) => break viewer,
            Err(err) => {
                assert!(
                    written.elapsed() < Duration::from_secs(10),
                    "the new path never appeared: {err:#}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let first = viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let took = written.elapsed();
    println!(
        "new path: first frame {} ms after its file was written",
        took.as_millis()
    );
    assert!(first.keyframe);
    assert_eq!((first.picture.width, first.picture.height), (320, 240));
    viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn changing_one_path_twenty_times_leaves_another_untouched() {
    let test = TestDaemon::start(&[
        ("a", &path_yaml(320, 240, 15)),
        ("b", &path_yaml(320, 240, 15)),
    ])
    .await;
    let mut viewer = Viewer::connect(&test.whep_url("b")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);

    for i in 0..20u32 {
        // Each change restarts `a` (its frame rate changes).
        let fps = 10 + i;
        test.write_path("a", &path_yaml(320, 240, fps));
        test.wait_for(&format!("a at {fps} fps"), |s| {
            s.paths
                .iter()
                .any(|p| p.name == "a" && p.fps == fps && p.state == PathState::Running)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");

    println!(
        "path b: {} frames while a restarted 20 times, longest gap {} ms",
        recorded.frames.len(),
        recorded.longest_gap().as_millis()
    );
    assert!(recorded.frames.len() > 10, "b kept playing");
    assert_eq!(recorded.counter_gaps(), [], "b lost no picture");
    assert_eq!(
        recorded.keyframes_after_the_first(),
        0,
        "b was not restarted"
    );
    let b = test.status("b").expect("b listed");
    assert_eq!((b.restarts, b.state), (0, PathState::Running));
    recorded.viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn a_size_change_keeps_the_viewer_session() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 30))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    let session = viewer.session_url().to_owned();
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);
    tokio::time::sleep(Duration::from_millis(300)).await;

    test.write_path("a", &path_yaml(480, 360, 30));
    test.wait_for("a at 480x360", |s| {
        s.paths.iter().any(|p| p.name == "a" && p.width == 480)
    })
    .await;
    // Some frames of the new pipeline.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");

    let first_new = recorded
        .frames
        .iter()
        .position(|(_, f)| f.picture.width == 480)
        .expect("the same viewer receives the new size");
    let (_, first_new_frame) = &recorded.frames[first_new];
    assert!(
        first_new_frame.keyframe,
        "the new pipeline starts with a keyframe"
    );
    assert_eq!(
        (
            first_new_frame.picture.width,
            first_new_frame.picture.height
        ),
        (480, 360)
    );
    assert!(
        recorded.frames[first_new..]
            .iter()
            .all(|(_, f)| f.picture.width == 480),
        "no old-size picture after the new ones"
    );
    println!(
        "path a restarted at a new size: longest frame gap at its viewer {} ms",
        recorded.longest_gap().as_millis()
    );
    assert_eq!(recorded.viewer.session_url(), session);
    assert!(!recorded.viewer.is_closed());
    recorded.viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn rate_changes_apply_live_without_a_restart() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);

    let faster = path_yaml(320, 240, 15)
        .replace("300k", "600k")
        .replace("60s", "50s");
    test.write_path("a", &faster);
    test.wait_for("a at 600 kbit/s", |s| {
        s.paths
            .iter()
            .any(|p| p.name == "a" && p.bitrate_kbps == 600)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");
    assert_eq!(recorded.counter_gaps(), [], "no picture lost");
    assert_eq!(
        recorded.keyframes_after_the_first(),
        0,
        "no restart, no keyframe"
    );
    assert_eq!(test.status("a").expect("a").restarts, 0);
    recorded.viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn removing_a_path_closes_its_viewers_and_whep_answers_404() {
    let test = TestDaemon::start(&[
        ("a", &path_yaml(320, 240, 15)),
        ("b", &path_yaml(320, 240, 15)),
    ])
    .await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");

    test.remove_path("a");
    test.wait_for("a gone", |s| s.paths.iter().all(|p| p.name != "a"))
        .await;
    let sessions_gone = Instant::now();
    while test
        .daemon
        .board
        .snapshot()
        .paths
        .iter()
        .any(|p| p.viewers > 0)
        || test.viewer_count().await > 0
    {
        assert!(
            sessions_gone.elapsed() < Duration::from_secs(5),
            "a's session still listed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = reqwest::Client::new()
        .post(test.whep_url("a"))
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("daemon answers");
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);

    // The viewer itself notices: its stream ends rather than stalls forever.
    let ended = Instant::now();
    while viewer.next_frame(Duration::from_secs(20)).await.is_ok() {
        assert!(
            ended.elapsed() < Duration::from_secs(20),
            "frames after removal"
        );
    }
    println!(
        "removed path: viewer saw its stream end after {} ms",
        ended.elapsed().as_millis()
    );
    // The other path never noticed.
    assert_eq!(test.status("b").expect("b").state, PathState::Running);
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn a_broken_file_loses_nothing_and_fixing_it_applies_it() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);

    // Broken over a running path: it keeps streaming, and the error is shown.
    test.write_path("a", "source: testsrc\nencoding:\n  width: 320\n  fps: 0\n");
    test.wait_for("the error about a.yml", |s| {
        s.config_errors
            .iter()
            .any(|e| e.file.ends_with("a.yml") && e.line == Some(4))
    })
    .await;
    let a = test.status("a").expect("a still listed");
    assert_eq!(a.state, PathState::Running);
    let error = a.config_error.expect("the path shows its file's error");
    assert!(
        error.contains("a.yml:4:") && error.contains("fps"),
        "{error}"
    );
    let api = test.get_text("/api/paths").await;
    assert!(api.contains("out of range"), "{api}");

    // A second file claiming the same name: both are rejected, `a` runs on.
    std::fs::write(test.config_dir().join("a.yaml"), path_yaml(160, 120, 15)).unwrap();
    test.wait_for("the duplicate reported", |s| {
        s.config_errors
            .iter()
            .any(|e| e.message.contains("more than one file"))
    })
    .await;
    std::fs::remove_file(test.config_dir().join("a.yaml")).unwrap();

    // A new broken file that never worked: listed as failed with its error.
    test.write_path("c", "source: [\n");
    test.wait_for("c failed", |s| {
        s.paths
            .iter()
            .any(|p| p.name == "c" && p.state == PathState::Failed && p.config_error.is_some())
    })
    .await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");
    assert_eq!(
        recorded.counter_gaps(),
        [],
        "a lost no picture to the broken file"
    );
    assert_eq!(
        recorded.keyframes_after_the_first(),
        0,
        "a was not restarted"
    );
    let mut viewer = recorded.viewer;

    // Fixing both files applies them.
    test.write_path("a", &path_yaml(480, 360, 15));
    test.write_path("c", &path_yaml(160, 120, 15));
    test.wait_for("fixed", |s| {
        s.config_errors.is_empty()
            && s.paths
                .iter()
                .any(|p| p.name == "c" && p.state == PathState::Running)
            && s.paths.iter().all(|p| p.config_error.is_none())
    })
    .await;
    let deadline = Instant::now() + FRAME_TIMEOUT;
    loop {
        let frame = viewer.next_frame(FRAME_TIMEOUT).await.expect("frames");
        if frame.picture.width == 480 {
            break;
        }
        assert!(Instant::now() < deadline, "the fixed size never arrived");
    }
    viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn the_directory_can_be_replaced_and_the_watch_recovers() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let dir = test.config_dir();

    // Removed: everything runs on as it was, and the problem is shown.
    std::fs::remove_dir_all(&dir).unwrap();
    test.wait_for("the missing directory reported", |s| {
        !s.config_errors.is_empty()
    })
    .await;
    assert_eq!(test.status("a").expect("a").state, PathState::Running);

    // A new directory moved into place (how deploy tools swap configs) is picked up.
    let staged = test.dir.path().join("config.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("a.yml"), path_yaml(320, 240, 15)).unwrap();
    std::fs::write(staged.join("d.yml"), path_yaml(160, 120, 15)).unwrap();
    std::fs::rename(&staged, &dir).unwrap();
    test.wait_for("d started from the new directory", |s| {
        s.config_errors.is_empty()
            && s.paths
                .iter()
                .any(|p| p.name == "d" && p.state == PathState::Running)
    })
    .await;
    assert_eq!(test.status("a").expect("a").restarts, 0);

    // And the new directory is watched.
    test.write_path("e", &path_yaml(160, 120, 15));
    test.wait_for("e started", |s| s.paths.iter().any(|p| p.name == "e"))
        .await;
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn editor_debris_is_ignored() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let dir = test.config_dir();
    for junk in [
        ".a.yml.swp",
        "a.yml~",
        ".#a.yml",
        "4913",
        ".hidden.yml",
        "notes.txt",
    ] {
        std::fs::write(dir.join(junk), "source: [ this is not yaml").unwrap();
    }
    // A write-to-temp-and-rename save of a real change, after the debris.
    std::fs::write(dir.join(".a.yml.tmp"), path_yaml(320, 240, 20)).unwrap();
    std::fs::rename(dir.join(".a.yml.tmp"), dir.join("a.yml")).unwrap();
    test.wait_for("a at 20 fps", |s| {
        s.paths.iter().any(|p| p.name == "a" && p.fps == 20)
    })
    .await;
    let snapshot = test.daemon.board.snapshot();
    assert_eq!(snapshot.config_errors.len(), 0, "{snapshot:?}");
    assert_eq!(snapshot.paths.len(), 1, "{snapshot:?}");
    test.daemon.shutdown().await;
}

/// Puts `text` into `config.d/<file>` at once, as a deploy tool would (write, then rename).
fn drop_file(test: &TestDaemon, file: &str, text: &str) {
    let staged = test.config_dir().join(format!(".{file}.tmp"));
    std::fs::write(&staged, text).expect("staged file");
    std::fs::rename(&staged, test.config_dir().join(file)).expect("rename");
}

#[tokio::test]
async fn a_deep_or_huge_file_is_refused_at_once_and_viewers_never_notice() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 200 KB nested 100 000 deep: 22.5 s of parsing before, on the runtime the viewers use.
    let depth = 100_000;
    let deep = format!("source: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    // 2 MB, and valid but for its size.
    let mut huge = path_yaml(320, 240, 15);
    while huge.len() < 2_000_000 {
        huge.push_str("# a long comment, again and again and again and again and again\n");
    }
    let written = Instant::now();
    drop_file(&test, "deep.yml", &deep);
    drop_file(&test, "huge.yml", &huge);
    // Against the clock (not `wait_for`'s count of polls): a frozen runtime must fail here.
    loop {
        let snapshot = test.daemon.board.snapshot();
        let refused = |file: &str, why: &str| {
            snapshot
                .config_errors
                .iter()
                .any(|e| e.file.ends_with(file) && e.message.contains(why))
        };
        if refused("deep.yml", "nested deeper than 32 levels")
            && refused("huge.yml", "the file is too large")
        {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "not both refused within 10 s: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took = written.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");

    eprintln!(
        "deep ({} bytes) and huge ({} bytes) files listed in configErrors {} ms after they were \
         written; path a's viewer: {} frames, longest gap {} ms",
        deep.len(),
        huge.len(),
        took.as_millis(),
        recorded.frames.len(),
        recorded.longest_gap().as_millis()
    );
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    assert!(
        recorded.longest_gap() < Duration::from_secs(1),
        "the viewer froze for {:?}",
        recorded.longest_gap()
    );
    let deep = test.status("deep").expect("deep listed");
    assert_eq!(deep.state, PathState::Failed);
    assert!(
        deep.config_error
            .expect("deep's error")
            .contains("deep.yml:1:40:"),
        "the error points at the bracket that goes too deep"
    );
    let a = test.status("a").expect("a");
    assert_eq!((a.state, a.restarts), (PathState::Running, 0));
    recorded.viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn a_link_to_a_secret_file_shows_nothing_of_it() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    // An /etc/shadow of our own, outside the config directory.
    let secrets = tempfile::tempdir().expect("temp dir");
    let shadow = secrets.path().join("shadow");
    std::fs::write(
        &shadow,
        "root:$6$FakeSalt$FakeHashValue0123456789:19700:0:99999:7:::\n\
         daemon:*:19700:0:99999:7:::\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&shadow, test.config_dir().join("shadow.yml")).unwrap();
    // The same content copied in is read (it is in the directory) but not shown either.
    std::fs::copy(&shadow, test.config_dir().join("copy.yml")).unwrap();

    test.wait_for("both files reported", |s| {
        ["shadow.yml", "copy.yml"]
            .iter()
            .all(|file| s.config_errors.iter().any(|e| e.file.ends_with(file)))
    })
    .await;
    let api = test.get_text("/api/paths").await;
    eprintln!("/api/paths: {api}");
    for secret in ["FakeSalt", "FakeHash", "root:", "daemon:", "19700", "99999"] {
        assert!(
            !api.contains(secret),
            "`{secret}` shown in /api/paths: {api}"
        );
    }
    assert!(
        !api.contains(&*secrets.path().to_string_lossy()),
        "the link's target is not named either: {api}"
    );
    let shadow = test.status("shadow").expect("shadow listed");
    assert!(
        shadow
            .config_error
            .expect("its error")
            .contains("a symbolic link to a file outside the config directory: refused"),
    );
    assert_eq!(test.status("a").expect("a").state, PathState::Running);
    test.daemon.shutdown().await;
}

#[tokio::test]
async fn files_slow_to_parse_are_parsed_off_the_runtime() {
    let test = TestDaemon::start(&[("a", &path_yaml(320, 240, 15))]).await;
    let mut viewer = Viewer::connect(&test.whep_url("a")).await.expect("WHEP");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("first frame");
    let (stop, recording) = record(viewer);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Within every limit, but a quarter of a second of parsing each: 1 MiB of one long list.
    let mut slow = String::from("source: testsrc\nlist: [\n");
    while slow.len() < 1_000_000 {
        slow.push_str("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,\n");
    }
    slow.push_str("0]\n");
    let files = 8;
    let written = Instant::now();
    for i in 0..files {
        drop_file(&test, &format!("slow{i}.yml"), &slow);
    }
    test.wait_for("every slow file reported", |s| {
        s.config_errors
            .iter()
            .filter(|e| e.message.contains("unknown field `list`"))
            .count()
            == files
    })
    .await;
    let took = written.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("recorder runs");
    let recorded = recording.await.expect("recorder");
    eprintln!(
        "{files} files of {} bytes reported {} ms after they were written; path a's viewer: \
         longest gap {} ms",
        slow.len(),
        took.as_millis(),
        recorded.longest_gap().as_millis()
    );
    assert!(
        recorded.longest_gap() < Duration::from_secs(1),
        "the viewer froze for {:?} while the files were parsed",
        recorded.longest_gap()
    );
    recorded.viewer.close().await.expect("close");
    test.daemon.shutdown().await;
}
