//! The live agent filled from a real Prometheus at start-up (issue 11): Prometheus is
//! loaded with a week of history (`promtool tsdb create-blocks-from openmetrics`), an
//! agent with a `history:` section starts at the end of it, and the next 40 minutes
//! arrive live by push with two deploys. Every rule reads from the first minute: one
//! warns against the 10 minutes before the deploy, one rolls back against the same span a
//! week ago.
//! The agent's decisions must be exactly those of `immune replay` over the whole file.
//!
//! The agent runs on a clock the test steps in 60 s ticks (the replay's evaluation grid),
//! pushing each tick's samples and deploy events first, so both see the same inputs in
//! the same order; nothing here waits on wall-clock time. A second test starts an agent
//! whose TSDB cannot be reached: it starts anyway and counts the failure.
//!
//! Needs `IMMUNE_TEST_PROMETHEUS_BIN` and `IMMUNE_TEST_PROMTOOL_BIN` (scripts/test.sh sets
//! them); under `IMMUNE_TEST_REQUIRE_SERVICES=1` a missing one fails the test.

mod agent_common;

use agent_common::{Child, TempDir, env_or_skip, free_port};
use immune::config::Config;
use immune::model::Decision;
use immune::serve::{self, RunOptions};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const HOSTS: [&str; 4] = ["web-01:80", "web-02:80", "web-03:80", "web-04:80"];
const SCRAPE_MS: i64 = 15_000;
const MIN: i64 = 60_000;
/// The evaluation interval of both runs. A minute: the store keeps seasonal history per
/// minute, and the seasonal judge reads it per evaluation interval, so with shorter
/// intervals most reads of last week find no point (an engine matter, noted in the report).
const EVAL_MS: i64 = 60_000;

const RULES: &str = r#"rules:
  - name: errors_vs_pre_deploy
    services: [web]
    metric: {kind: counter_rate, selector: 'php_errors_total{job="web"}'}
    baseline: pre_deploy
    baseline_window: 10m
    phases: [full, watch]
    direction: increase
    min_effect: "+50%"
    action: warn
  - name: errors_vs_last_week
    services: [web]
    metric: {kind: counter_rate, selector: 'php_errors_total{job="web"}'}
    baseline: seasonal
    seasonal_offset: 7d
    phases: [full, watch]
    direction: increase
    min_effect: "+50%"
    action: rollback
"#;

/// One scraped value: time (ms), series text, value.
type Point = (i64, String, f64);

/// A week and 40 minutes of two counters on four hosts, with a daily shape; errors treble
/// on every host from `bad_from`. Deterministic (splitmix64).
fn history(from: i64, to: i64, bad_from: i64) -> Vec<Point> {
    let mut seed: u64 = 11;
    let mut rand = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut requests = [0.0f64; 4];
    let mut errors = [0.0f64; 4];
    let mut out = Vec::new();
    let mut t = from - from.rem_euclid(SCRAPE_MS) + 3_000;
    while t <= to {
        let day = (t as f64 / 86_400_000.0) * std::f64::consts::TAU;
        let shape = 1.0 + 0.3 * day.sin();
        for (h, host) in HOSTS.iter().enumerate() {
            requests[h] += (300.0 * shape * (0.9 + 0.2 * rand())).round();
            let mut rate = 6.0 * shape;
            if t >= bad_from {
                rate *= 3.0;
            }
            // Poisson-like: a sum of coin flips with the right mean.
            let n = (0..(rate * 4.0) as usize).filter(|_| rand() < 0.25).count();
            errors[h] += n as f64;
            let labels = format!("{{instance=\"{host}\",job=\"web\"}}");
            out.push((t, format!("http_requests_total{labels}"), requests[h]));
            out.push((t, format!("php_errors_total{labels}"), errors[h]));
        }
        t += SCRAPE_MS;
    }
    out
}

fn write_openmetrics(points: &[Point], path: &Path) {
    let mut s = String::with_capacity(points.len() * 70);
    s.push_str("# TYPE http_requests counter\n# TYPE php_errors counter\n");
    for (t, series, v) in points {
        let _ = writeln!(s, "{series} {v} {}.{:03}", t / 1000, t % 1000);
    }
    s.push_str("# EOF\n");
    std::fs::write(path, s).expect("write metrics");
}

