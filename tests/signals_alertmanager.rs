//! The Alertmanager sink against a real Alertmanager (`IMMUNE_TEST_ALERTMANAGER_BIN`, set by
//! scripts/test.sh): a rollback becomes a firing alert with our labels that Alertmanager
//! routes to its webhook receiver, with annotations written for the person paged (summary
//! and description in words, the runbook, the report page as generatorURL), and the
//! unblock resolves it.

mod signals_util;

use immune::model::DecisionKind;
use immune::signals::Signals;
use signals_util::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Kills Alertmanager when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_fires_an_alert_and_unblock_resolves_it() {
    let Some(bin) = env_or_skip("IMMUNE_TEST_ALERTMANAGER_BIN") else {
        return;
    };
    let dir = TempDir::new("am");
    let recv = Receiver::start(0, 0).await;
    let am_port = free_port();
    let am_config = format!(
        r#"route:
  receiver: test
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: {}
        send_resolved: true
"#,
        recv.url("/from-am")
    );
    std::fs::write(dir.path().join("am.yml"), am_config).unwrap();
    std::fs::create_dir_all(dir.path().join("am-data")).unwrap();
    let am = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("am.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let _guard = Guard(am);
    let ready_url = format!("http://127.0.0.1:{am_port}/-/ready");
    let client = reqwest::Client::new();
    let start = std::time::Instant::now();
    loop {
        if client
            .get(&ready_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(start.elapsed() < LONG, "alertmanager never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cfg = config(&format!(
        "alertmanagers:\n  - name: am\n    url: http://127.0.0.1:{am_port}\n    backoff_base: 100ms\n    backoff_cap: 1s\npoll_interval: 100ms\n"
    ));
    let sig = Signals::open(cfg, dir.path(), "http://immune.test".into()).unwrap();
    let now = now_secs();
    sig.record_deploy_event(&immune::model::DeployEvent {
        at: now,
        deploy: Some("d42".into()),
        event: immune::model::DeployEventKind::Canary,
        service: Some("web".into()),
        version: Some("v2".into()),
        commits: vec!["abc123".into()],
        canary: Some(
            [(
                "instance".to_string(),
                immune::model::OneOrMany::One("web-03".into()),
            )]
            .into_iter()
            .collect(),
        ),
        by: Some("alice".into()),
        reason: None,
    })
    .unwrap();
    sig.record_with_views(
        &[decision_with_sides("d42", DecisionKind::Rollback, now)],
        &[view_of("d42")],
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);

    let firing = |g: &Got| g.json()["status"] == "firing";
    wait_until(LONG, "alertmanager notifies a firing alert", || {
        recv.got().iter().any(firing)
    })
    .await;
    let got = recv.got();
    let fire = got.iter().find(|g| firing(g)).unwrap().json();
    let labels = &fire["alerts"][0]["labels"];
    assert_eq!(labels["alertname"], "ImmuneDeployRegression");
    assert_eq!(labels["service"], "web");
    assert_eq!(labels["deploy"], "d42");
    assert_eq!(labels["decision"], "rollback");
    assert_eq!(labels["rule"], "php_error_ratio");
    assert_eq!(labels["severity"], "critical");
    let ann = &fire["alerts"][0]["annotations"];
    assert_eq!(
        ann["summary"],
        "Rolled back: deploy d42 of web (v2, by alice), rule php_error_ratio in canary"
    );
    let description = ann["description"].as_str().unwrap();
    for part in [
        "PHP errors per request, canary vs the fleet.",
        "0.51% on the deploy's hosts vs 0.20% on the other hosts (+155%); evidence 1,113 against a threshold of 700.",
        "Deploy d42 of web version v2 (commits abc123) by alice; decided rollback at 20",
        "Report: http://immune.test/deploys/d42",
    ] {
        assert!(
            description.contains(part),
            "{part:?} not in {description:?}"
        );
    }
    assert!(!description.contains("1.0e") && !description.contains("p_value"));
    assert_eq!(ann["runbook_url"], "https://runbooks.example.com/php");
    assert_eq!(ann["report"], "http://immune.test/deploys/d42");
    assert_eq!(ann["link"], "http://immune.test/api/v1/deploys/d42");
    assert_eq!(
        fire["alerts"][0]["generatorURL"],
        "http://immune.test/deploys/d42"
    );

    sig.record_unblock("web", "alice", "fixed", now_secs())
        .unwrap();
    wait_until(LONG, "alertmanager notifies the resolved alert", || {
        recv.got().iter().any(|g| g.json()["status"] == "resolved")
    })
    .await;
    let got = recv.got();
    let res = got
        .iter()
        .find(|g| g.json()["status"] == "resolved")
        .unwrap()
        .json();
    assert_eq!(&res["alerts"][0]["labels"], labels);
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    assert!(
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    );
}
