//! One configured path (`config.d/<name>.yml`, served at `/<name>/`): its actor owns the data
//! plane shared by its children — capture → hand-off → encoder → fan-out — and supervises the
//! children, restarting a failed one with backoff while the others (and the viewers) carry on.

mod broadcaster;
mod capture;
mod directory;
mod encode;
mod hotplug;
mod offline;
mod passthrough;
mod subscription;
mod worker;

pub(crate) use broadcaster::{Counted, Joinable, ParameterSets, VideoFrame};
pub(crate) use directory::{Directory, Entry};
pub use offline::is_offline_picture;
pub(crate) use subscription::{Event, Subscription};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{EncodingConfig, PathConfig, SourceConfig};
use crate::handoff::Latest;
use crate::source::{Captured, SourceInfo};
use crate::status::{PathState, PathStatus, StatusBoard};
use broadcaster::{Broadcaster, BroadcasterArgs, Fanout};
use capture::CaptureArgs;
use encode::EncodeArgs;
use hotplug::HotplugWatch;
use offline::{OfflineFeed, OfflinePicture, Switch};
use worker::{Work, Worker, WorkerArgs};

/// A camera node that just appeared gets this long to settle (udev sets its permissions)
/// before the capture is restarted.
const HOTPLUG_SETTLE: Duration = Duration::from_millis(50);
/// How long stopping the capture waits for its thread, which ends after its current `next()`.
/// Waiting frees the camera for a path restarted with a new configuration (a second open would
/// find it busy); a camera hung in the driver must not hold the path up longer.
const CAPTURE_STOP_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Child {
    Capture,
    Encoder,
    Broadcaster,
}

pub(crate) enum PathMsg {
    /// Start a child again once its backoff has passed.
    Restart(Child),
    /// A reload changed only what the running encoder can take (see `config::classify`).
    Update(PathConfig),
    /// The capture child opened its source: this is what it opened.
    CaptureOpened(SourceInfo),
    /// The camera's device node (or link) appeared: restart the capture now if it is down.
    DeviceAppeared,
    /// The path's readers of every kind now number this many (an on-demand path starts or
    /// stops its source by it).
    Readers(usize),
    /// An on-demand path's `sourceOnDemandCloseAfter` has passed since its readers reached zero
    /// (this many times): stop the source unless someone came since.
    CloseIfUnread(u64),
}

pub(crate) struct PathArgs {
    pub config: PathConfig,
    pub board: StatusBoard,
    /// Where the path's broadcaster steps in, for viewers to find it.
    pub directory: Directory,
}

struct Running {
    child: Child,
    since: Instant,
    cell: ActorCell,
}

pub(crate) struct PathActorState {
    config: PathConfig,
    board: StatusBoard,
    directory: Directory,
    handoff: Arc<Latest<Captured>>,
    fanout: Arc<Fanout>,
    /// The encoder child watches this for live changes.
    encoding: watch::Sender<EncodingConfig>,
    children: HashMap<ActorId, Running>,
    backoff: HashMap<Child, Backoff>,
    /// Camera or offline picture: who feeds the hand-off.
    switch: Arc<Switch>,
    /// Feeds "camera offline" pictures while the capture child is down.
    offline: Option<OfflineFeed>,
    /// Restarts the capture when a camera appears (v4l2 sources only).
    hotplug: Option<HotplugWatch>,
    /// Readers of every kind, as the broadcaster last told.
    readers: usize,
    /// How many times the readers reached zero: a pending close is for the latest only.
    unread_count: u64,
    /// An on-demand path whose source is stopped until a reader comes.
    idle: bool,
    /// A capture stopped for want of readers that has not ended yet (it may still hold the
    /// camera or its program): a reader who comes meanwhile starts the next one when it has.
    stopping: Option<ActorId>,
}

pub(crate) struct PathActor;

