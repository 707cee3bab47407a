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
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::Semaphore;

use crate::config::{AuthUser, Secret, UserName};

/// A wrong password is answered after a random delay in this range: guessing gets slow, and
/// the time taken does not tell what was wrong.
const FAILED_DELAY_MS: std::ops::Range<u64> = 150..450;

/// Waits the random delay every failed sign-in gets (HTTP and RTSP alike).
pub(crate) async fn delay_failure() {
    use rand::Rng;
    let delay = rand::rng().random_range(FAILED_DELAY_MS);
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
}

/// `(user, password)` of an `Authorization: Basic ...` value (HTTP and RTSP alike).
pub(crate) fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Remembered successful slow (argon2) checks; a kiosk asks many times a minute.
const MAX_REMEMBERED: usize = 256;
/// Argon2 checks running at once: each takes tens of milliseconds of a core, and a client
/// trying passwords must not take the whole box.
const SLOW_CHECKS_AT_ONCE: usize = 1;

/// The rules from `camportal.yml`; replaced as a whole when it is read again (SIGHUP).
struct Rules {
    users: Vec<AuthUser>,
    /// `webrtcAllowOrigins`: other origins whose pages may use WHEP (`*`: any).
    allow_origins: Vec<String>,
}

/// The rules in force and what it takes to apply them.
pub(crate) struct Access {
    rules: RwLock<Arc<Rules>>,
    /// Digests of `(hash, password)` pairs that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    slow_checks: Semaphore,
}

impl Access {
    pub(crate) fn new(users: Vec<AuthUser>, allow_origins: Vec<String>) -> Arc<Access> {
        Arc::new(Access {
            rules: RwLock::new(Arc::new(Rules {
                users,
                allow_origins,
            })),
            verified: Mutex::new(HashSet::new()),
            slow_checks: Semaphore::new(SLOW_CHECKS_AT_ONCE),
        })
    }

    /// Puts new rules in force for every request from now on.
    pub(crate) fn replace(&self, users: Vec<AuthUser>, allow_origins: Vec<String>) {
        let rules = Arc::new(Rules {
            users,
            allow_origins,
        });
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = rules;
        // A password that was right may not be any more.
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether any rule applies to `ip` at all (see [`decide::network_admits`]).
    pub(crate) fn network_admits(&self, ip: IpAddr) -> bool {
        decide::network_admits(&self.rules().users, ip)
    }

    /// The plain-text password of `user`, for RTSP Digest (which needs it); none for users
    /// whose password is stored hashed or who are not named.
    pub(crate) fn plain_password(&self, user: &str) -> Option<String> {
        self.rules()
            .users
            .iter()
            .find_map(|entry| match (&entry.user, &entry.pass) {
                (UserName::Named(Secret::Plain(name)), Some(Secret::Plain(pass)))
                    if name == user =>
                {
                    Some(pass.clone())
                }
                (UserName::Named(Secret::Plain(name)), None) if name == user => Some(String::new()),
                _ => None,
            })
    }

    /// Whether a page from `origin` (`http://host:port`) may use WHEP.
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        self.rules().allow_origins.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        })
    }

    /// Decides `target` for `ip`. Plain and `sha256:` passwords, and argon2 ones that verified
    /// before, are checked at once; an argon2 check not made before runs on the blocking pool,
    /// one at a time, so a client guessing passwords delays only other first sign-ins.
    pub(crate) async fn decide(
        self: &Arc<Self>,
        ip: IpAddr,
        target: Target<'_>,
        credentials: Option<Credentials<'_>>,
    ) -> Decision {
        let rules = self.rules();
        let mut slow_needed = false;
        let quick = decide::decide(
            &rules.users,
            ip,
            target,
            credentials,
            &mut |secret, given| {
                self.verify_quickly(secret, given).unwrap_or_else(|| {
                    slow_needed = true;
                    false
                })
            },
        );
        let (Some(credentials), true) = (credentials, slow_needed) else {
            return quick;
        };
        if matches!(quick, Decision::Allow { .. }) {
            return quick;
        }
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
                &rules.users,
                ip,
                owned.borrow(),
                Some(credentials),
                &mut |secret, given| access.verify(secret, given),
            )
        })
        .await;
        decided.unwrap_or(Decision::Unauthorized)
    }

    /// The answer if it is quick to get: `None` for an argon2 pair not verified before.
    fn verify_quickly(&self, secret: &Secret, given: &str) -> Option<bool> {
        let Secret::Argon2(phc) = secret else {
            return Some(password::verify(secret, given));
        };
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&remembered_key(phc, given));
        remembered.then_some(true)
    }

    fn verify(&self, secret: &Secret, given: &str) -> bool {
        if let Some(quick) = self.verify_quickly(secret, given) {
            return quick;
        }
        if !password::verify(secret, given) {
            return false;
        }
        if let Secret::Argon2(phc) = secret {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
            verified.insert(remembered_key(phc, given));
        }
        true
    }
}

fn remembered_key(phc: &str, given: &str) -> [u8; 32] {
    sha256(format!("{phc}\0{given}").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Permission, parse_secret};

    #[tokio::test]
    async fn argon2_is_verified_once_then_remembered() {
        // echo -n testpass | argon2 saltsalt -id -e
        let phc = "argon2:$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$6DlZ2SZ8wgr78bIgqStn1a2pGrFKUu3GocrmkBm/dHQ";
        let access = Access::new(
            vec![AuthUser {
                user: UserName::Named(parse_secret("admin").unwrap()),
                pass: Some(parse_secret(phc).unwrap()),
                ips: vec![],
                permissions: vec![Permission {
                    action: Action::Api,
                    path: None,
                }],
            }],
            vec![],
        );
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let api = Target::On(Action::Api, None);
        let with = |pass| Credentials {
            user: "admin",
            pass,
        };
        assert_eq!(
            access.decide(ip, api, Some(with("nope"))).await,
            Decision::Unauthorized
        );
        let Secret::Argon2(hash) = parse_secret(phc).unwrap() else {
            unreachable!()
        };
        assert_eq!(
            access.verify_quickly(&Secret::Argon2(hash.clone()), "testpass"),
            None
        );
        let allowed = access.decide(ip, api, Some(with("testpass"))).await;
        assert!(matches!(allowed, Decision::Allow { .. }), "{allowed:?}");
        assert_eq!(
            access.verify_quickly(&Secret::Argon2(hash), "testpass"),
            Some(true),
            "remembered"
        );
        assert_eq!(access.decide(ip, api, None).await, Decision::Unauthorized);
    }
}
