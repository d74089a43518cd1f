//! Durations as people write them: `"250ms"`, `"1.5s"`, `"1m"`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a number and a unit (`"250ms"`, `"1.5s"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `"250ms"`, `"1s"`, `"1.5m"` …; units `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`,
    /// `w` (7 days).
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.starts_with('-') {
            return Err(format!("duration {text:?} is negative"));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("duration {text:?} has no unit; write e.g. \"250ms\", \"1s\" or \"1m\"")
            })?;
        let (number, unit) = s.split_at(split);
        let micros_per_unit: f64 = match unit.trim() {
            "us" | "µs" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            "w" => 7.0 * 86_400e6,
            "mo" | "month" | "y" | "year" => {
                return Err(format!(
                    "duration {text:?}: months and years have no fixed length; use a rule with align = \"calendar\" and window = \"1mo\", or days (\"30d\")"
                ));
            }
            other => {
                return Err(format!(
                    "duration {text:?} has an unknown unit {other:?}; use us, ms, s, m, h, d or w"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("duration {text:?} does not start with a number"))?;
        let micros = (value * micros_per_unit).round();
        if micros > u64::MAX as f64 / 2.0 {
            return Err(format!("duration {text:?} is too long"));
        }
        Ok(HumanDuration(Duration::from_micros(micros as u64)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            return f.write_str("0ms");
        }
        let units: [(u128, &str); 5] = [
            (86_400_000_000, "d"),
            (3_600_000_000, "h"),
            (60_000_000, "m"),
            (1_000_000, "s"),
            (1_000, "ms"),
        ];
        match units.iter().find(|(size, _)| us.is_multiple_of(*size)) {
            Some((size, unit)) => write!(f, "{}{unit}", us / size),
            None => write!(f, "{us}us"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"1s\" or \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
