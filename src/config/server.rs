//! The optional global server file (`camportal.yml`). Keys carry MediaMTX's names where they
//! mean the same, so MediaMTX users can carry their settings over.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::auth::{AuthUser, default_auth_users};
use super::error::ConfigError;
use super::limits::{check_nesting, read_capped};
use super::units::deserialize_flag;

/// Daemon-wide settings. Every key is optional; see `Default`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address: WHEP, player, API.
    #[serde(rename = "webrtcAddress", deserialize_with = "deserialize_address")]
    pub http_address: SocketAddr,
    /// The single UDP port all WebRTC viewers share.
    #[serde(
        rename = "webrtcLocalUDPAddress",
        deserialize_with = "deserialize_address"
    )]
    pub udp_address: SocketAddr,
    /// Extra IPs/hostnames advertised as ICE host candidates (NAT 1:1).
    #[serde(
        rename = "webrtcAdditionalHosts",
        deserialize_with = "deserialize_hosts"
    )]
    pub additional_hosts: Vec<String>,
    #[serde(rename = "webrtcICEServers2")]
    pub ice_servers: Vec<IceServer>,
    /// WHEP sessions not yet connected (ICE and DTLS) that one client address may hold; more
    /// offers get `503`. Each costs a peer connection until it connects or times out.
    #[serde(rename = "webrtcPendingSessionsPerAddress")]
    pub pending_sessions_per_address: usize,
    /// The same, all clients together.
    #[serde(rename = "webrtcPendingSessions")]
    pub pending_sessions: usize,
    /// One of `error`, `warn`, `info`, `debug`, `trace`.
    #[serde(rename = "logLevel", deserialize_with = "deserialize_log_level")]
    pub log_level: String,
    /// Who may watch, use the API and read metrics; see `crate::auth`. Setting it replaces
    /// the default (private networks watch, loopback administers) as a whole.
    #[serde(rename = "authInternalUsers")]
    pub auth_users: Vec<AuthUser>,
    /// Origins (`http://host:port`) of other sites' pages that may use WHEP; `*` is any.
    /// Everything else refuses requests from other origins.
    #[serde(rename = "webrtcAllowOrigins")]
    pub allow_origins: Vec<String>,
    /// Serve HTTPS instead of HTTP on `webrtcAddress`.
    #[serde(rename = "webrtcEncryption", deserialize_with = "deserialize_flag")]
    pub encryption: bool,
    /// PEM private key; relative to the server file's directory. Made with a self-signed
    /// certificate if neither file exists.
    #[serde(rename = "webrtcServerKey")]
    pub server_key: PathBuf,
    /// PEM certificate chain; relative to the server file's directory.
    #[serde(rename = "webrtcServerCert")]
    pub server_cert: PathBuf,
    /// Serve RTSP (`rtsp://HOST:8554/<path>`).
    #[serde(rename = "rtsp", deserialize_with = "deserialize_flag")]
    pub rtsp: bool,
    #[serde(rename = "rtspAddress", deserialize_with = "deserialize_address")]
    pub rtsp_address: SocketAddr,
    /// How RTSP readers may get RTP: `tcp` (interleaved), `udp` (to their ports).
    #[serde(rename = "rtspTransports")]
    pub rtsp_transports: Vec<RtspTransport>,
    /// The UDP port RTP to RTSP readers comes from.
    #[serde(rename = "rtpAddress", deserialize_with = "deserialize_address")]
    pub rtp_address: SocketAddr,
    /// The UDP port RTCP to and from RTSP readers uses.
    #[serde(rename = "rtcpAddress", deserialize_with = "deserialize_address")]
    pub rtcp_address: SocketAddr,
    /// JPEG quality (1..=100) of snapshots and MJPEG streams.
    #[serde(rename = "jpegQuality", deserialize_with = "deserialize_quality")]
    pub jpeg_quality: u8,
    /// Serve Prometheus metrics (`http://HOST:9998/metrics`).
    #[serde(rename = "metrics", deserialize_with = "deserialize_flag")]
    pub metrics: bool,
    #[serde(rename = "metricsAddress", deserialize_with = "deserialize_address")]
    pub metrics_address: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8889),
            udp_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8189),
            additional_hosts: Vec::new(),
            ice_servers: Vec::new(),
            pending_sessions_per_address: 20,
            pending_sessions: 200,
            log_level: "info".to_string(),
            auth_users: default_auth_users(),
            allow_origins: vec!["*".to_string()],
            encryption: false,
            server_key: PathBuf::from("server.key"),
            server_cert: PathBuf::from("server.crt"),
            jpeg_quality: 80,
            rtsp: true,
            rtsp_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8554),
            rtsp_transports: vec![RtspTransport::Tcp, RtspTransport::Udp],
            rtp_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8000),
            rtcp_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8001),
            metrics: false,
            metrics_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9998),
        }
    }
}

