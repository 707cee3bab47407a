//! One path file, `config.d/<name>.yml`: its schema and parsing.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use super::limits::check_nesting;
use super::name::{PathName, config_stem};
use super::source::{SourceConfig, deserialize_source};
use super::units::{
    deserialize_bitrate, deserialize_close_after, deserialize_flag, deserialize_keyframe_interval,
    deserialize_u32_in,
};

/// Everything about one path, as configured. Compared by value to tell whether a changed file
/// needs the path restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathConfig {
    pub name: PathName,
    pub source: SourceConfig,
    pub encoding: EncodingConfig,
    pub on_demand: OnDemand,
}

/// MediaMTX's `sourceOnDemand`: the source runs only while someone reads the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnDemand {
    pub enabled: bool,
    /// How long the source keeps running after the last reader left.
    pub close_after: Duration,
}

impl Default for OnDemand {
    fn default() -> Self {
        OnDemand {
            enabled: false,
            close_after: Duration::from_secs(10),
        }
    }
}

/// How a path's pictures are encoded (H.264). Every key is optional; see `Default`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EncodingConfig {
    #[serde(deserialize_with = "width")]
    pub width: u32,
    #[serde(deserialize_with = "height")]
    pub height: u32,
    #[serde(deserialize_with = "fps")]
    pub fps: u32,
    #[serde(rename = "bitrate", deserialize_with = "deserialize_bitrate")]
    pub bitrate_bps: u32,
    /// Follow the WebRTC viewers' bandwidth estimates (see `bandwidth.rs`); off by default
    /// until it keeps a thin link free of freezes (issue 13).
    #[serde(rename = "adaptiveBitrate", deserialize_with = "deserialize_flag")]
    pub adaptive_bitrate: bool,
    /// The least the encoder goes down to when it follows a thin link.
    #[serde(rename = "minBitrate", deserialize_with = "deserialize_bitrate")]
    pub min_bitrate_bps: u32,
    #[serde(deserialize_with = "deserialize_keyframe_interval")]
    pub keyframe_interval: Duration,
}

impl Default for EncodingConfig {
    fn default() -> Self {
        EncodingConfig {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_bps: 2_000_000,
            adaptive_bitrate: false,
            min_bitrate_bps: 150_000,
            keyframe_interval: Duration::from_secs(2),
        }
    }
}

fn width<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    deserialize_u32_in(d, 160..=3840, true)
}

fn height<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    deserialize_u32_in(d, 120..=2160, true)
}

fn fps<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    deserialize_u32_in(d, 1..=60, false)
}

/// The file's top level. Named `PathFile` because serde puts the name into type errors
/// ("expected struct PathFile").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathFile {
    #[serde(deserialize_with = "deserialize_source")]
    source: SourceConfig,
    #[serde(default)]
    encoding: EncodingConfig,
    #[serde(
        rename = "sourceOnDemand",
        default,
        deserialize_with = "deserialize_flag"
    )]
    source_on_demand: bool,
    #[serde(
        rename = "sourceOnDemandCloseAfter",
        default = "default_close_after",
        deserialize_with = "deserialize_close_after"
    )]
    source_on_demand_close_after: Duration,
}

fn default_close_after() -> Duration {
    OnDemand::default().close_after
}

/// Parses the text of the path file `file`; the path's name is the file's stem. A text nested
/// too deeply to parse in good time is refused (see `limits.rs`).
pub fn parse_path_file(file: &Path, text: &str) -> Result<PathConfig, ConfigError> {
    let name = path_name_of(file)?;
    check_nesting(file, text)?;
    // `Option` so that an empty (or all-comment) document is told apart from a broken one.
    let parsed: Option<PathFile> =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(file, &e))?;
    let Some(parsed) = parsed else {
        return Err(ConfigError::new(
            file,
            "empty path file: expected at least `source:`",
        ));
    };
    Ok(PathConfig {
        name,
        source: parsed.source,
        encoding: parsed.encoding,
        on_demand: OnDemand {
            enabled: parsed.source_on_demand,
            close_after: parsed.source_on_demand_close_after,
        },
    })
}

