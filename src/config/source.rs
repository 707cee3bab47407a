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
    /// A camera through Video4Linux2. Size and rate are asked of the camera from `encoding:`.
    V4l2(V4l2Config),
    /// A file played in a loop at `fps`: raw I420 or MJPEG of the `encoding:` size, or H.264.
    File(FileSourceConfig),
    /// A program of the user's whose standard output carries the pictures (MediaMTX's
    /// `runOnInit` with ffmpeg, go2rtc's `exec:`).
    Exec(ExecConfig),
}

/// `source: {type: exec, command: "...", format: h264}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecConfig {
    #[serde(deserialize_with = "non_empty_command")]
    pub command: String,
    /// What the program writes; detected from its first bytes when not given.
    #[serde(default)]
    pub format: Option<StreamFormat>,
}

/// What a program writes to its standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamFormat {
    /// H.264 Annex B (`ffmpeg ... -f h264 -`), passed through without re-encoding.
    H264,
    /// Concatenated JPEGs (`ffmpeg ... -f mjpeg -`) of the `encoding:` size.
    Mjpeg,
    /// Raw I420 pictures of the `encoding:` size (`-f rawvideo -pix_fmt yuv420p`).
    I420,
}

impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamFormat::H264 => "h264",
            StreamFormat::Mjpeg => "mjpeg",
            StreamFormat::I420 => "i420",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    /// What the file holds; read from its first bytes when not given.
    #[serde(default)]
    pub format: Option<StreamFormat>,
}

/// The value of `type:`, on its own so that it can be read before the other keys.
#[derive(Clone, Copy, Debug, Deserialize)]
enum SourceKind {
    #[serde(rename = "testsrc")]
    TestSrc,
    #[serde(rename = "v4l2")]
    V4l2,
    #[serde(rename = "file")]
    File,
    #[serde(rename = "exec")]
    Exec,
}

/// `source: {type: v4l2, ...}`: which camera, and in which format it should send pictures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V4l2Config {
    pub device: DeviceSelector,
    pub format: CaptureFormat,
}

/// How a path names its camera. A node path (`/dev/video0`) is simplest but its number can
/// change after a replug or reboot; the stable links udev makes (`/dev/v4l/by-id/…`,
/// `/dev/v4l/by-path/…`) and a match on what the camera says about itself do not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// A device node or a link to one.
    Path(PathBuf),
    /// The one capture device whose properties all equal the given ones.
    Match(DeviceMatch),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMatch {
    /// The card name the driver reports (`v4l2-ctl --info`, `camportal devices`).
    pub card: Option<String>,
    /// USB vendor and product id.
    pub usb: Option<UsbId>,
    /// The USB serial number.
    pub serial: Option<String>,
}

/// A USB `vendor:product` pair, written in hex as `lsusb` shows it (`046d:0825`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsbId {
    pub vendor: u16,
    pub product: u16,
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

impl std::str::FromStr for UsbId {
    type Err = String;

    fn from_str(s: &str) -> Result<UsbId, String> {
        let bad =
            || format!("{s:?} is not a USB id: expected vendor:product in hex, e.g. 046d:0825");
        let (vendor, product) = s.split_once(':').ok_or_else(bad)?;
        let hex = |part: &str| {
            if part.len() == 4 {
                u16::from_str_radix(part, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        Ok(UsbId {
            vendor: hex(vendor)?,
            product: hex(product)?,
        })
    }
}

/// The pixel format asked of the camera. `auto` prefers what costs the box least: H.264 the
/// camera encodes itself (passed through), then MJPEG, then raw pictures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
    Nv12,
    H264,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureFormat::Auto => "auto",
            CaptureFormat::Mjpeg => "mjpeg",
            CaptureFormat::Yuyv => "yuyv",
            CaptureFormat::Nv12 => "nv12",
            CaptureFormat::H264 => "h264",
        })
    }
}

/// The keys of a v4l2 source as written; [`V4l2Keys::into_config`] checks how they combine.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct V4l2Keys {
    #[serde(default, deserialize_with = "device_path")]
    device: Option<PathBuf>,
    #[serde(default, deserialize_with = "non_empty")]
    card: Option<String>,
    #[serde(default, deserialize_with = "usb_id")]
    usb: Option<UsbId>,
    #[serde(default, deserialize_with = "non_empty")]
    serial: Option<String>,
    #[serde(default)]
    format: CaptureFormat,
}

impl V4l2Keys {
    fn into_config(self) -> Result<V4l2Config, String> {
        let matching = DeviceMatch {
            card: self.card,
            usb: self.usb,
            serial: self.serial,
        };
        let any_match = matching != DeviceMatch::default();
        let device = match (self.device, any_match) {
            (Some(path), false) => DeviceSelector::Path(path),
            (None, true) => DeviceSelector::Match(matching),
            (Some(_), true) => {
                return Err("give either `device` or `card`/`usb`/`serial`, not both".into());
            }
            (None, false) => {
                return Err("a v4l2 source needs `device` (e.g. /dev/video0 or a \
                            /dev/v4l/by-id/… link) or at least one of `card`, `usb`, `serial` \
                            (`camportal devices` lists them)"
                    .into());
            }
        };
        Ok(V4l2Config {
            device,
            format: self.format,
        })
    }
}

