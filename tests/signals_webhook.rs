//! The webhook sink against a real HTTP receiver: a receiver that is down and then up gets
//! every signal exactly once, signed; retries repeat the same id and body; signals past
//! `max_age` are expired and counted, not dropped silently; the Alertmanager-shaped format
//! fires and resolves; bodies carry, next to the machine fields, what a person needs (who
//! deployed, the rule's description and runbook, the effect in words, RFC 3339 time, the
//! report page).

mod signals_util;

use immune::model::{DecisionKind, DeployEvent, DeployEventKind};
use immune::signals::Signals;
use signals_util::*;
use std::collections::HashMap;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn canary(deploy: &str, at: f64) -> DeployEvent {
    DeployEvent {
        at,
        deploy: Some(deploy.into()),
        event: DeployEventKind::Canary,
        service: Some("web".into()),
        version: Some("v2".into()),
        commits: vec!["abc123".into(), "def456".into()],
        canary: Some(
            [(
                "instance".to_string(),
                immune::model::OneOrMany::One("web-03".into()),
            )]
            .into_iter()
            .collect(),
        ),
        by: None,
        reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_gets_every_signal_once_and_signed() {
    let dir = TempDir::new("wh-down-up");
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    let port = free_port();
    let cfg = config(&format!(
        r#"
webhooks:
  - name: bot
    url: http://127.0.0.1:{port}/hook
    secret_file: {}
    decisions: [rollback, block, promote]
    backoff_base: 50ms
    backoff_cap: 300ms
    timeout: 2s
poll_interval: 100ms
"#,
        dir.path().join("secret").display()
    ));
    let sig = Signals::open(cfg, dir.path(), "http://immune.test:9977".into()).unwrap();
    let now = now_secs();
    let mut ev = canary("d1", now);
    ev.by = Some("alice".into());
    sig.record_deploy_event(&ev).unwrap();
    sig.record_with_views(
        &[
            decision_with_sides("d1", DecisionKind::Rollback, now),
            decision("d2", "web", DecisionKind::Block, true, now + 0.001),
            decision("d3", "web", DecisionKind::Promote, false, now + 0.002),
            // Not in the filter: never sent.
            decision("d4", "web", DecisionKind::Warn, false, now + 0.003),
        ],
        &[view_of("d1")],
    )
    .unwrap();
    let rows = sig.signals(100).unwrap();
    assert_eq!(rows.len(), 3, "one row per matching decision");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    // The receiver is down: every row is tried, and fails, more than once.
    wait_until(LONG, "two failed attempts per signal", || {
        sig.signals(100)
            .unwrap()
            .iter()
            .all(|r| r.attempts >= 2 && r.state == "pending")
    })
    .await;
    let recv = Receiver::start(port, 0).await;
    wait_until(LONG, "every signal delivered", || {
        sig.signals(100)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();

    let got = recv.got();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for g in &got {
        *per_id.entry(g.header("x-immune-signal-id")).or_default() += 1;
        assert_eq!(g.path, "/hook");
        let ts: i64 = g.header("x-immune-timestamp").parse().unwrap();
        assert!(
            immune::signals::webhook::verify(
                b"s3cret",
                ts,
                &g.body,
                &g.header("x-immune-signature")
            ),
            "signature verifies"
        );
        let b = g.json();
        assert_eq!(b["signal_id"], g.header("x-immune-signal-id"));
        assert_eq!(b["service"], "web");
        assert_eq!(
            b["link"],
            format!(
                "http://immune.test:9977/api/v1/deploys/{}",
                b["deploy"].as_str().unwrap()
            )
        );
        for key in [
            "decision",
            "deploy",
            "version",
            "commits",
            "phase",
            "rule",
            "final",
            "shadow",
            "at",
            "summary",
            "evidence",
            "by",
            "description",
            "runbook_url",
            "effect",
            "time",
            "report_url",
            "message",
        ] {
            assert!(b.get(key).is_some(), "body has {key}");
        }
        let deploy = b["deploy"].as_str().unwrap();
        assert_eq!(
            b["report_url"],
            format!("http://immune.test:9977/deploys/{deploy}")
        );
        let time = b["time"].as_str().unwrap();
        assert!(
            time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "RFC 3339: {time}"
        );
        if deploy == "d1" {
            assert_eq!(b["commits"], serde_json::json!(["abc123", "def456"]));
            assert_eq!(b["decision"], "rollback");
            assert_eq!(b["final"], true);
            assert_eq!(
                b["summary"], "php_error_ratio: d1 is worse",
                "machine summary kept"
            );
            assert_eq!(b["by"], "alice");
            assert_eq!(
                b["description"],
                "PHP errors per request, canary vs the fleet"
            );
            assert_eq!(b["runbook_url"], "https://runbooks.example.com/php");
            assert_eq!(
                b["effect"],
                "0.51% on the deploy's hosts vs 0.20% on the other hosts (+155%); evidence 1,113 against a threshold of 700"
            );
            assert_eq!(
                b["message"],
                format!(
                    "Rolled back: deploy d1 of web (v2, by alice), rule php_error_ratio in canary: {}",
                    b["effect"].as_str().unwrap()
                )
            );
        } else {
            // No view, no canary event: what is unknown is null, the rest still in words.
            assert!(b["by"].is_null() && b["runbook_url"].is_null(), "{b}");
            assert_eq!(b["effect"], b["summary"]);
            assert!(
                b["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("deploy {deploy} of web (v2)"))
            );
        }
    }
    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(per_id.len(), 3);
    for (id, n) in &per_id {
        assert!(ids.contains(id), "only recorded ids arrive");
        assert_eq!(*n, 1, "a 2xx receiver gets each signal once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_repeat_the_same_id_and_body() {
    let dir = TempDir::new("wh-retry");
    let recv = Receiver::start(0, 2).await;
    let cfg = config(&format!(
        "webhooks:\n  - name: bot\n    url: {}\n    backoff_base: 20ms\n    backoff_cap: 100ms\npoll_interval: 50ms\n",
        recv.url("/h")
    ));
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    let now = now_secs();
    sig.record(&[
        decision("d1", "web", DecisionKind::Rollback, true, now),
        decision("d2", "api", DecisionKind::Warn, false, now),
    ])
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "delivered after two 500s", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let got = recv.got();
    assert_eq!(got.len(), 6, "three tries for each of two signals");
    let mut bodies: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for g in got {
        bodies
            .entry(g.header("x-immune-signal-id"))
            .or_default()
            .push(g.json());
    }
    assert_eq!(bodies.len(), 2);
    for (id, bs) in bodies {
        assert_eq!(bs.len(), 3);
        assert!(
            bs.iter()
                .all(|b| b == &bs[0] && b["signal_id"] == id.as_str())
        );
    }
    for r in sig.signals(10).unwrap() {
        assert_eq!(r.attempts, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_signals_expire_loudly_instead_of_vanishing() {
    let dir = TempDir::new("wh-expire");
    let recv = Receiver::start(0, 0).await;
    let cfg = config(&format!(
        "webhooks:\n  - name: bot\n    url: {}\n    max_age: 1h\npoll_interval: 50ms\n",
        recv.url("/h")
    ));
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    let registry = prometheus::Registry::new();
    sig.register_metrics(&registry);
    let now = now_secs();
    sig.record(&[
        decision(
            "old",
            "web",
            DecisionKind::Rollback,
            true,
            now - 2.0 * 3600.0,
        ),
        decision("new", "web", DecisionKind::Rollback, true, now),
    ])
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "both rows settled", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state != "pending")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let rows = sig.signals(10).unwrap();
    let state = |d: &str| rows.iter().find(|r| r.deploy == d).unwrap().state.clone();
    assert_eq!(state("old"), "expired");
    assert_eq!(state("new"), "delivered");
    assert_eq!(recv.got().len(), 1);
    let expired = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "immune_signals_expired_total")
        .expect("expired counter registered");
    assert_eq!(expired.get_metric()[0].get_counter().value(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_webhook_format_fires_then_resolves_on_unblock() {
    let dir = TempDir::new("wh-amfmt");
    let recv = Receiver::start(0, 0).await;
    let cfg = config(&format!(
        "webhooks:\n  - name: chat\n    url: {}\n    format: alertmanager_webhook\n    decisions: [rollback]\npoll_interval: 50ms\n",
        recv.url("/am")
    ));
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    let now = now_secs();
    sig.record(&[decision("d1", "web", DecisionKind::Rollback, true, now)])
        .unwrap();
    assert_eq!(sig.blocked_lines().unwrap().len(), 1);
    // Unblocked before delivery even starts: the resolve still goes after the firing one.
    sig.record_unblock("web", "alice", "fixed in v3", now + 1.0)
        .unwrap();
    assert!(sig.blocked_lines().unwrap().is_empty());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "fire and resolve delivered", || recv.got().len() >= 2).await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let got = recv.got();
    assert_eq!(got.len(), 2);
    let (fire, res) = (got[0].json(), got[1].json());
    assert_eq!(fire["version"], "4");
    assert_eq!(fire["status"], "firing");
    assert_eq!(res["status"], "resolved");
    assert_eq!(fire["alerts"][0]["labels"], res["alerts"][0]["labels"]);
    assert_eq!(fire["alerts"][0]["labels"]["severity"], "critical");
    assert_ne!(
        got[0].header("x-immune-signal-id"),
        got[1].header("x-immune-signal-id")
    );
    // Unblocking again resolves nothing new.
    sig.record_unblock("web", "alice", "again", now + 2.0)
        .unwrap();
    assert_eq!(sig.signals(10).unwrap().len(), 2);
}
