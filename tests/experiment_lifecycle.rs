//! Experiments on a live agent (port 0) through their whole life: participants and outcomes
//! read from pushed counters (`source: metrics`); a guardrail breach sent as `stop` to the
//! webhook sinks that list it (a real HTTP receiver), once, across a restart, blocking no
//! line; state carried across the restart; `start` and `end` following the agent's clock
//! (a clock the test moves), with the closing's result sent as `close`.

mod agent_common;
mod signals_util;

use immune::config::Config;
use immune::serve::{self, RunOptions};
use serde_json::{Value, json};
use signals_util::{Receiver, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth("s3cret")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn push(url: &str, text: &str) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/push"))
        .bearer_auth("s3cret")
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// The state once its participants per branch are `want` (read every 50 ms, 30 s at most).
async fn wait_participants(url: &str, want: &[u64]) -> Value {
    let mut s = Value::Null;
    for _ in 0..600 {
        s = get(url).await;
        if participants(&s) == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("participants never became {want:?}: {s}");
}

fn participants(s: &Value) -> Vec<u64> {
    s["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["participants"].as_u64().unwrap())
        .collect()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Participants from `experiment_exposures_total{experiment,branch}` and outcomes from
/// `signups_total{branch}`, pushed like any other samples: the increase since the first
/// point, a counter restart counted as a restart, and the totals carried across a restart.
#[tokio::test]
async fn participants_and_outcomes_from_pushed_counters_survive_a_restart() {
    let files = agent_common::TempDir::new("exp-counters");
    let exp = write(
        files.path(),
        "e.yaml",
        "experiments:
  - name: Counted
    initial_rollout: 1
    source: metrics
    branches: [{name: Enhanced, weight: 0.5}]
    metrics:
      - {name: signups_total, kind: count, direction: increase, min_effect: 0.1}
",
    );
    let yaml = format!("experiments: [{exp:?}]\napi: {{tokens: [s3cret]}}\n");
    let agent = agent_common::start(&yaml).await;
    let u = agent.url.clone();
    let series = |c: u64, e: u64, sc: u64, se: u64| {
        format!(
            "experiment_exposures_total{{experiment=\"Counted\",branch=\"control\"}} {c}\n\
             experiment_exposures_total{{experiment=\"Counted\",branch=\"Enhanced\"}} {e}\n\
             experiment_exposures_total{{experiment=\"Other\",branch=\"Enhanced\"}} {}\n\
             signups_total{{branch=\"control\"}} {sc}\n\
             signups_total{{branch=\"Enhanced\"}} {se}\n",
            e * 7
        )
    };
    // The first point is where counting starts.
    push(&u, &series(100, 100, 5, 5)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    push(&u, &series(1100, 1090, 25, 45)).await;
    let url = format!("{u}/api/v1/experiments/Counted");
    let s = wait_participants(&url, &[1000, 990]).await;
    assert_eq!(s["source"], "metrics");
    assert_eq!(s["counter_series"], 4, "{s}");
    // Events are refused: the counters are the source.
    let (status, e) = post(
        &format!("{url}/events"),
        &json!({"events": [{"id": "a", "uid": "u", "type": "exposure"}]}),
    )
    .await;
    assert_eq!(status, 409, "{e}");

    let dir = agent.stop_keep().await;
    let agent = agent_common::start_in(&yaml, dir).await;
    let u = agent.url.clone();
    let url = format!("{u}/api/v1/experiments/Counted");
    let s = get(&url).await;
    assert_eq!(participants(&s), [1000, 990], "after the restart: {s}");
    // After the restart: the control counter restarted (from 0 to 50: +50), Enhanced +10.
    push(&u, &series(50, 1100, 30, 60)).await;
    wait_participants(&url, &[1050, 1000]).await;
    // Means per participant come from the counters' increases: control 20 + 5, Enhanced 40 + 15.
    let (status, looked) = post(&format!("{url}/close"), &json!({"by": "test"})).await;
    assert_eq!(status, 200, "{looked}");
    let c = &looked["comparisons"][0];
    let (mb, mc) = (
        c["means"][0].as_f64().unwrap(),
        c["means"][1].as_f64().unwrap(),
    );
    assert!((mb - 55.0 / 1000.0).abs() < 1e-12, "{looked}");
    assert!((mc - 25.0 / 1050.0).abs() < 1e-12, "{looked}");
    assert_eq!(looked["lifecycle"]["phase"], "closed");
    agent.stop().await.unwrap();
}

fn guarded(dir: &std::path::Path) -> String {
    write(
        dir,
        "g.yaml",
        "experiments:
  - name: Guarded
    initial_rollout: 1
    branches: [{name: Enhanced, weight: 0.5}]
    metrics:
      - {name: signups_total, kind: count, direction: increase, min_effect: 0.05}
      - {name: errors_total, kind: count, direction: decrease, min_effect: 0.1, guardrail: true}
",
    )
}

/// A guardrail breach: `stop` reaches the sink that lists it (and not the one that does
/// not), once, even across a restart; no line is blocked; the state survives the restart;
/// closing sends the result.
#[tokio::test]
async fn a_guardrail_breach_stops_through_the_sinks_once_across_a_restart() {
    let aware = Receiver::start(0, 0).await;
    let deploys = Receiver::start(0, 0).await;
    let alerts = Receiver::start(0, 0).await;
    let files = agent_common::TempDir::new("exp-stop");
    let exp = guarded(files.path());
    let yaml = format!(
        "experiments: [{exp:?}]\napi: {{tokens: [s3cret]}}\nsignals:\n  poll_interval: 50ms\n  webhooks:\n    - {{name: aware, url: {:?}, decisions: [rollback, stop, close]}}\n    - {{name: deploys, url: {:?}}}\n  alertmanagers:\n    - {{name: am, url: {:?}, decisions: [stop]}}\n",
        aware.url("/hook"),
        deploys.url("/hook"),
        alerts.url(""),
    );
    let agent = agent_common::start(&yaml).await;
    let u = agent.url.clone();
    let e = immune::experiment::load_file(std::path::Path::new(&exp)).unwrap();
    let mut events = Vec::new();
    for i in 0..4000 {
        let uid = format!("user{i}");
        let branch = immune::experiment::assign::branch_for(&e[0], &uid).unwrap();
        events.push(json!({"id": format!("x{i}"), "uid": uid, "type": "exposure"}));
        // Enhanced users hit errors five times as often.
        let every = if branch == "Enhanced" { 2 } else { 10 };
        if i % every == 0 {
            events.push(json!({"id": format!("err{i}"), "uid": uid, "type": "outcome", "metric": "errors_total"}));
        }
    }
    let (status, a) = post(
        &format!("{u}/api/v1/experiments/Guarded/events"),
        &json!({ "events": events }),
    )
    .await;
    assert_eq!(status, 200, "{a}");
    wait_until(WAIT, "the stop signal", || {
        aware.got().iter().any(|g| g.json()["decision"] == "stop")
    })
    .await;
    let got = aware.got();
    let stop = got.iter().find(|g| g.json()["decision"] == "stop").unwrap();
    let body = stop.json();
    assert_eq!(body["experiment"], "Guarded");
    assert_eq!(body["rule"], "errors_total");
    assert_eq!(body["harm"], json!(["Enhanced/errors_total"]));
    assert_eq!(body["phase"], "experiment");
    assert_eq!(body["final"], false);
    assert_eq!(body["evidence"]["state"], "stop");
    assert_eq!(stop.header("x-immune-signal-id"), body["signal_id"]);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Stopped: experiment Guarded"),
        "{body}"
    );
    assert!(
        deploys.got().is_empty(),
        "a deploy-only sink got an experiment decision"
    );
    wait_until(WAIT, "the stop alert", || !alerts.got().is_empty()).await;
    let alert = alerts.got()[0].clone();
    assert_eq!(alert.path, "/api/v2/alerts");
    let labels = &alert.json()[0]["labels"];
    assert_eq!(
        labels,
        &json!({"alertname": "ImmuneExperiment", "experiment": "Guarded", "decision": "stop",
                "rule": "errors_total", "severity": "warning"})
    );
    let lines = get(&format!("{u}/api/v1/lines")).await;
    assert_eq!(lines, json!({}), "no line is blocked by a stop");
    let s = get(&format!("{u}/api/v1/experiments/Guarded")).await;
    assert_eq!(s["lifecycle"]["phase"], "stopped", "{s}");
    let before = participants(&s);
    let verdicts: Vec<Value> = s["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].clone())
        .collect();

    // A restart: participants, ids, the judge (replayed) and the stop are carried on.
    let dir = agent.stop_keep().await;
    let agent = agent_common::start_in(&yaml, dir).await;
    let u = agent.url.clone();
    let s = get(&format!("{u}/api/v1/experiments/Guarded")).await;
    assert_eq!(participants(&s), before, "{s}");
    assert_eq!(s["lifecycle"]["phase"], "stopped", "{s}");
    let after: Vec<Value> = s["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].clone())
        .collect();
    assert_eq!(after, verdicts);
    // Event ids are remembered across the restart.
    let (_, again) = post(
        &format!("{u}/api/v1/experiments/Guarded/events"),
        &json!({"events": [{"id": "x0", "uid": "user0", "type": "exposure"}]}),
    )
    .await;
    assert_eq!(again["duplicate"], 1, "{again}");

    // Closing sends the result; it comes after the stop in the same sink's order, so by
    // then a second stop would have been delivered too.
    let (status, closed) = post(
        &format!("{u}/api/v1/experiments/Guarded/close"),
        &json!({"by": "alice"}),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["lifecycle"]["phase"], "closed");
    assert_eq!(closed["lifecycle"]["closed_by"], "alice");
    wait_until(WAIT, "the close signal", || {
        aware.got().iter().any(|g| g.json()["decision"] == "close")
    })
    .await;
    let got = aware.got();
    let stops = got
        .iter()
        .filter(|g| g.json()["decision"] == "stop")
        .count();
    assert_eq!(stops, 1, "stop delivered once across the restart");
    let close = got
        .iter()
        .find(|g| g.json()["decision"] == "close")
        .unwrap()
        .json();
    assert_eq!(close["final"], true);
    assert_eq!(close["by"], "alice");
    assert_eq!(close["close_reason"], "asked");
    assert_eq!(close["result"][0]["metric"], "signups_total");
    assert_eq!(close["result"][0]["outcome"], "not_significant", "{close}");
    let (status, _) = post(&format!("{u}/api/v1/experiments/Guarded/close"), &json!({})).await;
    assert_eq!(status, 409);
    assert!(deploys.got().is_empty());
    agent.stop().await.unwrap();
}

/// Before `start` nothing is counted or judged; at `end` the agent closes the experiment by
/// itself with its result and sends it; afterwards events are refused as `closed`.
#[tokio::test]
async fn start_and_end_follow_the_agents_clock() {
    // Near the wall clock: signal delivery expires rows by the wall clock's `max_age`.
    let t0: i64 = (signals_util::now_secs() * 1000.0) as i64 / 1000 * 1000;
    let aware = Receiver::start(0, 0).await;
    let files = agent_common::TempDir::new("exp-clock");
    let rfc = |ms: i64| immune::signals::alertmanager::rfc3339(ms as f64 / 1000.0);
    let exp = write(
        files.path(),
        "t.yaml",
        &format!(
            "experiments:
  - name: Timed
    initial_rollout: 1
    start: {:?}
    end: {:?}
    branches: [{{name: Enhanced, weight: 0.5}}]
    metrics:
      - {{name: signups_total, kind: count, direction: increase, min_effect: 0.05}}
",
            rfc(t0 + 60_000),
            rfc(t0 + 600_000)
        ),
    );
    let yaml = format!(
        "experiments: [{exp:?}]\napi: {{tokens: [s3cret]}}\nsignals:\n  poll_interval: 50ms\n  webhooks:\n    - {{name: aware, url: {:?}, decisions: [close]}}\n",
        aware.url("/hook")
    );
    let mut config = Config::from_str("test.yaml", &yaml).unwrap();
    config.data_dir = files.path().join("data");
    let now = Arc::new(AtomicI64::new(t0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let u = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions {
        clock: Arc::new(agent_common::StepClock(now.clone())),
        ..RunOptions::default()
    };
    let join = tokio::spawn(serve::run(listener, config, opts, async move {
        let _ = stop_rx.await;
    }));
    let url = format!("{u}/api/v1/experiments/Timed");
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "agent did not start");
    let batch = |tag: &str| {
        let ev: Vec<Value> = (0..200)
            .map(|i| json!({"id": format!("{tag}{i}"), "uid": format!("u{i}"), "type": "exposure"}))
            .collect();
        json!({ "events": ev })
    };

    let (status, a) = post(&format!("{url}/events"), &batch("early")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (a["not_started"].as_u64(), a["accepted"].as_u64()),
        (Some(200), Some(0))
    );
    let s = get(&url).await;
    assert_eq!(s["lifecycle"]["phase"], "scheduled", "{s}");
    assert_eq!(s["looks"], 0, "not judged before its start: {s}");
    assert_eq!(participants(&s).iter().sum::<u64>(), 0);

    now.store(t0 + 60_000, Ordering::SeqCst);
    let (_, a) = post(&format!("{url}/events"), &batch("on")).await;
    assert_eq!(a["accepted"], 200, "{a}");
    let s = get(&url).await;
    assert_eq!(s["lifecycle"]["phase"], "running", "{s}");
    assert_eq!(participants(&s).iter().sum::<u64>(), 200);

    now.store(t0 + 600_000, Ordering::SeqCst);
    wait_until(WAIT, "the close signal at the end", || {
        aware.got().iter().any(|g| g.json()["decision"] == "close")
    })
    .await;
    let close = aware.got()[0].json();
    assert_eq!(close["close_reason"], "end");
    assert_eq!(close["experiment"], "Timed");
    assert_eq!(close["result"][0]["outcome"], "not_significant", "{close}");
    assert_eq!(close["at"].as_f64(), Some((t0 + 600_000) as f64 / 1000.0));
    let s = get(&url).await;
    assert_eq!(s["lifecycle"]["phase"], "closed");
    assert_eq!(s["lifecycle"]["close_reason"], "end");
    let (_, a) = post(&format!("{url}/events"), &batch("late")).await;
    assert_eq!(a["closed"], 200, "{a}");
    let metrics = reqwest::get(format!("{u}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("immune_experiment_phase{experiment=\"Timed\",phase=\"closed\"} 1"),
        "{metrics}"
    );
    let _ = stop_tx.send(());
    join.await.unwrap().unwrap();
}
