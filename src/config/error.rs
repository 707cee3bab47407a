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
    /// what our own prefix already says), and leaving out the file's content (see [`scrub`]).
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
            message: scrub(&message),
        }
    }
}

/// The longest message kept; the rest is cut. Our own messages and serde's lists of expected
/// keys are far shorter; only an echoed value could be longer.
const MAX_MESSAGE_CHARS: usize = 300;

/// The longest unknown key or variant name that is shown.
const MAX_SHOWN_NAME_CHARS: usize = 32;

/// Takes out of a serde_yaml message what the file says rather than what is wrong with it.
///
/// Errors are shown to everyone who can read `/api/paths`, and the daemon may read files its
/// users cannot: a file that is no configuration at all (a private key, `/etc/shadow`) must not
/// be shown through its errors. serde's messages quote the value they could not use
/// (`invalid type: string "root:*:19000:…", expected …`) and the names of unknown keys and
/// variants (`` unknown field `fsp` ``). So:
/// - the value of an `invalid type` or `invalid value` message is left out, its kind kept
///   (`invalid type: string, expected …`);
/// - an unknown key or variant name (and a duplicate key) is shown only if it looks like a
///   key name, since that is what a typo looks like; otherwise it is left out;
/// - what remains is cut at [`MAX_MESSAGE_CHARS`].
///
/// Our own messages about the value of a known key (`encoding.fps: 0 is out of range 1..=60`)
/// are kept: that value is the configuration.
pub(super) fn scrub(message: &str) -> String {
    let mut message = message.to_owned();
    for head in ["invalid type: ", "invalid value: "] {
        message = scrub_unexpected(&message, head);
    }
    for head in ["unknown field `", "unknown variant `"] {
        message = scrub_unknown_name(&message, head);
    }
    message = scrub_duplicate_key(&message);
    if message.chars().count() > MAX_MESSAGE_CHARS {
        message = message.chars().take(MAX_MESSAGE_CHARS).collect();
        message.push('…');
    }
    message
}

/// `invalid type: string "x", expected …` → `invalid type: string, expected …`. serde writes
/// the value after its kind, in quotes (`string "x"`) or backticks (`` integer `5` ``); the
/// expected part is ours, and the value ends at its last `, expected `.
fn scrub_unexpected(message: &str, head: &str) -> String {
    let Some(start) = message.find(head).map(|i| i + head.len()) else {
        return message.to_owned();
    };
    let Some(end) = message[start..].rfind(", expected ").map(|i| start + i) else {
        // No expected part: a custom message; nothing known to take out.
        return message.to_owned();
    };
    let unexpected = &message[start..end];
    let kind = match unexpected.find(['"', '`']) {
        Some(quote) => unexpected[..quote].trim_end(),
        None => unexpected,
    };
    format!("{}{kind}{}", &message[..start], &message[end..])
}

/// ``unknown field `x`, expected …``: `x` is kept if it looks like a key name. It ends at the
/// last `` `, expected `` or `` `, there are no `` (it may contain backticks itself).
fn scrub_unknown_name(message: &str, head: &str) -> String {
    let Some(start) = message.find(head).map(|i| i + head.len()) else {
        return message.to_owned();
    };
    let rest = &message[start..];
    let Some(end) = ["`, expected ", "`, there are no "]
        .iter()
        .filter_map(|tail| rest.rfind(tail))
        .max()
        .map(|i| start + i)
    else {
        return message.to_owned();
    };
    if looks_like_a_name(&message[start..end]) {
        return message.to_owned();
    }
    // Drop the opening backtick and the closing one (the first character of the tail).
    format!(
        "{}(name not shown){}",
        &message[..start - 1],
        &message[end + 1..]
    )
}

/// serde_yaml's mappings: `duplicate entry with key "x"` (a Debug-quoted string).
fn scrub_duplicate_key(message: &str) -> String {
    const HEAD: &str = "duplicate entry with key \"";
    let Some(start) = message.find(HEAD).map(|i| i + HEAD.len()) else {
        return message.to_owned();
    };
    let Some(len) = debug_quoted_len(&message[start..]) else {
        return message.to_owned();
    };
    let key = &message[start..start + len];
    if looks_like_a_name(key) {
        return message.to_owned();
    }
    format!(
        "{}duplicate entry with a key (name not shown){}",
        &message[..start - HEAD.len()],
        &message[start + len + 1..]
    )
}