impl ServerConfig {
    /// Makes the key and certificate paths relative to the directory of the server `file`.
    fn beside(mut self, file: &Path) -> ServerConfig {
        let dir = file.parent().unwrap_or(Path::new(""));
        self.server_key = dir.join(&self.server_key);
        self.server_cert = dir.join(&self.server_cert);
        self
    }
}

/// An RTSP transport (`rtspTransports`). MediaMTX's `multicast` is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

/// A STUN or TURN server handed to browsers and used by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URL.
    #[serde(deserialize_with = "deserialize_ice_url")]
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Reads the server file. A missing file means all defaults; an empty one too. At most
/// [`MAX_FILE_BYTES`](super::limits::MAX_FILE_BYTES) are read.
pub fn load_server_file(file: &Path) -> Result<ServerConfig, ConfigError> {
    let opened = match std::fs::File::open(file) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(file = %file.display(), "no server file, using defaults");
            return Ok(ServerConfig::default().beside(file));
        }
        Err(e) => return Err(ConfigError::new(file, format!("cannot read: {e}"))),
    };
    let text = read_capped(file, opened)?;
    parse_server_file(file, &text)
}

/// Parses the text of the server file `file` (named in errors only).
pub(super) fn parse_server_file(file: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
    check_nesting(file, text)?;
    let parsed: Option<ServerConfig> =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(file, &e))?;
    Ok(parsed.unwrap_or_default().beside(file))
}

/// Parses a listen address: `:PORT` (all IPv4 interfaces), `HOST:PORT` with an IP address or
/// `localhost` as HOST, or `[IPv6]:PORT`.
pub fn parse_address(s: &str) -> Result<SocketAddr, String> {
    const FORMS: &str = "expected `:PORT`, `IP:PORT` or `[IPv6]:PORT`";
    let (host, port) = s.rsplit_once(':').ok_or_else(|| match s.parse::<u16>() {
        Ok(_) => format!("invalid address `{s}`: {FORMS} (did you mean `:{s}`?)"),
        Err(_) => format!("invalid address `{s}`: {FORMS}"),
    })?;
    let port: u16 = port.parse().map_err(|_| {
        format!("invalid address `{s}`: port `{port}` is not a number in 0..=65535")
    })?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse()
            .map_err(|_| format!("invalid address `{s}`: `{v6}` is not an IPv6 address"))?
    } else if host.contains(':') {
        return Err(format!(
            "invalid address `{s}`: write IPv6 addresses in brackets, e.g. `[::1]:{port}`"
        ));
    } else {
        host.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
            format!(
                "invalid address `{s}`: `{host}` is not an IP address (host names other than \
                 `localhost` are not supported for listening)"
            )
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

/// Checks a log level (`error`, `warn`, `info`, `debug`, `trace`); for CLI overrides.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    if LOG_LEVELS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid log level `{s}`: expected one of {}",
            LOG_LEVELS.join(", ")
        ))
    }
}

fn deserialize_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address like \":8889\", \"127.0.0.1:8889\" or \"[::]:8889\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            parse_address(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V)
}

fn deserialize_quality<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let quality = u64::deserialize(d)?;
    match u8::try_from(quality) {
        Ok(quality @ 1..=100) => Ok(quality),
        _ => Err(de::Error::custom(format!(
            "{quality} is out of range 1..=100"
        ))),
    }
}

fn deserialize_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "one of {}", LOG_LEVELS.join(", "))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if LOG_LEVELS.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(E::unknown_variant(v, LOG_LEVELS))
            }
        }
    }
    d.deserialize_str(V)
}

