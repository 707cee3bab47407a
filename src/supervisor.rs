//! The root supervisor: starts one path actor per configured path, restarts a path that fails
//! as a whole (with backoff), and is the parent of every viewer. Viewers are its children rather
//! than their path's, so that a path can restart under them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{LoadedPaths, PathConfig};
use crate::path::{PathActor, PathArgs};
use crate::status::{ConfigProblem, PathState, StatusBoard};
use crate::viewer::ViewerMsg;
use crate::whep::sessions::Sessions;

pub enum RootMsg {
    /// Run these paths (start-up; later, the config watcher's reloads).
    Apply(LoadedPaths),
    /// Start a path again after it failed.
    RestartPath(String),
}

pub struct RootArgs {
    pub scope: String,
    pub board: StatusBoard,
    pub sessions: Sessions,
}

struct RunningPath {
    config: PathConfig,
    actor: Option<ActorRef<crate::path::PathMsg>>,
    since: Instant,
    backoff: Backoff,
}

pub struct RootState {
    args: RootArgs,
    paths: HashMap<String, RunningPath>,
}

impl RootState {
    async fn start_path(&mut self, myself: &ActorRef<RootMsg>, name: &str) {
        let Some(entry) = self.paths.get_mut(name) else {
            return;
        };
        let args = PathArgs {
            scope: self.args.scope.clone(),
            config: entry.config.clone(),
            board: self.args.board.clone(),
        };
        entry.since = Instant::now();
        match Actor::spawn_linked(None, PathActor, args, myself.get_cell()).await {
            Ok((actor, _)) => entry.actor = Some(actor),
            Err(err) => {
                error!(path = %name, %err, "path failed to start");
                self.path_failed(myself, name, err.to_string());
            }
        }
    }

    fn path_failed(&mut self, myself: &ActorRef<RootMsg>, name: &str, reason: String) {
        let Some(entry) = self.paths.get_mut(name) else {
            return;
        };
        entry.actor = None;
        let delay = entry.backoff.next_delay(entry.since.elapsed());
        warn!(path = %name, %reason, retry_in_ms = delay.as_millis() as u64, "path failed");
        // The path actor removed its status when it stopped; show the failure in its place.
        let board = &self.args.board;
        if !board.has_path(name) {
            board.set_path(crate::path::initial_status(&entry.config));
        }
        board.update_path(name, |status| {
            status.state = PathState::Failed;
            status.last_error = Some(reason);
        });
        let name = name.to_owned();
        myself.send_after(delay, move || RootMsg::RestartPath(name));
    }

    fn path_of(&self, id: ActorId) -> Option<String> {
        self.paths
            .iter()
            .find(|(_, p)| p.actor.as_ref().is_some_and(|a| a.get_id() == id))
            .map(|(name, _)| name.clone())
    }
}

pub struct RootSupervisor;

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RootState {
            args,
            paths: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Apply(loaded) => {
                let problems = loaded
                    .errors
                    .iter()
                    .map(|err| {
                        error!(file = %err.file.display(), line = ?err.line, message = %err.message,
                               "configuration error");
                        ConfigProblem {
                            file: err.file.display().to_string(),
                            line: err.line,
                            column: err.column,
                            message: err.message.clone(),
                        }
                    })
                    .collect();
                state.args.board.set_config_errors(problems);
                for (name, config) in loaded.paths {
                    let name = name.to_string();
                    if state.paths.contains_key(&name) {
                        continue;
                    }
                    state.paths.insert(
                        name.clone(),
                        RunningPath {
                            config,
                            actor: None,
                            since: Instant::now(),
                            backoff: Backoff::default(),
                        },
                    );
                    state.start_path(&myself, &name).await;
                }
            }
            RootMsg::RestartPath(name) => {
                if state.paths.get(&name).is_some_and(|p| p.actor.is_none()) {
                    info!(path = %name, "restarting path");
                    state.start_path(&myself, &name).await;
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
        // Viewers come and go as children too; only a path ending unasked needs action.
        let (id, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if let Some(name) = state.path_of(id) {
            state.path_failed(&myself, &name, reason);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for session in state.args.sessions.all() {
            let _ = session
                .viewer
                .send_message(ViewerMsg::Close("the server is shutting down".into()));
        }
        state.paths.clear();
        myself
            .stop_children_and_wait(None, Some(Duration::from_millis(1500)))
            .await;
        info!("all paths and viewers stopped");
        Ok(())
    }
}
