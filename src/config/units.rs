//! Range-checked numbers, bit rates and durations, checked *while* deserializing.
//!
//! Why in the visitor and not afterwards: serde_yaml 0.9 attaches a location (and the key path,
//! e.g. `encoding.fps: `) only to errors raised while it is positioned on the offending scalar.
//! An error from a `try_from` conversion or a later validation pass would point at the enclosing
//! mapping, or nowhere.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// An unsigned integer in `range`, optionally required to be even (picture dimensions: I420
/// chroma planes are half size).
pub(super) fn deserialize_u32_in<'de, D: Deserializer<'de>>(
    deserializer: D,
    range: RangeInclusive<u32>,
    even: bool,
) -> Result<u32, D::Error> {
    // `any` rather than `u32`: serde_yaml's `deserialize_u32` turns a negative number into a
    // type error before our range message could be given.
    deserializer.deserialize_any(RangedU32 { range, even })
}

struct RangedU32 {
    range: RangeInclusive<u32>,
    even: bool,
}

impl RangedU32 {
    fn range_text(&self) -> String {
        format!("{}..={}", self.range.start(), self.range.end())
    }
}

impl Visitor<'_> for RangedU32 {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let even = if self.even { "an even " } else { "an " };
        write!(f, "{even}integer in {}", self.range_text())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        match u32::try_from(v) {
            Ok(v) if self.range.contains(&v) => {
                if self.even && !v.is_multiple_of(2) {
                    Err(E::custom(format!(
                        "{v} must be even (and in {})",
                        self.range_text()
                    )))
                } else {
                    Ok(v)
                }
            }
            _ => Err(E::custom(format!(
                "{v} is out of range {}",
                self.range_text()
            ))),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "{v} is out of range {}",
                self.range_text()
            ))),
        }
    }
}

/// Limits of the `bitrate` key, in bit/s.
pub(super) const BITRATE_RANGE: RangeInclusive<u32> = 100_000..=20_000_000;

/// A bit rate: an integer in bit/s, or a string with an optional `k` (10³) or `M` (10⁶)
/// suffix: `800k`, `2M`, `2.5M`.
pub(super) fn deserialize_bitrate<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    deserializer.deserialize_any(BitrateVisitor)
}

struct BitrateVisitor;

impl BitrateVisitor {
    fn check<E: de::Error>(bps: f64, written: &dyn fmt::Display) -> Result<u32, E> {
        let lo = f64::from(*BITRATE_RANGE.start());
        let hi = f64::from(*BITRATE_RANGE.end());
        if !(lo..=hi).contains(&bps) {
            return Err(E::custom(format!(
                "{written} is out of range {}..={}",
                format_bitrate(*BITRATE_RANGE.start()),
                format_bitrate(*BITRATE_RANGE.end())
            )));
        }
        // In range, so the cast cannot truncate; rounding absorbs "2.5M"-style float noise.
        Ok(bps.round() as u32)
    }
}

impl Visitor<'_> for BitrateVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bit rate: an integer in bit/s or a string like \"800k\", \"2M\", \"2.5M\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        Self::check(v as f64, &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        Self::check(v as f64, &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        let s = v.trim();
        let (number, factor) = if let Some(n) = s.strip_suffix(['k', 'K']) {
            (n, 1e3)
        } else if let Some(n) = s.strip_suffix('M') {
            (n, 1e6)
        } else {
            (s, 1.0)
        };
        match number.trim_end().parse::<f64>() {
            Ok(n) if n.is_finite() => Self::check(n * factor, &format_args!("\"{v}\"")),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

/// `2000000` → `2M`, `800000` → `800k`, for messages.
pub(crate) fn format_bitrate(bps: u32) -> String {
    if bps.is_multiple_of(1_000_000) {
        format!("{}M", bps / 1_000_000)
    } else if bps.is_multiple_of(1_000) {
        format!("{}k", bps / 1_000)
    } else {
        bps.to_string()
    }
}

/// Limits of the `keyframeInterval` key.
pub(super) const KEYFRAME_INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);

/// A duration: a number of seconds, or a string `"2s"`, `"1.5s"`, `"500ms"`.
pub(super) fn deserialize_keyframe_interval<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor {
        range: KEYFRAME_INTERVAL_RANGE,
    })
}

struct DurationVisitor {
    range: RangeInclusive<Duration>,
}