/// The length of a Debug-quoted string's inside, `text` starting after its opening quote: up
/// to the first quote not escaped by a backslash.
fn debug_quoted_len(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// What a key name, or its typo, looks like: a short word of letters, digits, `_`, `-` and
/// `.`, starting with a letter.
fn looks_like_a_name(name: &str) -> bool {
    name.chars().count() <= MAX_SHOWN_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
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

    /// What serde_yaml says about a document, through `from_yaml`.
    fn message<T: serde::de::DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
        let err = serde_yaml::from_str::<T>(yaml).unwrap_err();
        ConfigError::from_yaml(Path::new("f.yml"), &err).message
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Keys {
        width: Option<u32>,
        name: Option<String>,
        level: Option<Level>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Info,
    }

    const SECRET: &str = "root:$6$S3cr3tSalt$hashhash:19000:0:99999:7:::";

    #[test]
    fn values_are_not_quoted() {
        // A whole foreign file read as a document: one long plain scalar.
        let m = message::<Keys>(&format!("{SECRET}x\n  and more\n"));
        assert_eq!(m, "invalid type: string, expected struct Keys");
        // /etc/shadow is a mapping: its lines end in `:`.
        let m = message::<Keys>(&format!("{SECRET}\ndaemon:*:19000:0:99999:7:::\n"));
        assert_eq!(
            m,
            "unknown field (name not shown), expected one of `width`, `name`, `level`"
        );
        let m = message::<Keys>("width: big\n");
        assert_eq!(m, "width: invalid type: string, expected u32");
        let m = message::<Keys>(&format!("width: \"{SECRET} \\\" , expected x\"\n"));
        assert_eq!(m, "width: invalid type: string, expected u32");
        let m = message::<Keys>("width: 123456789012\n");
        assert_eq!(m, "width: invalid value: integer, expected u32");
        let m = message::<Keys>("name: [1]\n");
        assert_eq!(m, "name: invalid type: sequence, expected a string");
        let m = message::<Keys>("width: -3\n");
        assert_eq!(m, "width: invalid type: integer, expected u32");
        let m = message::<Keys>("width: 1.5\n");
        assert_eq!(m, "width: invalid type: floating point, expected u32");
        let m = message::<Keys>("width: true\n");
        assert_eq!(m, "width: invalid type: boolean, expected u32");
        for text in ["123456\n", "12.5\n", "'pin 1234'\n"] {
            let m = message::<Keys>(text);
            assert!(!m.contains("12"), "{text:?}: {m}");
        }
    }

    #[test]
    fn key_names_are_shown_other_names_are_not() {
        // A typo, as the user wrote it: shown.
        let m = message::<Keys>("widht: 3\n");
        assert_eq!(
            m,
            "unknown field `widht`, expected one of `width`, `name`, `level`"
        );
        let m = message::<Keys>("level: loud\n");
        assert_eq!(m, "level: unknown variant `loud`, expected `info`");
        // Not a name: left out, and what is wrong is still said.
        let m = message::<Keys>(&format!("\"{SECRET}\": 1\n"));
        assert_eq!(
            m,
            "unknown field (name not shown), expected one of `width`, `name`, `level`"
        );
        assert!(!m.contains("S3cr3t"));
        let m = message::<Keys>("level: \"x`, expected `y\"\n");
        assert_eq!(
            m,
            "level: unknown variant (name not shown), expected `info`"
        );
        let long = "a".repeat(MAX_SHOWN_NAME_CHARS + 1);
        let m = message::<Keys>(&format!("{long}: 1\n"));
        assert!(
            m.starts_with("unknown field (name not shown), expected"),
            "{m}"
        );
        let m = message::<Keys>(&format!("level: {long}\n"));
        assert!(
            m.starts_with("level: unknown variant (name not shown)"),
            "{m}"
        );
        // Names of known keys are the configuration's own words.
        let m = message::<Keys>("width: 1\nwidth: 2\n");
        assert_eq!(m, "duplicate field `width`");
    }

    #[test]
    fn duplicate_mapping_keys() {
        let m = message::<serde_yaml::Mapping>("a: 1\na: 2\n");
        assert_eq!(m, "duplicate entry with key \"a\"");
        let m = message::<serde_yaml::Mapping>(&format!("'{SECRET}': 1\n'{SECRET}': 2\n"));
        assert_eq!(m, "duplicate entry with a key (name not shown)");
    }

    #[test]
    fn scrub_leaves_other_messages_alone_and_cuts_long_ones() {
        for kept in [
            "encoding.fps: 0 is out of range 1..=60",
            "encoding.keyframeInterval: \"99ms\" is out of range 100ms..=60s",
            "source: unknown variant `webcam`, expected one of `testsrc`, `v4l2`, `file`, `exec`",
            "source: unknown field `device`, there are no fields",
            "missing field `source`",
            "did not find expected ',' or ']', while parsing a flow sequence",
            "invalid type: sequence",
        ] {
            assert_eq!(scrub(kept), kept);
        }
        let long = format!("usb: \"{}\" is not a USB id", "x".repeat(1000));
        let cut = scrub(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn yaml_location_moves_out_of_the_message() {
        let err = serde_yaml::from_str::<u32>("x: [").unwrap_err();
        let e = ConfigError::from_yaml(Path::new("f.yml"), &err);
        assert!(e.line.is_some());
        assert!(!e.message.contains(" at line "), "{}", e.message);
    }
}
