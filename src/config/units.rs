//! Human units in configuration: durations (`10s`, `5m`, `1h30m`) and byte sizes (`16MiB`, `512KB`, `1000`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration Warden accepts anywhere (config, pack parameters, rule requests, CLI flags): a year is
/// plenty for any window, and keeps every time computation far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// The largest size Warden accepts anywhere (body caps, output caps, rotation sizes).
pub const MAX_SIZE: u64 = 1 << 40;

/// Parses a duration such as `10s`, `250ms`, `5m`, `1h30m`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration `{s}`: {e} (examples: 10s, 5m, 1h30m)"))?;
    if d > MAX_DURATION {
        return Err(format!("duration `{s}` is longer than a year, the longest Warden accepts"));
    }
    Ok(d)
}

/// `#[serde(with = "units::duration")]` for a required duration.
pub mod duration {
    use super::*;
    /// Deserializes a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "units::opt_duration")]` for an optional duration.
pub mod opt_duration {
    use super::*;
    /// Deserializes an optional duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// A number of bytes, written as `16MiB`, `512KiB`, `10MB` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as `usize`.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Parses `16MiB`, `512KB`, `1000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size `{s}` (examples: 16MiB, 512KB, 1000)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        u => return Err(format!("invalid size unit `{u}` in `{s}` (use B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    n.checked_mul(mult)
        .filter(|n| *n <= MAX_SIZE)
        .ok_or_else(|| format!("size `{s}` is larger than 1TiB, the largest Warden accepts"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n <= MAX_SIZE => Ok(ByteSize(n)),
            Raw::N(n) => {
                Err(serde::de::Error::custom(format!("size {n} is larger than 1TiB, the largest Warden accepts")))
            }
            Raw::S(s) => parse_size(&s).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 * 1024 * 1024);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("invalid duration `soon`"));
        assert_eq!(parse_duration("1y").unwrap(), humantime::parse_duration("1y").unwrap());
        for huge in ["1000000y", "400d", "2y", "300000y"] {
            assert!(parse_duration(huge).unwrap_err().contains("longer than a year"), "{huge}");
        }
        assert!(parse_size("2TiB").is_err() && parse_size("99999999999999999999").is_err());
    }
}
