//! Business time as carried by events.
//!
//! The protocol never reads a clock: the shells pass `now` in. An [`EventTime`] is the
//! instant an event happened (milliseconds since the Unix epoch, UTC) together with the UTC
//! offset it was written with, so the original RFC 3339 text can be reproduced.

use alloc::string::{String, ToString};
use core::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z. The clock type of every sans-IO entry point.
pub type UnixMillis = i64;

/// The instant an event happened, with the offset it was recorded in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventTime {
    unix_ms: i64,
    offset_minutes: i16,
}

/// Why a text is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time with offset: {0}")]
pub struct TimeError(String);

impl EventTime {
    /// From a UTC instant and the offset to show it in. Out-of-range offsets become UTC.
    pub fn from_unix_ms(unix_ms: i64, offset_minutes: i16) -> EventTime {
        let offset_minutes = if offset_minutes.unsigned_abs() < 24 * 60 {
            offset_minutes
        } else {
            0
        };
        EventTime {
            unix_ms,
            offset_minutes,
        }
    }

    /// Parses RFC 3339 (`2026-11-22T09:30:00+01:00`, `...Z`). The offset is required.
    pub fn parse_rfc3339(text: &str) -> Result<EventTime, TimeError> {
        // The temporal grammar jiff parses is a superset of RFC 3339 (zone annotations in
        // brackets, for one); those extensions are refused here because POS systems do not
        // send them and they would make the original text unreproducible.
        if text.len() > 40 || text.contains('[') {
            return Err(TimeError(String::from(
                "expected e.g. 2026-11-22T09:30:00+01:00",
            )));
        }
        let ts: jiff::Timestamp = text
            .parse()
            .map_err(|e: jiff::Error| TimeError(alloc::format!("{e}")))?;
        let offset_minutes = parse_offset_minutes(text)
            .ok_or_else(|| TimeError(String::from("the UTC offset must be Z or +HH:MM")))?;
        Ok(EventTime::from_unix_ms(ts.as_millisecond(), offset_minutes))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> i64 {
        self.unix_ms
    }

    /// The UTC offset of the original text, in minutes.
    pub fn offset_minutes(self) -> i16 {
        self.offset_minutes
    }

    /// As a jiff timestamp.
    pub fn timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// RFC 3339 text in the original offset, with milliseconds when they are not zero.
    pub fn to_rfc3339(self) -> String {
        let offset = jiff::tz::Offset::from_seconds(i32::from(self.offset_minutes) * 60)
            .unwrap_or(jiff::tz::Offset::UTC);
        let dt = offset.to_datetime(self.timestamp());
        let mut out = dt.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        let ms = dt.subsec_nanosecond() / 1_000_000;
        if ms != 0 {
            out.push_str(&alloc::format!(".{ms:03}"));
        }
        if self.offset_minutes == 0 {
            out.push('Z');
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let m = self.offset_minutes.unsigned_abs();
            out.push_str(&alloc::format!("{sign}{:02}:{:02}", m / 60, m % 60));
        }
        out
    }
}

/// The offset at the end of an RFC 3339 text that jiff already accepted.
fn parse_offset_minutes(text: &str) -> Option<i16> {
    let bytes = text.as_bytes();
    match bytes.last()? {
        b'Z' | b'z' => return Some(0),
        _ => {}
    }
    // `+HH:MM` or `+HHMM`.
    let (sign_at, with_colon) = match bytes.len().checked_sub(6) {
        Some(at) if matches!(bytes.get(at), Some(b'+' | b'-')) => (at, true),
        _ => (bytes.len().checked_sub(5)?, false),
    };
    let sign: i16 = match bytes.get(sign_at)? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = text.get(sign_at + 1..)?;
    let (h, m) = if with_colon {
        (digits.get(0..2)?, digits.get(3..5)?)
    } else {
        (digits.get(0..2)?, digits.get(2..4)?)
    };
    let h: i16 = h.parse().ok()?;
    let m: i16 = m.parse().ok()?;
    Some(sign * (h * 60 + m))
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventTime({})", self.to_rfc3339())
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<(i64, i16, &str)>) {
        let got = EventTime::parse_rfc3339(text).ok();
        match (got, expected) {
            (Some(t), Some((ms, off, back))) => {
                assert_eq!((t.unix_ms(), t.offset_minutes()), (ms, off), "{text}");
                assert_eq!(t.to_rfc3339(), back);
            }
            (None, None) => {}
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn rfc3339() {
        check("1970-01-01T00:00:00Z", Some((0, 0, "1970-01-01T00:00:00Z")));
        check(
            "2026-11-22T09:30:00+01:00",
            Some((1_795_336_200_000, 60, "2026-11-22T09:30:00+01:00")),
        );
        check(
            "2026-11-22T09:30:00.250-05:30",
            Some((1_795_359_600_250, -330, "2026-11-22T09:30:00.250-05:30")),
        );
        check("2026-11-22T09:30:00", None);
        check("2026-11-22", None);
        check("2026-13-22T09:30:00Z", None);
        check("2026-11-22T09:30:00Z[Europe/Paris]", None);
        check("yesterday", None);
        check("", None);
    }
}
