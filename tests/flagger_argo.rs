//! Flagger or Argo Rollouts alone drive a deploy, against a real agent: requests shaped
//! exactly as Flagger's webhooks (`{"name","namespace","phase","checksum","metadata"}`)
//! and Argo Rollouts' `web` metric provider (`method: POST`, a JSON `body`, headers) send
//! them. Flagger's confirm-rollout starts the deploy, rollout asks (200 / 403 halt),
//! rollback and post-rollout end it; Argo's analysis starts-or-reads and reads the verdict.

#[path = "agent_common/mod.rs"]
mod common;

use common::start;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "s3cret";

async fn heartbeat(client: &reqwest::Client, url: &str, n: usize) {
    for _ in 0..n {
        let r = client
            .post(format!("{url}/api/v1/push"))
            .bearer_auth(TOKEN)
            .body("app_heartbeat{instance=\"web-01:80\",job=\"web\"} 1\n")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What Flagger POSTs to a webhook of `kind` (its CanaryWebhookPayload).
async fn flagger(
    client: &reqwest::Client,
    url: &str,
    kind: &str,
    phase: &str,
    metadata: Value,
) -> (u16, Value) {
    let body = json!({
        "name": "web",
        "namespace": "prod",
        "phase": phase,
        "checksum": "6d9f8c7b5",
        "metadata": metadata,
    });
    let r = client
        .post(format!("{url}/api/v1/flagger/{kind}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What Argo Rollouts' web provider sends for `method: POST` with `body:` and headers.
async fn argo(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = client
        .post(format!("{url}/api/v1/argo/analysis"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_then_argo_drive_deploys_alone() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart/heartbeat.yaml");
    let mut agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\napi: {{tokens: [{TOKEN}]}}\n",
        rules.display()
    ))
    .await;
    let url = agent.url.clone();
    let client = reqwest::Client::new();
    heartbeat(&client, &url, 4).await;
    let meta = json!({"service": "web", "canary": "instance=web-01:80", "version": "v7",
                      "commits": "abc1234,def5678", "by": "flagger-bot", "token": TOKEN});
    let deploy_url = format!("{url}/api/v1/deploys/prod%2Fweb%2F6d9f8c7b5");

    // Without metadata.canary a webhook only reads: web is unknown yet, so 403.
    let (st, v) = flagger(
        &client,
        &url,
        "pre-rollout",
        "Progressing",
        json!({"service": "web"}),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["reason"], "unknown service");
    assert!(v.get("started").is_none());
    // Without the token, confirm-rollout changes nothing.
    let mut no_token = meta.clone();
    no_token.as_object_mut().unwrap().remove("token");
    let (st, v) = flagger(&client, &url, "confirm-rollout", "Progressing", no_token).await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["field"], "metadata.token");
    assert_eq!(client.get(&deploy_url).send().await.unwrap().status(), 404);

    // confirm-rollout starts the deploy from the payload; pre-rollout (a retry) reads it.
    let (st, v) = flagger(
        &client,
        &url,
        "confirm-rollout",
        "Progressing",
        meta.clone(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["started"], true);
    assert_eq!(v["deploy"], "prod/web/6d9f8c7b5");
    let (st, v) = flagger(&client, &url, "pre-rollout", "Progressing", meta.clone()).await;
    assert_eq!((st, &v["started"]), (200, &json!(false)), "{v}");
    let view: Value = client
        .get(&deploy_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["service"], "web");
    assert_eq!(view["version"], "v7");
    assert_eq!(view["by"], "flagger-bot");
    assert_eq!(view["commits"], json!(["abc1234", "def5678"]));
    assert_eq!(view["canary"]["instance"], json!(["web-01:80"]));

    // rollout asks: healthy while judging; promotion waits for immune's promote.
    let (st, v) = flagger(
        &client,
        &url,
        "rollout",
        "Progressing",
        json!({"service": "web"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = flagger(&client, &url, "confirm-promotion", "Progressing", json!({})).await;
    assert_eq!(st, 403, "promotion waits while immune has not promoted");
    let (st, _) = flagger(&client, &url, "rollback", "Progressing", json!({})).await;
    assert_eq!(st, 403, "no rollback while healthy");

    // The heartbeat stops: immune rolls back; rollout halts (403), rollback says go (200).
    agent
        .wait_decision(Duration::from_secs(60), |d| {
            d.deploy == "prod/web/6d9f8c7b5" && d.decision == immune::model::DecisionKind::Rollback
        })
        .await;
    let (st, v) = flagger(&client, &url, "rollout", "Progressing", json!({})).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["decision"], "rollback");
    assert!(
        v["summary"].as_str().unwrap().contains("heartbeat_silent"),
        "{v}"
    );
    let (st, _) = flagger(&client, &url, "rollback", "Progressing", json!({})).await;
    assert_eq!(st, 200);
    // post-rollout after Flagger's rollback: accepted, twice (webhooks are retried).
    for _ in 0..2 {
        let (st, v) = flagger(&client, &url, "post-rollout", "Failed", meta.clone()).await;
        assert_eq!(st, 200, "{v}");
    }
    let view: Value = client
        .get(&deploy_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["phase"], "done");

    // Argo: reopen the line, then the analysis run starts the next deploy and reads it.
    let r = client
        .post(format!("{url}/api/v1/lines/web/unblock"))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "alice", "reason": "fixed in v8"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    heartbeat(&client, &url, 4).await;
    let body = r#"{"deploy": "web-7c9d5", "service": "web", "version": "v8", "canary": {"instance": "web-01:80"}}"#;
    let (st, v) = argo(&client, &url, None, body).await;
    assert_eq!(st, 401, "{v}");
    let (st, v) = argo(&client, &url, Some(TOKEN), body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["started"].clone(), v["healthy"].clone()),
        (json!(true), json!(true)),
        "{v}"
    );
    assert_eq!(v["deploy"], "web-7c9d5");
    let (st, v) = argo(&client, &url, Some(TOKEN), body).await;
    assert_eq!((st, v["started"].clone()), (200, json!(false)), "{v}");
    // Bad bodies are 400s naming the field.
    let (st, v) = argo(
        &client,
        &url,
        Some(TOKEN),
        r#"{"deploy": "x", "service": "web"}"#,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("canary"), "{v}");
    let bad = r#"{"deploy": "web-7c9d5", "service": "web", "canary": {"instance": "web-01:80"}, "event": "done"}"#;
    let (st, v) = argo(&client, &url, Some(TOKEN), bad).await;
    assert_eq!((st, v["field"].clone()), (400, json!("event")), "{v}");
    // The verdict turns: jsonPath {$.healthy} reads false once immune rolled it back.
    agent
        .wait_decision(Duration::from_secs(60), |d| {
            d.deploy == "web-7c9d5" && d.decision == immune::model::DecisionKind::Rollback
        })
        .await;
    let (st, v) = argo(&client, &url, Some(TOKEN), body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["healthy"].clone(), v["decision"].clone()),
        (json!(false), json!("rollback")),
        "{v}"
    );
    agent.stop().await.unwrap();
}
