//! The top table, as `go tool pprof -top` computes it at function
//! granularity: `flat` is what a function spent itself (it is the leaf of
//! the sample's stack, inlined frames included), `cum` is what it spent
//! with its callees (it appears anywhere in the stack, counted once per
//! sample), sorted by flat, then name, then cum, as pprof sorts them.

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
    /// `(inline)` when every call into it was inlined, `(partial-inline)`
    /// when some were, else empty: what pprof prints after the name.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub inline: &'static str,
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
    /// The index of the sample type used.
    #[serde(skip)]
    pub index: usize,
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
    // Everything by dense index: each function name to 0..n (pprof's
    // function granularity merges functions of one name), each location
    // to the name indices of its frames (innermost first). The per-sample
    // work is then array arithmetic, with a generation stamp instead of a
    // set to count a function once per sample.
    let mut names: Vec<&str> = Vec::with_capacity(p.function.len());
    let mut name_index: HashMap<&str, u32> = HashMap::with_capacity(p.function.len());
    let mut func_index: HashMap<u64, u32> = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        let name = s(f.name)?;
        let i = *name_index.entry(name).or_insert_with(|| {
            names.push(name);
            names.len() as u32 - 1
        });
        func_index.insert(f.id, i);
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
    let n = names.len();
    let mut flat = vec![0i64; n];
    let mut cum = vec![0i64; n];
    let mut stamp = vec![0u32; n];
    let mut touched = vec![false; n];
    let mut total = 0i64;
    for (k, sample) in p.sample.iter().enumerate() {
        let v = *sample.value.get(index).unwrap_or(&0);
        if v == 0 {
            continue;
        }
        // Sums saturate: a profile is outside input, and values near
        // i64::MAX must not wrap (or panic where overflow is checked).
        total = total.saturating_add(v.saturating_abs());
        let generation = k as u32 + 1;
        let mut leaf = true;
        for loc_id in &sample.location_id {
            let frames = loc_frames.get(loc_id).ok_or_else(|| {
                ProfileError::Inconsistent(format!("sample refers to location {loc_id}"))
            })?;
            for &f in frames {
                let f = f as usize;
                if leaf {
                    flat[f] = flat[f].saturating_add(v);
                    leaf = false;
                }
                if stamp[f] != generation {
                    stamp[f] = generation;
                    cum[f] = cum[f].saturating_add(v);
                    touched[f] = true;
                }
            }
            if frames.is_empty() {
                // An address without symbols: pprof shows it by address.
                leaf = false;
            }
        }
    }
    let every: std::collections::HashSet<&str> = names.iter().copied().collect();
    let flat_sum = flat.iter().fold(0i64, |s, f| s.saturating_add(*f));
    let marks = inline_marks(p, index, &every, flat_sum)?;
    let mut rows: Vec<Row> = (0..n)
        .filter(|&i| touched[i])
        .map(|i| Row {
            function: names[i].to_string(),
            flat: flat[i],
            cum: cum[i],
            inline: marks.get(names[i]).copied().unwrap_or(""),
        })
        .collect();
    // pprof's order for -top: flat, then name, then cum.
    rows.sort_by(|a, b| {
        b.flat
            .unsigned_abs()
            .cmp(&a.flat.unsigned_abs())
            .then_with(|| a.function.cmp(&b.function))
            .then(b.cum.unsigned_abs().cmp(&a.cum.unsigned_abs()))
    });
    Ok(Top {
        sample_type: s(vt.r#type)?.to_string(),
        unit: s(vt.unit)?.to_string(),
        total,
        rows,
        index,
    })
}

