//! The terminal view against a real agent, through the real binary: `immune deploy
//! status` (table and `--json`), `immune deploy watch` until the deploy is rolled back
//! (exit 3), `immune lines`, and the exit code and cause when the agent cannot be reached.

#[path = "agent_common/mod.rs"]
mod common;

use common::{free_port, start};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn immune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(args)
        .env_remove("IMMUNE_TOKEN")
        .env_remove("NO_COLOR")
        .env("IMMUNE_LOG", "error")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", out(o), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_and_lines_show_the_deploy_until_it_is_rolled_back() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart/heartbeat.yaml");
    let mut agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\napi: {{tokens: [s3cret]}}\n",
        rules.display()
    ))
    .await;
    let url = agent.url.clone();
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{url}/api/v1/push"))
            .bearer_auth("s3cret")
            .body("app_heartbeat{instance=\"web-01:80\",job=\"web\"} 1\n")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let base = ["--url", url.as_str(), "--token", "s3cret"];
    let deploy = |rest: &[&str]| {
        let mut a = vec!["deploy"];
        a.extend_from_slice(&base);
        a.extend_from_slice(rest);
        immune(&a)
    };
    let o = deploy(&[
        "start",
        "d1",
        "--service",
        "web",
        "--version",
        "v7",
        "--commit",
        "abc1234",
        "--canary",
        "instance=web-01:80",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The table: headline, facts, one row per rule with its state; no colour on a pipe.
    let o = deploy(&["status", "d1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let table = out(&o);
    assert!(
        table.starts_with("JUDGING in canary") && table.contains("deploy d1  service web"),
        "{table}"
    );
    assert!(
        table.contains("version v7") && table.contains("commits abc1234"),
        "{table}"
    );
    // The rule is a row once it has data, else listed as waiting for data.
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("heartbeat_silent  canary")
                || l.starts_with("no data yet: heartbeat_silent (canary)")),
        "{table}"
    );
    if let Some(header) = table.lines().find(|l| l.starts_with("RULE")) {
        assert!(
            header.contains("STATE") && header.contains("EVIDENCE / THRESHOLD"),
            "{table}"
        );
    }
    assert!(!table.contains('\x1b'), "no colour when stdout is a pipe");

    // --json: the document as the API gives it.
    let o = deploy(&["status", "d1", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let api: serde_json::Value = client
        .get(format!("{url}/api/v1/deploys/d1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["deploy"], "d1");
    assert_eq!(doc["rules"][0]["rule"], api["rules"][0]["rule"]);
    assert_eq!(doc["version"], "v7");

    let o = immune(&["lines", "--url", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let web = out(&o);
    let row = web.lines().find(|l| l.starts_with("web")).unwrap();
    assert!(row.contains("open"), "{web}");

    // watch redraws until the agent rolls the deploy back (the heartbeat stops), exit 3.
    let watcher = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "deploy",
            "--url",
            &url,
            "watch",
            "d1",
            "--interval",
            "200ms",
        ])
        .env("IMMUNE_LOG", "error")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output());
    agent
        .wait_decision(Duration::from_secs(60), |d| {
            d.deploy == "d1" && d.decision == immune::model::DecisionKind::Rollback
        })
        .await;
    let o = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .expect("watch ends once the deploy is decided")
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let frames = out(&o);
    assert!(frames.contains("JUDGING in canary"), "{frames}");
    let last = frames.rsplit("\n\n").next().unwrap_or_default();
    assert!(
        frames.contains("ROLLBACK  deploy d1")
            && frames.contains("rollback by rule heartbeat_silent in canary at 20"),
        "{frames}\n(last frame: {last})"
    );
    assert!(
        !frames.contains('\x1b'),
        "no colour, no screen clearing on a pipe"
    );

    // status exits 3 too now, and lines say who blocked web, since when.
    let o = deploy(&["status", "d1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(out(&o).starts_with("ROLLBACK"), "{}", text(&o));
    let o = immune(&["lines", "--url", &url]);
    let t = out(&o);
    let row = t.lines().find(|l| l.starts_with("web")).unwrap();
    assert!(
        row.contains("blocked")
            && row.contains("rollback of deploy d1 by rule heartbeat_silent")
            && row.contains('T')
            && row.contains('Z'),
        "{t}"
    );
    let o = immune(&["lines", "--url", &url, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(doc["web"]["blocked"]["deploy"], "d1");

    // An unknown deploy is refused: exit 2 with the agent's reason.
    let o = immune(&[
        "deploy",
        "--url",
        &url,
        "watch",
        "nope",
        "--interval",
        "100ms",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown deploy"), "{}", text(&o));
    agent.stop().await.unwrap();

    // An agent that cannot be reached: exit 2, and the cause is kept.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = immune(&[
        "deploy",
        "--url",
        &dead,
        "watch",
        "d1",
        "--interval",
        "50ms",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("connection refused"),
        "{}",
        text(&o)
    );
    let o = immune(&["lines", "--url", &dead]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("connection refused"),
        "{}",
        text(&o)
    );
}
