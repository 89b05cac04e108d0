//! Silence follows the data: a shared server scraped every 30 s with `stale_after: 30s`
//! is not a lockup when a scrape or four go missing (the threshold stretches to 5.5 of its
//! own scrape intervals), but its real silence still rolls the deploy back, and the
//! evidence says which threshold applied.

use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DecisionKind, DeployEvent, DeployEventKind, Timestamp};

const RULES: &str = r#"
rules:
  - name: mysql_threads_running
    metric:
      kind: gauge
      selector: 'mysql_global_status_threads_running{job="mysql"}'
    baseline: pre_deploy
    direction: increase
    min_effect: "+50%"
    action: warn
    on_missing: {stale_after: 30s, action: rollback}
"#;

const T0: i64 = 1_764_201_000_000;
const SCRAPE: i64 = 30_000;

fn canary(at_ms: i64) -> DeployEvent {
    DeployEvent {
        at: at_ms as f64 / 1000.0,
        deploy: Some("d1".into()),
        event: DeployEventKind::Canary,
        service: Some("web".into()),
        version: Some("r2".into()),
        commits: Vec::new(),
        canary: Some(serde_json::from_str(r#"{"instance": ["web-01:80"]}"#).unwrap()),
        by: None,
        reason: None,
    }
}

/// 20 minutes of 30-s scrapes of one MySQL server, the deploy at minute 10; scrapes whose
/// index `skip` accepts are missing. Ticks every 10 s; returns every decision.
fn run(skip: impl Fn(i64) -> bool) -> Vec<Decision> {
    let rules = immune::rules::load::load_str("test.yaml", RULES).unwrap();
    let mut e = Engine::new(rules, EngineConfig::default());
    let deploy_at = T0 + 600_000;
    let mut out = Vec::new();
    let mut t = T0;
    while t <= T0 + 1_200_000 {
        if (t - T0) % SCRAPE == 0 && !skip((t - T0) / SCRAPE) {
            let v = 3.0 + ((t / SCRAPE) % 3) as f64;
            e.ingest_text(
                "mysql_global_status_threads_running{job=\"mysql\",instance=\"db-01:9104\"}",
                v,
                Timestamp(t),
            )
            .unwrap();
        }
        if t == deploy_at {
            out.extend(e.deploy_event(&canary(t)).unwrap());
        }
        if t > T0 {
            out.extend(e.tick(Timestamp(t)));
        }
        t += 10_000;
    }
    out
}

fn stops(ds: &[Decision]) -> Vec<&Decision> {
    ds.iter().filter(|d| d.decision.blocks_line()).collect()
}

#[test]
fn missed_scrapes_are_not_a_lockup() {
    // Scrape 20 is the deploy's; then one, two and four scrapes in a row go missing
    // (60, 90 and 150 s of silence: all longer than stale_after, all shorter than 165 s).
    let missing = [22, 25, 26, 29, 30, 31, 32];
    let ds = run(|i| missing.contains(&i));
    assert!(stops(&ds).is_empty(), "{ds:#?}");
}

#[test]
fn a_lockup_still_rolls_back_with_the_threshold_in_the_evidence() {
    // The server stops reporting after scrape 22 (11 minutes in, a minute after the deploy).
    let ds = run(|i| i > 22);
    let stop = stops(&ds);
    let d = stop.first().expect("a lockup is a rollback");
    assert_eq!(d.decision, DecisionKind::Rollback);
    assert_eq!(d.rule, "mysql_threads_running");
    let ev = &d.evidence;
    assert_eq!(ev["test"], "missing_data");
    assert_eq!(ev["stale_after_seconds"], 30.0);
    assert_eq!(ev["scrape_interval_seconds"], 30.0);
    assert_eq!(ev["effective_stale_after_seconds"], 165.0);
    // Last sample at 660 s; stale at 825 s; the first tick at or after it.
    let last = (T0 + 22 * SCRAPE) as f64 / 1000.0;
    assert_eq!(d.at, last + 170.0, "{ev}");
    assert!(ev["silent_for_seconds"].as_f64().unwrap() >= 165.0);
}
