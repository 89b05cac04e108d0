//! The agent's own /metrics: every promised family is there, and `promtool check metrics`
//! finds nothing to complain about (naming, units, help, types).

#[path = "agent_common/mod.rs"]
mod common;

use common::{fixture, start};
use std::io::Write;
use std::process::{Command, Stdio};

/// Every family the agent promises (dashboards and alerts rely on these names).
const FAMILIES: &[&str] = &[
    "immune_source_errors_total",
    "immune_source_last_success_timestamp_seconds",
    "immune_source_duration_seconds",
    "immune_source_samples_total",
    "immune_engine_queue_depth",
    "immune_engine_dropped_batches_total",
    "immune_series",
    "immune_store_history_points",
    "immune_samples_ingested_total",
    "immune_rule_evaluations_total",
    "immune_decisions_total",
    "immune_active_deploys",
    "immune_line_blocked",
    "immune_evaluation_duration_seconds",
    "immune_config_last_reload_successful",
    "immune_config_last_reload_success_timestamp_seconds",
    "immune_build_info",
];

#[tokio::test]
async fn metrics_are_complete_and_promtool_clean() {
    let agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\n",
        fixture("web.yaml").display()
    ))
    .await;
    let c = reqwest::Client::new();
    // Some activity so labelled families have children: a push, and a deploy that ends
    // before any of its canary's samples arrived. No evidence is not good news, so it
    // ends `block` (no_evidence) and the line shows blocked.
    c.post(format!(
        "{}/api/v1/push?job=web&instance=web-01:80",
        agent.url
    ))
    .body("http_requests_total 10\nphp_errors_total 1\n")
    .send()
    .await
    .unwrap();
    let start =
        serde_json::json!({"deploy":"d1","service":"web","canary":{"instance":["web-01:80"]}});
    let r = c
        .post(format!("{}/api/v1/deploys", agent.url))
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    c.post(format!("{}/api/v1/deploys/d1/end", agent.url))
        .send()
        .await
        .unwrap();
    // Wait for at least one tick to have been timed.
    agent
        .wait_metric(
            "immune_evaluation_duration_seconds_count",
            std::time::Duration::from_secs(30),
            |v| v >= 1.0,
        )
        .await;
    let text = agent.metrics().await;
    for f in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {f} ")),
            "{f} missing:\n{text}"
        );
    }
    assert!(
        text.contains("immune_decisions_total{decision=\"block\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("immune_line_blocked{service=\"web\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("immune_source_samples_total{source=\"push\"} 2"),
        "{text}"
    );

    let promtool = std::env::var("IMMUNE_TEST_PROMTOOL_BIN")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| {
            std::path::Path::new("/usr/bin/promtool")
                .exists()
                .then(|| "/usr/bin/promtool".to_string())
        });
    let Some(promtool) = promtool else {
        assert!(
            !common::services_required(),
            "promtool not found (IMMUNE_TEST_PROMTOOL_BIN unset) but IMMUNE_TEST_REQUIRE_SERVICES is set"
        );
        eprintln!(
            "skipping the promtool check: promtool not found (IMMUNE_TEST_PROMTOOL_BIN unset)"
        );
        agent.stop().await.unwrap();
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop().await.unwrap();
}
