//! The outbox that cannot write, through the failure seam (`inject_write_failure`): a
//! decision is kept in memory, the service's gate fails closed and the store reports not
//! writable; once writes work again the decision is written by the retry loop and
//! delivered exactly once. tests/agent_durable.rs does the same on a real full tmpfs.

mod signals_util;

use immune::engine::handle::spawn;
use immune::engine::{Engine, EngineConfig};
use immune::model::DecisionKind;
use immune::signals::{GateOptions, Signals, gates_router_with};
use signals_util::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_outbox_keeps_the_decision_fails_closed_and_delivers_it_once_later() {
    let dir = TempDir::new("outbox-full");
    let recv = Receiver::start(0, 0).await;
    let sig = Signals::open(
        config(&format!(
            "poll_interval: 100ms\nwebhooks:\n  - name: bot\n    url: {}\n    backoff_base: 100ms\n    backoff_cap: 500ms\n",
            recv.url("/h")
        )),
        dir.path(),
        "http://i".into(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = sig.spawn_delivery(stop_rx);

    sig.inject_write_failure(true);
    let d = decision("d1", "web", DecisionKind::Rollback, true, now_secs());
    assert!(sig.record(std::slice::from_ref(&d)).is_err());
    assert_eq!(sig.unrecorded(), vec![d.clone()]);
    assert!(sig.unrecorded_for("web").is_some());
    assert!(sig.unrecorded_for("api").is_none());
    let why = sig.writable(0).unwrap_err();
    assert!(why.contains("kept in memory"), "{why}");

    // The gates fail closed for web even though this engine never saw the decision.
    let rules = immune::serve::load_rules(&[]).unwrap();
    let (handle, _join) = spawn(
        Engine::new(rules, EngineConfig::default()),
        8,
        Box::new(|_| {}),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        axum::serve(
            listener,
            gates_router_with(
                handle,
                GateOptions {
                    signals: Some(sig.clone()),
                    unknown_service_open: true,
                    ..GateOptions::default()
                },
            ),
        )
        .into_future(),
    );
    let r = reqwest::get(format!("{base}/api/v1/gate/web"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 423);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["blocked_by"]["unrecorded"], true, "{v}");
    let r = reqwest::get(format!("{base}/api/v1/gate/api"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = reqwest::get(format!("{base}/api/v1/verdict/web"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["healthy"], false, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(recv.got().is_empty());

    // Writes work again: the retry loop writes it and delivery sends it, once.
    sig.inject_write_failure(false);
    wait_until(Duration::from_secs(20), "delivered", || {
        !recv.got().is_empty()
    })
    .await;
    assert!(sig.unrecorded().is_empty());
    assert!(sig.writable(0).is_ok());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recv.got().len(), 1);
    assert_eq!(recv.got()[0].json()["deploy"], "d1");
    let r = reqwest::get(format!("{base}/api/v1/gate/web"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = stop_tx.send(true);
    let _ = delivery.await;
}
