//! The top table, as `go tool pprof -top` computes it at function
//! granularity: `flat` is what a function spent itself (it is the leaf of
//! the sample's stack, inlined frames included), `cum` is what it spent
//! with its callees (it appears anywhere in the stack, counted once per
//! sample), sorted by flat, then cum, then name.

use std::collections::HashMap;

use serde::Serialize;

use super::ProfileError;
use super::proto::Profile;

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The function.
    pub function: String,
    /// Its own value.
    pub flat: i64,
    /// With callees.
    pub cum: i64,
}

/// The table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Top {
    /// The sample type used (`cpu`, `inuse_space`, ...).
    pub sample_type: String,
    /// Its unit (`nanoseconds`, `bytes`, `count`).
    pub unit: String,
    /// The sum over all samples.
    pub total: i64,
    /// Every function, in `-top` order.
    pub rows: Vec<Row>,
}

impl Top {
    /// `flat%` of a row.
    pub fn flat_pct(&self, r: &Row) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * r.flat as f64 / self.total as f64
        }
    }

    /// `cum%` of a row.
    pub fn cum_pct(&self, r: &Row) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * r.cum as f64 / self.total as f64
        }
    }
}

/// Which sample type `go tool pprof` shows by default: the profile's
/// `default_sample_type` if set, else the last one.
pub fn default_index(p: &Profile) -> usize {
    let want = p.default_sample_type;
    if want != 0
        && let Some(i) = p.sample_type.iter().position(|t| t.r#type == want)
    {
        return i;
    }
    p.sample_type.len().saturating_sub(1)
}

/// Computes the table for the sample type at `index` (see
/// [`default_index`]; `-sample_index=` picks another).
pub fn top(p: &Profile, index: usize) -> Result<Top, ProfileError> {
    let s = |i: i64| -> Result<&str, ProfileError> {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
            .ok_or_else(|| ProfileError::Inconsistent(format!("string index {i} out of range")))
    };
    let vt = p
        .sample_type
        .get(index)
        .ok_or_else(|| ProfileError::Inconsistent(format!("no sample type {index}")))?;
    // Everything by dense index: function ids to 0..n, each location to
    // the indices of its frames (innermost first). The per-sample work is
    // then array arithmetic, with a generation stamp instead of a set to
    // count a function once per sample.
    let mut names: Vec<&str> = Vec::with_capacity(p.function.len());
    let mut func_index: HashMap<u64, u32> = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        func_index.insert(f.id, names.len() as u32);
        names.push(s(f.name)?);
    }
    let mut loc_frames: HashMap<u64, Vec<u32>> = HashMap::with_capacity(p.location.len());
    for l in &p.location {
        let frames = l
            .line
            .iter()
            .map(|line| {
                func_index.get(&line.function_id).copied().ok_or_else(|| {
                    ProfileError::Inconsistent(format!(
                        "location refers to function {}",
                        line.function_id
                    ))
                })
            })
            .collect::<Result<Vec<u32>, _>>()?;
        loc_frames.insert(l.id, frames);
    }
    let mut flat = vec![0i64; names.len()];
    let mut cum = vec![0i64; names.len()];
    let mut stamp = vec![0u32; names.len()];
    let mut touched = vec![false; names.len()];
    let mut total = 0i64;
    for (n, sample) in p.sample.iter().enumerate() {
        let v = *sample.value.get(index).unwrap_or(&0);
        if v == 0 {
            continue;
        }
        total += v;
        let generation = n as u32 + 1;
        let mut leaf = true;
        for loc_id in &sample.location_id {
            let frames = loc_frames.get(loc_id).ok_or_else(|| {
                ProfileError::Inconsistent(format!("sample refers to location {loc_id}"))
            })?;
            for &f in frames {
                let f = f as usize;
                if leaf {
                    flat[f] += v;
                    leaf = false;
                }
                if stamp[f] != generation {
                    stamp[f] = generation;
                    cum[f] += v;
                    touched[f] = true;
                }
            }
            if frames.is_empty() {
                // An address without symbols: pprof shows it by address.
                leaf = false;
            }
        }
    }
    // Functions of the same name (pprof's function granularity) merge.
    let mut by_name: HashMap<&str, (i64, i64)> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if touched[i] {
            let e = by_name.entry(name).or_default();
            e.0 += flat[i];
            e.1 += cum[i];
        }
    }
    let mut rows: Vec<Row> = by_name
        .into_iter()
        .map(|(name, (f, c))| Row {
            function: name.to_string(),
            flat: f,
            cum: c,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.flat
            .abs()
            .cmp(&a.flat.abs())
            .then(b.cum.abs().cmp(&a.cum.abs()))
            .then_with(|| a.function.cmp(&b.function))
    });
    Ok(Top {
        sample_type: s(vt.r#type)?.to_string(),
        unit: s(vt.unit)?.to_string(),
        total,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::proto::{Function, Line, Location, Sample, ValueType};

    /// main -> work -> (inlined) hash; main -> idle
    fn profile() -> Profile {
        let strings = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "main.main",
            "main.work",
            "main.hash",
            "main.idle",
        ];
        let f = |id: u64, name: i64| Function {
            id,
            name,
            ..Default::default()
        };
        let loc = |id: u64, fns: &[u64]| Location {
            id,
            line: fns
                .iter()
                .map(|&function_id| Line {
                    function_id,
                    line: 1,
                })
                .collect(),
            ..Default::default()
        };
        Profile {
            sample_type: vec![
                ValueType { r#type: 1, unit: 2 },
                ValueType { r#type: 3, unit: 4 },
            ],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            function: vec![f(1, 5), f(2, 6), f(3, 7), f(4, 8)],
            // location 10: work with hash inlined into it (hash innermost)
            location: vec![loc(10, &[3, 2]), loc(11, &[1]), loc(12, &[4])],
            sample: vec![
                Sample {
                    location_id: vec![10, 11],
                    value: vec![3, 30],
                    label: vec![],
                },
                Sample {
                    location_id: vec![12, 11],
                    value: vec![1, 10],
                    label: vec![],
                },
                // recursion must count once in cum
                Sample {
                    location_id: vec![11, 11],
                    value: vec![1, 5],
                    label: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn flat_and_cum_as_pprof_counts_them() {
        let p = profile();
        assert_eq!(default_index(&p), 1);
        let t = top(&p, 1).unwrap();
        assert_eq!(
            (t.sample_type.as_str(), t.unit.as_str(), t.total),
            ("cpu", "nanoseconds", 45)
        );
        let row = |n: &str| t.rows.iter().find(|r| r.function == n).unwrap().clone();
        assert_eq!(
            (row("main.hash").flat, row("main.hash").cum),
            (30, 30),
            "the inlined leaf gets flat"
        );
        assert_eq!((row("main.work").flat, row("main.work").cum), (0, 30));
        assert_eq!(
            (row("main.main").flat, row("main.main").cum),
            (5, 45),
            "recursion counted once"
        );
        assert_eq!(t.rows[0].function, "main.hash");
        assert_eq!(t.rows[1].function, "main.idle");
        assert!((t.flat_pct(&t.rows[0]) - 66.666).abs() < 0.01);
        let by_count = top(&p, 0).unwrap();
        assert_eq!(by_count.total, 5);
    }

    #[test]
    fn broken_references_are_errors_not_panics() {
        let mut p = profile();
        p.sample[0].location_id.push(99);
        assert!(matches!(top(&p, 1), Err(ProfileError::Inconsistent(_))));
        let mut p = profile();
        p.function[0].name = 1000;
        assert!(top(&p, 1).is_err());
        assert!(top(&profile(), 7).is_err());
    }
}

/// A value with its unit scaled the way pprof prints it: `980ms`, `1.96s`,
/// `512.14kB`, `3MB`, plain counts as they are.
pub fn scaled(value: i64, unit: &str) -> String {
    let v = value as f64;
    let (scales, base): (&[(&str, f64)], &str) = match unit {
        "nanoseconds" => (
            &[
                ("ns", 1.0),
                ("us", 1e3),
                ("ms", 1e6),
                ("s", 1e9),
                ("mins", 60e9),
                ("hrs", 3600e9),
            ],
            "ns",
        ),
        "bytes" => (
            &[
                ("B", 1.0),
                ("kB", 1024.0),
                ("MB", 1024.0 * 1024.0),
                ("GB", 1024.0 * 1024.0 * 1024.0),
                ("TB", 1024f64.powi(4)),
            ],
            "B",
        ),
        _ => return value.to_string(),
    };
    if value == 0 {
        return "0".into();
    }
    let (name, factor) = scales
        .iter()
        .rev()
        .find(|(_, f)| v.abs() >= *f)
        .copied()
        .unwrap_or((base, 1.0));
    let s = format!("{:.2}", v / factor);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{name}")
}

/// The table in `go tool pprof -top` layout: header lines, then flat,
/// flat%, sum%, cum, cum% and the function, for the first `nodecount` rows.
pub fn render(t: &Top, p: &Profile, nodecount: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Type: {}", t.sample_type);
    if p.duration_nanos > 0 {
        let pct = if t.unit == "nanoseconds" {
            format!(
                " ({:.2}%)",
                100.0 * t.total as f64 / p.duration_nanos as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "Duration: {}, Total samples = {}{pct}",
            scaled(p.duration_nanos, "nanoseconds"),
            scaled(t.total, &t.unit)
        );
    }
    let shown: Vec<&Row> = t.rows.iter().take(nodecount).collect();
    let shown_flat: i64 = shown.iter().map(|r| r.flat).sum();
    let pct = |v: i64| {
        if t.total == 0 {
            0.0
        } else {
            100.0 * v as f64 / t.total as f64
        }
    };
    // As pprof writes percentages: "100%", "0%", else two decimals.
    let pct_s = |v: i64| {
        let r = pct(v).abs();
        if (99.995..=100.005).contains(&r) {
            "100%".to_string()
        } else if r == 0.0 {
            "0%".to_string()
        } else {
            format!("{r:.2}%")
        }
    };
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        scaled(shown_flat, &t.unit),
        pct_s(shown_flat),
        scaled(t.total, &t.unit)
    );
    if shown.len() < t.rows.len() {
        let _ = writeln!(
            out,
            "Showing top {} nodes out of {}",
            shown.len(),
            t.rows.len()
        );
    }
    let cells: Vec<[String; 5]> = {
        let mut sum = 0;
        shown
            .iter()
            .map(|r| {
                sum += r.flat;
                [
                    scaled(r.flat, &t.unit),
                    pct_s(r.flat),
                    pct_s(sum),
                    scaled(r.cum, &t.unit),
                    pct_s(r.cum),
                ]
            })
            .collect()
    };
    let heads = ["flat", "flat%", "sum%", "cum", "cum%"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: [&str; 5], name: &str| {
        format!(
            "{:>w0$} {:>w1$} {:>w2$} {:>w3$} {:>w4$}  {name}\n",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            w0 = widths[0] + 6,
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3] + 6,
            w4 = widths[4]
        )
    };
    out.push_str(line(heads, "").trim_end());
    out.push('\n');
    for (c, r) in cells.iter().zip(&shown) {
        out.push_str(&line([&c[0], &c[1], &c[2], &c[3], &c[4]], &r.function));
    }
    out
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn units_scale_like_pprof() {
        assert_eq!(scaled(1_960_000_000, "nanoseconds"), "1.96s");
        assert_eq!(scaled(980_000_000, "nanoseconds"), "980ms");
        assert_eq!(scaled(10_000_000, "nanoseconds"), "10ms");
        assert_eq!(scaled(0, "nanoseconds"), "0");
        assert_eq!(scaled(524_432, "bytes"), "512.14kB");
        assert_eq!(scaled(3 * 1024 * 1024, "bytes"), "3MB");
        assert_eq!(scaled(250, "count"), "250");
    }
}
