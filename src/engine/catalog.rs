//! The catalog: what the store holds against what the rules read, for
//! `GET /api/v1/rules`, `/api/v1/series` and `/api/v1/label/__name__/values` (see
//! `api::rules`). It lives in the engine so the engine thread can answer it without the
//! engine depending on the API; the API passes in its own "now" for the ages, since the
//! engine has no clock.

use super::Engine;
use crate::model::Timestamp;
use crate::rules::selector::Selector;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Series listed per selector in `/api/v1/rules` (the count is always complete).
pub const LISTED_SERIES: usize = 50;

/// What the catalog query reads.
#[derive(Clone, Debug)]
pub enum Catalog {
    /// Every rule with its series, deploys and verdicts; ages are relative to `now`.
    Rules {
        /// The API's clock.
        now: Timestamp,
    },
    /// Every stored series matching any of the selectors.
    Series(Vec<Selector>),
    /// Every metric name stored.
    Names,
    /// The points newer than `after` of every stored series matching any of the
    /// selectors (experiments reading counters, see `experiment::counters`): an array of
    /// `{"series": text, "labels": {..}, "points": [[ms, value|null], ..]}`.
    Points {
        /// What to read.
        selectors: Vec<Selector>,
        /// Only points strictly after this time.
        after: Timestamp,
    },
}

/// Answers `q` on the engine thread.
pub fn answer(engine: &Engine, q: Catalog) -> Value {
    let store = engine.store();
    match q {
        Catalog::Names => {
            let names: BTreeSet<&str> = store.iter().map(|(_, s)| s.name.as_ref()).collect();
            json!(names)
        }
        Catalog::Points { selectors, after } => {
            let found: Vec<Value> = store
                .iter()
                .filter(|(_, s)| selectors.iter().any(|m| m.matches_any(&s.name, &s.labels)))
                .map(|(_, s)| {
                    let points: Vec<Value> = s
                        .points
                        .seek(after)
                        .1
                        .map(|(t, v)| json!([t.0, v.is_finite().then_some(v)]))
                        .collect();
                    let labels: serde_json::Map<String, Value> = s
                        .labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(&**v)))
                        .collect();
                    let mut text = String::new();
                    crate::textformat::format_series(&s.name, &s.labels, &mut text);
                    json!({"series": text, "labels": labels, "points": points})
                })
                .collect();
            Value::Array(found)
        }
        Catalog::Series(selectors) => {
            let found: Vec<Value> = store
                .iter()
                .filter(|(_, s)| selectors.iter().any(|m| m.matches_any(&s.name, &s.labels)))
                .map(|(_, s)| {
                    let mut m = serde_json::Map::new();
                    m.insert("__name__".into(), json!(s.name.as_ref()));
                    for (k, v) in &s.labels {
                        m.insert(k.to_string(), json!(&**v));
                    }
                    Value::Object(m)
                })
                .collect();
            Value::Array(found)
        }
        Catalog::Rules { now } => {
            let deploys = engine.deploys();
            let rules: Vec<Value> = engine
                .rules()
                .iter()
                .map(|r| {
                    let mut total = 0usize;
                    let mut newest_age: Option<f64> = None;
                    let selectors: Vec<Value> = r
                        .selectors()
                        .iter()
                        .map(|sel| {
                            let mut count = 0usize;
                            let mut listed = Vec::new();
                            for (_, s) in store.iter() {
                                if !sel.matches_any(&s.name, &s.labels) {
                                    continue;
                                }
                                count += 1;
                                let age = (s.last_seen != Timestamp(i64::MIN))
                                    .then(|| now.since(s.last_seen).as_secs_f64());
                                if let Some(a) = age {
                                    newest_age = Some(newest_age.map_or(a, |n: f64| n.min(a)));
                                }
                                if listed.len() < LISTED_SERIES {
                                    let mut text = String::new();
                                    crate::textformat::format_series(&s.name, &s.labels, &mut text);
                                    listed.push(json!({"series": text, "age_seconds": age}));
                                }
                            }
                            total += count;
                            json!({"selector": sel.to_string(), "count": count, "series": listed})
                        })
                        .collect();
                    let mut judging = Vec::new();
                    let mut last: Option<(f64, Value)> = None;
                    for d in &deploys {
                        let Some(state) = d["rules"]
                            .as_array()
                            .and_then(|rs| rs.iter().find(|x| x["rule"].as_str() == Some(&r.name)))
                        else {
                            continue;
                        };
                        let started = d["started_at"].as_f64().unwrap_or(0.0);
                        let entry = json!({
                            "deploy": d["deploy"], "service": d["service"],
                            "phase": d["phase"], "state": state["state"],
                        });
                        if d["phase"] != "done" {
                            judging.push(entry.clone());
                        }
                        if !state["state"].is_null() && last.as_ref().is_none_or(|l| started >= l.0)
                        {
                            last = Some((started, entry));
                        }
                    }
                    json!({
                        "name": r.name,
                        "origin": format!("{}:{}", r.origin.file, r.origin.line),
                        "baseline": r.baseline.as_str(),
                        "selectors": selectors,
                        "series": total,
                        "newest_sample_age_seconds": newest_age,
                        "judging": judging,
                        "last_verdict": last.map(|l| l.1),
                    })
                })
                .collect();
            json!({"rules": rules})
        }
    }
}