/// How a path shows before it has run.
pub(crate) fn initial_status(config: &PathConfig) -> PathStatus {
    let name = config.name.to_string();
    let encoding = &config.encoding;
    PathStatus {
        name: name.clone(),
        state: PathState::Starting,
        source: crate::source::describe(config),
        camera: None,
        format: None,
        width: encoding.width,
        height: encoding.height,
        fps: encoding.fps,
        bitrate_kbps: encoding.bitrate_bps / 1000,
        adaptive_bitrate: encoding.adaptive_bitrate,
        target_bitrate_kbps: encoding.bitrate_bps / 1000,
        bandwidth_estimate_kbps: None,
        source_keyframe_interval_ms: None,
        viewers: 0,
        readers: crate::status::Readers::default(),
        restarts: 0,
        last_error: None,
        config_error: None,
        url: format!("/{name}/"),
    }
}

impl PathActorState {
    fn name(&self) -> String {
        self.config.name.to_string()
    }

    async fn start_child(
        &mut self,
        myself: &ActorRef<PathMsg>,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        let name = self.name();
        let supervisor: ActorCell = myself.get_cell();
        let cell = match child {
            Child::Capture => {
                let path = myself.clone();
                let work = capture::work(CaptureArgs {
                    config: self.config.clone(),
                    handoff: Arc::clone(&self.handoff),
                    fanout: Arc::clone(&self.fanout),
                    switch: Arc::clone(&self.switch),
                    opened: Box::new(move |info| {
                        let _ = path.send_message(PathMsg::CaptureOpened(info));
                    }),
                });
                spawn_worker(
                    format!("capture {name}"),
                    work,
                    CAPTURE_STOP_WAIT,
                    supervisor,
                )
                .await?
            }
            Child::Encoder => {
                let work = encode::work(EncodeArgs {
                    path: name.clone(),
                    encoding: self.encoding.subscribe(),
                    handoff: Arc::clone(&self.handoff),
                    fanout: Arc::clone(&self.fanout),
                    board: self.board.clone(),
                });
                // Not waited for: it ends within its idle poll, and a restart's picture gap
                // should not grow by it.
                spawn_worker(format!("encode {name}"), work, Duration::ZERO, supervisor).await?
            }
            Child::Broadcaster => {
                let path = myself.clone();
                let args = BroadcasterArgs {
                    path: name.clone(),
                    fanout: Arc::clone(&self.fanout),
                    board: self.board.clone(),
                    directory: self.directory.clone(),
                    readers_changed: Box::new(move |readers| {
                        let _ = path.send_message(PathMsg::Readers(readers));
                    }),
                };
                Actor::spawn_linked(None, Broadcaster, args, supervisor)
                    .await?
                    .0
                    .get_cell()
            }
        };
        self.children.insert(
            cell.get_id(),
            Running {
                child,
                since: Instant::now(),
                cell,
            },
        );
        Ok(())
    }

    /// A child ended: log it, show it, and schedule its restart.
    fn child_ended(&mut self, myself: &ActorRef<PathMsg>, id: ActorId, reason: String) {
        let Some(running) = self.children.remove(&id) else {
            return;
        };
        let delay = self
            .backoff
            .entry(running.child)
            .or_default()
            .next_delay(running.since.elapsed());
        let path = self.name();
        warn!(%path, child = ?running.child, %reason, retry_in_ms = delay.as_millis() as u64,
              "path child failed; restarting");
        self.board.update_path(&path, |status| {
            status.state = PathState::Restarting;
            status.restarts += 1;
            status.last_error = Some(format!("{:?}: {reason}", running.child));
        });
        let child = running.child;
        self.fanout.counters().restarted(match child {
            Child::Capture => "capture",
            Child::Encoder => "encoder",
            Child::Broadcaster => "broadcaster",
        });
        if child == Child::Capture {
            if !self.wants_source() {
                self.go_idle();
                return;
            }
            self.show_offline();
        }
        myself.send_after(delay, move || PathMsg::Restart(child));
    }

    /// Whether the source should run: always, or for an on-demand path while someone reads.
    fn wants_source(&self) -> bool {
        !self.config.on_demand.enabled || self.readers > 0
    }

    /// An on-demand path with its source stopped: nothing captured, nothing encoded.
    fn go_idle(&mut self) {
        self.idle = true;
        self.switch.go_offline();
        self.offline = None;
        // A snapshot must not be answered with a picture from before the path went idle.
        self.fanout.forget_picture();
        self.board.update_path(&self.name(), |status| {
            status.state = PathState::Idle;
        });
    }

