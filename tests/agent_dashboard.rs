//! dashboards/immune.json: valid JSON, and every PromQL expression in it names only
//! metrics a running agent really exports (read from its /metrics).

#[path = "agent_common/mod.rs"]
mod common;

use common::{fixture, start};
use serde_json::Value;
use std::collections::BTreeSet;

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_dashboard_metric_is_exported() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/immune.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        dash["__inputs"][0]["name"] == "DS_PROMETHEUS",
        "the dashboard takes its data source as an input"
    );
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 10, "expected many expressions, found {all:?}");

    // An experiment, so the experiment row's families are exported too.
    let experiments =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/signup_button.yaml");
    let agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\nexperiments: [{:?}]\n",
        fixture("web.yaml").display(),
        experiments.display().to_string()
    ))
    .await;
    // A push and a deploy, so per-source and per-service families have children.
    reqwest::Client::new()
        .post(format!("{}/api/v1/push?job=web", agent.url))
        .body("http_requests_total 1\n")
        .send()
        .await
        .unwrap();
    reqwest::Client::new()
        .post(format!("{}/api/v1/deploys", agent.url))
        .json(&serde_json::json!({"deploy":"d1","service":"web","canary":{"instance":"web-01:80"}}))
        .send()
        .await
        .unwrap();
    agent
        .wait_metric(
            "immune_evaluation_duration_seconds_count",
            std::time::Duration::from_secs(30),
            |v| v >= 1.0,
        )
        .await;
    agent
        .wait_metric(
            "immune_experiment_srm_p_value{experiment=\"GDCEurope2011\"}",
            std::time::Duration::from_secs(30),
            |_| true,
        )
        .await;
    let text = agent.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let name = regex::Regex::new(r"\b(immune_[a-z0-9_]+)\b").unwrap();
    for e in &all {
        let names: Vec<&str> = name.find_iter(e).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "expression names no immune metric: {e}");
        for n in names {
            assert!(
                exported.contains(n),
                "{n} (in {e}) is not exported; exported: {exported:?}"
            );
        }
    }
    agent.stop().await.unwrap();
}
