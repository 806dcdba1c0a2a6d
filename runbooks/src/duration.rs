//! Durations as runbooks write them: `250ms`, `30s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// Why a duration does not parse; each message says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration (write 30s, 5m or 1h30m)")]
    Empty,
    /// `5 minutes`.
    #[error("{0:?}: no spaces inside a duration (write 30s, 5m or 1h30m)")]
    Spaces(String),
    /// Not a number where one belongs.
    #[error("{0:?} is not a duration (write 30s, 5m or 1h30m)")]
    NotADuration(String),
    /// A number without its unit.
    #[error("{0:?}: {1} has no unit (ms, s, m, h or d)")]
    NoUnit(String, u64),
    /// A unit quench does not know.
    #[error("{0:?}: unknown unit {1:?} (ms, s, m, h or d)")]
    UnknownUnit(String, String),
    /// More than a `Duration` holds.
    #[error("{0:?}: too long")]
    TooLong(String),
}

/// Parses a duration; the error says what is wrong.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    if t.contains(char::is_whitespace) {
        return Err(DurationError::Spaces(s.to_string()));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::NotADuration(s.to_string()));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::TooLong(s.to_string()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let one = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "" => return Err(DurationError::NoUnit(s.to_string(), n)),
            other => return Err(DurationError::UnknownUnit(s.to_string(), other.to_string())),
        };
        let part = one
            .checked_mul(u32::try_from(n).map_err(|_| DurationError::TooLong(s.to_string()))?)
            .ok_or_else(|| DurationError::TooLong(s.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::TooLong(s.to_string()))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "5", "m", "5 m", "5x", "-5s", "1.5h", "99999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