fn device_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    checked_str(d, "a device path", |path| {
        if path.starts_with('/') {
            Ok(Some(PathBuf::from(path)))
        } else {
            Err(format!(
                "{path:?} is not an absolute path: expected e.g. /dev/video0 or /dev/v4l/by-id/…"
            ))
        }
    })
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_str(d, "a non-empty string", |text| {
        if text.trim().is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(Some(text.to_owned()))
        }
    })
}

/// A command line that splits into words as a shell would split it (quotes closed).
fn non_empty_command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, "a command line", |text| match shlex::split(text) {
        Some(words) if !words.is_empty() => Ok(text.to_owned()),
        Some(_) => Err("must not be empty".to_owned()),
        None => Err("has an unclosed quote".to_owned()),
    })
}

fn usb_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UsbId>, D::Error> {
    checked_str(d, "a USB id vendor:product", |text| text.parse().map(Some))
}

/// A string checked by `check` inside the visitor, where serde_yaml still knows the key and the
/// line (see `units.rs`).
fn checked_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Checked<F> {
        expecting: &'static str,
        check: F,
    }
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for Checked<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Checked { expecting, check })
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
        SourceKind::V4l2 => {
            let keys = V4l2Keys::deserialize(rest)?;
            SourceConfig::V4l2(keys.into_config().map_err(de::Error::custom)?)
        }
        SourceKind::File => SourceConfig::File(FileSourceConfig::deserialize(rest)?),
        SourceKind::Exec => SourceConfig::Exec(ExecConfig::deserialize(rest)?),
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
pub(super) fn deserialize_source<'de, D: Deserializer<'de>>(
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
                path: "/srv/clip.yuv".into(),
                format: None,
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
            "source: unknown variant `webcam`, expected one of `testsrc`, `v4l2`, `file`, `exec` at line 1 column 9"
        );
        assert_eq!(
            parse("source:\n  type: webcam\n").unwrap_err(),
            "source.type: unknown variant `webcam`, expected one of `testsrc`, `v4l2`, `file`, `exec` at line 2 column 9"
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

    fn v4l2(yaml: &str) -> Result<V4l2Config, String> {
        match parse(yaml)? {
            SourceConfig::V4l2(config) => Ok(config),
            other => panic!("not v4l2: {other:?}"),
        }
    }

    #[test]
    fn v4l2_by_path_and_by_match() {
        let c = v4l2("source:\n  type: v4l2\n  device: /dev/video0\n").unwrap();
        assert_eq!(c.device, DeviceSelector::Path("/dev/video0".into()));
        assert_eq!(c.format, CaptureFormat::Auto);

        let c = v4l2(
            "source:\n  type: v4l2\n  card: HD Pro Webcam C920\n  usb: 046D:082d\n  \
             serial: ABC123\n  format: mjpeg\n",
        )
        .unwrap();
        assert_eq!(
            c.device,
            DeviceSelector::Match(DeviceMatch {
                card: Some("HD Pro Webcam C920".into()),
                usb: Some(UsbId {
                    vendor: 0x046d,
                    product: 0x082d
                }),
                serial: Some("ABC123".into()),
            })
        );
        assert_eq!(c.format, CaptureFormat::Mjpeg);
        for (text, format) in [
            ("auto", CaptureFormat::Auto),
            ("yuyv", CaptureFormat::Yuyv),
            ("nv12", CaptureFormat::Nv12),
            ("h264", CaptureFormat::H264),
        ] {
            let yaml = format!("source:\n  type: v4l2\n  device: /dev/video2\n  format: {text}\n");
            assert_eq!(v4l2(&yaml).unwrap().format, format);
            assert_eq!(format.to_string(), text);
        }
        assert_eq!(
            UsbId {
                vendor: 0x46d,
                product: 0x825
            }
            .to_string(),
            "046d:0825"
        );
    }

    #[test]
    fn v4l2_errors_are_located_and_say_what_to_write() {
        let e = parse("source:\n  type: v4l2\n  device: video0\n").unwrap_err();
        assert!(
            e.contains("source.device: \"video0\" is not an absolute path"),
            "{e}"
        );
        assert!(e.contains("line 3"), "{e}");
        let e = parse("source:\n  type: v4l2\n  device: /dev/video0\n  format: rgb\n").unwrap_err();
        assert!(e.contains("source.format: unknown variant `rgb`, expected one of `auto`, `mjpeg`, `yuyv`, `nv12`, `h264`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = parse("source:\n  type: v4l2\n  usb: 46d:825\n").unwrap_err();
        assert!(e.contains("source.usb: \"46d:825\" is not a USB id"), "{e}");
        let e = parse("source:\n  type: v4l2\n  card: \"\"\n").unwrap_err();
        assert!(e.contains("source.card: must not be empty"), "{e}");
        let e = parse("source:\n  type: v4l2\n  devcie: /dev/video0\n").unwrap_err();
        assert!(
            e.contains("unknown field `devcie`, expected one of `device`"),
            "{e}"
        );
        assert!(e.contains("line 3"), "{e}");
        let e = parse("source: v4l2").unwrap_err();
        assert!(e.contains("a v4l2 source needs `device`"), "{e}");
        let e = parse("source:\n  type: v4l2\n").unwrap_err();
        assert!(e.contains("a v4l2 source needs `device`"), "{e}");
        let e = parse("source:\n  type: v4l2\n  device: /dev/video0\n  card: X\n").unwrap_err();
        assert!(
            e.contains("either `device` or `card`/`usb`/`serial`"),
            "{e}"
        );
    }
}
