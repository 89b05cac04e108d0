//! The exec sink with real child processes: the command gets the decision in its
//! environment and the webhook body on stdin; a failing command is retried with the same
//! signal id until it succeeds; a command past its timeout is killed and retried.

mod signals_util;

use immune::model::DecisionKind;
use immune::signals::Signals;
use signals_util::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn exec_config(dir: &std::path::Path, script: &str, extra: &str) -> immune::signals::SignalsConfig {
    config(&format!(
        r#"
exec:
  - name: script
    command: [sh, -c, '{script}', sh, '{}']
    backoff_base: 20ms
    backoff_cap: 100ms
{extra}
poll_interval: 50ms
"#,
        dir.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gets_the_decision_in_env_and_the_body_on_stdin() {
    let dir = TempDir::new("exec-env");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = exec_config(
        &out,
        r#"env | grep ^IMMUNE_ | sort > "$1/env"; cat > "$1/stdin""#,
        "",
    );
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    let now = now_secs();
    sig.record_with_views(
        &[decision_with_sides("d 7", DecisionKind::Rollback, now)],
        &[view_of("d 7")],
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "exec delivered", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let id = sig.signals(10).unwrap()[0].id.clone();
    let env = std::fs::read_to_string(out.join("env")).unwrap();
    for line in [
        format!("IMMUNE_SIGNAL_ID={id}"),
        "IMMUNE_DECISION=rollback".into(),
        "IMMUNE_DEPLOY=d 7".into(),
        "IMMUNE_SERVICE=web".into(),
        "IMMUNE_VERSION=v2".into(),
        "IMMUNE_RULE=php_error_ratio".into(),
        "IMMUNE_PHASE=canary".into(),
        "IMMUNE_SUMMARY=php_error_ratio: d 7 is worse".into(),
        "IMMUNE_BY=alice".into(),
        "IMMUNE_DESCRIPTION=PHP errors per request, canary vs the fleet".into(),
        "IMMUNE_RUNBOOK_URL=https://runbooks.example.com/php".into(),
        "IMMUNE_EFFECT=0.51% on the deploy's hosts vs 0.20% on the other hosts (+155%); evidence 1,113 against a threshold of 700".into(),
        format!("IMMUNE_TIME={}", immune::report::words::time(now)),
        "IMMUNE_REPORT_URL=http://i/deploys/d%207".into(),
        "IMMUNE_MESSAGE=Rolled back: deploy d 7 of web (v2, by alice), rule php_error_ratio in canary: 0.51% on the deploy's hosts vs 0.20% on the other hosts (+155%); evidence 1,113 against a threshold of 700".into(),
    ] {
        assert!(env.lines().any(|l| l == line), "env has {line}:\n{env}");
    }
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stdin")).unwrap()).unwrap();
    assert_eq!(body["signal_id"], id.as_str());
    assert_eq!(body["decision"], "rollback");
    assert_eq!(body["link"], "http://i/api/v1/deploys/d%207");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_until_it_succeeds() {
    let dir = TempDir::new("exec-retry");
    // Fails on its first two runs, succeeds on the third; logs the id of every run.
    let cfg = exec_config(
        dir.path(),
        r#"echo "$IMMUNE_SIGNAL_ID" >> "$1/runs"; n=$(wc -l < "$1/runs"); echo "run $n" >&2; [ "$n" -ge 3 ]"#,
        "",
    );
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    sig.record(&[decision("d1", "web", DecisionKind::Block, true, now_secs())])
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "exec delivered after retries", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    let row = &sig.signals(10).unwrap()[0];
    assert_eq!(row.attempts, 3);
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 3);
    assert!(runs.lines().all(|l| l == row.id), "same id on every run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_and_retried() {
    let dir = TempDir::new("exec-timeout");
    // The first run hangs (its pid is kept), later runs succeed.
    let cfg = exec_config(
        dir.path(),
        r#"if [ -e "$1/pid" ]; then exit 0; fi; echo $$ > "$1/pid"; exec sleep 60"#,
        "    timeout: 300ms",
    );
    let sig = Signals::open(cfg, dir.path(), "http://i".into()).unwrap();
    sig.record(&[decision(
        "d1",
        "web",
        DecisionKind::Rollback,
        true,
        now_secs(),
    )])
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);
    wait_until(LONG, "delivered after a timeout", || {
        sig.signals(10)
            .unwrap()
            .iter()
            .all(|r| r.state == "delivered")
    })
    .await;
    stop_tx.send(true).unwrap();
    delivery.await.unwrap();
    assert_eq!(sig.signals(10).unwrap()[0].attempts, 2);
    let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    // Killed (and reaped by tokio): the process is gone.
    wait_until(LONG, "the hung command is gone", || {
        !std::path::Path::new(&proc_dir).exists()
            || std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| s.contains(") Z "))
    })
    .await;
}
