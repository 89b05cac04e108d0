//! `immune backtest` against a real Prometheus holding the bundled example's history
//! (loaded with `promtool tsdb create-blocks-from openmetrics`): it gives the same decisions
//! as `immune replay` on the file the blocks were made from.
//!
//! Needs `IMMUNE_TEST_PROMETHEUS_BIN` and `IMMUNE_TEST_PROMTOOL_BIN` (scripts/test.sh sets
//! them); under `IMMUNE_TEST_REQUIRE_SERVICES=1` a missing one fails the test.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn service_bin(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) => Some(PathBuf::from(v)),
        None if std::env::var_os("IMMUNE_TEST_REQUIRE_SERVICES").is_some() => {
            panic!("{var} is not set but IMMUNE_TEST_REQUIRE_SERVICES is: the service is missing")
        }
        None => {
            eprintln!("skipping: {var} is not set (scripts/test.sh sets it)");
            None
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = url.trim_start_matches("http://");
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = write!(s, "GET /-/ready HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("prometheus at {url} never became ready");
}

fn example_files(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = immune::sim::FleetConfig::default();
    let plans = immune::defaults::example_plans(&cfg);
    let until = cfg.start.add(immune::model::DurationMs::from_secs(80 * 60));
    let (mut metrics, mut deploys) = (Vec::new(), Vec::new());
    immune::sim::write_replay_files(&cfg, &plans, until, &mut metrics, &mut deploys)
        .expect("simulated files");
    let (m, d) = (dir.join("metrics.om"), dir.join("deploys.jsonl"));
    std::fs::write(&m, metrics).expect("write metrics");
    std::fs::write(&d, deploys).expect("write deploys");
    (m, d)
}

fn immune(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run immune");
    assert!(
        out.status.success(),
        "immune {args:?} failed: {:?}",
        out.status
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn backtest_from_prometheus_decides_as_replay_of_the_same_data() {
    let (Some(prometheus), Some(promtool)) = (
        service_bin("IMMUNE_TEST_PROMETHEUS_BIN"),
        service_bin("IMMUNE_TEST_PROMTOOL_BIN"),
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("immune-backtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (metrics, deploys) = example_files(&dir);
    let blocks = dir.join("tsdb");
    let made = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&metrics)
        .arg(&blocks)
        .output()
        .expect("run promtool");
    assert!(
        made.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(dir.join("prometheus.yml"), "global: {}\n").expect("config");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", blocks.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("start prometheus"),
    );
    wait_ready(&url);

    let replayed = immune(&[
        "replay",
        "--metrics",
        metrics.to_str().expect("path"),
        "--deploys",
        deploys.to_str().expect("path"),
    ]);
    let backtested = immune(&[
        "backtest",
        "--prometheus",
        &url,
        "--deploys",
        deploys.to_str().expect("path"),
        "--chunk",
        "7m",
    ]);
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(
        lines(&replayed).len() >= 2,
        "the example's decisions: {replayed}"
    );
    assert!(replayed.contains("\"decision\":\"rollback\""), "{replayed}");
    assert_eq!(lines(&backtested), lines(&replayed));

    // `check --against` the same TSDB: the shipped rules all match; a typo is named with
    // the metric it meant.
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    std::fs::write(
        rules_dir.join("typo.yaml"),
        concat!(
            "rules:\n",
            "  - name: php_error_ratio\n",
            "    metric: {kind: ratio, selector: 'php_error_total{job=\"web\"}', denominator: 'http_requests_total{job=\"web\"}'}\n",
            "    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n",
        ),
    )
    .expect("rule file");
    let checked = immune(&[
        "check",
        rules_dir.to_str().expect("path"),
        "--against",
        &url,
    ]);
    assert!(
        checked.contains(
            "typo.yaml:2: warning: rule \"php_error_ratio\": php_error_total{job=\"web\"} matches no series; nearest metric names: php_errors_total"
        ),
        "{checked}"
    );
    assert!(
        checked.contains("1 selector matching no series"),
        "{checked}"
    );
    let shipped = immune(&["check", "rules", "--against", &url]);
    assert!(
        shipped.contains("0 selectors matching no series"),
        "{shipped}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_tsdb_is_an_error_that_names_it() {
    let dir = std::env::temp_dir().join(format!("immune-backtest-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (_, deploys) = example_files(&dir);
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "backtest",
            "--prometheus",
            &url,
            "--retries",
            "0",
            "--deploys",
        ])
        .arg(&deploys)
        .output()
        .expect("run immune");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
    assert!(
        err.to_lowercase().contains("connect"),
        "the cause is kept: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
