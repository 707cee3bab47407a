//! The WHEP sessions that exist now: session id → its path and viewer actor. DELETE looks a
//! session up here, the root closes a removed path's sessions through it, and a viewer's
//! session is forgotten when the viewer stops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ractor::ActorRef;

use super::estimate::Estimate;
use super::viewer::ViewerMsg;
use crate::metrics::Traffic;

#[derive(Clone)]
pub(crate) struct Session {
    pub path: String,
    pub viewer: ActorRef<ViewerMsg>,
    /// Who POSTed the offer.
    pub client: IpAddr,
    /// Set by the viewer once ICE and DTLS are done; until then the session is pending.
    pub connected: Arc<AtomicBool>,
    /// What the viewer sent (`/metrics`).
    pub sent: Arc<Traffic>,
    /// Its bandwidth estimate, RTT and loss (`/api/viewers`).
    pub estimate: Arc<Estimate>,
}

/// Sessions not yet connected: from one client address, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub from_client: usize,
    pub total: usize,
}

#[derive(Clone, Default)]
pub(crate) struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: String, session: Session) {
        self.lock().insert(id, session);
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn entries(&self) -> Vec<(String, Session)> {
        self.lock()
            .iter()
            .map(|(id, session)| (id.clone(), session.clone()))
            .collect()
    }

    /// The sessions still connecting, from `client` and in all.
    pub(crate) fn pending(&self, client: IpAddr) -> Pending {
        let sessions = self.lock();
        let mut pending = Pending {
            from_client: 0,
            total: 0,
        };
        for session in sessions.values() {
            if !session.connected.load(Ordering::Relaxed) {
                pending.total += 1;
                pending.from_client += usize::from(session.client == client);
            }
        }
        pending
    }

    /// Closes the sessions of one path, telling their viewers why.
    pub(crate) fn close_path(&self, path: &str, reason: &str) {
        for session in self.lock().values().filter(|s| s.path == path) {
            let _ = session
                .viewer
                .send_message(ViewerMsg::Close(reason.to_owned()));
        }
    }

    /// Closes every session (shutdown).
    pub(crate) fn close_all(&self, reason: &str) {
        for session in self.lock().values() {
            let _ = session
                .viewer
                .send_message(ViewerMsg::Close(reason.to_owned()));
        }
    }
}
