//! Rules against what is really there: `GET /api/v1/rules` shows each rule with the series
//! it matches now, how old their newest sample is, the deploys it is judging and its last
//! verdict, so "this rule judges nothing" is seen before a deploy needs it. The agent also
//! answers the two Prometheus-API reads `immune check --against` makes
//! (`/api/v1/series?match[]=` and `/api/v1/label/__name__/values`), so the same check runs
//! against a live agent as against a TSDB.
//!
//! Everything is read on the engine thread through one query ([`Catalog`]); the engine
//! has no clock, so the API passes in its own "now" for the ages.

use super::ApiState;
use super::error::ApiError;
use crate::engine::Engine;
use crate::engine::handle::Query;
use crate::history::rule_selector_list;
use crate::model::Timestamp;
use crate::rules::selector::Selector;
use axum::Json;
use axum::extract::{Query as Params, State};
use axum::http::StatusCode;
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
}

/// Answers `q` on the engine thread.
pub fn answer(engine: &Engine, q: Catalog) -> Value {
    let store = engine.store();
    match q {
        Catalog::Names => {
            let names: BTreeSet<&str> = store.iter().map(|(_, s)| s.name.as_ref()).collect();
            json!(names)
        }
        Catalog::Series(selectors) => {
            let found: Vec<Value> = store
                .iter()
                .filter(|(_, s)| selectors.iter().any(|m| m.matches(&s.name, &s.labels)))
                .map(|(_, s)| {
                    let mut m = serde_json::Map::new();
                    m.insert("__name__".into(), json!(s.name.as_ref()));
                    for (k, v) in &s.labels {
                        m.insert(k.clone(), json!(v));
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
                    let selectors: Vec<Value> = rule_selector_list(r)
                        .iter()
                        .map(|sel| {
                            let mut count = 0usize;
                            let mut listed = Vec::new();
                            for (_, s) in store.iter() {
                                if !sel.matches(&s.name, &s.labels) {
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

async fn ask(state: &ApiState, q: Catalog) -> Result<Value, ApiError> {
    state
        .engine
        .query(Query::Catalog(q))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `GET /api/v1/rules`.
pub async fn rules(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let data = ask(&state, Catalog::Rules { now }).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}

/// `GET /api/v1/series?match[]=<selector>` (repeatable; `start` and `end` are accepted
/// and ignored: the agent holds only its recent windows).
pub async fn series(
    State(state): State<ApiState>,
    Params(params): Params<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let mut selectors = Vec::new();
    for (k, v) in &params {
        if k != "match[]" {
            continue;
        }
        let s = Selector::parse(v).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("match[] {v:?}: {e}")).field("match[]")
        })?;
        selectors.push(s);
    }
    if selectors.is_empty() {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "at least one match[] is required")
                .field("match[]"),
        );
    }
    let data = ask(&state, Catalog::Series(selectors)).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}

/// `GET /api/v1/label/__name__/values`.
pub async fn names(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let data = ask(&state, Catalog::Names).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}
