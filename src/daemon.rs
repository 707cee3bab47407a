//! Starting and stopping the whole daemon: used by `main` and, in-process, by the tests (which
//! bind port 0 and read the real addresses back).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use crate::auth::Access;
use crate::config::{RtspTransport, ServerConfig};
use crate::http::CertFiles;
use crate::path::Directory;
use crate::rtsp::{Allowed, Rtsp, UdpPorts};
use crate::status::StatusBoard;
use crate::supervisor::{RootArgs, RootMsg, RootSupervisor};
use crate::watcher::{ConfigWatcher, WatcherArgs, WatcherMsg};
use crate::whep::addresses;
use crate::whep::peer::IceAddresses;
use crate::whep::udp_mux::UdpMux;
use crate::whep::{PendingLimits, Sessions, Whep};

pub struct Settings {
    pub config_dir: PathBuf,
    pub server: ServerConfig,
}

/// The daemon's log filter when `RUST_LOG` does not say otherwise: its own events at `level`,
/// its libraries' only when they warn, and the WebRTC stack's (`rtc_*`) only errors — it warns
/// about what peers send (an unknown DTLS extension on every browser's join), which no
/// operator can act on.
pub fn default_log_filter(level: &str) -> String {
    format!("warn,rtc=error,camportal={level}")
}

/// A running daemon.
pub struct Daemon {
    pub http_addr: SocketAddr,
    /// Where RTSP listens (`rtspAddress`), unless `rtsp: no`.
    pub rtsp_addr: Option<SocketAddr>,
    rtsp: Option<RtspServer>,
    /// Where Prometheus metrics are served (`metricsAddress`), with `metrics: yes`.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<crate::metrics::MetricsServer>,
    /// `http` or `https` (`webrtcEncryption`).
    pub scheme: &'static str,
    pub udp_addr: SocketAddr,
    pub board: StatusBoard,
    root: ActorRef<RootMsg>,
    watcher: ActorRef<WatcherMsg>,
    http_stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
    trimmer: JoinHandle<()>,
    /// systemd's status and watchdog, when run as a service.
    service: Option<JoinHandle<()>>,
    access: Arc<Access>,
    /// The server settings in force.
    server: std::sync::Mutex<ServerConfig>,
}