fn deserialize_ice_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a `stun:`, `turn:` or `turns:` URL")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            let scheme_ok = ["stun:", "turn:", "turns:"]
                .iter()
                .any(|scheme| v.len() > scheme.len() && v.starts_with(scheme));
            if scheme_ok {
                Ok(v.to_string())
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
    }
    d.deserialize_str(V)
}

/// Each entry must be a plausible IP or host name; checked per entry so the error points at it.
fn deserialize_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Host(String);
    impl<'de> Deserialize<'de> for Host {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Host, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Host;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an IP address or host name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Host, E> {
                    let ok = !v.is_empty()
                        && (v.parse::<IpAddr>().is_ok()
                            || v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
                    if ok {
                        Ok(Host(v.to_string()))
                    } else {
                        Err(E::invalid_value(de::Unexpected::Str(v), &self))
                    }
                }
            }
            d.deserialize_str(V)
        }
    }
    let hosts = Vec::<Host>::deserialize(d)?;
    Ok(hosts.into_iter().map(|h| h.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        parse_server_file(Path::new("camportal.yml"), text)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address(":8889"), Ok(addr("0.0.0.0:8889")));
        assert_eq!(parse_address("127.0.0.1:80"), Ok(addr("127.0.0.1:80")));
        assert_eq!(parse_address("localhost:1"), Ok(addr("127.0.0.1:1")));
        assert_eq!(parse_address("[::]:8189"), Ok(addr("[::]:8189")));
        assert_eq!(parse_address("[::1]:0"), Ok(addr("[::1]:0")));
        assert_eq!(
            parse_address("8889").unwrap_err(),
            "invalid address `8889`: expected `:PORT`, `IP:PORT` or `[IPv6]:PORT` (did you mean `:8889`?)"
        );
        for bad in [
            "",
            ":",
            ":x",
            ":65536",
            "1.2.3:80",
            "::1:80",
            "[::1]",
            "[x]:1",
            "example.com:80",
            "1.2.3.4",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse_address("example.com:80")
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn defaults() {
        let d = ServerConfig::default();
        assert_eq!(d.http_address, addr("0.0.0.0:8889"));
        assert_eq!(d.udp_address, addr("0.0.0.0:8189"));
        assert!(d.additional_hosts.is_empty() && d.ice_servers.is_empty());
        assert_eq!(d.log_level, "info");
        assert_eq!(parse("").unwrap(), d);
        assert_eq!(parse("# all commented out\n").unwrap(), d);
        assert_eq!(parse("{}").unwrap(), d);
        let missing =
            std::env::temp_dir().join(format!("camportal-no-such-file-{}.yml", std::process::id()));
        let beside_missing = load_server_file(&missing).unwrap();
        assert_eq!(
            beside_missing.server_key,
            std::env::temp_dir().join("server.key")
        );
    }

    #[test]
    fn full_file() {
        let c = parse(
            "webrtcAddress: :8889\nwebrtcLocalUDPAddress: 127.0.0.1:9000\n\
             webrtcAdditionalHosts: [192.168.1.5, cam.example.org]\n\
             webrtcICEServers2:\n  - url: stun:stun.l.google.com:19302\n  \
             - url: turn:turn.example.org:3478\n    username: u\n    password: p\n\
             logLevel: debug\n",
        )
        .unwrap();
        assert_eq!(c.http_address, addr("0.0.0.0:8889"));
        assert_eq!(c.udp_address, addr("127.0.0.1:9000"));
        assert_eq!(c.additional_hosts, ["192.168.1.5", "cam.example.org"]);
        assert_eq!(
            c.ice_servers,
            [
                IceServer {
                    url: "stun:stun.l.google.com:19302".into(),
                    username: None,
                    password: None
                },
                IceServer {
                    url: "turn:turn.example.org:3478".into(),
                    username: Some("u".into()),
                    password: Some("p".into())
                }
            ]
        );
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn errors_carry_lines() {
        let e = parse("logLevel: info\nwebrtcAddress: 8889\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(16)));
        assert!(
            e.message
                .starts_with("webrtcAddress: invalid address `8889`"),
            "{e}"
        );

        let e = parse("webrtcAddres: :8889\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("unknown field `webrtcAddres`"), "{e}");

        let e = parse("logLevel: verbose\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "camportal.yml:1:11: logLevel: unknown variant `verbose`, expected one of `error`, \
             `warn`, `info`, `debug`, `trace`"
        );

        let e = parse("webrtcICEServers2:\n  - url: stun:x\n  - url: http://x\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("webrtcICEServers2[1].url"), "{e}");

        let e = parse("webrtcICEServers2:\n  - url: stun:x\n    clientOnly: true\n").unwrap_err();
        assert_eq!(e.line, Some(3));

        let e = parse("webrtcAdditionalHosts:\n  - 10.0.0.1\n  - 'bad host'\n").unwrap_err();
        assert_eq!(e.line, Some(3));

        let e = parse("webrtcLocalUDPAddress: 8189\n").unwrap_err();
        assert!(e.message.contains("did you mean `:8189`"), "{e}");
    }

    #[test]
    fn users_errors_point_at_the_line_and_never_quote_a_password() {
        let e =
            parse("authInternalUsers:\n- user: a\n  pass: 'argon2:hunter2'\n  permissions: []\n")
                .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse("authInternalUsers:\n- user: a\n  permissions:\n  - action: watch\n")
            .unwrap_err();
        assert!(e.message.contains("unknown variant `watch`"), "{e}");
        let e = parse("authInternalUsers:\n- user: a\n  ips: [10.0.0.0/40]\n").unwrap_err();
        assert!(
            e.message.contains("not an IP address or a CIDR range"),
            "{e}"
        );
        let e = parse(
            "authInternalUsers:\n- user: a\n  permissions:\n  - {action: read, path: '~^c'}\n",
        )
        .unwrap_err();
        assert!(e.message.contains("regular expressions"), "{e}");
        // MediaMTX's own list (with publish, playback, pprof) carries over.
        let c = parse(
            "authInternalUsers:\n- user: any\n  pass:\n  ips: []\n  permissions:\n  \
             - action: publish\n    path:\n  - action: read\n    path:\n  \
             - action: playback\n    path:\n- user: any\n  pass:\n  ips: ['127.0.0.1', '::1']\n  \
             permissions:\n  - action: api\n  - action: metrics\n  - action: pprof\n",
        )
        .unwrap();
        assert_eq!(c.auth_users.len(), 2);
    }

    #[test]
    fn flags_are_yes_or_no_as_in_mediamtx() {
        assert!(parse("webrtcEncryption: yes\n").unwrap().encryption);
        assert!(parse("webrtcEncryption: true\n").unwrap().encryption);
        assert!(!parse("webrtcEncryption: no\n").unwrap().encryption);
        let e = parse("webrtcEncryption: maybe\n").unwrap_err();
        assert!(e.message.contains("expected yes or no"), "{e}");
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("trace"), Ok("trace".to_string()));
        assert_eq!(
            parse_log_level("loud").unwrap_err(),
            "invalid log level `loud`: expected one of error, warn, info, debug, trace"
        );
    }

    #[test]
    fn the_packaged_file_is_the_default_but_for_the_certificate_place() {
        let packaged = parse(include_str!("../../debian/camportal.yml")).unwrap();
        let expected = ServerConfig {
            server_key: PathBuf::from("/var/lib/camportal/server.key"),
            server_cert: PathBuf::from("/var/lib/camportal/server.crt"),
            ..ServerConfig::default()
        };
        assert_eq!(packaged, expected);
    }

    #[test]
    fn shipped_example_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../camportal.example.yml");
        assert_eq!(parse(text).unwrap(), ServerConfig::default());
        // The commented-out alternatives must be valid too: uncomment them, drop the defaults.
        let uncommented: Vec<&str> = text
            .lines()
            .filter(|l| !l.ends_with(": []"))
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with("webrtc") || rest.starts_with("  ") => rest,
                _ => l,
            })
            .collect();
        let uncommented = uncommented.join("\n");
        let c = parse(&uncommented).unwrap();
        assert_eq!(c.additional_hosts.len(), 2);
        assert_eq!(c.auth_users.len(), 3, "the kiosk example joins the list");
        assert!(matches!(
            c.auth_users[2].pass,
            Some(super::super::Secret::Sha256(_))
        ));
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.ice_servers[1].password.as_deref(), Some("secret"));
    }

    #[test]
    fn read_errors_other_than_missing_are_errors() {
        // A directory cannot be read as a file.
        let e = load_server_file(&std::env::temp_dir()).unwrap_err();
        assert!(e.message.starts_with("cannot read"), "{e}");
    }
}
