//! `GET /api/v1/rules` on a live agent (port 0): each rule with the series it matches now,
//! their newest sample's age, the deploys it judges and its last verdict; and
//! `immune check --against` a live agent, through its `/api/v1/series` and
//! `/api/v1/label/__name__/values`, naming a typo's nearest metric.

mod agent_common;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const RULES: &str = r#"rules:
  - name: error_ratio
    services: [web]
    metric: {kind: ratio, selector: 'php_errors_total{job="web"}', denominator: 'http_requests_total{job="web"}'}
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: rollback
  - name: typo
    services: [web]
    metric: {kind: counter_rate, selector: 'php_error_total{job="web"}'}
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: warn
"#;

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.expect("GET");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("JSON")
}

fn rule<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["data"]["rules"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rule {name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_show_their_series_deploys_and_verdicts() {
    let dir = agent_common::TempDir::new("rules-api");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("web.yaml"), RULES).unwrap();
    let yaml = format!(
        "rules: [{}]\nengine: {{eval_interval: 100ms}}\n",
        rules.display()
    );
    let agent = agent_common::start(&yaml).await;
    let client = reqwest::Client::new();
    let mut body = String::new();
    for host in ["web-01:80", "web-02:80", "web-03:80"] {
        body.push_str(&format!(
            "php_errors_total{{job=\"web\",instance=\"{host}\"}} 3\nhttp_requests_total{{job=\"web\",instance=\"{host}\"}} 100\n"
        ));
    }
    let r = client
        .post(format!("{}/api/v1/push", agent.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let v = get(&format!("{}/api/v1/rules", agent.url)).await;
    assert_eq!(v["status"], "success");
    let errors = rule(&v, "error_ratio");
    assert_eq!(errors["series"], 6, "{errors}");
    assert_eq!(errors["selectors"][0]["count"], 3);
    assert_eq!(
        errors["selectors"][1]["selector"],
        "http_requests_total{job=\"web\"}"
    );
    let age = errors["newest_sample_age_seconds"]
        .as_f64()
        .expect("an age");
    assert!((0.0..600.0).contains(&age), "{age}");
    assert!(errors["origin"].as_str().unwrap().ends_with("web.yaml:2"));
    assert_eq!(errors["judging"], json!([]));
    assert_eq!(errors["last_verdict"], Value::Null);
    let typo = rule(&v, "typo");
    assert_eq!(typo["series"], 0);
    assert_eq!(typo["newest_sample_age_seconds"], Value::Null);

    let r = client
        .post(format!("{}/api/v1/deploys", agent.url))
        .json(&json!({"deploy": "d1", "service": "web", "canary": {"instance": ["web-01:80"]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // Ticks every 100 ms: wait for the rule's first verdict.
    let mut seen = Value::Null;
    for _ in 0..200 {
        let v = get(&format!("{}/api/v1/rules", agent.url)).await;
        seen = rule(&v, "error_ratio").clone();
        if !seen["last_verdict"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen["judging"][0]["deploy"], "d1", "{seen}");
    assert_eq!(seen["judging"][0]["phase"], "canary");
    assert_eq!(seen["last_verdict"]["deploy"], "d1", "{seen}");
    assert!(seen["last_verdict"]["state"].is_string(), "{seen}");

    // The Prometheus-style reads.
    let names = get(&format!("{}/api/v1/label/__name__/values", agent.url)).await;
    assert_eq!(
        names["data"],
        json!(["http_requests_total", "php_errors_total"])
    );
    let series = get(&format!(
        "{}/api/v1/series?match[]=php_errors_total{{instance=%22web-02:80%22}}",
        agent.url
    ))
    .await;
    assert_eq!(
        series["data"],
        json!([{"__name__": "php_errors_total", "instance": "web-02:80", "job": "web"}])
    );
    let bad = client
        .get(format!("{}/api/v1/series?match[]=%7Bjob%3D", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["field"], "match[]", "{err}");

    // `immune check --against` the live agent.
    let url = agent.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_immune"))
            .arg("check")
            .arg(&rules)
            .args(["--against", &url])
            .output()
            .expect("run immune check")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("web.yaml:9: warning: rule \"typo\": php_error_total{job=\"web\"} matches no series; nearest metric names: php_errors_total"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 selector matching no series"), "{text}");
    agent.stop().await.unwrap();
}
