//! `camportal` — run the daemon (default), check a config directory, or list the cameras.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use camportal::config::{self, ServerConfig};
use camportal::daemon::{self, Daemon, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "Live cameras in a browser over WebRTC (WHEP), from one daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run(RunArgs),
    /// Validate a config directory without starting anything; exits 1 on any problem.
    Check {
        /// The directory of path files.
        #[arg(default_value = "config.d")]
        dir: PathBuf,
    },
    /// List the cameras (V4L2 capture devices) with their formats, sizes and frame rates, each
    /// with a ready-to-drop config.d file; exits 1 if there is none.
    Devices,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The directory of path files: config.d/<name>.yml serves /<name>/.
    #[arg(long, default_value = "config.d")]
    config_dir: PathBuf,
    /// The server settings file [default: camportal.yml beside the config directory].
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP listen address (webrtcAddress), e.g. :8889 or 127.0.0.1:8889.
    #[arg(long)]
    http_address: Option<String>,
    /// The one UDP address all viewers share (webrtcLocalUDPAddress), e.g. :8189.
    #[arg(long)]
    udp_address: Option<String>,
    /// RTSP listen address (rtspAddress), e.g. :8554.
    #[arg(long)]
    rtsp_address: Option<String>,
    /// The UDP address RTP to RTSP readers comes from (rtpAddress), e.g. :8000.
    #[arg(long)]
    rtp_address: Option<String>,
    /// The UDP address of RTCP with RTSP readers (rtcpAddress), e.g. :8001.
    #[arg(long)]
    rtcp_address: Option<String>,
    /// An extra IP or host name to advertise to viewers (webrtcAdditionalHosts); repeatable.
    #[arg(long = "additional-host")]
    additional_hosts: Vec<String>,
    /// error, warn, info, debug or trace (logLevel); RUST_LOG overrides it.
    #[arg(long)]
    log_level: Option<String>,
}

fn server_settings(args: &RunArgs) -> Result<ServerConfig, String> {
    let file = args.config.clone().unwrap_or_else(|| {
        let parent = args.config_dir.parent().unwrap_or(Path::new("."));
        parent.join("camportal.yml")
    });
    let mut server = config::load_server_file(&file).map_err(|err| err.to_string())?;
    if let Some(address) = &args.http_address {
        server.http_address =
            config::parse_address(address).map_err(|e| format!("--http-address: {e}"))?;
    }
    if let Some(address) = &args.udp_address {
        server.udp_address =
            config::parse_address(address).map_err(|e| format!("--udp-address: {e}"))?;
    }
    for (flag, given, key) in [
        (
            "--rtsp-address",
            &args.rtsp_address,
            &mut server.rtsp_address,
        ),
        ("--rtp-address", &args.rtp_address, &mut server.rtp_address),
        (
            "--rtcp-address",
            &args.rtcp_address,
            &mut server.rtcp_address,
        ),
    ] {
        if let Some(address) = given {
            *key = config::parse_address(address).map_err(|e| format!("{flag}: {e}"))?;
        }
    }
    server
        .additional_hosts
        .extend(args.additional_hosts.iter().cloned());
    if let Some(level) = &args.log_level {
        server.log_level =
            config::parse_log_level(level).map_err(|e| format!("--log-level: {e}"))?;
    }
    Ok(server)
}

fn check(dir: &Path) -> ExitCode {
    match config::load_paths_dir(dir) {
        Ok(loaded) => {
            for name in loaded.paths.keys() {
                println!("ok: {name}");
            }
            for err in &loaded.errors {
                println!("error: {err}");
            }
            if loaded.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            println!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The signals the daemon handles, taken over before it announces itself: a SIGHUP right after
/// `READY=1` (or the address line) must reload, not end the process (the default action).
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// Serves until SIGTERM or SIGINT (which it names); SIGHUP meanwhile reads `camportal.yml`
/// again (its access rules take effect) and `config.d/`.
async fn serve_until_stopped(daemon: &Daemon, args: &RunArgs, signals: Signals) -> &'static str {
    let Signals {
        mut terminate,
        mut interrupt,
        mut hangup,
    } = signals;
    loop {
        tokio::select! {
            _ = terminate.recv() => return "SIGTERM",
            _ = interrupt.recv() => return "SIGINT",
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                daemon.notify_reloading();
                match server_settings(args) {
                    Ok(server) => {
                        let restart = daemon.apply_server(server);
                        if !restart.is_empty() {
                            tracing::warn!(
                                keys = ?restart,
                                "camportal.yml: these changes take effect at the next restart"
                            );
                        }
                    }
                    Err(err) => tracing::error!("{err}; keeping the settings in force"),
                }
                daemon.reload_and_wait("SIGHUP").await;
                daemon.notify_ready();
            }
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let server = match server_settings(&args) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("camportal: {err}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(daemon::default_log_filter(&server.log_level)));
    // Colours only on a terminal: under systemd or a pipe they would be noise in the log. Into
    // the journal (JOURNAL_STREAM set), no timestamps of our own: journald adds its own.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }

    match camportal::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open file limit"),
    }
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            tracing::error!(%err, "cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    let daemon = match daemon::start(Settings {
        config_dir: args.config_dir.clone(),
        server,
    })
    .await
    {
        Ok(daemon) => daemon,
        Err(err) => {
            tracing::error!("cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    daemon.notify_ready();
    let signal = serve_until_stopped(&daemon, &args, signals).await;
    tracing::info!(signal, "shutting down");
    daemon.notify_stopping();
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { dir }) => check(&dir),
        Some(Command::Devices) => {
            let (report, found) = camportal::devices::report();
            print!("{report}");
            if found {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    }
}
