//! Durations as runbooks write them: `250ms`, `30s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// Parses a duration; the message says what is wrong.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration (write 30s, 5m or 1h30m)".into());
    }
    if t.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?}: no spaces inside a duration (write 30s, 5m or 1h30m)"
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?} is not a duration (write 30s, 5m or 1h30m)"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
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
            "" => return Err(format!("{s:?}: {n} has no unit (ms, s, m, h or d)")),
            other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h or d)")),
        };
        let part = one
            .checked_mul(u32::try_from(n).map_err(|_| format!("{s:?}: number too large"))?)
            .ok_or_else(|| format!("{s:?}: too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?}: too long"))?;
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
