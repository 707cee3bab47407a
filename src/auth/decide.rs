//! The one decision: may this client, with these credentials if any, do this action on this
//! path? Pure, so every rule is unit-tested here; HTTP (and later RTSP) only adapt to it.

use std::net::IpAddr;

use crate::config::{Action, AuthUser, Secret, UserName};

/// What the client asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// The action on this path (`read` of `/cam/`), or on no path (`api`, `metrics`).
    On(Action, Option<&'a str>),
    /// `read` on at least one path: the index, which lists what the client may watch.
    ReadSomePath,
}

/// A user name and password as the client sent them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Credentials<'a> {
    pub user: &'a str,
    pub pass: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// As this user (`None`: by a rule for anyone).
    Allow { user: Option<String> },
    /// Some user could, from this address: ask for (other) credentials (`401`).
    Unauthorized,
    /// Nobody may, from this address: credentials would not help (`403`), and why.
    Forbidden(String),
}

/// `::ffff:10.0.0.1` is the IPv4 client 10.0.0.1 on a dual-stack socket.
pub(crate) fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn admits(user: &AuthUser, ip: IpAddr) -> bool {
    user.ips.is_empty() || user.ips.iter().any(|net| net.contains(&ip))
}

fn grants(user: &AuthUser, target: Target<'_>) -> bool {
    user.permissions.iter().any(|permission| match target {
        Target::On(action, path) => {
            permission.action == action
                && match (&permission.path, path) {
                    (None, _) => true,
                    (Some(allowed), Some(path)) => allowed == path,
                    (Some(_), None) => false,
                }
        }
        Target::ReadSomePath => permission.action == Action::Read,
    })
}

/// Whether any rule applies to a client at `ip` at all: a client no rule mentions gets
/// nothing, not even the player's script files.
pub(crate) fn network_admits(users: &[AuthUser], ip: IpAddr) -> bool {
    let ip = unmapped(ip);
    users.iter().any(|user| admits(user, ip))
}

