//! The config watcher: notices that `config.d/` changed and asks for a reload (the daemon passes
//! it the root supervisor's). It only signals; the reload itself (`supervisor.rs`) reads the
//! directory and tolerates half-written and broken files.
//!
//! Editors save in many ways — write in place, write a temp file and rename it over, leave swap
//! and backup files — and one save is a burst of events. Events are filtered to path files
//! (`config::is_config_file_name`) and to the directory itself, and a burst becomes one reload
//! [`DEBOUNCE`] after its last event. The directory's parent is watched too, so that removing
//! the directory and creating it again re-arms the watch. A periodic rescan and `SIGHUP` (in
//! `main.rs`) catch whatever a watch may miss (network file systems, inotify queue overflow).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use crate::config::is_config_file_name;

/// Asks for a reload of the directory, saying why ("file change", "rescan").
pub(crate) type Reload = Box<dyn Fn(&'static str) + Send + Sync>;

/// Quiet time after the last event of a burst before reloading: long enough for an editor's
/// save (write, rename, chmod), short enough that a dropped file plays within a second.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the directory is read again whatever the watch says.
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) enum WatcherMsg {
    /// Something changed at these paths (from notify's thread).
    Changed(Vec<PathBuf>),
    /// The watch itself reported an error (e.g. the inotify queue overflowed).
    WatchError(String),
    /// The burst that bumped the generation to this value may be over.
    Quiet(u64),
    /// Time for the periodic rescan.
    Rescan,
}

pub(crate) struct WatcherArgs {
    pub dir: PathBuf,
    pub reload: Reload,
}

pub(crate) struct WatcherState {
    dir: PathBuf,
    reload: Reload,
    watcher: RecommendedWatcher,
    /// Whether `dir` itself is watched (it may not exist for a while).
    armed: bool,
    /// Bumped by every relevant event; a reload happens when a `Quiet` carries the latest.
    generation: u64,
}

impl WatcherState {
    /// Watches the directory if it is there and not watched yet.
    fn arm(&mut self) {
        if self.armed || !self.dir.is_dir() {
            return;
        }
        match self.watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.armed = true;
                debug!(dir = %self.dir.display(), "watching the config directory");
            }
            Err(err) => warn!(dir = %self.dir.display(), %err, "cannot watch the config directory"),
        }
    }

    fn changed(&mut self, myself: &ActorRef<WatcherMsg>) {
        self.generation += 1;
        let generation = self.generation;
        myself.send_after(DEBOUNCE, move || WatcherMsg::Quiet(generation));
    }
}

/// Whether an event kind can mean a changed file. Opening and reading do not (the reload's own
/// reads would otherwise trigger reloads); a write being closed does.
fn kind_matters(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether a change at `changed` concerns the config directory `dir`: the directory itself
/// (removed, created, renamed) or a path file directly in it. Editor debris, hidden files and
/// anything in subdirectories do not.
pub(crate) fn path_matters(dir: &Path, changed: &Path) -> bool {
    if changed == dir {
        return true;
    }
    changed.parent() == Some(dir)
        && changed
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(is_config_file_name)
}

pub(crate) struct ConfigWatcher;

impl Actor for ConfigWatcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = WatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // notify reports absolute paths; compare like with like.
        let dir = std::path::absolute(&args.dir)?;
        let events = myself.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let message = match event {
                    Ok(event) if kind_matters(&event.kind) => WatcherMsg::Changed(event.paths),
                    Ok(_) => return,
                    Err(err) => WatcherMsg::WatchError(err.to_string()),
                };
                let _ = events.send_message(message);
            })?;
        // The parent shows the directory itself coming and going.
        if let Some(parent) = dir.parent().filter(|p| p.is_dir())
            && let Err(err) = watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            warn!(dir = %parent.display(), %err,
                  "cannot watch the config directory's parent; a re-created directory is seen at the next rescan");
        }
        let mut state = WatcherState {
            dir,
            reload: args.reload,
            watcher,
            armed: false,
            generation: 0,
        };
        state.arm();
        myself.send_interval(RESCAN_INTERVAL, || WatcherMsg::Rescan);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WatcherMsg::Changed(paths) => {
                if !paths.iter().any(|p| path_matters(&state.dir, p)) {
                    return Ok(());
                }
                if paths.contains(&state.dir) {
                    // Removed or re-created: a removed directory's watch is gone with it.
                    let _ = state.watcher.unwatch(&state.dir);
                    state.armed = false;
                    state.arm();
                }
                state.changed(&myself);
            }
            WatcherMsg::WatchError(err) => {
                warn!(%err, "config watch error; reloading to be safe");
                state.changed(&myself);
            }
            WatcherMsg::Quiet(generation) => {
                if generation == state.generation {
                    (state.reload)("file change");
                }
            }
            WatcherMsg::Rescan => {
                state.arm();
                (state.reload)("rescan");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn editor_save_patterns() {
        let dir = Path::new("/etc/camportal/config.d");
        let at = |name: &str| dir.join(name);
        // Counted: the path files themselves, however they got there, and the directory.
        for name in ["cam.yml", "cam.yaml", "front-door.yml"] {
            assert!(path_matters(dir, &at(name)), "{name}");
        }
        assert!(path_matters(dir, dir));
        // Not counted: vim swap and backup files, emacs lock and autosave files, temp files of
        // write-and-rename saves, hidden files, other extensions, subdirectories, neighbours.
        for name in [
            ".cam.yml.swp",
            ".cam.yml.swx",
            "cam.yml~",
            ".#cam.yml",
            "#cam.yml#",
            ".cam.yml.tmp",
            "cam.yml.tmp",
            "4913",
            ".hidden.yml",
            "notes.txt",
            "sub/cam.yml",
        ] {
            assert!(!path_matters(dir, &at(name)), "{name}");
        }
        assert!(!path_matters(
            dir,
            Path::new("/etc/camportal/camportal.yml")
        ));
        assert!(!path_matters(dir, Path::new("/etc/camportal/other.d")));
    }

    #[test]
    fn reads_do_not_count_writes_do() {
        assert!(!kind_matters(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!kind_matters(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(kind_matters(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(kind_matters(&kind), "{kind:?}");
        }
    }
}
