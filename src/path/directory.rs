//! Where viewers find the broadcaster of their path. The root owns the directory and lists in it
//! every path it lists in the status (`list`, `unlist`); a path's broadcaster steps in when it
//! starts and out when it stops. A viewer watches its path's entry, so it rejoins a restarted
//! path the moment the new broadcaster is there, and learns at once that a removed path is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ractor::ActorId;
use tokio::sync::watch;

use super::broadcaster::Joinable;

/// A path as its viewers see it.
#[derive(Clone)]
pub(crate) enum Entry {
    /// Configured, but no broadcaster to join: starting, restarting, or failed.
    Away,
    /// Its broadcaster takes joins.
    Running(Joinable),
    /// Gone from the configuration: it is not coming back.
    Removed,
}

#[derive(Clone, Default)]
pub(crate) struct Directory {
    entries: Arc<Mutex<HashMap<String, watch::Sender<Entry>>>>,
}

impl Directory {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Entry>>> {
        // Each operation is one map access: a panic cannot leave it half done.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The root lists a path (kept as it is if it is listed already).
    pub(crate) fn list(&self, path: &str) {
        self.lock()
            .entry(path.to_owned())
            .or_insert_with(|| watch::Sender::new(Entry::Away));
    }

    /// The root unlists a path that left the configuration; its watchers are told.
    pub(crate) fn unlist(&self, path: &str) {
        if let Some(entry) = self.lock().remove(path) {
            entry.send_replace(Entry::Removed);
        }
    }

    /// A path's broadcaster has started.
    pub(crate) fn enter(&self, path: &str, broadcaster: Joinable) {
        if let Some(entry) = self.lock().get(path) {
            entry.send_replace(Entry::Running(broadcaster));
        }
    }

    /// A path's broadcaster has stopped (unless a newer one has already stepped in).
    pub(crate) fn leave(&self, path: &str, broadcaster: ActorId) {
        if let Some(entry) = self.lock().get(path) {
            entry.send_if_modified(|current| match current {
                Entry::Running(running) if running.actor.get_id() == broadcaster => {
                    *current = Entry::Away;
                    true
                }
                _ => false,
            });
        }
    }

    /// Watches a path's entry; an unlisted path reads as removed.
    pub(crate) fn watch(&self, path: &str) -> watch::Receiver<Entry> {
        match self.lock().get(path) {
            Some(entry) => entry.subscribe(),
            None => watch::channel(Entry::Removed).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlisted_path_reads_as_removed() {
        let directory = Directory::default();
        assert!(matches!(*directory.watch("cam").borrow(), Entry::Removed));
        directory.list("cam");
        let watch = directory.watch("cam");
        assert!(matches!(*watch.borrow(), Entry::Away));
        directory.unlist("cam");
        assert!(matches!(*watch.borrow(), Entry::Removed));
        assert!(matches!(*directory.watch("cam").borrow(), Entry::Removed));
    }
}