/// The running RTSP server.
struct RtspServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_rtsp(
    server: &ServerConfig,
    directory: Directory,
    access: Arc<Access>,
) -> anyhow::Result<RtspServer> {
    let listener = tokio::net::TcpListener::bind(server.rtsp_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen for RTSP on {} (rtspAddress)",
                server.rtsp_address
            )
        })?;
    let addr = listener.local_addr()?;
    let allowed = Allowed {
        tcp: server.rtsp_transports.contains(&RtspTransport::Tcp),
        udp: server.rtsp_transports.contains(&RtspTransport::Udp),
    };
    let udp = if allowed.udp {
        Some(UdpPorts::bind(server.rtp_address, server.rtcp_address).await?)
    } else {
        None
    };
    let shared = Arc::new(Rtsp {
        directory,
        access,
        allowed,
        udp,
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(crate::rtsp::serve(listener, shared, stopped));
    info!(rtsp = %addr, "RTSP listening: rtsp://{addr}/<path>");
    Ok(RtspServer { addr, stop, task })
}

/// Starting every path (not waiting for their first pictures) takes milliseconds; this only
/// bounds a broken start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start(settings: Settings) -> anyhow::Result<Daemon> {
    crate::rtp::init_clock();
    let server = &settings.server;
    // Refuse to start on a directory that is not there (a typo in --config-dir); once running,
    // a directory that vanishes keeps every path as it is (see `config::reconcile`).
    std::fs::read_dir(&settings.config_dir).with_context(|| {
        format!(
            "cannot read the path directory {}",
            settings.config_dir.display()
        )
    })?;

    let access = Access::new(server.auth_users.clone(), server.allow_origins.clone());
    // The UDP port needs no rule of its own: it takes STUN only when signed with the ICE
    // password of a session, which only an allowed WHEP request got. (Filtering by address
    // would refuse allowed viewers whose media comes from another address than their HTTP.)
    let mux = UdpMux::bind(server.udp_address).await?;
    // With port 0 (tests) the port is known only now.
    let udp_addr = mux.local_addr();
    let bound = SocketAddr::new(server.udp_address.ip(), udp_addr.port());
    let interfaces = addresses::interface_addresses();
    let candidates = addresses::advertised(bound, &interfaces, &server.additional_hosts);
    info!(udp = %udp_addr, candidates = ?candidates, "WebRTC UDP port ready");

    let tls = if server.encryption {
        let mut names: Vec<String> = crate::http::host_name().into_iter().collect();
        names.push("localhost".to_string());
        names.extend(interfaces.iter().map(|ip| ip.to_string()));
        names.extend(server.additional_hosts.iter().cloned());
        names.dedup();
        let files = CertFiles {
            key: server.server_key.clone(),
            cert: server.server_cert.clone(),
        };
        // Reading files and making a key: not on the async threads.
        let acceptor = tokio::task::spawn_blocking(move || crate::http::tls_acceptor(files, names))
            .await
            .context("HTTPS set-up")??;
        Some(acceptor)
    } else {
        None
    };
    let board = StatusBoard::default();
    let sessions = Sessions::default();
    let directory = Directory::default();
    let (root, _) = Actor::spawn(
        None,
        RootSupervisor,
        RootArgs {
            config_dir: settings.config_dir.clone(),
            board: board.clone(),
            directory: directory.clone(),
            sessions: sessions.clone(),
        },
    )
    .await
    .context("cannot start the root supervisor")?;
    root.call(
        |reply| RootMsg::ReloadAndReply("start-up", reply),
        Some(START_TIMEOUT),
    )
    .await
    .map_err(|err| anyhow::anyhow!("cannot configure paths: {err}"))?
    .success_or(())
    .map_err(|()| anyhow::anyhow!("the paths did not start within {START_TIMEOUT:?}"))?;
    let reload_root = root.clone();
    let (watcher, _) = Actor::spawn(
        None,
        ConfigWatcher,
        WatcherArgs {
            dir: settings.config_dir.clone(),
            reload: Box::new(move |why| {
                let _ = reload_root.send_message(RootMsg::Reload(why));
            }),
        },
    )
    .await
    .context("cannot watch the path directory")?;

    let whep = Whep {
        mux: Arc::clone(&mux),
        addresses: IceAddresses { candidates },
        sessions: sessions.clone(),
        board: board.clone(),
        directory: directory.clone(),
        root: root.get_cell(),
        ice_servers: server.ice_servers.clone(),
        pending_limits: PendingLimits {
            per_client: server.pending_sessions_per_address,
            total: server.pending_sessions,
        },
        access: Arc::clone(&access),
        jpeg_quality: server.jpeg_quality,
    };
    let listener = tokio::net::TcpListener::bind(server.http_address)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", server.http_address))?;
    let http_addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (http_stop, stopped) = oneshot::channel::<()>();
    let app = crate::http::router(whep);
    let http = tokio::spawn(crate::http::serve(listener, app, tls, stopped));
    info!(http = %http_addr, "camportal listening: open {scheme}://{http_addr}/");
    let rtsp = if server.rtsp {
        Some(start_rtsp(server, directory, Arc::clone(&access)).await?)
    } else {
        None
    };
    let metrics = if server.metrics {
        Some(
            crate::metrics::start(
                server.metrics_address,
                Arc::clone(&access),
                board.clone(),
                sessions,
            )
            .await?,
        )
    } else {
        None
    };
    let service = crate::service::spawn(root.clone(), board.clone());
    Ok(Daemon {
        http_addr,
        rtsp_addr: rtsp.as_ref().map(|r| r.addr),
        metrics_addr: metrics.as_ref().map(|m| m.addr),
        metrics,
        rtsp,
        scheme,
        udp_addr,
        board,
        root,
        watcher,
        http_stop,
        http,
        trimmer: crate::memory::spawn_trimmer(),
        service,
        access,
        server: std::sync::Mutex::new(settings.server),
    })
}

