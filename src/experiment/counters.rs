//! Participants and outcomes from counters, for experiments with `source: metrics`: the
//! application counts exposures in `experiment_exposures_total{experiment,branch}` and each
//! metric in a counter of the metric's name with a `branch` label (`signups_total{branch}`),
//! and immune reads them from whatever source already brings samples in (scrape, push,
//! remote_write), through the engine's store.
//!
//! Why here and not in the engine: the engine keeps a bounded window of points per series,
//! while an experiment needs the increase since it started, over weeks. So the agent reads
//! the new points of the matching series every look ([`crate::engine::catalog::Catalog::Points`])
//! and accumulates each series' increase here, with a cursor per series (its last point),
//! persisted with the experiment ([`super::persist`]) so a restart neither loses nor
//! double-counts.
//!
//! Counter semantics are immune's (and Prometheus's `increase()`): a drop is a restart (the
//! counter began again at 0, the new value is all increase); a missing value (staleness) is
//! skipped; the first point of a series carries no increase (its value may include counts
//! from before the experiment or before immune saw it). Points at or before the experiment's
//! start only set the cursor. A series' `experiment` label, when present, must name the
//! experiment; a `branch` that is not one of the experiment's is counted in `unknown_branch`
//! and ignored. No clock is read: times come with the points.

use super::Experiment;
use crate::rules::selector::Selector;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The exposure counter's name.
pub const EXPOSURES: &str = "experiment_exposures_total";
/// Cursors of series silent for this long (ms) are forgotten (a series that comes back
/// starts again from its next point, like a new one).
pub const FORGET_AFTER_MS: i64 = 86_400_000;
/// Series followed per experiment; points of further series are ignored and counted.
pub const MAX_SERIES: usize = 100_000;

/// One series' last point.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// Its time (ms).
    pub at: i64,
    /// Its value.
    pub value: f64,
}

/// The running totals of one experiment read from counters; persisted as JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CounterState {
    /// Per series text, its last point.
    pub cursors: BTreeMap<String, Cursor>,
    /// Exposures per branch (control first, as [`Experiment::weights`]).
    pub exposures: Vec<f64>,
    /// [branch][metric] the increase of the metric's counter.
    pub sums: Vec<Vec<f64>>,
    /// Points of series whose `branch` is not one of the experiment's.
    pub unknown_branch: u64,
    /// Points of series beyond [`MAX_SERIES`].
    pub over_limit: u64,
    /// The newest point time seen (ms), where the next read starts (less a lag allowance).
    pub newest: Option<i64>,
}

impl CounterState {
    /// Empty totals shaped for `exp`.
    pub fn new(exp: &Experiment) -> CounterState {
        let b = exp.weights().len();
        CounterState {
            exposures: vec![0.0; b],
            sums: vec![vec![0.0; exp.metrics.len()]; b],
            ..CounterState::default()
        }
    }

    /// Whether the totals have the shape `exp` needs (a stored state from another
    /// definition of the experiment does not).
    pub fn fits(&self, exp: &Experiment) -> bool {
        let b = exp.weights().len();
        self.exposures.len() == b
            && self.sums.len() == b
            && self.sums.iter().all(|m| m.len() == exp.metrics.len())
    }
}