impl DurationVisitor {
    fn check<E: de::Error>(&self, secs: f64, written: &dyn fmt::Display) -> Result<Duration, E> {
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if self.range.contains(&d) => Ok(d),
            _ => Err(E::custom(format!(
                "{written} is out of range {:?}..={:?}",
                self.range.start(),
                self.range.end()
            ))),
        }
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: a number of seconds or a string like \"2s\", \"500ms\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.check(v as f64, &format_args!("{v}s"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        self.check(v as f64, &format_args!("{v}s"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        self.check(v, &format_args!("{v}s"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let s = v.trim();
        // `ms` before `s`: "500ms" also ends in "s".
        let (number, factor) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else {
            (s, 1.0)
        };
        match number.trim_end().parse::<f64>() {
            Ok(n) if n.is_finite() => self.check(n * factor, &format_args!("\"{v}\"")),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

/// `yes`/`no` as MediaMTX's files write them (YAML 1.1 booleans), as well as `true`/`false`.
pub(super) fn deserialize_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("yes or no")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.to_ascii_lowercase().as_str() {
                "yes" | "on" | "true" => Ok(true),
                "no" | "off" | "false" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(V)
}

/// Limits of `sourceOnDemandCloseAfter`.
const CLOSE_AFTER_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

/// `sourceOnDemandCloseAfter`: a duration as for `keyframeInterval`, up to an hour.
pub(super) fn deserialize_close_after<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor {
        range: CLOSE_AFTER_RANGE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(default, deserialize_with = "even")]
        even: u32,
        #[serde(default, deserialize_with = "deserialize_bitrate")]
        bitrate: u32,
        #[serde(default, deserialize_with = "deserialize_keyframe_interval")]
        interval: Duration,
    }

    fn even<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        deserialize_u32_in(d, 160..=3840, true)
    }

    fn parse(yaml: &str) -> Result<T, String> {
        serde_yaml::from_str::<T>(yaml).map_err(|e| e.to_string())
    }

    fn bitrate(v: &str) -> Result<u32, String> {
        parse(&format!("bitrate: {v}")).map(|t| t.bitrate)
    }

    fn interval(v: &str) -> Result<Duration, String> {
        parse(&format!("interval: {v}")).map(|t| t.interval)
    }

    #[test]
    fn ranged_even() {
        assert_eq!(parse("even: 160").unwrap().even, 160);
        assert_eq!(parse("even: 3840").unwrap().even, 3840);
        assert_eq!(
            parse("even: 158").unwrap_err(),
            "even: 158 is out of range 160..=3840 at line 1 column 7"
        );
        assert!(parse("even: 3842").is_err());
        assert!(parse("even: 161").unwrap_err().contains("161 must be even"));
        assert!(
            parse("even: -2")
                .unwrap_err()
                .contains("-2 is out of range")
        );
        assert!(parse("even: 99999999999").is_err());
        assert!(parse("even: 200.5").is_err());
        assert!(
            parse("even: \"200\"")
                .unwrap_err()
                .contains("expected an even integer in 160..=3840")
        );
    }

    #[test]
    fn bitrates() {
        assert_eq!(bitrate("100000"), Ok(100_000));
        assert_eq!(bitrate("20000000"), Ok(20_000_000));
        assert_eq!(bitrate("100k"), Ok(100_000));
        assert_eq!(bitrate("800k"), Ok(800_000));
        assert_eq!(bitrate("800K"), Ok(800_000));
        assert_eq!(bitrate("2M"), Ok(2_000_000));
        assert_eq!(bitrate("2.5M"), Ok(2_500_000));
        assert_eq!(bitrate("0.1M"), Ok(100_000));
        assert_eq!(bitrate("\"1500000\""), Ok(1_500_000));
        assert_eq!(bitrate("20M"), Ok(20_000_000));
        assert_eq!(
            bitrate("99999").unwrap_err(),
            "bitrate: 99999 is out of range 100k..=20M at line 1 column 10"
        );
        assert!(
            bitrate("20.1M")
                .unwrap_err()
                .contains("\"20.1M\" is out of range")
        );
        assert!(bitrate("99k").is_err());
        assert!(bitrate("-1").is_err());
        assert!(bitrate("-1M").is_err());
        assert!(bitrate("2m").is_err()); // milli-bits make no sense; do not guess
        assert!(bitrate("2 Mbit").is_err());
        assert!(bitrate("M").is_err());
        assert!(bitrate("nanM").is_err());
        assert!(bitrate("infM").is_err());
        assert!(bitrate("true").is_err());
        assert!(
            bitrate("fast")
                .unwrap_err()
                .contains("expected a bit rate: an integer in bit/s")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(interval("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(interval("60"), Ok(Duration::from_secs(60)));
        assert_eq!(interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(interval("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(interval("60000ms"), Ok(Duration::from_secs(60)));
        assert_eq!(
            interval("99ms").unwrap_err(),
            "interval: \"99ms\" is out of range 100ms..=60s at line 1 column 11"
        );
        assert!(interval("0.09").is_err());
        assert!(interval("61").unwrap_err().contains("61s is out of range"));
        assert!(interval("60001ms").is_err());
        assert!(interval("0").is_err());
        assert!(interval("-1").is_err());
        assert!(interval("-1s").is_err());
        assert!(interval("2m").is_err());
        assert!(interval("s").is_err());
        assert!(interval(".inf").is_err());
        assert!(interval("\"NaNs\"").is_err());
    }

    #[test]
    fn format_bitrates() {
        assert_eq!(format_bitrate(2_000_000), "2M");
        assert_eq!(format_bitrate(800_000), "800k");
        assert_eq!(format_bitrate(2_500_000), "2500k");
        assert_eq!(format_bitrate(1_234), "1234");
    }
}
