//! Configuration: the per-path files in `config.d/` and the optional global server file.
//! Models, parsing with located errors, validation and directory loading; no I/O beyond
//! reading files.

mod auth;
mod diff;
mod error;
mod limits;
mod load;
mod name;
mod path;
mod server;
mod source;
mod units;

// What the binary and the tests use; the rest is the daemon's own.
pub use auth::{
    Action, AuthUser, LOOPBACK, PRIVATE_NETWORKS, Permission, Secret, UserName, default_auth_users,
    parse_ip_range, parse_secret,
};
pub use error::ConfigError;
pub use load::{LoadedPaths, load_paths_dir};
pub use path::{PathConfig, parse_path_file};
pub use server::{RtspTransport, ServerConfig, load_server_file, parse_address, parse_log_level};

pub(crate) use diff::{PathConfigs, diff, reconcile};
pub(crate) use name::{PathName, is_config_file_name};
pub(crate) use path::EncodingConfig;
pub(crate) use server::IceServer;
pub(crate) use source::{
    CaptureFormat, DeviceMatch, DeviceSelector, ExecConfig, SourceConfig, StreamFormat, UsbId,
    V4l2Config,
};
