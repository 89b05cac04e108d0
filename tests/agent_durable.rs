//! A decision is never lost and a client is never told "stored" when it was not: the agent
//! with its data directory on a real 2 MB tmpfs that fills up (root only; skipped with a
//! note where `mount` is refused), deploy history after a restart, and stored deploy
//! events with absurd times not freezing a restarted agent.

#[path = "agent_common/mod.rs"]
mod common;
#[path = "signals_util/mod.rs"]
mod signals_util;

use common::{TempDir, start_in};
use immune::model::{DeployEvent, DeployEventKind, OneOrMany};
use immune::signals::{Signals, SignalsConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system under `dir` with one file until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    p
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(hook: &str) -> String {
    format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\nsignals:\n  poll_interval: 200ms\n  webhooks:\n    - name: deploybot\n      url: {hook}\n      decisions: [rollback]\n      backoff_base: 200ms\n      backoff_cap: 1s\n",
        fixture("restart/heartbeat.yaml").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_decided_on_a_full_disk_is_kept_gated_and_delivered_once_space_returns() {
    let dir = TempDir::new("fulldisk");
    let Some(mnt) = Tmpfs::mount(&dir.path().join("data"), "2m") else {
        eprintln!(
            "skipping: cannot mount a tmpfs here (needs root); tests/signals_outbox_full.rs covers the same path through the failure seam"
        );
        return;
    };
    let recv = signals_util::Receiver::start(0, 0).await;
    let yaml = config(&recv.url("/h"));
    let mut agent = start_in(&yaml, dir).await;
    let u = agent.url.clone();
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{u}/api/v1/push"))
            .body("app_heartbeat{instance=\"web-01:80\",job=\"web\"} 1\n")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let start = r#"{"deploy": "d1", "service": "web", "version": "r1", "canary": {"instance": ["web-01:80"]}}"#;
    let (s, v) = post(&format!("{u}/api/v1/deploys"), start).await;
    assert_eq!(s, 201, "{v}");

    // The disk fills up; then the heartbeat stops and the agent decides to roll back.
    let filler = fill(&mnt.0);
    let d = agent
        .wait_decision(Duration::from_secs(60), |d| {
            d.deploy == "d1" && d.decision == immune::model::DecisionKind::Rollback
        })
        .await;
    assert!(d.r#final);
    agent
        .wait_metric(
            "immune_outbox_write_failures_total",
            Duration::from_secs(10),
            |v| v >= 1.0,
        )
        .await;
    // Fail closed and say so: not ready (with the reason), gate and verdict blocked, no
    // new deploy event accepted, nothing delivered yet.
    let (s, v) = get(&format!("{u}/-/ready")).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["reasons"].to_string().contains("outbox"), "{v}");
    let (s, v) = get(&format!("{u}/api/v1/gate/web")).await;
    assert_eq!(s, 423, "{v}");
    let (s, v) = get(&format!("{u}/api/v1/verdict/web")).await;
    assert_eq!((s, v["healthy"].as_bool()), (200, Some(false)), "{v}");
    let second = r#"{"deploy": "d2", "service": "api", "canary": {"instance": ["api-01:80"]}}"#;
    let (s, v) = post(&format!("{u}/api/v1/deploys"), second).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("durable"), "{v}");
    let (s, _) = get(&format!("{u}/api/v1/deploys/d2")).await;
    assert_eq!(s, 404, "a refused event must not reach the engine");
    assert!(recv.got().is_empty(), "{:?}", recv.got().len());

    // Space comes back: the decision is written, delivered once, and the agent is ready.
    std::fs::remove_file(&filler).unwrap();
    until(Duration::from_secs(30), "rollback delivered", async || {
        !recv.got().is_empty()
    })
    .await;
    until(Duration::from_secs(30), "ready again", async || {
        get(&format!("{u}/-/ready")).await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = recv.got();
    assert_eq!(got.len(), 1, "delivered more than once");
    assert_eq!(got[0].json()["decision"], "rollback");
    assert_eq!(got[0].json()["deploy"], "d1");

    // After a restart the line is still blocked and the deploy's record is served.
    let dir = agent.stop_keep().await;
    let agent = start_in(&yaml, dir).await;
    let u = agent.url.clone();
    let (s, v) = get(&format!("{u}/api/v1/gate/web")).await;
    assert_eq!(s, 423, "{v}");
    let (s, v) = get(&format!("{u}/api/v1/deploys/d1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["from_history"], true, "{v}");
    assert!(
        v["decisions"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["decision"] == "rollback")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recv.got().len(), 1, "redelivered after restart");
    let dir = agent.stop_keep().await;
    drop(mnt);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_deploy_is_served_from_history_after_a_restart() {
    let yaml = format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\n",
        common::fixture("web.yaml").display()
    );
    let agent = common::start(&yaml).await;
    let u = agent.url.clone();
    let start = r#"{"deploy": "h1", "service": "web", "version": "v9", "canary": {"instance": ["web-01:80"]}}"#;
    assert_eq!(post(&format!("{u}/api/v1/deploys"), start).await.0, 201);
    let (s, v) = post(&format!("{u}/api/v1/deploys/h1/end"), "").await;
    assert_eq!(s, 200, "{v}");
    let (_, live) = get(&format!("{u}/api/v1/deploys/h1")).await;
    let dir = agent.stop_keep().await;

    let agent = start_in(&yaml, dir).await;
    let (s, v) = get(&format!("{}/api/v1/deploys/h1", agent.url)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["from_history"], true);
    assert_eq!(v["version"], live["version"], "{v}");
    assert_eq!(v["decisions"], live["decisions"], "{v}");
    let (s, _) = get(&format!("{}/api/v1/deploys/never", agent.url)).await;
    assert_eq!(s, 404);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_deploy_with_an_absurd_time_is_not_resumed() {
    let dir = TempDir::new("absurd");
    {
        let sig = Signals::open(
            SignalsConfig::default(),
            &dir.path().join("data"),
            "http://i".into(),
        )
        .unwrap();
        for (id, at) in [("x1", -8.9e12), ("x2", 1.8e12)] {
            let ev = DeployEvent {
                at,
                deploy: Some(id.into()),
                event: DeployEventKind::Canary,
                service: Some("web".into()),
                version: None,
                commits: Vec::new(),
                canary: Some(
                    [("instance".to_string(), OneOrMany::One("web-01:80".into()))]
                        .into_iter()
                        .collect(),
                ),
                by: None,
                reason: None,
            };
            sig.record_deploy_event(&ev).unwrap();
        }
        assert_eq!(sig.resume_events().unwrap().len(), 2);
    }
    let yaml = format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\n",
        common::fixture("web.yaml").display()
    );
    let agent = start_in(&yaml, dir).await;
    let u = agent.url.clone();
    // The engine answers (a resumed x1 would keep it busy for hours).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&format!("{u}/-/healthy")).await.0, 200);
    let (s, v) = get(&format!("{u}/api/v1/deploys")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deploys"].as_array().map(Vec::len), Some(0), "{v}");
    let dir = agent.stop_keep().await;
    // Marked done: not offered again.
    let sig = Signals::open(
        SignalsConfig::default(),
        &dir.path().join("data"),
        "http://i".into(),
    )
    .unwrap();
    assert!(sig.resume_events().unwrap().is_empty());
}
