//! The pull gates against a real engine thread: the verdict, Flagger and gate endpoints
//! (served on a real socket) and the `immune gate` client follow the engine's decisions.
//! The engine's decisions also flow through `Signals::record` into the outbox, as in serve.
//!
//! The engine is made to roll back deterministically: a rule with
//! `on_missing: {stale_after: 30s, action: rollback}` on a series that goes silent after
//! the canary starts. Time comes from the inputs (a fixed epoch), never the clock.

mod signals_util;

use immune::engine::handle::{EngineHandle, spawn};
use immune::engine::{Engine, EngineConfig};
use immune::model::{DeployEvent, DeployEventKind, OneOrMany, Sample, Timestamp};
use immune::signals::{GateOptions, Signals, gate, gates_router, gates_router_with};
use serde_json::{Value, json};
use signals_util::*;

const RULES: &str = r#"
rules:
  - name: mysql_threads_running
    metric:
      kind: gauge
      selector: 'mysql_threads_running{job="mysql"}'
    baseline: pre_deploy
    direction: increase
    min_effect: "+50%"
    action: rollback
    on_missing: {stale_after: 30s, action: rollback}
"#;

const T0: i64 = 1_700_000_000_000;

fn canary(deploy: &str, at_ms: i64) -> DeployEvent {
    DeployEvent {
        at: at_ms as f64 / 1000.0,
        deploy: Some(deploy.into()),
        event: DeployEventKind::Canary,
        service: Some("web".into()),
        version: Some("v2".into()),
        commits: vec![],
        canary: Some([("instance".to_string(), OneOrMany::One("web-03:80".into()))].into()),
        by: None,
        reason: None,
    }
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn flagger(client: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{base}/api/v1/flagger/rollout"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_follow_the_engine_from_pending_to_rollback() {
    let dir = TempDir::new("gates");
    let recv = Receiver::start(0, 0).await;
    let sig = Signals::open(
        config(&format!(
            "webhooks:\n  - name: bot\n    url: {}\n",
            recv.url("/h")
        )),
        dir.path(),
        "http://immune.test".into(),
    )
    .unwrap();
    let rules = immune::rules::load::load_str("test.yaml", RULES).unwrap();
    let engine = Engine::new(rules, EngineConfig::default());
    let recorder = sig.clone();
    let (handle, join): (EngineHandle, _) = spawn(
        engine,
        64,
        Box::new(move |ds| recorder.record(ds).expect("outbox write")),
    )
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, gates_router(handle.clone())).into_future());
    let client = reqwest::Client::new();

    // Ten minutes of a healthy MySQL before the deploy.
    let samples: Vec<Sample> = (0..60)
        .map(|i| Sample {
            name: "mysql_threads_running".into(),
            labels: vec![
                ("instance".into(), "db-1:9104".into()),
                ("job".into(), "mysql".into()),
            ],
            value: 5.0,
            at: Timestamp(T0 + i * 10_000),
        })
        .collect();
    handle.send_samples_blocking(samples).unwrap();
    let start = T0 + 600_000;
    let ds = handle
        .deploy_event(canary("d1", start))
        .await
        .unwrap()
        .unwrap();
    assert!(ds.is_empty());
    sig.record_deploy_event(&canary("d1", start)).unwrap();

    // Judging: pending, healthy, line open.
    let (st, v) = get(&client, format!("{base}/api/v1/verdict/web")).await;
    assert_eq!(st, 200);
    assert_eq!(v["deploy"], "d1");
    assert_eq!(v["decision"], "pending");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["line"], "open");
    assert_eq!(v["blocked_by"], Value::Null);
    let (st, v) = get(&client, format!("{base}/api/v1/gate/web")).await;
    assert_eq!((st, v["open"].clone()), (200, json!(true)));
    let (st, _) = flagger(
        &client,
        &base,
        json!({"name": "web", "namespace": "prod",
        "phase": "Progressing", "checksum": "abc", "metadata": {}}),
    )
    .await;
    assert_eq!(st, 200);
    let mut out = Vec::new();
    assert!(gate(&base, "web", None, &mut out).await.unwrap());
    assert_eq!(String::from_utf8(out).unwrap(), "line of web is open\n");

    // MySQL goes silent: a minute later the engine rolls the deploy back.
    handle.tick(Timestamp(start + 60_000)).await.unwrap();
    let (st, v) = get(&client, format!("{base}/api/v1/verdict/web?deploy=d1")).await;
    assert_eq!(st, 200);
    assert_eq!(v["decision"], "rollback", "{v}");
    assert_eq!(v["healthy"], false);
    assert_eq!(v["line"], "blocked");
    assert_eq!(v["blocked_by"]["deploy"], "d1");
    assert_eq!(v["blocked_by"]["rule"], "mysql_threads_running");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("mysql_threads_running")
    );

    let (st, v) = get(&client, format!("{base}/api/v1/gate/web")).await;
    assert_eq!(st, 423);
    assert_eq!(v["open"], false);
    assert_eq!(v["blocked_by"]["decision"], "rollback");

    // Flagger, naming the service and the deploy through metadata.
    let (st, v) = flagger(
        &client,
        &base,
        json!({"name": "frontend", "namespace": "prod",
        "phase": "Progressing", "checksum": "abc",
        "metadata": {"service": "web", "deploy": "d1"}}),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(v["decision"], "rollback");
    assert_eq!(v["check"], "rollout");

    let mut out = Vec::new();
    assert!(!gate(&base, "web", Some("token"), &mut out).await.unwrap());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(
            "line of web is blocked by deploy d1 (rollback by rule mysql_threads_running"
        ),
        "{text}"
    );

    // A service immune never saw (a typo) is not vouched for: not healthy, blocked, with
    // the reason; an unknown deploy is not vouched for either.
    let (st, v) = get(&client, format!("{base}/api/v1/verdict/api")).await;
    assert_eq!(
        (st, v["healthy"].clone(), v["deploy"].clone()),
        (200, json!(false), Value::Null)
    );
    assert_eq!(v["reason"], "unknown service", "{v}");
    let (st, v) = get(&client, format!("{base}/api/v1/gate/api")).await;
    assert_eq!(
        (st, v["reason"].as_str()),
        (423, Some("unknown service")),
        "{v}"
    );
    let (st, _) = flagger(
        &client,
        &base,
        json!({"name": "api", "namespace": "prod", "phase": "Progressing", "checksum": "abc", "metadata": {}}),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = get(&client, format!("{base}/api/v1/verdict/web?deploy=nope")).await;
    assert_eq!(st, 404);
    let mut out = Vec::new();
    assert!(!gate(&base, "api", None, &mut out).await.unwrap());
    assert!(
        String::from_utf8(out).unwrap().contains("unknown service"),
        "immune gate must say why"
    );
    // Configured open, the unknown service passes while its line is open.
    let open_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_base = format!("http://{}", open_listener.local_addr().unwrap());
    let open_server = tokio::spawn(
        axum::serve(
            open_listener,
            gates_router_with(
                handle.clone(),
                GateOptions {
                    signals: None,
                    unknown_service_open: true,
                    ..GateOptions::default()
                },
            ),
        )
        .into_future(),
    );
    let (st, v) = get(&client, format!("{open_base}/api/v1/verdict/api")).await;
    assert_eq!((st, v["healthy"].clone()), (200, json!(true)), "{v}");
    let mut out = Vec::new();
    assert!(gate(&open_base, "api", None, &mut out).await.unwrap());
    open_server.abort();

    // The decision went through the outbox as in serve, and the line is remembered.
    let rows = sig.signals(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].deploy, "d1");
    assert_eq!(rows[0].decision, "rollback");
    let blocked = sig.blocked_lines().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].1.rule, "mysql_threads_running");
    assert!(sig.resume_events().unwrap().is_empty(), "d1 is decided");

    // immune gate against nothing is an error, never "open".
    let mut out = Vec::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    assert!(gate(&dead, "web", None, &mut out).await.is_err());

    handle.shutdown().await.unwrap();
    join.join().unwrap();
    server.abort();
}