impl Daemon {
    /// Reads `config.d/` again now (SIGHUP) rather than waiting for a change or the rescan.
    pub fn reload(&self, why: &'static str) {
        let _ = self.root.send_message(RootMsg::Reload(why));
    }

    /// Reads `config.d/` again and returns once it is applied (SIGHUP, between `RELOADING=1`
    /// and `READY=1` to systemd).
    pub async fn reload_and_wait(&self, why: &'static str) {
        let _ = self
            .root
            .call(
                |reply| RootMsg::ReloadAndReply(why, reply),
                Some(START_TIMEOUT),
            )
            .await;
    }

    /// Tells systemd (if it runs us) that the daemon is ready, reloading or stopping; nothing
    /// without `NOTIFY_SOCKET`.
    pub fn notify_ready(&self) {
        crate::service::ready(&self.board);
    }

    pub fn notify_reloading(&self) {
        crate::service::reloading();
    }

    pub fn notify_stopping(&self) {
        crate::service::stopping();
    }

    /// Puts a server file read again (SIGHUP) in force: `authInternalUsers` and
    /// `webrtcAllowOrigins` at once, for every request from now on. Returns the keys whose
    /// change needs a restart (listening addresses, certificates' paths, ...), which stay as
    /// they were.
    pub fn apply_server(&self, new: ServerConfig) -> Vec<&'static str> {
        let mut server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.access
            .replace(new.auth_users.clone(), new.allow_origins.clone());
        let old = &*server;
        let changed = [
            ("webrtcAddress", old.http_address != new.http_address),
            ("webrtcLocalUDPAddress", old.udp_address != new.udp_address),
            (
                "webrtcAdditionalHosts",
                old.additional_hosts != new.additional_hosts,
            ),
            ("webrtcICEServers2", old.ice_servers != new.ice_servers),
            (
                "webrtcPendingSessionsPerAddress",
                old.pending_sessions_per_address != new.pending_sessions_per_address,
            ),
            (
                "webrtcPendingSessions",
                old.pending_sessions != new.pending_sessions,
            ),
            ("logLevel", old.log_level != new.log_level),
            ("webrtcEncryption", old.encryption != new.encryption),
            ("webrtcServerKey", old.server_key != new.server_key),
            ("webrtcServerCert", old.server_cert != new.server_cert),
            ("rtsp", old.rtsp != new.rtsp),
            ("rtspAddress", old.rtsp_address != new.rtsp_address),
            ("rtspTransports", old.rtsp_transports != new.rtsp_transports),
            ("rtpAddress", old.rtp_address != new.rtp_address),
            ("rtcpAddress", old.rtcp_address != new.rtcp_address),
            ("jpegQuality", old.jpeg_quality != new.jpeg_quality),
            ("metrics", old.metrics != new.metrics),
            ("metricsAddress", old.metrics_address != new.metrics_address),
        ];
        let restart = changed
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect();
        server.auth_users = new.auth_users;
        server.allow_origins = new.allow_origins;
        restart
    }

    /// Closes every viewer cleanly, stops every path, then the HTTP server.
    pub async fn shutdown(self) {
        self.watcher.stop(None);
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_millis(1500)))
            .await;
        self.trimmer.abort();
        if let Some(service) = self.service {
            service.abort();
        }
        if let Some(rtsp) = self.rtsp {
            let _ = rtsp.stop.send(());
            let _ = tokio::time::timeout(Duration::from_millis(200), rtsp.task).await;
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.stop.send(());
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.task).await;
        }
        let _ = self.http_stop.send(());
        // Open keep-alive connections (a player's) must not hold the exit up.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.http).await;
    }
}
