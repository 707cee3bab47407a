//! What the daemon shows about itself (`GET /api/paths`, the index page): written by the actors
//! when something changes, read by HTTP handlers. Shaped for people and scripts alike.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::metrics::{DaemonCounters, PathCounters};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    /// An on-demand path nobody reads: its source is not running.
    Idle,
    Starting,
    Running,
    Restarting,
    Failed,
}

/// The kinds of reader a path has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    Webrtc = 0,
    Rtsp = 1,
    Mjpeg = 2,
}

impl ReaderKind {
    pub const COUNT: usize = 3;
}

/// A path's readers by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Readers {
    pub webrtc: usize,
    pub rtsp: usize,
    pub mjpeg: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathStatus {
    pub name: String,
    pub state: PathState,
    pub source: String,
    /// The camera in use (or last used): its node, card name and USB id.
    pub camera: Option<String>,
    /// The mode negotiated with the camera, e.g. `YUYV 640x480 @ 25 fps`.
    pub format: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// The encoder follows the WebRTC viewers' bandwidth (`encoding.adaptiveBitrate`).
    pub adaptive_bitrate: bool,
    /// What the encoder aims at now: `bitrateKbps`, or less while a viewer's link is thin.
    pub target_bitrate_kbps: u32,
    /// A passed-through H.264 source (a camera's or a program's own) that cannot be asked for a
    /// keyframe: a new viewer waits for its next one, up to this long (the interval between its
    /// last two keyframes). None for a camera that makes one on request.
    pub source_keyframe_interval_ms: Option<u32>,
    /// The slowest WebRTC viewer's bandwidth estimate, once one has been measured.
    pub bandwidth_estimate_kbps: Option<u32>,
    /// WHEP viewers (`readers.webrtc`).
    pub viewers: usize,
    pub readers: Readers,
    /// Child restarts since the path started.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The path's file has an error: the path runs on its last good configuration (or, if it
    /// never had one, is failed).
    pub config_error: Option<String>,
    /// The player's address, relative to the server.
    pub url: String,
}

impl PathStatus {
    /// Sets the reader counts, indexed by [`ReaderKind`].
    pub fn set_readers(&mut self, counts: [usize; ReaderKind::COUNT]) {
        self.readers = Readers {
            webrtc: counts[ReaderKind::Webrtc as usize],
            rtsp: counts[ReaderKind::Rtsp as usize],
            mjpeg: counts[ReaderKind::Mjpeg as usize],
        };
        self.viewers = self.readers.webrtc;
    }

    /// A path whose file is broken and that never had a good configuration: listed as failed
    /// with the file's error, so that people see it where they look for the path.
    pub fn invalid(name: &str, error: String) -> PathStatus {
        PathStatus {
            name: name.to_owned(),
            state: PathState::Failed,
            source: String::new(),
            camera: None,
            format: None,
            width: 0,
            height: 0,
            fps: 0,
            bitrate_kbps: 0,
            adaptive_bitrate: false,
            target_bitrate_kbps: 0,
            bandwidth_estimate_kbps: None,
            source_keyframe_interval_ms: None,
            viewers: 0,
            readers: Readers::default(),
            restarts: 0,
            last_error: None,
            config_error: Some(error),
            url: format!("/{name}/"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigProblem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub paths: Vec<PathStatus>,
    pub config_errors: Vec<ConfigProblem>,
}

#[derive(Default)]
struct Inner {
    paths: BTreeMap<String, PathStatus>,
    config_errors: Vec<ConfigProblem>,
    /// The running paths' counters, for `/metrics`; a removed path's go with its status.
    counters: BTreeMap<String, Arc<PathCounters>>,
    daemon: Arc<DaemonCounters>,
}

/// The shared status board. Cloning shares it.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Inner>>);

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic while holding the lock cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            paths: inner.paths.values().cloned().collect(),
            config_errors: inner.config_errors.clone(),
        }
    }

    pub fn set_path(&self, status: PathStatus) {
        self.lock().paths.insert(status.name.clone(), status);
    }

    pub fn has_path(&self, name: &str) -> bool {
        self.lock().paths.contains_key(name)
    }

    /// One path's status, if it is listed.
    pub fn path(&self, name: &str) -> Option<PathStatus> {
        self.lock().paths.get(name).cloned()
    }

    pub fn remove_path(&self, name: &str) {
        let mut inner = self.lock();
        inner.paths.remove(name);
        inner.counters.remove(name);
    }

    /// A path (actor) started with these counters.
    pub(crate) fn set_counters(&self, name: &str, counters: Arc<PathCounters>) {
        self.lock().counters.insert(name.to_owned(), counters);
    }

    /// The paths' counters, by path name.
    pub(crate) fn counters(&self) -> Vec<(String, Arc<PathCounters>)> {
        let inner = self.lock();
        inner
            .counters
            .iter()
            .map(|(name, counters)| (name.clone(), Arc::clone(counters)))
            .collect()
    }

    pub(crate) fn daemon_counters(&self) -> Arc<DaemonCounters> {
        Arc::clone(&self.lock().daemon)
    }

    /// Changes one path's entry, if it exists.
    pub fn update_path(&self, name: &str, change: impl FnOnce(&mut PathStatus)) {
        if let Some(status) = self.lock().paths.get_mut(name) {
            change(status);
        }
    }

    pub fn set_config_errors(&self, errors: Vec<ConfigProblem>) {
        self.lock().config_errors = errors;
    }
}
