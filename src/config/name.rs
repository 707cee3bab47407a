//! Path names and the file names that define them: `config.d/<name>.yml` defines path `<name>`,
//! served at `/<name>/`.

use std::borrow::Borrow;
use std::fmt;

/// Longest accepted path name; keeps URLs and log lines readable.
const MAX_NAME_LEN: usize = 64;

/// Names that would collide with the daemon's own URL space.
const RESERVED_NAMES: &[&str] = &["api"];

/// The extensions that make a file in `config.d/` a path file.
const EXTENSIONS: &[&str] = &[".yml", ".yaml"];

/// A validated path name: 1..=64 characters of `[A-Za-z0-9_.-]`, not starting with `.`, `_`
/// or `-`, and not a reserved name. Safe to use as a URL segment as is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathName(String);

impl PathName {
    pub fn new(name: &str) -> Result<PathName, String> {
        if name.is_empty() {
            return Err("path name is empty".to_string());
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "path name `{name}` is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "path name `{name}` contains {bad:?}; allowed are letters A-Z a-z, digits, `_`, `.` and `-`"
            ));
        }
        if name.starts_with(['.', '_', '-']) {
            return Err(format!(
                "path name `{name}` must not start with `.`, `_` or `-`"
            ));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(format!("path name `{name}` is reserved"));
        }
        Ok(PathName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PathName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PathName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `PathName` be looked up with a `&str` (consistent: same Eq/Ord/Hash).
impl Borrow<str> for PathName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Whether a directory entry named `name` is a path file: it ends in `.yml` or `.yaml` and is
/// neither hidden nor editor debris (`~` backups, `.swp`, emacs `.#lock` files). A file that
/// passes but has a bad stem (e.g. `_x.yml`) still counts, so that the user gets an error
/// about it instead of silence.
pub(crate) fn is_config_file_name(name: &str) -> bool {
    let junk = name.starts_with('.') // hidden, also vim `.x.yml.swp` and emacs `.#x.yml`
        || name.ends_with('~')
        || name.ends_with(".swp");
    !junk && config_stem(name).is_some()
}

/// The stem of a path file name (`cam1.yml` → `cam1`), or `None` if the extension is not one
/// of ours.
pub(super) fn config_stem(name: &str) -> Option<&str> {
    EXTENSIONS.iter().find_map(|ext| name.strip_suffix(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in ["a", "cam1", "Front_Door", "x.y-z", "0", &"a".repeat(64)] {
            assert_eq!(PathName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn invalid_names() {
        for n in [
            "",
            &"a".repeat(65),
            ".a",
            "_a",
            "-a",
            "a b",
            "a/b",
            "ä",
            "a%20",
            "api",
        ] {
            assert!(PathName::new(n).is_err(), "{n:?} accepted");
        }
        // Reserved only exactly; `apis` is just a name.
        assert!(PathName::new("apis").is_ok());
        assert_eq!(
            PathName::new("a b").unwrap_err(),
            "path name `a b` contains ' '; allowed are letters A-Z a-z, digits, `_`, `.` and `-`"
        );
    }

    #[test]
    fn name_traits() {
        let a = PathName::new("a").unwrap();
        let b = PathName::new("b").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "a");
        assert_eq!(AsRef::<str>::as_ref(&b), "b");
    }

    #[test]
    fn config_file_names() {
        for n in ["a.yml", "a.yaml", "_bad.yml", "api.yml", "x.y.yml"] {
            assert!(is_config_file_name(n), "{n} rejected");
        }
        for n in [
            ".a.yml",
            ".a.yml.swp",
            "a.yml.swp",
            "a.yml~",
            ".#a.yml",
            "#a.yml#",
            "a.yml.bak",
            "a.json",
            "a.YML",
            "README",
            ".yml",
            "4913",
        ] {
            assert!(!is_config_file_name(n), "{n} accepted");
        }
        assert_eq!(config_stem("a.yaml"), Some("a"));
        assert_eq!(config_stem("a.txt"), None);
    }
}
