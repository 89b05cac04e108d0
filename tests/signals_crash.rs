//! The outbox survives crashes: signals recorded by one process are delivered by the next,
//! exactly once to a 2xx receiver, and the deploys in flight and blocked lines come back.
//!
//! The SIGKILL test re-runs this test executable as a child (`IMMUNE_SIGNALS_CHILD=1`)
//! that records into an outbox and then sleeps; the parent kills it with `kill -9`, opens
//! the same outbox and delivers.

mod signals_util;

use immune::model::{DecisionKind, DeployEvent, DeployEventKind, OneOrMany};
use immune::signals::Signals;
use signals_util::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn event(kind: DeployEventKind, deploy: &str, at: f64) -> DeployEvent {
    DeployEvent {
        at,
        deploy: Some(deploy.into()),
        event: kind,
        service: Some("web".into()),
        version: Some("v2".into()),
        commits: vec!["abc".into()],
        canary: (kind == DeployEventKind::Canary)
            .then(|| [("instance".to_string(), OneOrMany::One("web-03".into()))].into()),
        by: None,
        reason: None,
    }
}

fn cfg(url: &str) -> immune::signals::SignalsConfig {
    config(&format!(
        "webhooks:\n  - name: bot\n    url: {url}\n    backoff_base: 20ms\n    backoff_cap: 100ms\npoll_interval: 50ms\n"
    ))
}

/// What the child (or the first process) records: an in-flight deploy (d2, canary then
/// full), a finished one (d3), and a rollback of d1 that blocks the line of web.
fn record_everything(sig: &Signals, now: f64) {
    sig.record_deploy_event(&event(DeployEventKind::Canary, "d1", now - 60.0))
        .unwrap();
    sig.record_deploy_event(&event(DeployEventKind::Canary, "d2", now - 50.0))
        .unwrap();
    sig.record_deploy_event(&event(DeployEventKind::Full, "d2", now - 40.0))
        .unwrap();
    sig.record_deploy_event(&event(DeployEventKind::Canary, "d3", now - 30.0))
        .unwrap();
    sig.record_deploy_event(&event(DeployEventKind::End, "d3", now - 20.0))
        .unwrap();
    sig.record(&[decision("d1", "web", DecisionKind::Rollback, true, now)])
        .unwrap();
}

async fn deliver_and_check(dir: &std::path::Path) {
    let recv = Receiver::start(0, 0).await;
    let sig = Signals::open(cfg(&recv.url("/h")), dir, "http://i".into()).unwrap();
    let resumed = sig.resume_events().unwrap();
    let kinds: Vec<(String, DeployEventKind)> = resumed
        .iter()
        .map(|e| (e.deploy.clone().unwrap(), e.event))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("d2".to_string(), DeployEventKind::Canary),
            ("d2".to_string(), DeployEventKind::Full)
        ],
        "only the deploy still in flight is resumed"
    );
    let blocked = sig.blocked_lines().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].0, "web");
    assert_eq!(blocked[0].1.deploy, "d1");
    assert_eq!(blocked[0].1.decision, DecisionKind::Rollback);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "the recorded signal is delivered", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let got = recv.got();
    assert_eq!(got.len(), 1, "delivered once");
    let b = got[0].json();
    assert_eq!(b["deploy"], "d1");
    assert_eq!(b["commits"], serde_json::json!(["abc"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_recorded_before_a_restart_are_delivered_after_it() {
    let dir = TempDir::new("crash-drop");
    {
        // Nothing listens here; delivery is never even started.
        let sig =
            Signals::open(cfg("http://127.0.0.1:9/h"), dir.path(), "http://i".into()).unwrap();
        record_everything(&sig, now_secs());
    }
    deliver_and_check(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_survive_sigkill() {
    if std::env::var_os("IMMUNE_SIGNALS_CHILD").is_some() {
        let dir = std::path::PathBuf::from(std::env::var("IMMUNE_SIGNALS_DIR").unwrap());
        let sig = Signals::open(cfg("http://127.0.0.1:9/h"), &dir, "http://i".into()).unwrap();
        record_everything(&sig, now_secs());
        std::fs::write(dir.join("ready"), "").unwrap();
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let dir = TempDir::new("crash-kill");
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "signals_survive_sigkill", "--nocapture"])
        .env("IMMUNE_SIGNALS_CHILD", "1")
        .env("IMMUNE_SIGNALS_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    wait_until(LONG, "the child recorded its signals", || ready.exists()).await;
    let status = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(!exit.success(), "the child died by SIGKILL");
    deliver_and_check(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_refused_on_a_blocked_line_is_not_resumed_and_keeps_the_blocker() {
    let dir = TempDir::new("crash-refused");
    let sig = Signals::open(cfg("http://127.0.0.1:9/h"), dir.path(), "http://i".into()).unwrap();
    let now = now_secs();
    sig.record(&[decision("d1", "web", DecisionKind::Rollback, true, now)])
        .unwrap();
    // The engine decides a canary on a blocked line at once, before serve records the event.
    let mut refused = decision("d2", "web", DecisionKind::Block, true, now + 10.0);
    refused.rule = "line_blocked".into();
    sig.record(&[refused]).unwrap();
    sig.record_deploy_event(&event(DeployEventKind::Canary, "d2", now + 10.0))
        .unwrap();
    drop(sig);
    let sig = Signals::open(cfg("http://127.0.0.1:9/h"), dir.path(), "http://i".into()).unwrap();
    assert!(sig.resume_events().unwrap().is_empty());
    let blocked = sig.blocked_lines().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].1.deploy, "d1", "the original blocker stays");
    // A later deploy reusing an old id is in flight again.
    sig.record_deploy_event(&event(DeployEventKind::Canary, "d2", now + 100.0))
        .unwrap();
    assert_eq!(sig.resume_events().unwrap().len(), 1);
}
