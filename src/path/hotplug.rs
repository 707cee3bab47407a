//! Noticing a camera come back: inotify on `/dev` and `/dev/v4l/by-*` (through `notify`), so
//! that a path whose camera was unplugged restarts its capture as soon as the device node, or
//! the stable link it is configured with, appears again — not at the next, possibly long,
//! backoff step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::config::DeviceSelector;

/// Directories watched (without recursion) when they exist; the `/dev/v4l` ones come and go
/// with the cameras, so their parents are watched too and they are added when created.
const WATCHED: [&str; 4] = ["/dev", "/dev/v4l", "/dev/v4l/by-id", "/dev/v4l/by-path"];
/// How often the thread that adds watches checks whether it must stop.
const POLL: Duration = Duration::from_millis(250);

/// Whether an inotify event says a file is there now: created, renamed into place (udev makes
/// links that way) or its permissions changed (udev grants access after creating the node).
fn appeared(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Metadata(_))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Whether `path` appearing may be the camera `selector` names: the configured node or link
/// itself, or, for a match on card/USB id/serial, any video node.
pub(super) fn may_be_the_camera(selector: &DeviceSelector, path: &Path) -> bool {
    match selector {
        DeviceSelector::Path(configured) => configured == path,
        DeviceSelector::Match(_) => {
            path.parent() == Some(Path::new("/dev"))
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("video"))
        }
    }
}

/// Watches until dropped, calling `on_appear` from notify's thread for every event that may be
/// the camera (the path actor merges them).
pub(super) struct HotplugWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HotplugWatch {
    pub(super) fn start(
        path: &str,
        selector: DeviceSelector,
        on_appear: impl Fn() + Send + Sync + 'static,
    ) -> Result<HotplugWatch, String> {
        Self::start_in(&WATCHED, path, selector, on_appear)
    }

    /// [`HotplugWatch::start`] on other directories (tests cannot create nodes in `/dev`).
    fn start_in(
        dirs: &[&'static str],
        path: &str,
        selector: DeviceSelector,
        on_appear: impl Fn() + Send + Sync + 'static,
    ) -> Result<HotplugWatch, String> {
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        let on_appear = Arc::new(on_appear);
        let from_watch = Arc::clone(&on_appear);
        let configured = match &selector {
            DeviceSelector::Path(path) => Some(path.clone()),
            DeviceSelector::Match(_) => None,
        };
        // Directory creations go to the thread below, which owns the watcher and adds watches.
        let (dirs_tx, dirs_rx) = mpsc::sync_channel::<()>(1);
        let watched_dirs = dirs.clone();
        let mut watcher: RecommendedWatcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => {
                        debug!(%err, "device watch error");
                        return;
                    }
                };
                if !appeared(&event.kind) {
                    return;
                }
                if event.paths.iter().any(|p| watched_dirs.contains(p)) {
                    // Full means a rescan is already due.
                    let _ = dirs_tx.try_send(());
                }
                if event.paths.iter().any(|p| may_be_the_camera(&selector, p)) {
                    from_watch();
                }
            })
            .map_err(|e| format!("cannot watch /dev: {e}"))?;
        add_watches(&mut watcher, &dirs);

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("hotplug {path}"))
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match dirs_rx.recv_timeout(POLL) {
                            Ok(()) => {
                                add_watches(&mut watcher, &dirs);
                                // A link made in a new directory before its watch was added
                                // raised no event of its own.
                                if configured.as_deref().is_some_and(Path::exists) {
                                    on_appear();
                                }
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                })
                .map_err(|e| format!("cannot start the device watch thread: {e}"))?
        };
        Ok(HotplugWatch {
            stop,
            thread: Some(thread),
        })
    }
}

/// Watches every directory of `dirs` that exists. A directory that was removed and made again
/// needs a new watch, so all are renewed on every call (rare: only when one of them is created).
fn add_watches(watcher: &mut RecommendedWatcher, dirs: &[PathBuf]) {
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), %err, "cannot watch for cameras");
        }
    }
}

impl Drop for HotplugWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // The thread notices within POLL; nothing waits for it.
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceMatch;
    use notify::event::{AccessKind, CreateKind, MetadataKind, RemoveKind};

    #[test]
    fn which_events_mean_there_now() {
        assert!(appeared(&EventKind::Create(CreateKind::File)));
        assert!(appeared(&EventKind::Create(CreateKind::Any)));
        assert!(appeared(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Permissions
        ))));
        assert!(appeared(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(!appeared(&EventKind::Modify(ModifyKind::Name(
            RenameMode::From
        ))));
        assert!(!appeared(&EventKind::Remove(RemoveKind::File)));
        assert!(!appeared(&EventKind::Access(AccessKind::Any)));
    }

    #[test]
    fn which_paths_may_be_the_camera() {
        let by_id = DeviceSelector::Path("/dev/v4l/by-id/usb-cam-video-index0".into());
        assert!(may_be_the_camera(
            &by_id,
            Path::new("/dev/v4l/by-id/usb-cam-video-index0")
        ));
        assert!(!may_be_the_camera(&by_id, Path::new("/dev/video0")));
        let node = DeviceSelector::Path("/dev/video0".into());
        assert!(may_be_the_camera(&node, Path::new("/dev/video0")));
        assert!(!may_be_the_camera(&node, Path::new("/dev/video1")));
        let matching = DeviceSelector::Match(DeviceMatch {
            card: Some("vivid".into()),
            ..DeviceMatch::default()
        });
        assert!(may_be_the_camera(&matching, Path::new("/dev/video4")));
        assert!(!may_be_the_camera(&matching, Path::new("/dev/vbi0")));
        assert!(!may_be_the_camera(&matching, Path::new("/dev/v4l/video0")));
    }

    #[test]
    fn a_link_appearing_in_a_directory_made_later_is_seen() {
        // /dev cannot be written in a test: the same watch on a temporary tree shaped like it.
        let root = tempfile::tempdir().unwrap();
        let dev: &'static str = Box::leak(root.path().display().to_string().into_boxed_str());
        let v4l: &'static str = Box::leak(format!("{dev}/v4l").into_boxed_str());
        let by_id: &'static str = Box::leak(format!("{dev}/v4l/by-id").into_boxed_str());
        let link = PathBuf::from(format!("{by_id}/usb-cam-video-index0"));
        let (tx, rx) = mpsc::channel();
        let watch = HotplugWatch::start_in(
            &[dev, v4l, by_id],
            "cam",
            DeviceSelector::Path(link.clone()),
            move || {
                let _ = tx.send(());
            },
        )
        .unwrap();
        std::fs::write(format!("{dev}/video0"), b"").unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "another node is not this camera"
        );
        // As udev does on a plug: the directories first, then the link.
        std::fs::create_dir(v4l).unwrap();
        std::fs::create_dir(by_id).unwrap();
        let mut seen = false;
        for _ in 0..50 {
            std::fs::write(&link, b"").unwrap();
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                seen = true;
                break;
            }
            // The watch on a new directory is added a moment after it appears.
            std::fs::remove_file(&link).unwrap();
        }
        assert!(seen, "the link appearing was not noticed");
        drop(watch);
    }
}
