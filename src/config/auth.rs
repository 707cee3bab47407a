//! Who may do what: `authInternalUsers` in `camportal.yml`, in MediaMTX's shape so a MediaMTX
//! configuration carries over. The decision itself is `crate::auth`; this is the model and its
//! parsing, with errors that never quote a password.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// One entry of `authInternalUsers`: a user (or anyone), from some addresses, may do some
/// actions on some paths.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUser {
    /// `any` (no credentials needed) or a user name, plain or hashed like `pass`.
    pub user: UserName,
    /// Ignored for `user: any`.
    #[serde(default)]
    pub pass: Option<Secret>,
    /// Client addresses or CIDR ranges this entry applies to; empty means any address.
    #[serde(default, deserialize_with = "deserialize_ips")]
    pub ips: Vec<IpNet>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserName {
    Any,
    Named(Secret),
}

/// A password (or user name) as written: plain text, `sha256:<base64 of the digest>` or
/// `argon2:<PHC string>`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Sha256([u8; 32]),
    /// A PHC string (`$argon2id$v=19$m=...`), checked to parse when the file is read.
    Argon2(String),
}

/// Never shows the secret itself: configurations get logged and printed.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(..)"),
            Secret::Sha256(_) => f.write_str("Sha256(..)"),
            Secret::Argon2(_) => f.write_str("Argon2(..)"),
        }
    }
}

/// `{action, path}`: `path` empty or missing means every path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub action: Action,
    #[serde(default, deserialize_with = "deserialize_permission_path")]
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Watch a path: the player page, WHEP, and every other output of a path.
    Read,
    /// `/api/...`.
    Api,
    /// The Prometheus endpoint.
    Metrics,
    /// MediaMTX actions camportal has nothing for; accepted so a MediaMTX list carries over,
    /// and they allow nothing here.
    Publish,
    Playback,
    Pprof,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Api => "api",
            Action::Metrics => "metrics",
            Action::Publish => "publish",
            Action::Playback => "playback",
            Action::Pprof => "pprof",
        })
    }
}

/// The ranges a private network uses: loopback, RFC 1918, link-local, unique local.
pub const PRIVATE_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// Loopback only.
pub const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];

/// What applies when `authInternalUsers` is not set: anyone on a private network may watch,
/// and only this machine may use the API and metrics. (Written out in `camportal.example.yml`.)
pub fn default_auth_users() -> Vec<AuthUser> {
    let nets = |list: &[&str]| {
        list.iter()
            .map(|net| net.parse().expect("the built-in ranges are valid"))
            .collect()
    };
    let all = |action| Permission { action, path: None };
    vec![
        AuthUser {
            user: UserName::Any,
            pass: None,
            ips: nets(PRIVATE_NETWORKS),
            permissions: vec![all(Action::Read)],
        },
        AuthUser {
            user: UserName::Any,
            pass: None,
            ips: nets(LOOPBACK),
            permissions: vec![all(Action::Api), all(Action::Metrics)],
        },
    ]
}

/// Parses `plain`, `sha256:<base64>` or `argon2:<PHC>`; the error never contains `text`.
pub fn parse_secret(text: &str) -> Result<Secret, String> {
    use base64::Engine;
    if let Some(encoded) = text.strip_prefix("sha256:") {
        let digest = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "a `sha256:` value must be followed by base64".to_string())?;
        let digest: [u8; 32] = digest.try_into().map_err(|_| {
            "a `sha256:` value must be the base64 of a 32-byte SHA-256 digest".to_string()
        })?;
        Ok(Secret::Sha256(digest))
    } else if let Some(phc) = text.strip_prefix("argon2:") {
        let parsed = argon2::PasswordHash::new(phc)
            .map_err(|err| format!("an `argon2:` value must be a PHC string ({err})"))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err("an `argon2:` value must name an argon2 algorithm".to_string());
        }
        Ok(Secret::Argon2(phc.to_string()))
    } else {
        Ok(Secret::Plain(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a password: plain, `sha256:<base64>` or `argon2:<PHC string>`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                parse_secret(v).map_err(E::custom)
            }
            // `pass: 1234` is a number in YAML; it is still a password.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::Plain(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::Plain(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UserName, D::Error> {
        let secret = Secret::deserialize(d)?;
        match &secret {
            Secret::Plain(name) if name == "any" => Ok(UserName::Any),
            Secret::Plain(name) if name.is_empty() || name.contains(':') => Err(de::Error::custom(
                "a user name must not be empty or contain `:` (use `any` for anyone)",
            )),
            _ => Ok(UserName::Named(secret)),
        }
    }
}

/// `10.0.0.5` (one address) or `10.0.0.0/8`.
pub fn parse_ip_range(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("`{text}` is not an IP address or a CIDR range like 10.0.0.0/8"))
}

fn deserialize_ips<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    struct Range(IpNet);
    impl<'de> Deserialize<'de> for Range {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Range, D::Error> {
            let text = String::deserialize(d)?;
            parse_ip_range(&text).map(Range).map_err(de::Error::custom)
        }
    }
    let ranges = Option::<Vec<Range>>::deserialize(d)?;
    Ok(ranges
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.0)
        .collect())
}

fn deserialize_permission_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let path = Option::<String>::deserialize(d)?;
    match path {
        None => Ok(None),
        Some(path) if path.is_empty() => Ok(None),
        Some(path) if path.starts_with('~') => Err(de::Error::custom(
            "regular expressions (`~...`) in `path` are not supported: list each path",
        )),
        Some(path) => super::PathName::new(&path)
            .map(|name| Some(name.as_str().to_string()))
            .map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_and_never_show() {
        assert_eq!(
            parse_secret("hunter2").unwrap(),
            Secret::Plain("hunter2".into())
        );
        // echo -n testpass | openssl dgst -binary -sha256 | openssl base64
        let Secret::Sha256(digest) =
            parse_secret("sha256:E9JJ8stBJ7QM+nV4ZoUCeHk/gU3tPFh/5YieiJp6n2w=").unwrap()
        else {
            panic!("sha256")
        };
        assert_eq!(digest[0], 0x13);
        let e = parse_secret("sha256:c2hvcnQ=").unwrap_err();
        assert!(e.contains("32-byte"), "{e}");
        let e = parse_secret("argon2:not-a-phc-hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_secret("argon2:$argon2id$v=19$m=4096,t=3,p=1$MTIzNDU2Nzg$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo").is_ok());
        assert_eq!(
            format!("{:?}", Secret::Plain("hunter2".into())),
            "Plain(..)"
        );
    }

    #[test]
    fn ip_ranges() {
        assert_eq!(
            parse_ip_range("10.0.0.5").unwrap().to_string(),
            "10.0.0.5/32"
        );
        assert_eq!(
            parse_ip_range("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_ip_range("::1").unwrap().to_string(), "::1/128");
        assert!(parse_ip_range("10.0.0.0/33").is_err());
        assert!(parse_ip_range("lan").is_err());
    }

    #[test]
    fn the_default_is_private_networks_and_loopback_api() {
        let users = default_auth_users();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].ips.len(), PRIVATE_NETWORKS.len());
        assert_eq!(users[1].permissions.len(), 2);
    }
}