/// The deploy events, as (time ms, event JSON for replay).
fn deploy_events(w: i64) -> Vec<(i64, Value)> {
    let canary = json!({"instance": ["web-01:80"]});
    let ev = |at: i64, deploy: &str, event: &str| {
        let mut v = json!({"at": at as f64 / 1000.0, "deploy": deploy, "event": event});
        if event == "canary" {
            v["service"] = json!("web");
            v["canary"] = canary.clone();
        }
        (at, v)
    };
    vec![
        ev(w + MIN + 5_000, "d0", "canary"),
        ev(w + 3 * MIN + 5_000, "d0", "full"),
        ev(w + 12 * MIN + 5_000, "d0", "end"),
        ev(w + 14 * MIN + 5_000, "d1", "canary"),
        ev(w + 16 * MIN + 5_000, "d1", "full"),
        ev(w + 38 * MIN + 5_000, "d1", "end"),
    ]
}

fn start_prometheus(dir: &Path, metrics: &Path) -> Option<(Child, String)> {
    let prometheus = env_or_skip("IMMUNE_TEST_PROMETHEUS_BIN")?;
    let promtool = env_or_skip("IMMUNE_TEST_PROMTOOL_BIN")?;
    let blocks = dir.join("tsdb");
    let made = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(metrics)
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
    let child = Child(
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
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..600 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = write!(s, "GET /-/ready HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                return Some((child, url));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("prometheus at {url} never became ready");
}

/// A key for comparing decisions: all but the evidence's numbers.
fn key(d: &Value) -> String {
    format!(
        "{} {} {} {} final={} at={} also_failing={} rules={}",
        d["deploy"].as_str().unwrap_or(""),
        d["rule"].as_str().unwrap_or(""),
        d["decision"].as_str().unwrap_or(""),
        d["phase"].as_str().unwrap_or(""),
        d["final"],
        d["at"],
        d["evidence"]["also_failing"],
        d["evidence"]["rules"]
    )
}

/// One unlabelled series of the agent's /metrics (0 when absent).
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn evaluations(client: &reqwest::Client, url: &str) -> f64 {
    metric(client, url, "immune_evaluation_duration_seconds_count").await
}

/// An agent on a stepped clock.
struct Agent {
    url: String,
    now: Arc<AtomicI64>,
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), serve::ServeError>>,
    decisions: tokio::sync::mpsc::UnboundedReceiver<Decision>,
}

/// Starts an agent at `w` with the rules in `rules` (with `history` pointing at `tsdb`,
/// or without).
async fn start_agent(dir: &Path, rules: &Path, tsdb: Option<&str>, w: i64) -> Agent {
    let mut yaml = format!(
        "rules: [{}]\nengine: {{no_evidence: block, eval_interval: 60s}}\n",
        rules.display()
    );
    if let Some(url) = tsdb {
        let _ = writeln!(yaml, "history: {{url: \"{url}\", chunk: 7m}}");
    }
    let mut config = Config::from_str("test.yaml", &yaml).expect("test config");
    config.data_dir = dir.join("data");
    let now = Arc::new(AtomicI64::new(w));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions {
        clock: Arc::new(agent_common::StepClock(now.clone())),
        decisions: Some(tx),
        ..RunOptions::default()
    };
    let join = tokio::spawn(serve::run(listener, config, opts, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..1200 {
        if let Ok(r) = client.get(format!("{url}/-/healthy")).send().await
            && r.status().is_success()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "agent did not start");
    Agent {
        url,
        now,
        stop: stop_tx,
        join,
        decisions: rx,
    }
}

/// What an agent run decided and how much seasonal history it held.
struct Run {
    decisions: Vec<Decision>,
    /// Seasonal spans fetched from the TSDB.
    fetches: f64,
    /// The most per-minute history points the store held at any step.
    most_history: f64,
    /// Those it held at the end, both deploys over.
    history_at_end: f64,
    /// Samples the start-up fill read from the TSDB.
    prefilled: f64,
}

/// Runs an agent (with `history` pointing at `tsdb`, or without) from `w` through the
/// live part of `points`, stepping its clock on the evaluation grid.
async fn run_agent(
    dir: &Path,
    rules: &Path,
    tsdb: Option<&str>,
    points: &[Point],
    events: &[(i64, Value)],
    w: i64,
    until: i64,
) -> Run {
    let Agent {
        url,
        now,
        stop: stop_tx,
        join,
        decisions: mut rx,
    } = start_agent(dir, rules, tsdb, w).await;
    let client = reqwest::Client::new();
    let mut most_history: f64 = 0.0;
    // The fill is over before the agent answers.
    let prefilled = metric(&client, &url, "immune_history_prefill_samples_total").await;

    let live_from = points.partition_point(|p| p.0 <= w);
    let mut next = live_from;
    let mut next_event = 0;
    let push = |upto: i64, next: &mut usize| {
        let mut body = String::new();
        while *next < points.len() && points[*next].0 < upto {
            let (t, series, v) = &points[*next];
            let _ = writeln!(body, "{series} {v} {t}");
            *next += 1;
        }
        body
    };
    let mut e = w;
    while e < until {
        e += EVAL_MS;
        while next_event < events.len() && events[next_event].0 <= e {
            let (at, ev) = &events[next_event];
            next_event += 1;
            let body = push(*at, &mut next);
            if !body.is_empty() {
                let r = client
                    .post(format!("{url}/api/v1/push"))
                    .body(body)
                    .send()
                    .await
                    .expect("push");
                assert_eq!(r.status().as_u16(), 204, "{:?}", r.text().await);
            }
            let deploy = ev["deploy"].as_str().expect("deploy");
            let (path, body) = match ev["event"].as_str().expect("event") {
                "canary" => (
                    "/api/v1/deploys".to_string(),
                    json!({"deploy": deploy, "service": ev["service"], "canary": ev["canary"], "at": ev["at"]}),
                ),
                step => (
                    format!("/api/v1/deploys/{deploy}/{step}"),
                    json!({"at": ev["at"]}),
                ),
            };
            let fetched = metric(&client, &url, "immune_history_fetches_total").await;
            let r = client
                .post(format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .expect("deploy event");
            assert!(
                r.status().is_success() || r.status().as_u16() == 409,
                "{path}: {:?}",
                r.text().await
            );
            // A deploy's season is fetched well within an evaluation interval; the test
            // waits for it rather than race the stepped clock.
            if tsdb.is_some() && ev["event"] == "canary" {
                while metric(&client, &url, "immune_history_fetches_total").await <= fetched {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let body = push(e, &mut next);
        if !body.is_empty() {
            let r = client
                .post(format!("{url}/api/v1/push"))
                .body(body)
                .send()
                .await
                .expect("push");
            assert_eq!(r.status().as_u16(), 204, "{:?}", r.text().await);
        }
        now.store(e, Ordering::SeqCst);
        // An evaluation in flight now may have read the old time; the one after it
        // started after the clock moved.
        let before = evaluations(&client, &url).await;
        while evaluations(&client, &url).await < before + 2.0 {
            tokio::task::yield_now().await;
        }
        most_history = most_history.max(metric(&client, &url, "immune_store_history_points").await);
    }
    let fetches = metric(&client, &url, "immune_history_fetches_total").await;
    let history_at_end = metric(&client, &url, "immune_store_history_points").await;
    let _ = stop_tx.send(());
    join.await.expect("agent task").expect("agent ran");
    let mut decisions = Vec::new();
    while let Ok(d) = rx.try_recv() {
        decisions.push(d);
    }
    Run {
        decisions,
        fetches,
        most_history,
        history_at_end,
        prefilled,
    }
}

/// When the agent starts: a minute boundary 3 hours ago, so everything up to 40 minutes
/// after it is in the past and Prometheus serves it from blocks.
fn start_time() -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    wall - wall.rem_euclid(MIN) - 3 * 3_600_000
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_started_agent_judges_from_history_as_replay_does() {
    let dir = TempDir::new("history-agent");
    // The data run from a week and 7 hours before the start to 40 minutes after.
    let w = start_time();
    let until = w + 40 * MIN;
    let points = history(
        w - 7 * 86_400_000 - 7 * 3_600_000,
        until,
        w + 16 * MIN + 10_000,
    );
    let metrics = dir.path().join("metrics.om");
    write_openmetrics(&points, &metrics);
    let events = deploy_events(w);
    let deploys = dir.path().join("deploys.jsonl");
    let mut text = String::new();
    for (_, ev) in &events {
        let _ = writeln!(text, "{ev}");
    }
    std::fs::write(&deploys, text).expect("deploys");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("errors.yaml"), RULES).expect("rules");

    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(["replay", "--rules"])
        .arg(&rules)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--deploys")
        .arg(&deploys)
        .args(["--eval-interval", "60s"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run replay");
    assert!(out.status.success(), "replay failed");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    if let Some(keep) = std::env::var_os("IMMUNE_TEST_KEEP") {
        let _ = std::fs::create_dir_all(&keep);
        for f in ["metrics.om", "deploys.jsonl", "rules/errors.yaml"] {
            let _ = std::fs::copy(
                dir.path().join(f),
                Path::new(&keep).join(f.replace('/', "_")),
            );
        }
    }
    let replayed: Vec<String> = stdout
        .lines()
        .map(|l| key(&serde_json::from_str(l).expect("decision JSON")))
        .collect();
    eprintln!("replay:\n{}", replayed.join("\n"));
    assert!(
        replayed
            .iter()
            .any(|k| k.starts_with("d0 all_rules pass watch final=true")
                && k.ends_with(r#"{"errors_vs_last_week":"pass","errors_vs_pre_deploy":"pass"}"#)),
        "the healthy deploy passes, both rules judged: {replayed:?}"
    );
    assert!(
        replayed
            .iter()
            .any(|k| k.starts_with("d1 errors_vs_last_week rollback full final=true")),
        "the bad deploy is rolled back against last week: {replayed:?}"
    );

    let Some((_prometheus, url)) = start_prometheus(dir.path(), &metrics) else {
        return;
    };
    let rt = runtime();
    let live = rt.block_on(run_agent(
        &dir.path().join("with"),
        &rules,
        Some(&url),
        &points,
        &events,
        w,
        until,
    ));
    let keys: Vec<String> = live
        .decisions
        .iter()
        .map(|d| key(&serde_json::to_value(d).expect("decision")))
        .collect();
    assert_eq!(
        keys, replayed,
        "the agent filled from history decides as replay"
    );
    // Each deploy read its span of last week at its start; the store never held the
    // week: at most the spans (10 min + 2 h) and the deploys' own minutes, per series.
    eprintln!(
        "seasonal history points held at most: {} (fetches: {})",
        live.most_history, live.fetches
    );
    assert_eq!(live.fetches, 2.0, "one seasonal span per deploy");
    let week = 4.0 * 7.0 * 1440.0;
    assert!(
        live.most_history > 0.0 && live.most_history <= 4.0 * (130.0 + 30.0),
        "history points held: {} (a week of the four series is {week})",
        live.most_history
    );
    assert_eq!(live.history_at_end, 0.0, "released when the deploys ended");
    // The one selector is read by a 10-minute window and a season: the fill reads 10
    // minutes and the slack (7 blocks and 2 evaluations, a minute each: 19 minutes) of the
    // four series at 15 s, not the control calibration's hour no rule here reads.
    eprintln!("start-up fill: {} samples", live.prefilled);
    assert_eq!(
        live.prefilled,
        4.0 * 19.0 * 4.0,
        "samples of the start-up fill"
    );

    // Without history the same agent cannot judge the first deploy's pre-deploy window.
    let blind = rt.block_on(run_agent(
        &dir.path().join("without"),
        &rules,
        None,
        &points,
        &events,
        w,
        until,
    ));
    let blind: Vec<String> = blind
        .decisions
        .iter()
        .map(|d| key(&serde_json::to_value(d).expect("decision")))
        .collect();
    eprintln!("without history:\n{}", blind.join("\n"));
    assert!(
        blind[0].starts_with("d0 ")
            && blind[0].contains(r#""errors_vs_pre_deploy":"inconclusive""#)
            && blind[0].contains(r#""errors_vs_last_week":"inconclusive""#),
        "without history the first deploy's rules cannot judge: {blind:?}"
    );

    // A restart while the first deploy is in flight, 11 minutes after its start: the
    // resumed deploy reads its 10-minute pre-deploy window before its own start, so the
    // fill reaches back from there (19 minutes before the deploy's start, on the minute),
    // not from the restart (which would leave out the window's first two minutes).
    let restart = w + 12 * MIN;
    let resumed_dir = dir.path().join("resumed");
    let (before, after): (Vec<_>, Vec<_>) = events.iter().cloned().partition(|e| e.0 <= restart);
    let first = rt.block_on(run_agent(
        &resumed_dir,
        &rules,
        Some(&url),
        &points,
        &before,
        w,
        restart,
    ));
    assert!(
        first.decisions.iter().all(|d| !d.r#final),
        "d0 is still in flight at the restart: {:?}",
        first.decisions
    );
    let second = rt.block_on(run_agent(
        &resumed_dir,
        &rules,
        Some(&url),
        &points,
        &after,
        restart,
        until,
    ));
    let d0_start = before[0].0;
    let from = d0_start - 19 * MIN;
    let from = from - from.rem_euclid(MIN);
    let expected = points
        .iter()
        .filter(|p| p.0 >= from && p.0 <= restart && p.1.starts_with("php_errors_total"))
        .count();
    assert_eq!(
        second.prefilled, expected as f64,
        "the fill after the restart reaches back from the resumed deploy's start"
    );
    let d0_final = second
        .decisions
        .iter()
        .map(|d| key(&serde_json::to_value(d).expect("decision")))
        .find(|k| k.starts_with("d0 ") && k.contains("final=true"));
    eprintln!("resumed d0: {d0_final:?}");
    assert!(
        d0_final.as_ref().is_some_and(
            |k| k.contains(r#""errors_vs_pre_deploy":"pass""#) && k.contains(" pass ")
        ),
        "the resumed deploy judges its pre-deploy window: {d0_final:?}"
    );
}

const ADDED_RULE: &str = r#"rules:
  - name: requests_vs_pre_deploy
    services: [web]
    metric: {kind: counter_rate, selector: 'http_requests_total{job="web"}'}
    baseline: pre_deploy
    baseline_window: 2h
    phases: [canary]
    direction: decrease
    min_effect: "-50%"
    action: warn
"#;

/// A reload that adds a rule fills it from the TSDB as start-up does: a `pre_deploy` rule
/// with a 2-hour window, over a series no rule read before, has its whole window at once,
/// and a reload that changes nothing fetches nothing.
#[test]
fn a_reload_fills_the_rules_it_adds() {
    let dir = TempDir::new("history-reload");
    let w = start_time();
    let points = history(w - 3 * 3_600_000, w, i64::MAX);
    let metrics = dir.path().join("metrics.om");
    write_openmetrics(&points, &metrics);
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("errors.yaml"), RULES).expect("rules");
    let Some((_prometheus, tsdb)) = start_prometheus(dir.path(), &metrics) else {
        return;
    };
    // The new rule's window, as the fill plans it: 2 h, 7 blocks and 2 evaluations,
    // floored to the minute.
    let from = w - 2 * 3_600_000 - 9 * MIN;
    let expected = points
        .iter()
        .filter(|(t, s, _)| *t >= from && *t <= w && s.starts_with("http_requests_total"))
        .count() as f64;
    let rt = runtime();
    rt.block_on(async {
        let agent = start_agent(&dir.path().join("agent"), &rules, Some(&tsdb), w).await;
        let client = reqwest::Client::new();
        let url = &agent.url;
        let reload = || async {
            let r = client
                .post(format!("{url}/-/reload"))
                .send()
                .await
                .expect("reload");
            assert!(r.status().is_success(), "{:?}", r.text().await);
        };
        let filled = || metric(&client, url, "immune_history_reload_samples_total");
        reload().await;
        assert_eq!(filled().await, 0.0, "the same rules: nothing to fill");
        std::fs::write(rules.join("requests.yaml"), ADDED_RULE).expect("rule");
        reload().await;
        assert_eq!(
            filled().await,
            expected,
            "the added rule's window, every sample of it"
        );
        reload().await;
        assert_eq!(filled().await, expected, "nothing changed: nothing fetched");

        // A deploy judged by the new rule has its whole 2-hour baseline.
        let r = client
            .post(format!("{url}/api/v1/deploys"))
            .json(
                &json!({"deploy": "d0", "service": "web", "canary": {"instance": ["web-01:80"]},
                          "at": (w + 5_000) as f64 / 1000.0}),
            )
            .send()
            .await
            .expect("canary");
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let before = evaluations(&client, url).await;
        agent.now.store(w + MIN, Ordering::SeqCst);
        while evaluations(&client, url).await < before + 2.0 {
            tokio::task::yield_now().await;
        }
        let view: Value = client
            .get(format!("{url}/api/v1/deploys/d0"))
            .send()
            .await
            .expect("deploy")
            .json()
            .await
            .expect("deploy JSON");
        let rule = view["rules"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["rule"] == "requests_vs_pre_deploy"))
            .cloned()
            .unwrap_or_else(|| panic!("the added rule judges the deploy: {view:#}"));
        let exposure = rule["evidence"]["baseline"]["exposure"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(
            exposure >= 7_100.0,
            "the canary host's two hours before the deploy are the baseline: {rule:#}"
        );
        let _ = agent.stop.send(());
        agent.join.await.expect("agent task").expect("agent ran");
    });
}

/// A TSDB that cannot be reached does not stop the agent: the failure is logged and
/// counted, and the agent serves without history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_tsdb_is_counted_and_the_agent_starts() {
    let port = free_port();
    let yaml = format!("history: {{url: \"http://127.0.0.1:{port}\", retries: 0, timeout: 2s}}\n");
    let agent = agent_common::start(&yaml).await;
    assert_eq!(
        agent.metric("immune_history_prefill_failures_total").await,
        Some(1.0)
    );
    assert_eq!(
        agent.metric("immune_history_prefill_samples_total").await,
        Some(0.0)
    );
    agent.stop().await.expect("agent stopped");
}
