//! The `source:` section of a path file: where the path's pictures come from.

use std::fmt;
use std::path::PathBuf;

use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a path's pictures come from. Written as a mapping tagged by `type`
/// (`source: {type: testsrc}`), or, for types without required keys, as the plain string
/// `source: testsrc`.
///
/// To add a type: add a variant here (with a struct for its keys, `#[derive(Deserialize)]` and
/// `#[serde(rename_all = "camelCase", deny_unknown_fields)]`, e.g. `V4l2(V4l2Config)`), the
/// same name to [`SourceKind`], and an arm to [`with_kind`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    /// The built-in moving test pattern. No keys of its own: size and rate come from
    /// `encoding:`.
    TestSrc,
    /// Raw I420 pictures of the `encoding:` size read from a file, played in a loop at `fps`.
    File(FileSourceConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
}

/// The value of `type:`, on its own so that it can be read before the other keys.
#[derive(Clone, Copy, Debug, Deserialize)]
enum SourceKind {
    #[serde(rename = "testsrc")]
    TestSrc,
    #[serde(rename = "file")]
    File,
}

/// For types without keys: rejects any key besides `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

/// Reads the keys besides `type:` (given as a mapping in `rest`) for a source of `kind`.
fn with_kind<'de, D: Deserializer<'de>>(
    kind: SourceKind,
    rest: D,
) -> Result<SourceConfig, D::Error> {
    Ok(match kind {
        SourceKind::TestSrc => {
            NoKeys::deserialize(rest)?;
            SourceConfig::TestSrc
        }
        SourceKind::File => SourceConfig::File(FileSourceConfig::deserialize(rest)?),
    })
}

/// `deserialize_with` for the `source` key: accepts the mapping and the string shorthand.
///
/// Hand-written rather than serde's `#[serde(tag = "type")]`: that buffers the whole mapping
/// before choosing the variant, and errors found in a buffer have no location (they would
/// point at the start of `source:`), and it silently ignores extra keys of unit variants.
/// Here, when `type:` comes first, as in all examples, the remaining keys stream straight into
/// the variant's struct and every error keeps serde_yaml's exact line. Otherwise we buffer
/// too: correct, with coarser locations.
pub fn deserialize_source<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SourceConfig, D::Error> {
    deserializer.deserialize_any(SourceVisitor)
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SourceConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a source type (e.g. `testsrc`) or a mapping with `type:`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SourceConfig, E> {
        let kind = SourceKind::deserialize(v.into_deserializer())?;
        // As if written `{type: <v>}`: a type with required keys reports them missing.
        let no_keys = MapDeserializer::<_, E>::new(std::iter::empty::<(&str, &str)>());
        with_kind(kind, no_keys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourceConfig, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let kind: SourceKind = map.next_value()?;
            return with_kind(kind, MapAccessDeserializer::new(map));
        }

        // `type` comes later: buffer everything, then pick it out.
        let mut rest = serde_yaml::Mapping::new();
        rest.insert(first.into(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<serde_yaml::Value, serde_yaml::Value>()? {
            rest.insert(key, value);
        }
        let kind = rest
            .remove("type")
            .ok_or_else(|| de::Error::missing_field("type"))?;
        let kind = SourceKind::deserialize(kind).map_err(de::Error::custom)?;
        with_kind(kind, serde_yaml::Value::Mapping(rest)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        #[serde(deserialize_with = "deserialize_source")]
        source: SourceConfig,
    }

    fn parse(yaml: &str) -> Result<SourceConfig, String> {
        serde_yaml::from_str::<T>(yaml)
            .map(|t| t.source)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn mapping_and_shorthand() {
        let testsrc = Ok(SourceConfig::TestSrc);
        assert_eq!(parse("source: {type: testsrc}"), testsrc);
        assert_eq!(parse("source:\n  type: testsrc\n"), testsrc);
        assert_eq!(parse("source: testsrc"), testsrc);
        assert_eq!(
            parse("source:\n  type: file\n  path: /srv/clip.yuv\n"),
            Ok(SourceConfig::File(FileSourceConfig {
                path: "/srv/clip.yuv".into()
            }))
        );
        assert!(
            parse("source: file")
                .unwrap_err()
                .contains("missing field `path`")
        );
    }

    #[test]
    fn errors_point_at_the_offending_line() {
        assert_eq!(
            parse("source: webcam").unwrap_err(),
            "source: unknown variant `webcam`, expected `testsrc` or `file` at line 1 column 9"
        );
        assert_eq!(
            parse("source:\n  type: webcam\n").unwrap_err(),
            "source.type: unknown variant `webcam`, expected `testsrc` or `file` at line 2 column 9"
        );
        assert_eq!(
            parse("source:\n  type: testsrc\n  device: /dev/video0\n").unwrap_err(),
            "source: unknown field `device`, there are no fields at line 3 column 3"
        );
        assert!(
            parse("source: 3")
                .unwrap_err()
                .contains("expected a source type")
        );
        assert!(parse("source: [testsrc]").is_err());
        assert!(
            parse("source: {}")
                .unwrap_err()
                .contains("missing field `type`")
        );
    }

    #[test]
    fn type_not_first_still_works() {
        // Falls back to serde's buffering path: same results, coarser locations.
        assert_eq!(
            parse("source: {type: testsrc}"),
            parse("source:\n  # comment\n  type: testsrc\n")
        );
        let e = parse("source:\n  device: /dev/video0\n  type: testsrc\n").unwrap_err();
        assert!(e.contains("unknown field `device`"), "{e}");
        let e = parse("source:\n  device: /dev/video0\n").unwrap_err();
        assert!(e.contains("missing field `type`"), "{e}");
        let e = parse("source:\n  device: /dev/video0\n  type: webcam\n").unwrap_err();
        assert!(e.contains("unknown variant `webcam`"), "{e}");
        let e = parse("source:\n  device: /dev/video0\n  type: [testsrc]\n").unwrap_err();
        assert!(e.contains("expected"), "{e}");
    }
}
