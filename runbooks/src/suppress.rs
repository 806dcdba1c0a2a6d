//! Suppression, as Alertmanager does it: named time intervals (`active_time`,
//! `mute_time`) and inhibition (`inhibit_when`). A suppressed alert is still
//! stored and explained; it only does not run the runbook.
//!
//! Time intervals live in `time-intervals.yaml` at the root of the runbook
//! directory, so every runbook can name them:
//!
//! ```yaml
//! version: 1
//! time_intervals:
//!   business_hours:
//!     - location: Europe/Berlin
//!       weekdays: ["monday:friday"]
//!       times: [{start_time: "09:00", end_time: "17:00"}]
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The file of named intervals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalsFile {
    /// Only `1`.
    pub version: Spanned<u32>,
    /// Name to a list of specs; the interval holds when any spec does.
    pub time_intervals: BTreeMap<String, Vec<IntervalSpecFile>>,
}

/// One spec as written. Every field left out holds always.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalSpecFile {
    /// IANA time zone, such as `Europe/Berlin` (default `UTC`).
    #[serde(default)]
    pub location: Option<Spanned<String>>,
    /// Ranges of days: `monday:friday`, `sunday`.
    #[serde(default)]
    pub weekdays: Vec<Spanned<String>>,
    /// Ranges of the time of day, start inclusive, end exclusive.
    #[serde(default)]
    pub times: Vec<TimeRangeFile>,
    /// Ranges of days of the month: `1:7`, `15`.
    #[serde(default)]
    pub days_of_month: Vec<Spanned<String>>,
    /// Ranges of months: `january:march`, `12`.
    #[serde(default)]
    pub months: Vec<Spanned<String>>,
}

/// A time-of-day range as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeFile {
    /// `HH:MM`.
    pub start_time: Spanned<String>,
    /// `HH:MM`, up to `24:00`.
    pub end_time: Spanned<String>,
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct IntervalSpec {
    tz: chrono_tz::Tz,
    weekdays: Vec<(u32, u32)>,
    times: Vec<(u32, u32)>,
    days_of_month: Vec<(u32, u32)>,
    months: Vec<(u32, u32)>,
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// What is wrong with a value of a time interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// `location` is not an IANA time zone.
    #[error("unknown time zone {0:?} (an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    /// A day, month or day of the month that is not one.
    #[error("{value:?} is not {expected}")]
    NotOneOf {
        /// What was written.
        value: String,
        /// What it may be.
        expected: String,
    },
    /// `b:a` with `b` after `a`.
    #[error("range {0:?} ends before it starts")]
    Backwards(String),
    /// Not `HH:MM` up to `24:00`.
    #[error("{0:?} is not a time of day (HH:MM)")]
    TimeOfDay(String),
    /// An empty or backwards time range.
    #[error("start_time must be before end_time")]
    EmptyTimes,
}

fn named_or_number(s: &str, names: &[&str], min: u32, max: u32) -> Result<u32, IntervalError> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s.trim())) {
        return Ok(i as u32 + min);
    }
    match s.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(IntervalError::NotOneOf {
            value: s.to_string(),
            expected: if names.is_empty() {
                format!("a number from {min} to {max}")
            } else {
                format!("one of {}", names.join(", "))
            },
        }),
    }
}

fn range(s: &str, names: &[&str], min: u32, max: u32) -> Result<(u32, u32), IntervalError> {
    let (a, b) = s.split_once(':').unwrap_or((s, s));
    let (a, b) = (
        named_or_number(a, names, min, max)?,
        named_or_number(b, names, min, max)?,
    );
    if a > b {
        return Err(IntervalError::Backwards(s.to_string()));
    }
    Ok((a, b))
}