/// The path name a file defines: `config.d/cam1.yml` → `cam1`.
pub(super) fn path_name_of(file: &Path) -> Result<PathName, ConfigError> {
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ConfigError::new(file, "file name is not valid UTF-8"))?;
    let stem = config_stem(file_name).ok_or_else(|| {
        ConfigError::new(file, "a path file's name must end in `.yml` or `.yaml`")
    })?;
    PathName::new(stem).map_err(|e| ConfigError::new(file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "config.d/cam.yml";

    fn parse(text: &str) -> Result<PathConfig, ConfigError> {
        parse_path_file(Path::new(FILE), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn encoding(text: &str) -> Result<EncodingConfig, String> {
        parse(&format!("source: testsrc\nencoding:\n  {text}\n"))
            .map(|p| p.encoding)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let p = parse("source:\n  type: testsrc\n").unwrap();
        assert_eq!(p.name.as_str(), "cam");
        assert_eq!(p.source, SourceConfig::TestSrc);
        assert_eq!(p.encoding, EncodingConfig::default());
        let d = EncodingConfig::default();
        assert_eq!((d.width, d.height, d.fps), (1280, 720, 30));
        assert_eq!(d.bitrate_bps, 2_000_000);
        assert_eq!(d.keyframe_interval, Duration::from_secs(2));
        // An empty section means defaults too.
        assert_eq!(
            parse("source: testsrc\nencoding: {}\n").unwrap().encoding,
            d
        );
    }

    #[test]
    fn full_file() {
        let p = parse(
            "source:\n  type: testsrc\nencoding:\n  width: 640\n  height: 480\n  fps: 15\n  \
             bitrate: 800k\n  minBitrate: 200k\n  keyframeInterval: 500ms\n",
        )
        .unwrap();
        assert_eq!(
            p.encoding,
            EncodingConfig {
                width: 640,
                height: 480,
                fps: 15,
                bitrate_bps: 800_000,
                adaptive_bitrate: false,
                min_bitrate_bps: 200_000,
                keyframe_interval: Duration::from_millis(500),
            }
        );
        // A partial section keeps the other defaults.
        let e = encoding("fps: 60").unwrap();
        assert_eq!(e.fps, 60);
        assert_eq!(e.width, 1280);
    }

    #[test]
    fn range_bounds() {
        let ok = |k: &str, v: &str| encoding(&format!("{k}: {v}")).unwrap();
        let bad = |k: &str, v: &str| encoding(&format!("{k}: {v}")).unwrap_err();
        assert_eq!(ok("width", "160").width, 160);
        assert_eq!(ok("width", "3840").width, 3840);
        assert_eq!(ok("height", "120").height, 120);
        assert_eq!(ok("height", "2160").height, 2160);
        assert_eq!(ok("fps", "1").fps, 1);
        assert_eq!(ok("fps", "60").fps, 60);
        assert_eq!(ok("bitrate", "100k").bitrate_bps, 100_000);
        assert_eq!(ok("bitrate", "20M").bitrate_bps, 20_000_000);
        assert_eq!(
            ok("keyframeInterval", "0.1").keyframe_interval,
            Duration::from_millis(100)
        );
        assert_eq!(
            ok("keyframeInterval", "60s").keyframe_interval,
            Duration::from_secs(60)
        );

        assert_eq!(
            bad("width", "158"),
            "config.d/cam.yml:3:10: encoding.width: 158 is out of range 160..=3840"
        );
        assert!(bad("width", "3842").contains("encoding.width: 3842 is out of range 160..=3840"));
        assert!(
            bad("width", "641").contains("encoding.width: 641 must be even (and in 160..=3840)")
        );
        assert!(bad("height", "118").contains("encoding.height: 118 is out of range 120..=2160"));
        assert!(bad("height", "2162").contains("out of range 120..=2160"));
        assert!(bad("height", "481").contains("must be even"));
        assert_eq!(
            bad("fps", "0"),
            "config.d/cam.yml:3:8: encoding.fps: 0 is out of range 1..=60"
        );
        assert!(bad("fps", "61").contains("encoding.fps: 61 is out of range 1..=60"));
        assert!(
            bad("bitrate", "99999").contains("encoding.bitrate: 99999 is out of range 100k..=20M")
        );
        assert!(bad("bitrate", "20000001").contains("out of range 100k..=20M"));
        assert!(
            bad("keyframeInterval", "99ms")
                .contains("encoding.keyframeInterval: \"99ms\" is out of range 100ms..=60s")
        );
        assert!(bad("keyframeInterval", "61").contains("61s is out of range 100ms..=60s"));
    }

    #[test]
    fn unknown_key_at_depth_reports_its_line() {
        let e = parse("source: testsrc\nencoding:\n  width: 640\n  fsp: 30\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.column, Some(3));
        assert!(
            e.message
                .starts_with("encoding: unknown field `fsp`, expected one of `width`")
        );

        let e = parse("source: testsrc\n\nsurce: x\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(
            e.message
                .contains("unknown field `surce`, expected one of `source`, `encoding`")
        );
    }

    #[test]
    fn wrong_type_reports_its_line() {
        let e = parse("source: testsrc\nencoding:\n  width: 640\n  height: big\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(11)));
        // The value itself is not repeated (see `error::scrub`): the line and column point at it.
        assert_eq!(
            e.message,
            "encoding.height: invalid type: string, expected an even integer in 120..=2160"
        );
        let e = parse("source: testsrc\nencoding: 5\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.message
                .contains("encoding: invalid type: integer, expected")
        );
    }

    #[test]
    fn source_errors() {
        let e = parse("# cam\nsource: webcam\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.d/cam.yml:2:9: source: unknown variant `webcam`, expected one of `testsrc`, `v4l2`, `file`, `exec`"
        );
        let e = parse("encoding:\n  fps: 5\n").unwrap_err();
        assert!(e.message.contains("missing field `source`"), "{e}");
        let e = parse("source:\n  type: testsrc\n  device: x\n").unwrap_err();
        assert!(e.message.contains("unknown field `device`"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn empty_and_broken_files() {
        for text in ["", "\n\n", "# only a comment\n", "---\n", "~\n"] {
            assert_eq!(
                err(text),
                "config.d/cam.yml: empty path file: expected at least `source:`"
            );
        }
        let e = parse("source: [testsrc\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        let e = parse("just text\n").unwrap_err();
        assert!(e.message.contains("expected struct PathFile"), "{e}");
        let e = parse("source: testsrc\nsource: testsrc\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn shipped_example_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config.d/test.yml");
        let p = parse_path_file(Path::new("config.d/test.yml"), text).unwrap();
        assert_eq!(p.name.as_str(), "test");
        assert_eq!(p.source, SourceConfig::TestSrc);
        assert_eq!(p.encoding, EncodingConfig::default());
    }

    #[test]
    fn name_comes_from_the_file() {
        let p = parse_path_file(Path::new("/x/front-door.yaml"), "source: testsrc").unwrap();
        assert_eq!(p.name.as_str(), "front-door");
        let e = parse_path_file(Path::new("/x/api.yml"), "source: testsrc").unwrap_err();
        assert_eq!(e.to_string(), "/x/api.yml: path name `api` is reserved");
        assert!(parse_path_file(Path::new("/x/a b.yml"), "source: testsrc").is_err());
        assert!(parse_path_file(Path::new("/x/a.json"), "source: testsrc").is_err());
    }
}
