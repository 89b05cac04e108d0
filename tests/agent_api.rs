//! The agent's HTTP API against a real running agent: the deploy lifecycle through the
//! bundled client, every 4xx the API promises, bearer-token auth, push and remote_write
//! reaching the engine, and rule reload keeping the running rules on error.

#[path = "agent_common/mod.rs"]
mod common;

use common::{fixture, start};
use immune::api::client::{Client, ClientError, Step};
use immune::api::deploys::{DeployStep, StartDeploy, Unblock};
use immune::model::{DecisionKind, OneOrMany, Sample, Timestamp};
use immune::sources::push::encode_write;
use serde_json::Value;
use std::time::Duration;

fn rules_config(extra: &str) -> String {
    format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\n{extra}",
        fixture("web.yaml").display()
    )
}

fn start_body(id: &str) -> StartDeploy {
    StartDeploy {
        deploy: id.into(),
        service: "web".into(),
        version: Some("v2".into()),
        commits: vec!["abc123".into()],
        canary: [(
            "instance".to_string(),
            OneOrMany::Many(vec!["web-01:80".into()]),
        )]
        .into_iter()
        .collect(),
        by: None,
        at: None,
    }
}

async fn post(url: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn deploy_lifecycle_through_the_client() {
    let agent = start(&rules_config("")).await;
    let c = Client::new(&agent.url, None).unwrap();
    let a = c.start(&start_body("d1")).await.unwrap();
    assert_eq!(a.deploy.as_deref(), Some("d1"));
    assert!(a.decisions.is_empty());
    let s = c.status("d1").await.unwrap();
    assert_eq!(s["phase"], "canary", "{s}");
    c.step("d1", Step::Full, &DeployStep::default())
        .await
        .unwrap();
    let s = c.status("d1").await.unwrap();
    assert_eq!(s["phase"], "full", "{s}");
    let end = c
        .step("d1", Step::End, &DeployStep::default())
        .await
        .unwrap();
    // No sample arrived while it ran: no evidence is not a pass.
    assert_eq!(end.decisions.len(), 1);
    assert_eq!(end.decisions[0].decision, DecisionKind::Block);
    assert_eq!(end.decisions[0].rule, "no_evidence");
    assert!(end.decisions[0].r#final);
    let list: Value = reqwest::get(format!("{}/api/v1/deploys", agent.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["deploys"].as_array().map(Vec::len), Some(1), "{list}");
    let line = c.line("web").await.unwrap();
    assert_eq!(line["blocked"]["rule"], "no_evidence", "{line}");
    let u = Unblock {
        by: "alice".into(),
        reason: "checked".into(),
        at: None,
    };
    c.unblock("web", &u).await.unwrap();
    let line = c.line("web").await.unwrap();
    assert!(line["blocked"].is_null(), "{line}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn refusals_are_json_with_the_right_status_and_field() {
    let agent = start(&rules_config("")).await;
    let u = &agent.url;
    let c = Client::new(u, None).unwrap();
    c.start(&start_body("d1")).await.unwrap();

    // Duplicate deploy: 409.
    match c.start(&start_body("d1")).await {
        Err(ClientError::Refused { status, field, .. }) => {
            assert_eq!(status, 409);
            assert_eq!(field.as_deref(), Some("deploy"));
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // Unknown deploy: 404 on events and on reads.
    let (s, v) = post(&format!("{u}/api/v1/deploys/nope/full"), "", None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["field"], "deploy");
    let r = reqwest::get(format!("{u}/api/v1/deploys/nope"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Wrong phase: full twice is 409.
    let (s, _) = post(&format!("{u}/api/v1/deploys/d1/full"), "{}", None).await;
    assert_eq!(s, 200);
    let (s, v) = post(&format!("{u}/api/v1/deploys/d1/full"), "{}", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("phase"), "{v}");
    // Missing field: 400 naming it.
    let (s, v) = post(
        &format!("{u}/api/v1/deploys"),
        r#"{"deploy":"d2","canary":{"instance":["a"]}}"#,
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "service", "{v}");
    // Unknown field: 400 naming it.
    let (s, v) = post(
        &format!("{u}/api/v1/deploys"),
        r#"{"deploy":"d2","service":"web","canary":{"instance":"a"},"colour":"red"}"#,
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "colour", "{v}");
    // Not JSON at all: 400 with a message.
    let (s, v) = post(&format!("{u}/api/v1/deploys"), "{nope", None).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    // Bad body on a step: 400.
    let (s, v) = post(
        &format!("{u}/api/v1/deploys/d1/end"),
        r#"{"at":"soon"}"#,
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Unblock needs both by and reason.
    let (s, v) = post(
        &format!("{u}/api/v1/lines/web/unblock"),
        r#"{"by":"bob"}"#,
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "reason", "{v}");
    // Unknown endpoint: JSON 404.
    let (s, v) = post(&format!("{u}/api/v2/whatever"), "{}", None).await;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].is_string());
    // A body over the limit is refused.
    let big = format!(r#"{{"by":"b","reason":"{}"}}"#, "x".repeat(2 << 20));
    let (s, _) = post(&format!("{u}/api/v1/lines/web/unblock"), &big, None).await;
    assert_eq!(s, 413);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn state_changes_need_a_token_when_tokens_are_configured() {
    let agent = start(&rules_config("api: {tokens: [s3cret]}\n")).await;
    let u = &agent.url;
    let body = serde_json::to_string(&start_body("d1")).unwrap();
    let (s, v) = post(&format!("{u}/api/v1/deploys"), &body, None).await;
    assert_eq!(s, 401, "{v}");
    let (s, _) = post(&format!("{u}/api/v1/deploys"), &body, Some("wrong")).await;
    assert_eq!(s, 401);
    let (s, _) = post(&format!("{u}/-/reload"), "", None).await;
    assert_eq!(s, 401);
    let r = reqwest::Client::new()
        .post(format!("{u}/api/v1/write"))
        .body(encode_write(&[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Reads stay open.
    let r = reqwest::get(format!("{u}/api/v1/deploys")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // With the token, the client gets through.
    let c = Client::new(u, Some("s3cret".into())).unwrap();
    c.start(&start_body("d1")).await.unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn remote_write_and_push_reach_the_engine() {
    let agent = start(&rules_config("")).await;
    let u = &agent.url;
    let before = agent
        .metric("immune_samples_ingested_total")
        .await
        .unwrap_or(0.0);
    let now = Timestamp(1_700_000_000_000);
    let samples: Vec<Sample> = (0..10)
        .map(|i| Sample {
            name: "http_requests_total".into(),
            labels: vec![
                ("instance".into(), format!("web-{i:02}:80")),
                ("job".into(), "web".into()),
            ],
            value: 100.0 + f64::from(i),
            at: now,
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{u}/api/v1/write"))
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(encode_write(&samples))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    agent
        .wait_metric(
            "immune_samples_ingested_total",
            Duration::from_secs(30),
            |v| v >= before + 10.0,
        )
        .await;
    assert_eq!(
        agent
            .metric("immune_source_samples_total{source=\"remote_write\"}")
            .await,
        Some(10.0)
    );
    assert_eq!(agent.metric("immune_series").await, Some(10.0));

    // Garbage is a 400, not a crash.
    let r = reqwest::Client::new()
        .post(format!("{u}/api/v1/write"))
        .body("not snappy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Text push: timestamps optional, query parameters become labels.
    let r = reqwest::Client::new()
        .post(format!("{u}/api/v1/push?job=batch&instance=cron-1"))
        .body("# TYPE jobs_done_total counter\njobs_done_total 3\nqueue_depth 7 1700000000000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    agent
        .wait_metric("immune_series", Duration::from_secs(30), |v| v >= 12.0)
        .await;
    let (s, v) = post(&format!("{u}/api/v1/push"), "bad line here\n", None).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("line 1"), "{v}");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn reload_keeps_running_rules_when_the_new_ones_are_broken() {
    let dir = common::TempDir::new("reload");
    let rules = dir.path().join("rules.yaml");
    std::fs::copy(fixture("web.yaml"), &rules).unwrap();
    let agent = start(&format!("rules: [{}]\n", rules.display())).await;
    let u = &agent.url;
    let (s, v) = post(&format!("{u}/-/reload"), "", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rules"], 1);
    assert_eq!(
        agent.metric("immune_config_last_reload_successful").await,
        Some(1.0)
    );
    std::fs::copy(fixture("broken.yaml"), &rules).unwrap();
    let (s, v) = post(&format!("{u}/-/reload"), "", None).await;
    assert_eq!(s, 400, "{v}");
    let diags = v["diagnostics"].as_array().unwrap();
    let prefix = format!("{}:", rules.display());
    for d in diags {
        assert!(d.as_str().unwrap().starts_with(&prefix), "{d}");
    }
    assert!(
        diags
            .iter()
            .any(|d| d.as_str().unwrap().contains("sideways")),
        "{diags:?}"
    );
    assert_eq!(
        agent.metric("immune_config_last_reload_successful").await,
        Some(0.0)
    );
    // The running rules still judge deploys.
    let c = Client::new(u, None).unwrap();
    c.start(&start_body("d1")).await.unwrap();
    let s = c.status("d1").await.unwrap();
    assert!(s.to_string().contains("api_error_ratio"), "{s}");
    agent.stop().await.unwrap();
}

#[test]
fn the_example_configuration_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/immune.yaml");
    let c = immune::config::Config::from_file(&path).unwrap();
    assert_eq!(c.sources.scrape.len(), 2);
    assert_eq!(c.sources.mysql[0].queries.len(), 2);
}