    /// Stops the capture child on purpose (not a failure: no restart follows).
    fn stop_capture(&mut self) {
        let mut stopped = None;
        self.children.retain(|id, running| {
            let capture = running.child == Child::Capture;
            if capture {
                running.cell.stop(Some("no readers".into()));
                stopped = Some(*id);
            }
            !capture
        });
        self.stopping = stopped.or(self.stopping);
    }

    /// Starts the capture for a reader, unless the last one is still stopping (then it starts
    /// when that one has ended).
    async fn start_capture_for_readers(&mut self, myself: &ActorRef<PathMsg>) {
        if self.stopping.is_some() || self.is_running(Child::Capture) {
            return;
        }
        if let Err(err) = self.start_child(myself, Child::Capture).await {
            warn!(path = %self.name(), %err, "cannot start the source");
            let _ = myself.send_message(PathMsg::Restart(Child::Capture));
        }
    }

    fn is_running(&self, child: Child) -> bool {
        self.children.values().any(|running| running.child == child)
    }

    /// Viewers see "camera offline" until the capture's first picture.
    fn show_offline(&mut self) {
        self.switch.go_offline();
        // Replacing a previous feed joins it; it ended when the camera came back.
        self.offline = None;
        let encoding = &self.config.encoding;
        let picture = OfflinePicture::new(
            encoding.width,
            encoding.height,
            &crate::source::describe(&self.config),
            SystemTime::now(),
        );
        match OfflineFeed::start(
            &self.name(),
            picture,
            Arc::clone(&self.handoff),
            Arc::clone(&self.switch),
        ) {
            Ok(feed) => self.offline = Some(feed),
            Err(err) => warn!(path = %self.name(), %err, "cannot show the offline picture"),
        }
    }
}

async fn spawn_worker(
    name: String,
    work: Work,
    stop_wait: Duration,
    supervisor: ActorCell,
) -> Result<ActorCell, ActorProcessingErr> {
    let args = WorkerArgs {
        name,
        work,
        stop_wait,
    };
    let (worker, _) = Actor::spawn_linked(None, Worker, args, supervisor).await?;
    Ok(worker.get_cell())
}

/// For a camera path: a watch on /dev that tells the path when its camera may be back.
fn watch_for_camera(config: &PathConfig, myself: &ActorRef<PathMsg>) -> Option<HotplugWatch> {
    let SourceConfig::V4l2(v4l2) = &config.source else {
        return None;
    };
    let path = config.name.to_string();
    let actor = myself.clone();
    match HotplugWatch::start(&path, v4l2.device.clone(), move || {
        let _ = actor.send_message(PathMsg::DeviceAppeared);
    }) {
        Ok(watch) => Some(watch),
        Err(err) => {
            warn!(%path, %err, "cannot watch for the camera; reconnects wait for the backoff");
            None
        }
    }
}

