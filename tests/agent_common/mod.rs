//! Shared by the agent's integration tests: start a real agent on port 0 with a temp data
//! dir, read its /metrics, wait for decisions, and freeze/thaw processes safely.
#![allow(dead_code)]

use immune::config::Config;
use immune::model::Decision;
use immune::serve::{self, RunOptions, ServeError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "immune-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
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

/// A running agent.
pub struct Agent {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub decisions: mpsc::UnboundedReceiver<Decision>,
    pub seen: Vec<Decision>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    pub dir: TempDir,
}

/// The path of a fixture under tests/fixtures/agent.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name)
}

/// Starts an agent from YAML configuration text; `data_dir` is a fresh temp dir.
pub async fn start(yaml: &str) -> Agent {
    start_in(yaml, TempDir::new("agent")).await
}

/// Starts an agent whose data dir is `dir/data` (a restart reuses the dir of a stopped one).
pub async fn start_in(yaml: &str, dir: TempDir) -> Agent {
    let mut config = Config::from_str("test.yaml", yaml).expect("test config");
    config.data_dir = dir.path().join("data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let opts = RunOptions {
        decisions: Some(tx),
        ..RunOptions::default()
    };
    let join = tokio::spawn(serve::run(listener, config, opts, async move {
        let _ = stop_rx.await;
    }));
    let agent = Agent {
        url: format!("http://{addr}"),
        addr,
        decisions: rx,
        seen: Vec::new(),
        stop: Some(stop_tx),
        join: Some(join),
        dir,
    };
    // Wait until it answers.
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/-/healthy", agent.url)).send().await
            && r.status().is_success()
        {
            return agent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent did not start");
}

impl Agent {
    /// Stops the agent and returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.join.take() {
            Some(j) => j.await.expect("agent task"),
            None => Ok(()),
        }
    }

    /// Stops the agent and hands back its directory, for a restart on the same data.
    pub async fn stop_keep(mut self) -> TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            j.await.expect("agent task").expect("agent stopped cleanly");
        }
        std::mem::replace(&mut self.dir, TempDir(PathBuf::new()))
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series in /metrics (`name{labels}` exactly as rendered), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == series).then(|| v.parse().ok()).flatten()
        })
    }

    /// Polls `series` until `pred` holds on it, for at most `limit`.
    pub async fn wait_metric(
        &self,
        series: &str,
        limit: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let started = Instant::now();
        loop {
            if let Some(v) = self.metric(series).await
                && pred(v)
            {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "{series} never satisfied the condition; /metrics:\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for a decision matching `pred`, for at most `limit`.
    pub async fn wait_decision(
        &mut self,
        limit: Duration,
        pred: impl Fn(&Decision) -> bool,
    ) -> Decision {
        if let Some(d) = self.seen.iter().find(|d| pred(d)) {
            return d.clone();
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.decisions.recv()).await {
                Ok(Some(d)) => {
                    self.seen.push(d.clone());
                    if pred(&d) {
                        return d;
                    }
                }
                Ok(None) => panic!("agent stopped; decisions so far: {:?}", self.seen),
                Err(_) => panic!(
                    "no matching decision in {limit:?}; decisions: {:?}",
                    self.seen
                ),
            }
        }
    }
}

/// The variable scripts/test.sh sets to say every service is installed and started: under
/// it a missing service fails its test instead of skipping it.
pub const REQUIRE_SERVICES: &str = "IMMUNE_TEST_REQUIRE_SERVICES";

/// Whether services are required (`IMMUNE_TEST_REQUIRE_SERVICES` set and not `0`).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An environment variable naming a service; when it is unset, `None` with a printed note
/// saying the test skips, or a panic when [`services_required`].
pub fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                !services_required(),
                "{var} is not set but {REQUIRE_SERVICES} is: the service this test needs is missing"
            );
            eprintln!("skipping: {var} is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// A process frozen with SIGSTOP until this guard is dropped (SIGCONT, even on panic).
pub struct Frozen(String);

impl Frozen {
    pub fn new(pid: &str) -> Frozen {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "could not SIGSTOP {pid}");
        Frozen(pid.to_string())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// A child process killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A clock the test moves: `now` is what the shared counter says (milliseconds), and every
/// period of the agent's tasks waits 5 ms of real time.
pub struct StepClock(pub std::sync::Arc<std::sync::atomic::AtomicI64>);

impl immune::serve::Clock for StepClock {
    fn now(&self) -> immune::model::Timestamp {
        immune::model::Timestamp(self.0.load(Ordering::SeqCst))
    }
    fn real(&self, _: immune::model::DurationMs) -> Duration {
        Duration::from_millis(5)
    }
}
