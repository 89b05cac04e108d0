//! `immune deploy` and `immune gate` against a real agent, as a deploy script uses them:
//! every step exits 3 once the deploy has been rolled back (whenever that happened), both
//! commands take the same auth flags, and a service immune never saw is blocked.

#[path = "agent_common/mod.rs"]
mod common;

use common::{TempDir, start};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

fn immune(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(args)
        .env_remove("IMMUNE_TOKEN")
        .env("IMMUNE_LOG", "error")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deploy_step_exits_3_once_rolled_back_and_auth_flags_match() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart/heartbeat.yaml");
    let mut agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\napi: {{tokens: [s3cret]}}\n",
        rules.display()
    ))
    .await;
    let url = agent.url.clone();
    let dir = TempDir::new("cli");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let tf = token_file.display().to_string();
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
    // Without a token: refused (exit 2). With --token-file, as gate takes it: started.
    let o = immune(&[
        "deploy",
        "--url",
        &url,
        "start",
        "d1",
        "--service",
        "web",
        "--canary",
        "instance=web-01:80",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = immune(&[
        "deploy",
        "--url",
        &url,
        "--token-file",
        &tf,
        "start",
        "d1",
        "--service",
        "web",
        "--canary",
        "instance=web-01:80",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = immune(&[
        "gate",
        "--url",
        &url,
        "--token",
        "s3cret",
        "--service",
        "web",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The heartbeat stops: rolled back by the agent, between two script steps.
    agent
        .wait_decision(Duration::from_secs(60), |d| {
            d.deploy == "d1" && d.decision == immune::model::DecisionKind::Rollback
        })
        .await;
    for step in [&["full", "d1"][..], &["status", "d1"], &["end", "d1"]] {
        let mut args = vec!["deploy", "--url", &url, "--token", "s3cret"];
        args.extend_from_slice(step);
        let o = immune(&args);
        assert_eq!(o.status.code(), Some(3), "deploy {step:?}: {}", text(&o));
        assert!(text(&o).contains("rollback"), "{}", text(&o));
    }
    let o = immune(&[
        "gate",
        "--url",
        &url,
        "--token-file",
        &tf,
        "--service",
        "web",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A typo in the service name does not pass the gate.
    let o = immune(&["gate", "--url", &url, "--service", "wbe"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unknown service"), "{}", text(&o));
    let help = immune(&["deploy", "--help"]);
    assert!(
        text(&help).contains("3 the\n") || text(&help).contains("3 the deploy"),
        "{}",
        text(&help)
    );
    agent.stop().await.unwrap();
}