/// The selectors an experiment reads: its exposures and each metric's counter with a
/// `branch` label.
pub fn selectors(exp: &Experiment) -> Vec<Selector> {
    let mut texts = vec![format!("{EXPOSURES}{{experiment={}}}", quote(&exp.name))];
    for m in &exp.metrics {
        texts.push(format!("{}{{branch!=\"\"}}", m.name));
    }
    texts
        .iter()
        .filter_map(|t| Selector::parse(t).ok())
        .collect()
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Adds the points of a [`crate::engine::catalog::Catalog::Points`] answer to `state`;
/// `start_ms` is the experiment's start (points at or before it only move cursors).
/// Returns whether any total changed.
pub fn absorb(exp: &Experiment, state: &mut CounterState, answer: &Value, start_ms: i64) -> bool {
    let branches: Vec<&str> = exp.weights().iter().map(|(n, _)| *n).collect();
    let mut changed = false;
    for s in answer.as_array().into_iter().flatten() {
        let (Some(text), Some(labels), Some(points)) = (
            s.get("series").and_then(Value::as_str),
            s.get("labels").and_then(Value::as_object),
            s.get("points").and_then(Value::as_array),
        ) else {
            continue;
        };
        let name = text.split('{').next().unwrap_or(text);
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        if label("experiment").is_some_and(|e| e != exp.name) {
            continue;
        }
        // Which total: exposures, or the metric of that name.
        let slot = if name == EXPOSURES {
            None
        } else {
            match exp.metrics.iter().position(|m| m.name == name) {
                Some(i) => Some(i),
                None => continue,
            }
        };
        let Some(b) = label("branch").and_then(|br| branches.iter().position(|x| *x == br)) else {
            state.unknown_branch += points.len() as u64;
            continue;
        };
        if !state.cursors.contains_key(text) && state.cursors.len() >= MAX_SERIES {
            state.over_limit += points.len() as u64;
            continue;
        }
        let mut cursor = state.cursors.get(text).copied();
        for p in points {
            let (Some(at), v) = (p.get(0).and_then(Value::as_i64), p.get(1)) else {
                continue;
            };
            state.newest = Some(state.newest.map_or(at, |n| n.max(at)));
            let Some(v) = v.and_then(Value::as_f64).filter(|v| v.is_finite()) else {
                continue;
            };
            if cursor.is_some_and(|c| at <= c.at) {
                continue;
            }
            if let Some(c) = cursor
                && at > start_ms
            {
                let inc = if v < c.value { v } else { v - c.value };
                if inc > 0.0 {
                    match slot {
                        None => state.exposures[b] += inc,
                        Some(m) => state.sums[b][m] += inc,
                    }
                    changed = true;
                }
            }
            cursor = Some(Cursor { at, value: v });
        }
        if let Some(c) = cursor {
            state.cursors.insert(text.to_string(), c);
        }
    }
    if let Some(n) = state.newest {
        state.cursors.retain(|_, c| n - c.at <= FORGET_AFTER_MS);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exp() -> Experiment {
        let text = "experiments:
  - name: e
    initial_rollout: 1
    source: metrics
    branches: [{name: b, weight: 0.5}]
    metrics:
      - {name: signups_total, kind: count, direction: increase, min_effect: 0.1}
";
        crate::experiment::load_str("e.yaml", text)
            .unwrap()
            .remove(0)
    }

    fn series(text: &str, labels: Value, points: Value) -> Value {
        json!({"series": text, "labels": labels, "points": points})
    }

    #[test]
    fn increases_since_start_with_restarts_and_gaps() {
        let e = exp();
        let mut st = CounterState::new(&e);
        let a = json!([
            series(
                "experiment_exposures_total{branch=\"b\",experiment=\"e\",instance=\"1\"}",
                json!({"branch": "b", "experiment": "e", "instance": "1"}),
                // 5 before the start sets the cursor; +3, a restart to 2 (+2), a stale gap, +4.
                json!([
                    [900, 5.0],
                    [1100, 8.0],
                    [1200, 2.0],
                    [1300, null],
                    [1400, 6.0]
                ])
            ),
            series(
                "signups_total{branch=\"control\"}",
                json!({"branch": "control"}),
                json!([[1100, 10.0], [1200, 11.0]])
            ),
            series(
                "experiment_exposures_total{branch=\"b\",experiment=\"other\"}",
                json!({"branch": "b", "experiment": "other"}),
                json!([[1100, 1.0], [1200, 100.0]])
            ),
            series(
                "signups_total{branch=\"zzz\"}",
                json!({"branch": "zzz"}),
                json!([[1100, 1.0]])
            ),
        ]);
        assert!(absorb(&e, &mut st, &a, 1000));
        assert_eq!(st.exposures, vec![0.0, 9.0]);
        // The first point of a series carries no increase.
        assert_eq!(st.sums, vec![vec![1.0], vec![0.0]]);
        assert_eq!(st.unknown_branch, 1);
        // Reading the same points again adds nothing (cursors); new ones add.
        assert!(!absorb(&e, &mut st, &a, 1000));
        let b = json!([series(
            "signups_total{branch=\"control\"}",
            json!({"branch": "control"}),
            json!([[1200, 11.0], [1300, 15.0]])
        )]);
        assert!(absorb(&e, &mut st, &b, 1000));
        assert_eq!(st.sums[0][0], 5.0);
    }

    #[test]
    fn selectors_parse() {
        let s = selectors(&exp());
        assert_eq!(s.len(), 2);
        assert!(s[0].matches(
            EXPOSURES,
            &[
                ("branch".into(), "b".into()),
                ("experiment".into(), "e".into())
            ]
        ));
        assert!(!s[1].matches("signups_total", &[]));
    }
}
