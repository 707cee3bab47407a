//! One configured path (`config.d/<name>.yml`, served at `/<name>/`): its actor owns the data
//! plane shared by its children — capture → hand-off → encoder → fan-out — and supervises the
//! children, restarting a failed one with backoff while the others (and the viewers) carry on.

pub mod broadcaster;
pub mod capture;
pub mod encode;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{EncodingConfig, PathConfig};
use crate::handoff::Latest;
use crate::source::Captured;
use crate::status::{PathState, PathStatus, StatusBoard};
use broadcaster::{Broadcaster, BroadcasterArgs, Fanout};
use capture::{Capture, CaptureArgs};
use encode::{Encode, EncodeArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Child {
    Capture,
    Encoder,
    Broadcaster,
}

pub enum PathMsg {
    /// Start a child again once its backoff has passed.
    Restart(Child),
    /// A reload changed only what the running encoder can take (see `config::classify`).
    Update(PathConfig),
}

pub struct PathArgs {
    pub scope: String,
    pub config: PathConfig,
    pub board: StatusBoard,
}

struct Running {
    child: Child,
    since: Instant,
}

pub struct PathActorState {
    scope: String,
    config: PathConfig,
    board: StatusBoard,
    handoff: Arc<Latest<Captured>>,
    fanout: Arc<Fanout>,
    /// The encoder child watches this for live changes.
    encoding: watch::Sender<EncodingConfig>,
    children: HashMap<ActorId, Running>,
    backoff: HashMap<Child, Backoff>,
}

pub struct PathActor;

/// How a path shows before it has run.
pub fn initial_status(config: &PathConfig) -> PathStatus {
    let name = config.name.to_string();
    let encoding = &config.encoding;
    PathStatus {
        name: name.clone(),
        state: PathState::Starting,
        source: crate::source::describe(config),
        width: encoding.width,
        height: encoding.height,
        fps: encoding.fps,
        bitrate_kbps: encoding.bitrate_bps / 1000,
        viewers: 0,
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
                let args = CaptureArgs {
                    config: self.config.clone(),
                    handoff: Arc::clone(&self.handoff),
                };
                Actor::spawn_linked(None, Capture, args, supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Encoder => {
                let args = EncodeArgs {
                    path: name.clone(),
                    encoding: self.encoding.subscribe(),
                    handoff: Arc::clone(&self.handoff),
                    fanout: Arc::clone(&self.fanout),
                };
                Actor::spawn_linked(None, Encode, args, supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Broadcaster => {
                let args = BroadcasterArgs {
                    path: name.clone(),
                    fanout: Arc::clone(&self.fanout),
                    board: self.board.clone(),
                };
                let registered = Some(broadcaster::registry_name(&self.scope, &name));
                Actor::spawn_linked(registered, Broadcaster, args, supervisor)
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
        myself.send_after(delay, move || PathMsg::Restart(child));
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
            scope: args.scope,
            config,
            board: args.board,
            handoff: Arc::new(Latest::default()),
            fanout: Arc::new(Fanout::default()),
            encoding,
            children: HashMap::new(),
            backoff: HashMap::new(),
        };
        // Broadcaster first, so viewers can join before the first frame.
        for child in [Child::Broadcaster, Child::Encoder, Child::Capture] {
            state.start_child(&myself, child).await?;
        }
        state
            .board
            .update_path(&name, |status| status.state = PathState::Running);
        info!(path = %name, source = %crate::source::describe(&state.config), "path started");
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
                if let Err(err) = state.start_child(&myself, child).await {
                    error!(%path, ?child, %err, "cannot restart path child");
                    state.board.update_path(&path, |status| {
                        status.state = PathState::Failed;
                        status.last_error = Some(format!("{child:?}: {err}"));
                    });
                    return Err(err);
                }
                if state.children.len() == 3 {
                    state.board.update_path(&path, |status| {
                        status.state = PathState::Running;
                    });
                }
                info!(%path, ?child, "path child restarted");
            }
            PathMsg::Update(config) => {
                state.board.update_path(&state.name(), |status| {
                    status.bitrate_kbps = config.encoding.bitrate_bps / 1000;
                });
                state.encoding.send_replace(config.encoding.clone());
                state.config = config;
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
        myself.stop_children_and_wait(None, None).await;
        state.handoff.close();
        // The path's status stays: the root removes it when the path leaves the configuration,
        // and a path that restarts keeps showing (its viewers wait for it, see `viewer.rs`).
        info!(path = %state.name(), "path stopped");
        Ok(())
    }
}
