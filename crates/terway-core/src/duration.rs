//! Go-style duration strings (`"300ms"`, `"10m"`, `"1h30m"`, `"1.5h"`) as Terway's configuration writes
//! them, parsed into [`std::time::Duration`] and printed back in the same style.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written the way Go's `time.ParseDuration` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration like \"300ms\", \"120s\", \"10m\" or \"1h30m\": {reason}")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// What exactly is wrong with it.
    pub reason: &'static str,
}

impl GoDuration {
    /// Build from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Build from whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// The wrapped standard duration.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// True for a zero duration.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Nanoseconds per unit suffix, longest suffixes first so "ms" wins over "m".
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{00b5}s", 1_000),
    ("\u{03bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(err("it is empty"));
        }
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        } else if rest.starts_with('-') {
            return Err(err("negative durations are not allowed"));
        }
        // Go accepts a bare "0" without a unit.
        if rest == "0" {
            return Ok(Self(Duration::ZERO));
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let (number, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            if unit.is_empty() {
                return Err(err("a number is missing its unit (ns, us, ms, s, m, h)"));
            }
            let scale = UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, s)| *s)
                .ok_or_else(|| err("unknown unit (use ns, us, ms, s, m or h)"))?;
            let (int_part, frac_part) = match number.split_once('.') {
                Some((i, f)) => (i, f),
                None => (number, ""),
            };
            if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
                return Err(err("malformed number"));
            }
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err("number too large"))?
            };
            let mut nanos = int
                .checked_mul(scale)
                .ok_or_else(|| err("duration too large"))?;
            // Fractions are exact up to the nanosecond, extra digits are truncated as Go does.
            let mut place = scale;
            for digit in frac_part.bytes() {
                place /= 10;
                if place == 0 {
                    break;
                }
                nanos += u128::from(digit - b'0') * place;
            }
            total = total
                .checked_add(nanos)
                .ok_or_else(|| err("duration too large"))?;
            rest = tail;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("duration too large"))?;
        // The remainder is below 1e9 so the cast cannot truncate.
        let sub = (total % 1_000_000_000) as u32;
        Ok(Self(Duration::new(secs, sub)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d < Duration::from_secs(1) {
            let nanos = d.subsec_nanos();
            return if nanos.is_multiple_of(1_000_000) {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                write!(f, "{}us", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            };
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        let nanos = d.subsec_nanos();
        if nanos == 0 {
            write!(f, "{s}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            // Go marshals a bare time.Duration as integer nanoseconds; accept that for compatibility.
            Nanos(u64),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Nanos(n) => Ok(Self(Duration::from_nanos(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Duration {
        s.parse::<GoDuration>().unwrap().0
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(p("300ms"), Duration::from_millis(300));
        assert_eq!(p("120s"), Duration::from_secs(120));
        assert_eq!(p("10m"), Duration::from_secs(600));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("1.5h"), Duration::from_secs(5400));
        assert_eq!(p("0"), Duration::ZERO);
        assert_eq!(p("2m3.5s"), Duration::from_millis(123_500));
        assert_eq!(p("7us"), Duration::from_micros(7));
        assert_eq!(p(".5s"), Duration::from_millis(500));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-1s",
            "1..5s",
            "5 s",
            "99999999999999999999999h",
            ".",
        ] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["300ms", "2m0s", "1h30m0s", "30s", "1.5s", "0s", "7us"] {
            assert_eq!(s.parse::<GoDuration>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn serde_accepts_string_and_nanos() {
        let d: GoDuration = serde_json::from_str("\"10m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(600));
        let d: GoDuration = serde_json::from_str("2000000000").unwrap();
        assert_eq!(d.0, Duration::from_secs(2));
        assert_eq!(
            serde_json::to_string(&GoDuration::from_secs(90)).unwrap(),
            "\"1m30s\""
        );
    }
}
