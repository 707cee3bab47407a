//! The root supervisor: runs one path actor per configured path, applies reloads of
//! `config.d/` path by path, restarts a path that fails as a whole (with backoff), and is the
//! parent of every viewer. Viewers are its children rather than their path's, so that a path can
//! restart under them.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{self, ConfigError, PathConfig, PathConfigs, PathName};
use crate::path::{Directory, PathActor, PathArgs, PathMsg};
use crate::status::{ConfigProblem, PathState, StatusBoard};
use crate::whep::Sessions;

/// How long a path gets to stop (its children stop first) before the root goes on without it.
const PATH_STOP_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) enum RootMsg {
    /// Read `config.d/` again and apply what changed. The reason (start-up, file change, SIGHUP,
    /// rescan) goes into the log.
    Reload(&'static str),
    /// A reload that answers once every path has been started or changed: the first, at
    /// start-up, so the daemon serves HTTP only when its paths are listed (a kiosk reconnecting
    /// after a restart of the daemon must not be told its path does not exist), and a SIGHUP
    /// under systemd, which is told `READY=1` when it is done.
    ReloadAndReply(&'static str, RpcReplyPort<()>),
    /// Answers at once: the watchdog's proof that the root still handles messages.
    Ping(RpcReplyPort<()>),
    /// Start a path again after it failed.
    RestartPath(String),
}

pub(crate) struct RootArgs {
    pub config_dir: PathBuf,
    pub board: StatusBoard,
    /// Where viewers find each path's broadcaster: the root lists and unlists paths in it.
    pub directory: Directory,
    pub sessions: Sessions,
}

struct RunningPath {
    config: PathConfig,
    actor: Option<ActorRef<PathMsg>>,
    since: Instant,
    backoff: Backoff,
}

pub(crate) struct RootState {
    args: RootArgs,
    paths: HashMap<String, RunningPath>,
    /// Paths listed as failed because their file is broken and they never had a good one.
    invalid: BTreeSet<PathName>,
    /// The configuration problems of the last reload: each is logged once, not at every rescan.
    errors: Vec<ConfigError>,
    /// Paths running on their last good configuration because their file is broken.
    invalid_kept: BTreeSet<PathName>,
}

impl RootState {
    fn running_configs(&self) -> PathConfigs {
        self.paths
            .values()
            .map(|p| (p.config.name.clone(), p.config.clone()))
            .collect()
    }

    async fn start_path(&mut self, myself: &ActorRef<RootMsg>, name: &str) {
        let Some(entry) = self.paths.get_mut(name) else {
            return;
        };
        let args = PathArgs {
            config: entry.config.clone(),
            board: self.args.board.clone(),
            directory: self.args.directory.clone(),
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

    /// Stops a path's actor and waits for it, so that its camera is free again for a new one.
    /// The entry forgets the actor first: its ending is asked for, not a failure to restart.
    async fn stop_path(&mut self, name: &str, reason: &str) {
        let Some(actor) = self.paths.get_mut(name).and_then(|p| p.actor.take()) else {
            return;
        };
        if let Err(err) = actor
            .stop_and_wait(Some(reason.to_owned()), Some(PATH_STOP_TIMEOUT))
            .await
        {
            warn!(path = %name, %err, "path did not stop in time");
        }
    }

    fn path_failed(&mut self, myself: &ActorRef<RootMsg>, name: &str, reason: String) {
        let Some(entry) = self.paths.get_mut(name) else {
            return;
        };
        entry.actor = None;
        let delay = entry.backoff.next_delay(entry.since.elapsed());
        warn!(path = %name, %reason, retry_in_ms = delay.as_millis() as u64, "path failed");
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

    /// A path leaves the configuration: out of the status and the directory, and its viewers
    /// are closed and told why.
    fn unlist(&self, path: &str) {
        self.args.board.remove_path(path);
        self.args.directory.unlist(path);
        self.args
            .sessions
            .close_path(path, "the path was removed from the configuration");
    }

    /// Loads `config.d/` and brings the running paths in line with it, touching only the paths
    /// whose configuration changed.
    async fn reload(&mut self, myself: &ActorRef<RootMsg>, why: &'static str) {
        let running = self.running_configs();
        // Reading and parsing are blocking work: on a thread of their own, so that a slow disk
        // or a large file never holds up the runtime that serves the viewers.
        let dir = self.args.config_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load_paths_dir(&dir))
            .await
            .unwrap_or_else(|err| {
                // A panic (its message is in the log already) or the runtime shutting down:
                // treated like an unreadable directory, so every path runs on.
                error!(%err, "reading the config directory failed");
                Err(ConfigError::new(
                    &self.args.config_dir,
                    "reading the directory failed unexpectedly (see the log)",
                ))
            });
        let reconciled = config::reconcile(&running, loaded);
        let counters = self.args.board.daemon_counters();
        let result = if reconciled.errors.is_empty() {
            &counters.reloads_ok
        } else {
            &counters.reloads_error
        };
        result.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let diff = config::diff(&running, &reconciled.desired);
        // What each path's file says is wrong, for the paths that run on despite it.
        let file_errors: HashMap<String, String> = reconciled
            .kept
            .iter()
            .map(|(name, err)| (name.to_string(), err.to_string()))
            .collect();
        self.show_errors(reconciled.errors);

        for name in &diff.removed {
            info!(path = %name, action = "removed", reason = why, "reload");
            self.stop_path(name.as_str(), "removed from the configuration")
                .await;
            self.paths.remove(name.as_str());
            self.unlist(name.as_str());
        }
        for config in diff.restarted {
            let name = config.name.to_string();
            info!(path = %name, action = "restarted", reason = why, "reload");
            self.stop_path(&name, "configuration changed").await;
            if let Some(entry) = self.paths.get_mut(&name) {
                entry.config = config;
                entry.backoff = Backoff::default();
            }
            self.start_path(myself, &name).await;
        }
        for config in diff.updated_live {
            let name = config.name.to_string();
            info!(path = %name, action = "updated live", reason = why, "reload");
            let Some(entry) = self.paths.get_mut(&name) else {
                continue;
            };
            entry.config = config.clone();
            // Between a failure and its restart there is no actor: the restart takes the new
            // configuration.
            if let Some(actor) = &entry.actor {
                let _ = actor.send_message(PathMsg::Update(config));
            }
        }
        for config in diff.added {
            let name = config.name.to_string();
            info!(path = %name, action = "added", reason = why, "reload");
            self.invalid.remove(&config.name);
            self.args.directory.list(&name);
            self.paths.insert(
                name.clone(),
                RunningPath {
                    config,
                    actor: None,
                    since: Instant::now(),
                    backoff: Backoff::default(),
                },
            );
            self.start_path(myself, &name).await;
        }
        for (name, _) in &reconciled.kept {
            if !self.invalid_kept.contains(name) {
                warn!(path = %name, action = "rejected", reason = why,
                      "reload: the path's file has an error; it keeps its last good configuration");
            }
        }
        self.invalid_kept = reconciled.kept.into_iter().map(|(name, _)| name).collect();
        for name in self.paths.keys() {
            let error = file_errors.get(name).cloned();
            self.args
                .board
                .update_path(name, |status| status.config_error = error);
        }
        if !diff.unchanged.is_empty() {
            let unchanged: Vec<&str> = diff.unchanged.iter().map(PathName::as_str).collect();
            tracing::debug!(paths = ?unchanged, action = "unchanged", reason = why, "reload");
        }
        self.show_invalid(reconciled.failed);
    }

    fn show_errors(&mut self, errors: Vec<ConfigError>) {
        for err in errors.iter().filter(|err| !self.errors.contains(err)) {
            error!(file = %err.file.display(), line = ?err.line, column = ?err.column,
                   message = %err.message, "configuration error");
        }
        let problems = errors
            .iter()
            .map(|err| ConfigProblem {
                file: err.file.display().to_string(),
                line: err.line,
                column: err.column,
                message: err.message.clone(),
            })
            .collect();
        self.args.board.set_config_errors(problems);
        self.errors = errors;
    }

    /// Lists paths whose file is broken and that never ran as failed, with the error; drops
    /// the ones that were fixed or removed.
    fn show_invalid(&mut self, failed: Vec<(PathName, ConfigError)>) {
        let now: BTreeSet<PathName> = failed.iter().map(|(name, _)| name.clone()).collect();
        for gone in self.invalid.difference(&now) {
            if !self.paths.contains_key(gone.as_str()) {
                self.unlist(gone.as_str());
            }
        }
        for (name, err) in failed {
            if !self.invalid.contains(&name) {
                warn!(path = %name, action = "rejected", "reload: the path's file has an error");
            }
            // Listed, so that its viewers wait for it to be fixed.
            self.args.directory.list(name.as_str());
            self.args.board.set_path(crate::status::PathStatus::invalid(
                name.as_str(),
                err.to_string(),
            ));
        }
        self.invalid = now;
    }
}

pub(crate) struct RootSupervisor;

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
            invalid: BTreeSet::new(),
            errors: Vec::new(),
            invalid_kept: BTreeSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Reload(why) => state.reload(&myself, why).await,
            RootMsg::ReloadAndReply(why, reply) => {
                state.reload(&myself, why).await;
                let _ = reply.send(());
            }
            RootMsg::Ping(reply) => {
                let _ = reply.send(());
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
        state.args.sessions.close_all("the server is shutting down");
        state.paths.clear();
        myself
            .stop_children_and_wait(None, Some(Duration::from_millis(1500)))
            .await;
        info!("all paths and viewers stopped");
        Ok(())
    }
}