/// Decides `target` for a client at `ip`. `verify(secret, given)` compares a configured secret
/// with what the client sent (constant time; hashing is its business, so tests can count it).
pub(crate) fn decide(
    users: &[AuthUser],
    ip: IpAddr,
    target: Target<'_>,
    credentials: Option<Credentials<'_>>,
    verify: &mut dyn FnMut(&Secret, &str) -> bool,
) -> Decision {
    let ip = unmapped(ip);
    let mut credentials_could = false;
    for user in users {
        if !admits(user, ip) || !grants(user, target) {
            continue;
        }
        match &user.user {
            UserName::Any => return Decision::Allow { user: None },
            UserName::Named(name) => {
                credentials_could = true;
                let Some(given) = credentials else { continue };
                let pass_ok = match &user.pass {
                    Some(pass) => verify(pass, given.pass),
                    None => given.pass.is_empty(),
                };
                // Both are checked, so timing does not tell which was wrong.
                let name_ok = verify(name, given.user);
                if name_ok && pass_ok {
                    return Decision::Allow {
                        user: Some(given.user.to_string()),
                    };
                }
            }
        }
    }
    if credentials_could {
        return Decision::Unauthorized;
    }
    let what = match target {
        Target::On(Action::Read, Some(path)) => format!("read path '{path}'"),
        Target::On(action, Some(path)) => format!("{action} on path '{path}'"),
        Target::On(Action::Api, None) => "use the API".to_string(),
        Target::On(action, None) => format!("use {action}"),
        Target::ReadSomePath => "watch any path".to_string(),
    };
    Decision::Forbidden(format!(
        "clients at {ip} may not {what} (see authInternalUsers in camportal.yml)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Permission, default_auth_users, parse_ip_range};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn plain(s: &str) -> Secret {
        Secret::Plain(s.to_string())
    }

    fn verify_plain(secret: &Secret, given: &str) -> bool {
        matches!(secret, Secret::Plain(p) if p == given)
    }

    fn check(
        users: &[AuthUser],
        client: &str,
        target: Target<'_>,
        credentials: Option<(&str, &str)>,
    ) -> Decision {
        let credentials = credentials.map(|(user, pass)| Credentials { user, pass });
        decide(users, ip(client), target, credentials, &mut verify_plain)
    }

    const READ_CAM: Target<'static> = Target::On(Action::Read, Some("cam"));
    const API: Target<'static> = Target::On(Action::Api, None);

    #[test]
    fn by_default_private_networks_read_and_loopback_uses_the_api() {
        let users = default_auth_users();
        for client in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.9",
            "172.31.255.1",
            "192.168.1.20",
            "169.254.3.4",
            "fd00::5",
            "fe80::1",
            "::ffff:192.168.1.20",
        ] {
            assert_eq!(
                check(&users, client, READ_CAM, None),
                Decision::Allow { user: None },
                "{client}"
            );
        }
        for client in [
            "203.0.113.2",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            let Decision::Forbidden(reason) = check(&users, client, READ_CAM, None) else {
                panic!("{client} may read")
            };
            assert!(reason.contains("may not read path 'cam'"), "{reason}");
            assert!(!network_admits(&users, ip(client)), "{client}");
        }
        assert_eq!(
            check(&users, "127.0.0.1", API, None),
            Decision::Allow { user: None }
        );
        assert!(matches!(
            check(&users, "192.168.1.20", API, None),
            Decision::Forbidden(_)
        ));
        assert_eq!(
            check(&users, "::ffff:127.0.0.1", API, None),
            Decision::Allow { user: None }
        );
    }

    fn kiosk_users() -> Vec<AuthUser> {
        vec![
            AuthUser {
                user: UserName::Named(plain("kiosk")),
                pass: Some(plain("secret")),
                ips: vec![],
                permissions: vec![Permission {
                    action: Action::Read,
                    path: Some("lobby".into()),
                }],
            },
            AuthUser {
                user: UserName::Named(plain("admin")),
                pass: Some(plain("root")),
                ips: vec![parse_ip_range("10.0.0.0/8").unwrap()],
                permissions: vec![
                    Permission {
                        action: Action::Read,
                        path: None,
                    },
                    Permission {
                        action: Action::Api,
                        path: None,
                    },
                ],
            },
        ]
    }

    #[test]
    fn named_users_need_their_credentials() {
        let users = kiosk_users();
        let lobby = Target::On(Action::Read, Some("lobby"));
        assert_eq!(
            check(&users, "10.0.0.1", lobby, None),
            Decision::Unauthorized
        );
        assert_eq!(
            check(&users, "10.0.0.1", lobby, Some(("kiosk", "wrong"))),
            Decision::Unauthorized
        );
        assert_eq!(
            check(&users, "10.0.0.1", lobby, Some(("kiosk", "secret"))),
            Decision::Allow {
                user: Some("kiosk".into())
            }
        );
        // The kiosk may watch the lobby only; the admin may watch anything, from 10/8 only.
        assert_eq!(
            check(&users, "10.0.0.1", READ_CAM, Some(("kiosk", "secret"))),
            Decision::Unauthorized
        );
        assert_eq!(
            check(&users, "10.0.0.1", READ_CAM, Some(("admin", "root"))),
            Decision::Allow {
                user: Some("admin".into())
            }
        );
        assert!(matches!(
            check(&users, "192.168.0.1", READ_CAM, Some(("admin", "root"))),
            Decision::Forbidden(_)
        ));
        assert_eq!(
            check(&users, "192.168.0.1", Target::ReadSomePath, None),
            Decision::Unauthorized
        );
        assert_eq!(
            check(&users, "10.0.0.1", API, Some(("kiosk", "secret"))),
            Decision::Unauthorized
        );
    }

    #[test]
    fn both_name_and_password_are_always_compared() {
        let users = kiosk_users();
        let mut compared = Vec::new();
        let mut verify = |secret: &Secret, given: &str| {
            compared.push(given.to_string());
            verify_plain(secret, given)
        };
        let credentials = Credentials {
            user: "nobody",
            pass: "x",
        };
        let lobby = Target::On(Action::Read, Some("lobby"));
        decide(
            &users,
            ip("10.0.0.1"),
            lobby,
            Some(credentials),
            &mut verify,
        );
        assert_eq!(compared, ["x", "nobody", "x", "nobody"]);
    }

    #[test]
    fn mediamtx_only_actions_allow_nothing() {
        let users = vec![AuthUser {
            user: UserName::Any,
            pass: None,
            ips: vec![],
            permissions: vec![Permission {
                action: Action::Publish,
                path: None,
            }],
        }];
        assert!(matches!(
            check(&users, "127.0.0.1", READ_CAM, None),
            Decision::Forbidden(_)
        ));
    }
}
