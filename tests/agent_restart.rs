//! The real `immune serve` process killed with SIGKILL after it stored a rollback but
//! before its webhook receiver was up: after a restart the line is still blocked, the
//! receiver gets the signal (once, with its id), and `immune gate` follows the line.

mod process_common;

use process_common::{Receiver, free_port, http, start_agent, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn gate(port: u16) -> Output {
    Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "gate",
            "--service",
            "web",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap()
}

#[test]
fn a_rollback_survives_sigkill_and_is_delivered_after_restart() {
    let dir = std::env::temp_dir().join(format!("immune-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (port, hook_port) = (free_port(), free_port());
    let rules: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart/heartbeat.yaml");
    let config = dir.join("immune.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {data}\nrules: [{rules}]\nengine: {{eval_interval: 1s}}\n\
             signals:\n  webhooks:\n    - name: deploybot\n      url: http://127.0.0.1:{hook_port}/hook\n      \
             decisions: [rollback]\n      backoff_base: 200ms\n      backoff_cap: 1s\n",
            data = dir.join("data").display(),
            rules = rules.display(),
        ),
    )
    .unwrap();

    // 1. A heartbeat from the canary host, a deploy, then silence: the agent rolls back.
    let agent = start_agent(&config, port);
    for _ in 0..4 {
        let (status, body) = http(
            "POST",
            port,
            "/api/v1/push",
            "app_heartbeat{instance=\"web-01:80\",job=\"web\"} 1\n",
        )
        .unwrap();
        assert!(status < 300, "{status} {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = r#"{"deploy": "d1", "service": "web", "version": "r1", "canary": {"instance": ["web-01:80"]}}"#;
    let (status, body) = http("POST", port, "/api/v1/deploys", start).unwrap();
    assert!(status < 300, "{status} {body}");
    wait_for(|| {
        http("GET", port, "/api/v1/lines/web", "")
            .map(|(_, b)| b.contains("heartbeat_silent"))
            .unwrap_or(false)
    });
    assert_eq!(gate(port).status.code(), Some(1));

    // 2. The receiver is down, so the signal waits in the outbox; kill -9 the agent.
    let mut agent = agent;
    agent.kill9();

    // 3. Receiver up, agent restarted on the same data: the line is still blocked and the
    //    rollback arrives, once.
    let receiver = Receiver::start(hook_port);
    let _agent = start_agent(&config, port);
    let (_, line) = http("GET", port, "/api/v1/lines/web", "").unwrap();
    assert!(
        line.contains("heartbeat_silent"),
        "line open after restart: {line}"
    );
    let gated = gate(port);
    assert_eq!(
        gated.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&gated.stdout)
    );
    wait_for(|| !receiver.received().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["decision"], "rollback");
    assert_eq!(body["deploy"], "d1");
    assert_eq!(body["signal_id"], got[0].0.as_str());

    // 4. A person unblocks: the gate opens.
    let (status, body) = http(
        "POST",
        port,
        "/api/v1/lines/web/unblock",
        r#"{"by": "alice", "reason": "heartbeat fixed"}"#,
    )
    .unwrap();
    assert!(status < 300, "{status} {body}");
    assert_eq!(gate(port).status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
