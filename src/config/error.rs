//! The one error type of the configuration layer: which file, where in it, and what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with one configuration file. Displays as `file:line:column: message`, leaving out
/// the parts that are unknown, so editors and terminals can jump to the spot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, bad name, ...).
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// Converts a serde_yaml error, moving its location out of the message into `line` and
    /// `column` (serde_yaml appends " at line L column C" to its Display, which would repeat
    /// what our own prefix already says).
    pub fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        let (line, column) = match err.location() {
            Some(loc) => {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                message = message.replacen(&suffix, "", 1);
                (Some(loc.line()), Some(loc.column()))
            }
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_omits_absent_parts() {
        let mut e = ConfigError::new(Path::new("config.d/a.yml"), "boom");
        assert_eq!(e.to_string(), "config.d/a.yml: boom");
        e.line = Some(3);
        assert_eq!(e.to_string(), "config.d/a.yml:3: boom");
        e.column = Some(7);
        assert_eq!(e.to_string(), "config.d/a.yml:3:7: boom");
    }

    #[test]
    fn yaml_location_moves_out_of_the_message() {
        let err = serde_yaml::from_str::<u32>("x: [").unwrap_err();
        let e = ConfigError::from_yaml(Path::new("f.yml"), &err);
        assert!(e.line.is_some());
        assert!(!e.message.contains(" at line "), "{}", e.message);
    }
}
