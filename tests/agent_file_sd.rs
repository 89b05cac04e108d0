//! Scrape targets from Prometheus `file_sd_configs` files on a live agent: two tiny
//! exporters on port 0, a target file naming one of them (its group labels setting
//! `instance`), then the file rewritten to add the other; both are scraped with the
//! labels the file gives, found through the agent's own `/api/v1/series`. A third
//! target never answers: each round still ends within the timeout with it down.

mod agent_common;

use serde_json::{Value, json};
use std::time::Duration;

async fn exporter(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

/// Waits until `/api/v1/series?match[]=app_requests_total` lists `want`.
async fn wait_series(url: &str, want: &[Value]) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let v: Value = reqwest::get(format!("{url}/api/v1/series?match[]=app_requests_total"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut got = v["data"].as_array().cloned().unwrap_or_default();
        got.sort_by_key(|s| s["instance"].as_str().unwrap_or("").to_string());
        if got == want {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {want:?}; last {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_come_from_files_and_follow_their_changes() {
    let a = exporter("app_requests_total 5\n").await;
    let b = exporter("# TYPE app_requests counter\napp_requests_total 7\n").await;
    // A target that accepts connections and never answers.
    let hung_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = hung_listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hung_listener.accept().await {
            held.push(c);
        }
    });
    let dir = agent_common::TempDir::new("file-sd");
    let targets = dir.path().join("targets");
    std::fs::create_dir_all(&targets).unwrap();
    std::fs::write(
        targets.join("web.json"),
        json!([{"targets": [a], "labels": {"instance": "web-01", "env": "prod"}},
               {"targets": [hung], "labels": {"instance": "hung"}}])
        .to_string(),
    )
    .unwrap();
    let yaml = format!(
        "sources:\n  scrape:\n    - job: web\n      interval: 100ms\n      timeout: 1s\n      file_sd_configs: [{{files: ['{}/*.json']}}]\n",
        targets.display()
    );
    let agent = agent_common::start(&yaml).await;
    wait_series(
        &agent.url,
        &[json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01", "job": "web"})],
    )
    .await;

    // A second file appears and the first is rewritten: both are followed.
    std::fs::write(
        targets.join("more.json"),
        json!([{"targets": [b], "labels": {"job": "api"}}]).to_string(),
    )
    .unwrap();
    wait_series(
        &agent.url,
        &[
            json!({"__name__": "app_requests_total", "instance": b, "job": "api"}),
            json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01", "job": "web"}),
        ],
    )
    .await;
    std::fs::write(
        targets.join("web.json"),
        json!([{"targets": [a], "labels": {"instance": "web-01a", "env": "prod"}}]).to_string(),
    )
    .unwrap();
    wait_series(
        &agent.url,
        &[
            json!({"__name__": "app_requests_total", "instance": b, "job": "api"}),
            json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01", "job": "web"}),
            json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01a", "job": "web"}),
        ],
    )
    .await;
    // `up` is 1 for each target scraped.
    let up: Value = reqwest::get(format!("{}/api/v1/series?match[]=up", agent.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let up = up["data"].as_array().unwrap();
    assert!(up.iter().any(|s| s["instance"] == "web-01a"), "{up:?}");
    // The target that never answers is down; the round still delivered the others.
    assert!(up.iter().any(|s| s["instance"] == "hung"), "{up:?}");
    // A broken file is logged and does not stop the others from being followed.
    std::fs::write(targets.join("broken.json"), "[{").unwrap();
    std::fs::write(
        targets.join("more.json"),
        json!([{"targets": [b], "labels": {"job": "api", "instance": "api-01"}}]).to_string(),
    )
    .unwrap();
    wait_series(
        &agent.url,
        &[
            json!({"__name__": "app_requests_total", "instance": b, "job": "api"}),
            json!({"__name__": "app_requests_total", "instance": "api-01", "job": "api"}),
            json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01", "job": "web"}),
            json!({"__name__": "app_requests_total", "env": "prod", "instance": "web-01a", "job": "web"}),
        ],
    )
    .await;
    agent.stop().await.unwrap();
}