/// The `(inline)` and `(partial-inline)` marks `go tool pprof` puts on the
/// graph of the functions in `keep` (the nodes it shows: its graph is
/// rebuilt without the dropped ones). Walking each sample from the root,
/// the edge caller -> callee is counted once per sample, skipping dropped
/// functions and a function calling itself, and is inline when the callee
/// is not the outermost frame of its location; an edge is inline only if
/// it is in every sample that has it. Edges that carry less than
/// [`EDGE_FRACTION`] of `total` (the sum of flat) are dropped first, as
/// pprof trims its graph before it prints. A function is `(inline)` when
/// all its remaining incoming edges are inline, `(partial-inline)` when
/// some are.
fn inline_marks<'a>(
    p: &'a Profile,
    index: usize,
    keep: &std::collections::HashSet<&str>,
    total: i64,
) -> Result<HashMap<&'a str, &'static str>, ProfileError> {
    let name_of: HashMap<u64, &str> = p
        .function
        .iter()
        .map(|f| {
            let name = p
                .string_table
                .get(usize::try_from(f.name).unwrap_or(usize::MAX))
                .map(String::as_str)
                .unwrap_or("");
            (f.id, name)
        })
        .collect();
    let frames: HashMap<u64, Vec<&str>> = p
        .location
        .iter()
        .map(|l| {
            let names = l
                .line
                .iter()
                .map(|line| name_of.get(&line.function_id).copied().unwrap_or(""))
                .collect();
            (l.id, names)
        })
        .collect();
    // Per edge: whether it is inline in every sample, and its weight.
    let mut edges: HashMap<(&str, &str), (bool, i64)> = HashMap::new();
    let mut seen: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    for sample in &p.sample {
        let v = sample.value.get(index).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        seen.clear();
        let mut parent: Option<&str> = None;
        for loc in sample.location_id.iter().rev() {
            let names = frames.get(loc).ok_or_else(|| {
                ProfileError::Inconsistent(format!("sample refers to location {loc}"))
            })?;
            for (j, &name) in names.iter().enumerate().rev() {
                if !keep.contains(name) {
                    continue;
                }
                let inline = j + 1 != names.len();
                if let Some(caller) = parent
                    && caller != name
                    && seen.insert((caller, name))
                {
                    let e = edges.entry((caller, name)).or_insert((true, 0));
                    e.0 &= inline;
                    e.1 = e.1.saturating_add(v);
                }
                parent = Some(name);
            }
        }
    }
    let cutoff = ((total as f64 * EDGE_FRACTION) as i64).unsigned_abs();
    let mut marks: HashMap<&str, (bool, bool)> = HashMap::new();
    for ((_, callee), (inline, weight)) in edges {
        if weight.unsigned_abs() < cutoff {
            continue;
        }
        let m = marks.entry(callee).or_default();
        if inline {
            m.0 = true;
        } else {
            m.1 = true;
        }
    }
    Ok(marks
        .into_iter()
        .filter_map(|(f, m)| match m {
            (true, false) => Some((f, "(inline)")),
            (true, true) => Some((f, "(partial-inline)")),
            _ => None,
        })
        .collect())
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

    /// Found by the pprof fuzz target in CI's 30 s run: sample values near
    /// i64::MAX (and i64::MIN) overflowed the sums (a panic where overflow
    /// is checked, wrong figures where it is not). They saturate now.
    #[test]
    fn extreme_sample_values_saturate() {
        let mut p = profile();
        for s in &mut p.sample {
            s.value = vec![i64::MAX, i64::MIN];
        }
        for index in [0, 1] {
            let t = top(&p, index).unwrap();
            assert_eq!(t.total, i64::MAX, "index {index}");
            let main = t.rows.iter().find(|r| r.function == "main.main").unwrap();
            assert!(main.cum == i64::MAX || main.cum == i64::MIN, "{main:?}");
            let text = render(&t, &p, 20);
            assert!(text.contains("main.main"), "{text}");
            let folded = crate::pprof::flame::folded(&p, index).unwrap();
            assert!(!folded.is_empty());
            let _ = crate::pprof::flame::diff(&t, &t);
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

    /// pprof drops call edges under 0.1 % of the total before it marks
    /// inlining: a function reached through an inlined call that light is
    /// not marked (seen in CI against a live Alertmanager's heap profile).
    #[test]
    fn light_inlined_calls_are_trimmed_before_marking() {
        let p = profile();
        let mark = |t: &Top, f: &str| t.rows.iter().find(|r| r.function == f).unwrap().inline;
        assert_eq!(mark(&top(&p, 1).unwrap(), "main.hash"), "(inline)");
        let mut p = profile();
        // idle now carries almost everything: work -> hash (30) is under
        // 0.1 % of the total.
        p.sample[1].value = vec![1, 1_000_000];
        let t = top(&p, 1).unwrap();
        assert_eq!(mark(&t, "main.hash"), "");
        assert!(!render(&t, &p, 2).contains("(inline)"));
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

/// One unit of a family: its canonical name, the aliases pprof accepts
/// (lowercase, singular) and its factor in the family's base unit.
struct Unit {
    name: &'static str,
    aliases: &'static [&'static str],
    factor: f64,
}

/// A family of units and the unit values fall back to.
struct Family {
    units: &'static [Unit],
    default: Unit,
}

/// pprof's unit families (`internal/measurement`), in its order.
const FAMILIES: &[Family] = &[
    Family {
        units: &[
            Unit {
                name: "B",
                aliases: &["b", "byte"],
                factor: 1.0,
            },
            Unit {
                name: "kB",
                aliases: &["kb", "kbyte", "kilobyte"],
                factor: 1024.0,
            },
            Unit {
                name: "MB",
                aliases: &["mb", "mbyte", "megabyte"],
                factor: 1048576.0,
            },
            Unit {
                name: "GB",
                aliases: &["gb", "gbyte", "gigabyte"],
                factor: 1073741824.0,
            },
            Unit {
                name: "TB",
                aliases: &["tb", "tbyte", "terabyte"],
                factor: 1099511627776.0,
            },
            Unit {
                name: "PB",
                aliases: &["pb", "pbyte", "petabyte"],
                factor: 1125899906842624.0,
            },
        ],
        default: Unit {
            name: "B",
            aliases: &[],
            factor: 1.0,
        },
    },
    Family {
        units: &[
            Unit {
                name: "ns",
                aliases: &["ns", "nanosecond"],
                factor: 1.0,
            },
            Unit {
                name: "us",
                aliases: &["μs", "us", "microsecond"],
                factor: 1e3,
            },
            Unit {
                name: "ms",
                aliases: &["ms", "millisecond"],
                factor: 1e6,
            },
            Unit {
                name: "s",
                aliases: &["s", "sec", "second"],
                factor: 1e9,
            },
            Unit {
                name: "hrs",
                aliases: &["hour", "hr"],
                factor: 3600e9,
            },
        ],
        default: Unit {
            name: "s",
            aliases: &[],
            factor: 1e9,
        },
    },
];

/// The unit an alias names in `family` (`nanoseconds`, `bytes`, `MB`).
fn sniff<'f>(family: &'f Family, unit: &str) -> Option<&'f Unit> {
    let lower = unit.to_lowercase();
    let alias = if lower.chars().count() > 2 {
        lower.strip_suffix('s').unwrap_or(&lower)
    } else {
        &lower
    };
    family.units.iter().find(|u| u.aliases.contains(&alias))
}

/// The largest unit the value is at least one of.
fn auto_scale(family: &Family, base: f64) -> Option<(f64, &'static str)> {
    let mut best: Option<&Unit> = None;
    for u in family.units {
        if best.is_none_or(|b| u.factor >= b.factor) && base / u.factor >= 1.0 {
            best = Some(u);
        }
    }
    best.map(|u| (base / u.factor, u.name))
}

/// `value` in unit `from`, converted to unit `to` (`minimum` and `auto`
/// pick the largest fitting unit); an unknown unit leaves the value as it
/// is. What pprof's `measurement.Scale` returns.
pub fn scale(value: i64, from: &str, to: &str) -> (f64, String) {
    if value < 0 && value.checked_neg().is_some() {
        let (v, u) = scale(-value, from, to);
        return (-v, u);
    }
    for family in FAMILIES {
        let Some(unit) = sniff(family, from) else {
            continue;
        };
        let base = value as f64 * unit.factor;
        if to == "minimum" || to == "auto" {
            return match auto_scale(family, base) {
                Some((v, u)) => (v, u.to_string()),
                None => (
                    base / family.default.factor,
                    family.default.name.to_string(),
                ),
            };
        }
        return match sniff(family, to) {
            Some(t) => (base / t.factor, t.name.to_string()),
            None => (
                base / family.default.factor,
                family.default.name.to_string(),
            ),
        };
    }
    match to {
        "count" | "sample" | "unit" | "minimum" | "auto" => (value as f64, String::new()),
        other => (value as f64, other.to_string()),
    }
}

/// A value as pprof labels it in unit `to`: two decimals, `.00` dropped.
pub fn scaled_label(value: i64, from: &str, to: &str) -> String {
    let (v, u) = scale(value, from, to);
    let sv = format!("{v:.2}");
    let sv = sv.strip_suffix(".00").unwrap_or(&sv);
    if sv == "0" || sv == "-0" {
        return "0".into();
    }
    format!("{sv}{u}")
}

/// A value with its unit scaled the way pprof labels one value on its
/// own: `980ms`, `1.96s`, `512.14kB`, `3MB`, plain counts as they are.
pub fn scaled(value: i64, unit: &str) -> String {
    scaled_label(value, unit, "auto")
}

/// Go's `%5.2g` of a ratio below 1: two significant digits, trailing
/// zeros dropped, an exponent below 1e-4.
fn go_g2(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let e = format!("{x:.1e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..2).contains(&exp) {
        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let f = format!("{x:.*}", (1 - exp).max(0) as usize);
    if f.contains('.') {
        f.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        f
    }
}

/// pprof's `measurement.Percentage`: `  100%`, `%5.2f%%` from 1%, `%5.2g%%`
/// below.
pub fn percentage(value: i64, total: i64) -> String {
    let ratio = if total == 0 {
        0.0
    } else {
        (value as f64 / total as f64).abs() * 100.0
    };
    if (99.95..=100.05).contains(&ratio) {
        "  100%".into()
    } else if ratio >= 1.0 {
        format!("{ratio:5.2}%")
    } else {
        format!("{:>5}%", go_g2(ratio))
    }
}

/// pprof's `-nodefraction` default: nodes whose cum is below this share of
/// the total are dropped from the table.
pub const NODE_FRACTION: f64 = 0.005;

/// pprof's `-edgefraction` default: call edges that carry less than this
/// share of the total are dropped from its graph (and so do not count for
/// a function's `(inline)` mark).
pub const EDGE_FRACTION: f64 = 0.001;

/// The table in `go tool pprof -top` layout, line for line: the profile's
/// header lines (`File:`, `Build ID:`, `Type:`, `Time:` in UTC,
/// `Duration:`), `Showing nodes accounting for ...`, the dropped-node and
/// top-N lines, then flat, flat%, sum%, cum, cum% and the function, in the
/// unit pprof would choose. `nodecount` 0 shows every row, as `-top` does.
pub fn render(t: &Top, p: &Profile, nodecount: usize) -> String {
    use std::fmt::Write;
    let text = |i: i64| {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
            .unwrap_or("")
    };
    // Nodes below the cum cutoff go first, then the top N of the rest.
    let flat_sum: i64 = t.rows.iter().fold(0i64, |s, r| s.saturating_add(r.flat));
    let cutoff = ((flat_sum as f64 * NODE_FRACTION) as i64).unsigned_abs();
    let kept: Vec<&Row> = t
        .rows
        .iter()
        .filter(|r| r.cum.unsigned_abs() >= cutoff)
        .collect();
    let dropped = t.rows.len() - kept.len();
    let shown: &[&Row] = if nodecount > 0 && nodecount < kept.len() {
        &kept[..nodecount]
    } else {
        &kept
    };
    // pprof marks inlining on the graph of the nodes it shows.
    let shown_names: std::collections::HashSet<&str> =
        shown.iter().map(|r| r.function.as_str()).collect();
    let marks = if shown.len() == t.rows.len() {
        None
    } else {
        inline_marks(p, t.index, &shown_names, flat_sum).ok()
    };
    // The output unit: that of the smallest value shown, moved up one
    // unit when the total is over a hundred times larger (pprof's
    // `selectOutputUnit`).
    let mut min = 0i64;
    for r in shown {
        let v = if r.flat != 0 {
            r.flat.saturating_abs()
        } else {
            r.cum.saturating_abs()
        };
        if v > 0 && (min == 0 || v < min) {
            min = v;
        }
    }
    let max = t.total;
    if min == 0 {
        min = max;
    }
    let (_, min_unit) = scale(min, &t.unit, "minimum");
    let (_, max_unit) = scale(max, &t.unit, "minimum");
    let mut out_unit = min_unit.clone();
    if min_unit != max_unit && min.saturating_mul(100) < max {
        out_unit = scale(min.saturating_mul(100), &t.unit, "minimum").1;
    }
    if out_unit.is_empty() {
        out_unit = t.unit.clone();
    }
    let fmt = |v: i64| scaled_label(v, &t.unit, &out_unit);

    let mut out = String::new();
    if let Some(m) = p.mapping.first() {
        let file = text(m.filename);
        if !file.is_empty() {
            let base = file.rsplit('/').next().unwrap_or(file);
            let _ = writeln!(out, "File: {base}");
        }
        let build = text(m.build_id);
        if !build.is_empty() {
            let _ = writeln!(out, "Build ID: {build}");
        }
    }
    for &c in &p.comment {
        let c = text(c);
        if !c.starts_with('#') {
            let _ = writeln!(out, "{c}");
        }
    }
    let _ = writeln!(out, "Type: {}", t.sample_type);
    if p.time_nanos != 0 {
        let time = chrono::DateTime::from_timestamp_nanos(p.time_nanos);
        let _ = writeln!(out, "Time: {}", time.format("%b %-d, %Y at %-I:%M%P (UTC)"));
    }
    if p.duration_nanos != 0 {
        let (nanos, unit) = scale(t.total, &t.unit, "nanoseconds");
        let ratio = if unit == "ns" && nanos != 0.0 {
            format!("({})", percentage(nanos as i64, p.duration_nanos))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "Duration: {}, Total samples = {} {ratio}",
            scaled(p.duration_nanos, "nanoseconds"),
            fmt(t.total)
        );
    }
    let shown_flat: i64 = shown.iter().fold(0i64, |s, r| s.saturating_add(r.flat));
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        fmt(shown_flat),
        percentage(shown_flat, t.total).trim(),
        fmt(t.total)
    );
    if t.total != 0 {
        if dropped > 0 {
            let _ = writeln!(
                out,
                "Dropped {dropped} node{} (cum <= {})",
                if dropped > 1 { "s" } else { "" },
                fmt(((t.total as f64 * NODE_FRACTION) as i64).saturating_abs())
            );
        }
        if !shown.is_empty() && shown.len() < kept.len() {
            let _ = writeln!(
                out,
                "Showing top {} nodes out of {}",
                shown.len(),
                kept.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "{:>10} {:>5}% {:>5}% {:>10} {:>5}%",
        "flat", "flat", "sum", "cum", "cum"
    );
    let mut sum = 0;
    for r in shown {
        sum = r.flat.saturating_add(sum);
        let mark = match &marks {
            Some(m) => m.get(r.function.as_str()).copied().unwrap_or(""),
            None => r.inline,
        };
        let inline = if mark.is_empty() {
            String::new()
        } else {
            format!(" {mark}")
        };
        let _ = writeln!(
            out,
            "{:>10} {} {} {:>10} {}  {}{inline}",
            fmt(r.flat),
            percentage(r.flat, t.total),
            percentage(sum, t.total),
            fmt(r.cum),
            percentage(r.cum, t.total),
            r.function
        );
    }
    out
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn percentages_and_output_units_are_printed_as_pprof_prints_them() {
        assert_eq!(percentage(1, 1), "  100%");
        assert_eq!(percentage(8945, 10000), "89.45%");
        assert_eq!(percentage(151, 10000), " 1.51%");
        assert_eq!(percentage(50, 10000), "  0.5%");
        assert_eq!(percentage(512, 1_000_000), "0.051%");
        assert_eq!(percentage(0, 10), "    0%");
        assert_eq!(percentage(1, 10_000_000), "1e-05%");
        assert_eq!(scaled_label(170_000_000, "nanoseconds", "s"), "0.17s");
        assert_eq!(scaled_label(1_500_000_000, "nanoseconds", "s"), "1.50s");
        assert_eq!(scaled_label(1_000_000, "nanoseconds", "s"), "0");
        assert_eq!(scaled_label(15_765_056, "bytes", "kB"), "15395.56kB");
        assert_eq!(scaled_label(52, "count", "count"), "52");
        assert_eq!(scale(7_200_000_000_000, "nanoseconds", "auto").1, "hrs");
    }

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
