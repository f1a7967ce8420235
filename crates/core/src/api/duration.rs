//! Durations written the way Kubernetes APIs write them (Go's `time.ParseDuration`): `30s`,
//! `1m`, `1h30m`, `500ms`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration that keeps the text it was written as, so objects round-trip unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid duration `{0}`: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. `5m` or `1h30m`")]
pub struct DurationError(pub String);

impl GoDuration {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let err = || DurationError(text.to_string());
        let s = text.trim();
        if s == "0" {
            return Ok(GoDuration {
                text: text.to_string(),
                value: Duration::ZERO,
            });
        }
        if s.is_empty() || s.starts_with('-') {
            return Err(err());
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: f64 = 0.0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if start == i {
                return Err(err());
            }
            let number: f64 = s[start..i].parse().map_err(|_| err())?;
            let ustart = i;
            while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let factor = match &s[ustart..i] {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(err()),
            };
            total += number * factor;
        }
        if !total.is_finite() || total > 1e12 {
            return Err(err());
        }
        Ok(GoDuration {
            text: text.to_string(),
            value: Duration::from_secs_f64(total),
        })
    }

    pub fn from_duration(d: Duration) -> Self {
        let secs = d.as_secs();
        let text = if d.subsec_nanos() != 0 {
            format!("{}ms", d.as_millis())
        } else if secs != 0 && secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs != 0 && secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        GoDuration { text, value: d }
    }

    pub fn duration(&self) -> Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(
            GoDuration::parse("1m").unwrap().duration(),
            Duration::from_secs(60)
        );
        assert_eq!(
            GoDuration::parse("1h30m").unwrap().duration(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            GoDuration::parse("500ms").unwrap().duration(),
            Duration::from_millis(500)
        );
        assert_eq!(
            GoDuration::parse("1.5s").unwrap().duration(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            GoDuration::parse("12h").unwrap().duration(),
            Duration::from_secs(43200)
        );
        assert_eq!(GoDuration::parse("0").unwrap().duration(), Duration::ZERO);
        for bad in ["", "5", "m", "5 minutes", "-1s", "1d"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn keeps_original_text() {
        let d = GoDuration::parse("90s").unwrap();
        assert_eq!(d.to_string(), "90s");
        assert_eq!(
            GoDuration::from_duration(Duration::from_secs(600)).as_str(),
            "10m"
        );
    }
}
