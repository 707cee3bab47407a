//! Configuration: the per-path files in `config.d/` and the optional global server file.
//! Models, parsing with located errors, validation and directory loading; no I/O beyond
//! reading files.

mod diff;
mod error;
mod load;
mod name;
mod path;
mod server;
mod source;
mod units;

pub use diff::{Change, ConfigDiff, PathConfigs, Reconciled, classify, diff, reconcile};
pub use error::ConfigError;
pub use load::{LoadedPaths, load_paths_dir};
pub use name::{PathName, is_config_file_name};
pub use path::{EncodingConfig, PathConfig, parse_path_file, path_name_of};
pub use server::{
    IceServer, ServerConfig, load_server_file, parse_address, parse_log_level, parse_server_file,
};
pub use source::{CaptureFormat, DeviceMatch, DeviceSelector, SourceConfig, UsbId, V4l2Config};
pub use units::format_bitrate;
