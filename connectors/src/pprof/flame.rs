//! Flame graphs (SVG, through inferno) and diffs against a baseline.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::ProfileError;
use super::proto::Profile;

/// The profile as folded stacks, `root;...;leaf value`, one line per
/// distinct stack (inlined frames expanded, innermost last).
pub fn folded(p: &Profile, index: usize) -> Result<Vec<String>, ProfileError> {
    let name = |i: i64| {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map(String::as_str)
    };
    let functions: HashMap<u64, &str> = p
        .function
        .iter()
        .filter_map(|f| Some((f.id, name(f.name)?)))
        .collect();
    let locations: HashMap<u64, &super::proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut stacks: BTreeMap<String, i64> = BTreeMap::new();
    for s in &p.sample {
        let v = *s.value.get(index).unwrap_or(&0);
        if v == 0 {
            continue;
        }
        let mut frames: Vec<String> = Vec::new();
        // location_id[0] is the leaf; walk from the root.
        for id in s.location_id.iter().rev() {
            let loc = locations.get(id).ok_or_else(|| {
                ProfileError::Inconsistent(format!("sample refers to location {id}"))
            })?;
            if loc.line.is_empty() {
                frames.push(format!("0x{:x}", loc.address));
            }
            // line[0] is innermost, so outermost first here.
            for l in loc.line.iter().rev() {
                let f = functions.get(&l.function_id).copied().unwrap_or("?");
                // ';' separates frames in the folded format.
                frames.push(f.replace(';', ":"));
            }
        }
        let sum = stacks.entry(frames.join(";")).or_default();
        *sum = sum.saturating_add(v);
    }
    Ok(stacks
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect())
}

/// An SVG flame graph of folded stacks.
pub fn svg(folded: &[String], title: &str, count_name: &str) -> Result<Vec<u8>, ProfileError> {
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = title.to_string();
    opt.count_name = count_name.to_string();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, folded.iter().map(String::as_str), &mut out)
        .map_err(|e| ProfileError::Inconsistent(format!("flame graph: {e}")))?;
    Ok(out)
}

/// One function's change between a baseline and a new profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The function.
    pub function: String,
    /// Its flat share of the baseline, in percent.
    pub base_pct: f64,
    /// Its flat share now, in percent.
    pub new_pct: f64,
}

/// Flat shares compared: what grew, biggest growth first, then what
/// shrank, the biggest drop last.
pub fn diff(base: &super::top::Top, new: &super::top::Top) -> Vec<Change> {
    let share = |t: &super::top::Top| -> HashMap<String, f64> {
        t.rows
            .iter()
            .map(|r| (r.function.clone(), t.flat_pct(r)))
            .collect()
    };
    let (b, n) = (share(base), share(new));
    let mut names: Vec<&String> = b.keys().chain(n.keys()).collect();
    names.sort();
    names.dedup();
    let mut out: Vec<Change> = names
        .into_iter()
        .map(|f| Change {
            function: f.clone(),
            base_pct: b.get(f).copied().unwrap_or(0.0),
            new_pct: n.get(f).copied().unwrap_or(0.0),
        })
        .filter(|c| c.base_pct != c.new_pct)
        .collect();
    // What got hot first, the biggest growth on top; what cooled last.
    out.sort_by(|a, b| {
        (b.new_pct - b.base_pct)
            .total_cmp(&(a.new_pct - a.base_pct))
            .then_with(|| a.function.cmp(&b.function))
    });
    out
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::pprof::top::{Row, Top};

    fn top(rows: &[(&str, i64)]) -> Top {
        Top {
            sample_type: "inuse_space".into(),
            unit: "bytes".into(),
            total: rows.iter().map(|r| r.1).sum(),
            rows: rows
                .iter()
                .map(|(f, v)| Row {
                    function: f.to_string(),
                    flat: *v,
                    cum: *v,
                    inline: "",
                })
                .collect(),
            index: 0,
        }
    }

    #[test]
    fn what_grew_comes_first_even_when_something_else_shrank_more() {
        // malg falls from 100% to 11% (-89), alloc rises from 0 to 78% (+78).
        let base = top(&[("runtime.malg", 100)]);
        let new = top(&[("runtime.malg", 11), ("main.alloc", 78), ("readline", 11)]);
        let d = diff(&base, &new);
        let order: Vec<&str> = d.iter().map(|c| c.function.as_str()).collect();
        assert_eq!(order, ["main.alloc", "readline", "runtime.malg"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::proto::{Function, Line, Location, Sample, ValueType};
    use crate::pprof::top::top;

    fn profile(weights: &[(u64, i64)]) -> Profile {
        let strings = [
            "",
            "cpu",
            "nanoseconds",
            "main.main",
            "main.work",
            "main.hash",
        ];
        Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            function: vec![
                Function {
                    id: 1,
                    name: 3,
                    ..Default::default()
                },
                Function {
                    id: 2,
                    name: 4,
                    ..Default::default()
                },
                Function {
                    id: 3,
                    name: 5,
                    ..Default::default()
                },
            ],
            location: vec![
                Location {
                    id: 10,
                    line: vec![
                        Line {
                            function_id: 3,
                            line: 1,
                        },
                        Line {
                            function_id: 2,
                            line: 1,
                        },
                    ],
                    ..Default::default()
                },
                Location {
                    id: 11,
                    line: vec![Line {
                        function_id: 1,
                        line: 1,
                    }],
                    ..Default::default()
                },
                Location {
                    id: 12,
                    line: vec![Line {
                        function_id: 2,
                        line: 1,
                    }],
                    ..Default::default()
                },
            ],
            sample: weights
                .iter()
                .map(|&(leaf, v)| Sample {
                    location_id: vec![leaf, 11],
                    value: vec![v],
                    label: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn folds_stacks_root_first_with_inlined_frames() {
        let f = folded(&profile(&[(10, 30), (10, 10), (12, 5)]), 0).unwrap();
        assert_eq!(
            f,
            ["main.main;main.work 5", "main.main;main.work;main.hash 40"]
        );
        let svg = svg(&f, "cpu", "nanoseconds").unwrap();
        let text = String::from_utf8(svg).unwrap();
        assert!(
            text.starts_with("<?xml") && text.contains("main.hash"),
            "{}",
            &text[..200]
        );
    }

    #[test]
    fn diff_shows_what_got_hot() {
        let base = top(&profile(&[(10, 10), (12, 90)]), 0).unwrap();
        let new = top(&profile(&[(10, 80), (12, 20)]), 0).unwrap();
        let d = diff(&base, &new);
        assert_eq!(d[0].function, "main.hash");
        assert_eq!((d[0].base_pct, d[0].new_pct), (10.0, 80.0));
        assert!(diff(&base, &base).is_empty());
    }
}