impl Actor for PathActor {
    type Msg = PathMsg;
    type State = PathActorState;
    type Arguments = PathArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PathArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = args.config;
        let name = config.name.to_string();
        args.board.set_path(initial_status(&config));
        let encoding = watch::Sender::new(config.encoding.clone());
        let mut state = PathActorState {
            config,
            board: args.board,
            directory: args.directory,
            handoff: Arc::new(Latest::default()),
            fanout: Arc::new(Fanout::default()),
            encoding,
            children: HashMap::new(),
            backoff: HashMap::new(),
            switch: Arc::new(Switch::default()),
            offline: None,
            hotplug: None,
            readers: 0,
            unread_count: 0,
            idle: false,
            stopping: None,
        };
        state
            .board
            .set_counters(&name, Arc::clone(state.fanout.counters()));
        state.hotplug = watch_for_camera(&state.config, &myself);
        // Broadcaster first, so viewers can join before the first frame.
        // "running" once the capture has opened its source (`CaptureOpened`); an on-demand
        // path starts it when the first reader comes (`Readers`).
        for child in [Child::Broadcaster, Child::Encoder] {
            state.start_child(&myself, child).await?;
        }
        if state.config.on_demand.enabled {
            state.go_idle();
        } else {
            state.start_child(&myself, Child::Capture).await?;
        }
        info!(path = %name, source = %crate::source::describe(&state.config),
              on_demand = state.config.on_demand.enabled, "path started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PathMsg::Restart(child) => {
                let path = state.name();
                // A camera that appeared may have restarted it before its backoff ran out; an
                // on-demand path may have lost its readers meanwhile.
                if state.is_running(child) {
                    return Ok(());
                }
                if child == Child::Capture && !state.wants_source() {
                    state.go_idle();
                    return Ok(());
                }
                if let Err(err) = state.start_child(&myself, child).await {
                    error!(%path, ?child, %err, "cannot restart path child");
                    state.board.update_path(&path, |status| {
                        status.state = PathState::Failed;
                        status.last_error = Some(format!("{child:?}: {err}"));
                    });
                    return Err(err);
                }
                // A restarted capture is running once its source is open; an on-demand path
                // nobody reads is idle again.
                if child != Child::Capture {
                    let now = if state.idle {
                        Some(PathState::Idle)
                    } else {
                        (state.children.len() == 3).then_some(PathState::Running)
                    };
                    if let Some(now) = now {
                        state.board.update_path(&path, |status| status.state = now);
                    }
                }
                info!(%path, ?child, "path child restarted");
            }
            PathMsg::Update(config) => {
                state.board.update_path(&state.name(), |status| {
                    status.bitrate_kbps = config.encoding.bitrate_bps / 1000;
                    status.adaptive_bitrate = config.encoding.adaptive_bitrate;
                    // The encoder takes the new rate at its next picture; an adapting path's
                    // next estimate report corrects this if a viewer's link is thin.
                    status.target_bitrate_kbps = config.encoding.bitrate_bps / 1000;
                });
                state.encoding.send_replace(config.encoding.clone());
                state.config = config;
            }
            PathMsg::CaptureOpened(info) => {
                let all_up = state.children.len() == 3;
                state.board.update_path(&state.name(), |status| {
                    if info.camera.is_some() {
                        status.camera = info.camera;
                        status.format = info.format;
                    }
                    if all_up {
                        status.state = PathState::Running;
                    }
                });
            }
            PathMsg::DeviceAppeared => {
                if !state.is_running(Child::Capture) && state.wants_source() {
                    info!(path = %state.name(), "camera appeared; restarting the capture now");
                    myself.send_after(HOTPLUG_SETTLE, || PathMsg::Restart(Child::Capture));
                }
            }
            PathMsg::Readers(readers) => {
                state.readers = readers;
                let on_demand = state.config.on_demand;
                if !on_demand.enabled {
                    return Ok(());
                }
                if readers == 0 {
                    state.unread_count += 1;
                    let count = state.unread_count;
                    myself.send_after(on_demand.close_after, move || PathMsg::CloseIfUnread(count));
                } else if state.idle {
                    // Answered at once: the viewer sees the offline picture until the source's
                    // first picture, which comes with a keyframe.
                    info!(path = %state.name(), readers, "a reader came: starting the source");
                    state.idle = false;
                    state.show_offline();
                    state.board.update_path(&state.name(), |status| {
                        status.state = PathState::Starting;
                    });
                    state.start_capture_for_readers(&myself).await;
                }
            }
            PathMsg::CloseIfUnread(count) => {
                if count == state.unread_count && state.readers == 0 {
                    info!(path = %state.name(), "no readers: stopping the source");
                    state.stop_capture();
                    state.go_idle();
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ended = match &event {
            SupervisionEvent::ActorFailed(cell, _)
            | SupervisionEvent::ActorTerminated(cell, ..) => Some(cell.get_id()),
            _ => None,
        };
        if ended.is_some() && ended == state.stopping {
            // The capture stopped for want of readers has ended: if readers came meanwhile,
            // their source starts now.
            state.stopping = None;
            if !state.idle {
                state.start_capture_for_readers(&myself).await;
            }
            return Ok(());
        }
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state.child_ended(&myself, cell.get_id(), err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped".into());
                state.child_ended(&myself, cell.get_id(), reason);
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Children first, so no restart races the stop.
        state.children.clear();
        drop(state.hotplug.take());
        myself.stop_children_and_wait(None, None).await;
        state.offline = None;
        state.handoff.close();
        // The path's status stays: the root removes it when the path leaves the configuration,
        // and a path that restarts keeps showing (its viewers wait for it, see `viewer.rs`).
        info!(path = %state.name(), "path stopped");
        Ok(())
    }
}