fn minutes(s: &str) -> Result<u32, IntervalError> {
    let bad = || IntervalError::TimeOfDay(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl IntervalSpec {
    /// Validates a spec; each error comes with the place it points at.
    pub fn build(
        f: &IntervalSpecFile,
    ) -> Result<IntervalSpec, Vec<(serde_saphyr::Location, IntervalError)>> {
        let mut errs = Vec::new();
        let tz = match &f.location {
            None => chrono_tz::UTC,
            Some(l) => l.value.parse().unwrap_or_else(|_| {
                errs.push((l.referenced, IntervalError::TimeZone(l.value.clone())));
                chrono_tz::UTC
            }),
        };
        let mut ranges = |list: &[Spanned<String>], names: &[&str], min, max| {
            list.iter()
                .filter_map(|s| {
                    range(&s.value, names, min, max)
                        .map_err(|e| errs.push((s.referenced, e)))
                        .ok()
                })
                .collect::<Vec<_>>()
        };
        let weekdays = ranges(&f.weekdays, &WEEKDAYS, 1, 7);
        let days_of_month = ranges(&f.days_of_month, &[], 1, 31);
        let months = ranges(&f.months, &MONTHS, 1, 12);
        let mut times = Vec::new();
        for t in &f.times {
            match (minutes(&t.start_time.value), minutes(&t.end_time.value)) {
                (Ok(a), Ok(b)) if a < b => times.push((a, b)),
                (Ok(_), Ok(_)) => errs.push((t.start_time.referenced, IntervalError::EmptyTimes)),
                (Err(e), _) => errs.push((t.start_time.referenced, e)),
                (_, Err(e)) => errs.push((t.end_time.referenced, e)),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(IntervalSpec {
            tz,
            weekdays,
            times,
            days_of_month,
            months,
        })
    }

    /// Whether `now` falls in this spec.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let inside = |ranges: &[(u32, u32)], v: u32| {
            ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&v))
        };
        let minute = local.hour() * 60 + local.minute();
        inside(&self.weekdays, local.weekday().number_from_monday())
            && inside(&self.days_of_month, local.day())
            && inside(&self.months, local.month())
            && (self.times.is_empty() || self.times.iter().any(|(a, b)| (*a..*b).contains(&minute)))
    }
}

/// Whether any spec of a named interval contains `now`.
pub fn interval_contains(specs: &[IntervalSpec], now: DateTime<Utc>) -> bool {
    specs.iter().any(|s| s.contains(now))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn spec(yaml: &str) -> IntervalSpec {
        let f: IntervalSpecFile = serde_saphyr::from_str(yaml).unwrap();
        IntervalSpec::build(&f).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn business_hours_in_a_time_zone() {
        let s = spec(
            "location: Europe/Berlin\nweekdays: ['monday:friday']\ntimes: [{start_time: '09:00', end_time: '17:00'}]\n",
        );
        // Friday 2026-11-27 07:59 UTC is 08:59 in Berlin (CET, UTC+1): closed.
        assert!(!s.contains(Utc.with_ymd_and_hms(2026, 11, 27, 7, 59, 0).unwrap()));
        assert!(s.contains(Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap()));
        // 17:00 Berlin is the end, exclusive.
        assert!(!s.contains(Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap()));
        // Saturday.
        assert!(!s.contains(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()));
        // Summer time: 09:00 in Berlin is 07:00 UTC.
        assert!(s.contains(Utc.with_ymd_and_hms(2026, 7, 1, 7, 0, 0).unwrap()));
    }

    #[test]
    fn months_days_and_errors() {
        let s = spec("months: ['december']\ndays_of_month: ['24:26']\n");
        assert!(s.contains(Utc.with_ymd_and_hms(2026, 12, 25, 12, 0, 0).unwrap()));
        assert!(!s.contains(Utc.with_ymd_and_hms(2026, 12, 27, 12, 0, 0).unwrap()));
        let f: IntervalSpecFile = serde_saphyr::from_str(
            "location: Mars/Olympus\nweekdays: ['funday']\ntimes: [{start_time: '25:00', end_time: '10:00'}]\nmonths: ['march:january']\n",
        )
        .unwrap();
        let errs = IntervalSpec::build(&f).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[0].1, IntervalError::TimeZone("Mars/Olympus".into()));
        assert!(errs[0].1.to_string().contains("Mars/Olympus"));
        assert_eq!(errs[0].0.line(), 1);
    }
}
