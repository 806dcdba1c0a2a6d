//! When scheduled experiments run: the cron expression read in the
//! schedule's timezone (croner; daylight-saving transitions included),
//! blackout periods skipped, and the concurrency policy.

use chrono::{DateTime, TimeZone, Utc};

use crate::load::ParsedSchedule;

/// The first run strictly after `after`, outside every blackout, or None
/// when the expression never fires again (within ten years of searching).
pub fn next_run(s: &ParsedSchedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = after.with_timezone(&s.tz);
    for _ in 0..10_000 {
        let next = s.cron.find_next_occurrence(&from, false).ok()?;
        let local = next.naive_local();
        match s.blackouts.iter().find(|(a, b)| local >= *a && local < *b) {
            // Inside a blackout: look again from its end.
            Some((_, end)) => {
                from = s.tz.from_local_datetime(end).earliest()?;
                // The end itself may be a run time: search from just before.
                from -= chrono::Duration::seconds(1);
            }
            None => return Some(next.with_timezone(&Utc)),
        }
    }
    None
}

/// The next `n` runs after `after`.
pub fn next_runs(s: &ParsedSchedule, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = after;
    while out.len() < n {
        match next_run(s, t) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// Whether a scheduled run may start now, given how many of the same
/// experiment are going on.
pub fn may_start(s: &ParsedSchedule, running: usize) -> bool {
    running == 0 || s.concurrency == crate::model::Concurrency::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn schedule(cron: &str, tz: &str, blackouts: &[(&str, &str)]) -> ParsedSchedule {
        let p = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap();
        ParsedSchedule {
            cron: croner::Cron::from_str(cron).unwrap(),
            tz: tz.parse().unwrap(),
            blackouts: blackouts.iter().map(|(a, b)| (p(a), p(b))).collect(),
            concurrency: crate::model::Concurrency::Forbid,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn weekly_runs_keep_their_local_time_across_both_dst_changes() {
        // Paris: summer time ends 2026-10-25, starts again 2027-03-28.
        let s = schedule("0 3 * * MON", "Europe/Paris", &[]);
        let runs = next_runs(&s, utc("2026-10-14T00:00:00Z"), 3);
        assert_eq!(
            runs,
            [
                utc("2026-10-19T01:00:00Z"), // 03:00 CEST (UTC+2)
                utc("2026-10-26T02:00:00Z"), // 03:00 CET (UTC+1), the day after the change
                utc("2026-11-02T02:00:00Z"),
            ]
        );
        let runs = next_runs(&s, utc("2027-03-20T00:00:00Z"), 2);
        assert_eq!(
            runs,
            [utc("2027-03-22T02:00:00Z"), utc("2027-03-29T01:00:00Z")]
        );
    }

    #[test]
    fn a_time_that_does_not_exist_or_exists_twice_runs_once() {
        // 02:30 does not exist on 2027-03-28 in Paris; it exists twice on
        // 2026-10-25. A daily job runs once each of those days.
        let s = schedule("30 2 * * *", "Europe/Paris", &[]);
        let spring = next_runs(&s, utc("2027-03-27T12:00:00Z"), 2);
        assert_eq!(spring.len(), 2);
        assert!(spring[0] > utc("2027-03-27T12:00:00Z"));
        assert_eq!(
            spring
                .iter()
                .filter(|t| t.date_naive() == utc("2027-03-28T00:00:00Z").date_naive())
                .count(),
            1,
            "{spring:?}"
        );
        let autumn = next_runs(&s, utc("2026-10-24T12:00:00Z"), 2);
        assert_eq!(
            autumn
                .iter()
                .filter(|t| t.date_naive() == utc("2026-10-25T00:00:00Z").date_naive())
                .count(),
            1,
            "{autumn:?}"
        );
    }

    #[test]
    fn blackouts_are_skipped() {
        let s = schedule(
            "0 3 * * MON",
            "Europe/Paris",
            &[("2026-12-21T00:00", "2027-01-04T00:00")],
        );
        let runs = next_runs(&s, utc("2026-12-15T00:00:00Z"), 2);
        assert_eq!(
            runs,
            [utc("2027-01-04T02:00:00Z"), utc("2027-01-11T02:00:00Z")],
            "Dec 21 and 28 fall in the freeze; Jan 4 at 03:00 is after its end"
        );
    }

    #[test]
    fn forbid_prevents_overlap() {
        let mut s = schedule("0 3 * * MON", "UTC", &[]);
        assert!(may_start(&s, 0));
        assert!(!may_start(&s, 1));
        s.concurrency = crate::model::Concurrency::Allow;
        assert!(may_start(&s, 1));
    }
}
