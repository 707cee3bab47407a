//! The WHEP sessions that exist now: session id → its path and viewer actor. DELETE looks a
//! session up here; a viewer removes itself when it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ractor::ActorRef;

use crate::viewer::ViewerMsg;

#[derive(Clone)]
pub struct Session {
    pub path: String,
    pub viewer: ActorRef<ViewerMsg>,
}

#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, id: String, session: Session) {
        self.lock().insert(id, session);
    }

    pub fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).cloned()
    }

    pub fn entries(&self) -> Vec<(String, Session)> {
        self.lock()
            .iter()
            .map(|(id, session)| (id.clone(), session.clone()))
            .collect()
    }

    pub fn all(&self) -> Vec<Session> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
