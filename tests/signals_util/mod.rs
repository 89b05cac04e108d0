//! Shared pieces of the signals integration tests: a real HTTP receiver on a loopback
//! port, temporary directories, decisions, and bounded waits.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use immune::model::{Decision, DecisionKind, Phase};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Got {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("receiver got JSON")
    }
}

#[derive(Clone, Default)]
struct RecvState {
    got: Arc<Mutex<Vec<Got>>>,
    /// Answer 500 to the first N requests for each signal id.
    fail_first: usize,
    seen: Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

/// A webhook receiver on a real socket.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `port` (0 for any); answers 500 to the first `fail_first` tries of each
    /// signal id, 200 after.
    pub async fn start(port: u16, fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let state = RecvState {
            fail_first,
            ..Default::default()
        };
        let got = state.got.clone();
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(s): State<RecvState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = headers
        .get("x-immune-signal-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    s.got.lock().unwrap().push(Got {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let mut seen = s.seen.lock().unwrap();
    let n = seen.entry(id).or_default();
    *n += 1;
    if *n <= s.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A port nothing listens on right now (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "immune-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            now_secs() as u64
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A decision of `kind` about `deploy` of `service`, at `at`.
pub fn decision(deploy: &str, service: &str, kind: DecisionKind, fin: bool, at: f64) -> Decision {
    Decision {
        at,
        deploy: deploy.into(),
        service: service.into(),
        version: Some("v2".into()),
        decision: kind,
        phase: Phase::Canary,
        rule: "php_error_ratio".into(),
        r#final: fin,
        shadow: false,
        evidence: serde_json::json!({"summary": format!("php_error_ratio: {deploy} is worse"), "p_value": 1e-9}),
    }
}

/// Polls `f` every 50ms until it is true; panics with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses a signals config from YAML with the crate's loader, as immune.yaml is read.
pub fn config(yaml: &str) -> immune::signals::SignalsConfig {
    immune::rules::load::from_yaml_str("immune.yaml", yaml).expect("valid signals config")
}

/// An environment variable naming a service; when unset, `None` with a note saying the test
/// skips, or a panic under `IMMUNE_TEST_REQUIRE_SERVICES` (set by scripts/test.sh).
pub fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("IMMUNE_TEST_REQUIRE_SERVICES")
                .is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "{var} is not set but IMMUNE_TEST_REQUIRE_SERVICES is: the service this test needs is missing"
            );
            eprintln!("skipping: {var} is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// A deploy view (as `Engine::deploy_view` gives it) whose `php_error_ratio` rule has a
/// description and a runbook, for the fields written for people.
pub fn view_of(deploy: &str) -> serde_json::Value {
    serde_json::json!({
        "deploy": deploy, "service": "web", "version": "v2", "by": "alice", "phase": "canary",
        "rules": [{"rule": "php_error_ratio", "baseline": "control",
                   "description": "PHP errors per request, canary vs the fleet",
                   "runbook_url": "https://runbooks.example.com/php"}],
        "decisions": [],
    })
}

/// [`decision`] with both sides' numbers in its evidence, as the judge writes them.
pub fn decision_with_sides(deploy: &str, kind: DecisionKind, at: f64) -> Decision {
    let mut d = decision(deploy, "web", kind, true, at);
    d.evidence = serde_json::json!({
        "summary": format!("php_error_ratio: {deploy} is worse"),
        "treatment": {"rate": 0.0051}, "baseline": {"rate": 0.002}, "effect": {"ratio": 2.55},
        "e_value": 1112.5, "threshold": 0.00142857, "baseline_kind": "control",
    });
    d
}
