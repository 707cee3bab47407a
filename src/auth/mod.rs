//! Access control: who may watch which path, use the API or read metrics (`authInternalUsers`
//! in `camportal.yml`; by default private networks watch, loopback administers). One pure
//! decision ([`decide`]) used by every protocol; [`http`] adapts it to requests.

mod decide;
pub(crate) mod http;
mod password;

pub(crate) use decide::{Credentials, Decision, Target};
pub(crate) use password::sha256;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::config::{AuthUser, Secret};

/// Remembered successful slow (argon2) checks; a kiosk asks many times a minute.
const MAX_REMEMBERED: usize = 256;
/// Argon2 checks running at once: each takes tens of milliseconds of a core, and a client
/// trying passwords must not take the whole box.
const SLOW_CHECKS_AT_ONCE: usize = 1;

/// The rules in force and what it takes to apply them.
pub(crate) struct Access {
    users: Vec<AuthUser>,
    /// Digests of `(hash, password)` pairs that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    slow_checks: Semaphore,
}

impl Access {
    pub(crate) fn new(users: Vec<AuthUser>) -> Arc<Access> {
        Arc::new(Access {
            users,
            verified: Mutex::new(HashSet::new()),
            slow_checks: Semaphore::new(SLOW_CHECKS_AT_ONCE),
        })
    }

    /// Whether any rule applies to `ip` at all (see [`decide::network_admits`]).
    pub(crate) fn network_admits(&self, ip: IpAddr) -> bool {
        decide::network_admits(&self.users, ip)
    }

    /// Decides `target` for `ip`; slow password checks run on the blocking pool, one at a time.
    pub(crate) async fn decide(
        self: &Arc<Self>,
        ip: IpAddr,
        target: Target<'_>,
        credentials: Option<Credentials<'_>>,
    ) -> Decision {
        let Some(credentials) = credentials else {
            return decide::decide(&self.users, ip, target, None, &mut |_, _| false);
        };
        let Ok(_permit) = self.slow_checks.acquire().await else {
            return Decision::Unauthorized;
        };
        let (access, user, pass) = (
            Arc::clone(self),
            credentials.user.to_string(),
            credentials.pass.to_string(),
        );
        let owned = OwnedTarget::from(target);
        let decided = tokio::task::spawn_blocking(move || {
            let credentials = Credentials {
                user: &user,
                pass: &pass,
            };
            decide::decide(
                &access.users,
                ip,
                owned.borrow(),
                Some(credentials),
                &mut |secret, given| access.verify(secret, given),
            )
        })
        .await;
        decided.unwrap_or(Decision::Unauthorized)
    }

    fn verify(&self, secret: &Secret, given: &str) -> bool {
        let Secret::Argon2(phc) = secret else {
            return password::verify(secret, given);
        };
        let key = sha256(format!("{phc}\0{given}").as_bytes());
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.contains(&key) {
            return true;
        }
        drop(verified);
        if !password::verify(secret, given) {
            return false;
        }
        verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(key);
        true
    }
}

/// A [`Target`] that can move to the blocking pool.
enum OwnedTarget {
    On(crate::config::Action, Option<String>),
    ReadSomePath,
}

impl From<Target<'_>> for OwnedTarget {
    fn from(target: Target<'_>) -> Self {
        match target {
            Target::On(action, path) => OwnedTarget::On(action, path.map(str::to_string)),
            Target::ReadSomePath => OwnedTarget::ReadSomePath,
        }
    }
}

impl OwnedTarget {
    fn borrow(&self) -> Target<'_> {
        match self {
            OwnedTarget::On(action, path) => Target::On(*action, path.as_deref()),
            OwnedTarget::ReadSomePath => Target::ReadSomePath,
        }
    }
}
