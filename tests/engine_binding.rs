//! The engine binds a rule's series as they arrive and never passes a deploy it could not
//! judge: a deploy reported before its hosts' first scrape (or re-applied after a restart,
//! before any sample) is still judged, and a deploy whose stopping rules saw no data ends
//! `block` with rule `no_evidence`, or `pass` marked "unjudged" where a setting says so.

use immune::engine::{Engine, EngineConfig, NoEvidence};
use immune::model::{Decision, DecisionKind, DeployEvent, DeployEventKind, Timestamp};

const RULES: &str = r#"
rules:
  - name: php_error_ratio
    services: [web]
    metric:
      kind: ratio
      selector: 'php_errors_total{job="web"}'
      denominator: 'http_requests_total{job="web"}'
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: rollback
  - name: typo_ratio
    services: [web]
    metric:
      kind: ratio
      selector: 'php_error_total{job="web"}'
      denominator: 'http_requests_total{job="web"}'
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: warn
"#;

const T0: i64 = 1_764_201_000_000;

fn engine(cfg: EngineConfig) -> Engine {
    let rules = immune::rules::load::load_str("test.yaml", RULES).unwrap();
    Engine::new(rules, cfg)
}

fn event(at_ms: i64, kind: DeployEventKind) -> DeployEvent {
    let canary = (kind == DeployEventKind::Canary)
        .then(|| serde_json::from_str(r#"{"instance": ["web-01:80"]}"#).unwrap());
    DeployEvent {
        at: at_ms as f64 / 1000.0,
        deploy: Some("d1".into()),
        event: kind,
        service: Some("web".into()),
        version: Some("r2".into()),
        commits: Vec::new(),
        canary,
        by: None,
        reason: None,
    }
}

/// Ten hosts scraped every 10 s from `from` to `to` (ms): 1000 requests per scrape each,
/// 1% errors, `canary_rate` on web-01. Ticks every 10 s; returns every decision.
fn run(
    e: &mut Engine,
    from: i64,
    to: i64,
    canary_rate: f64,
    tick_from: i64,
    counts: &mut [f64; 20],
) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut t = tick_from;
    while t <= to {
        if t >= from {
            for h in 1..=10 {
                let rate = if h == 1 { canary_rate } else { 0.01 };
                counts[2 * (h - 1)] += 1000.0;
                counts[2 * (h - 1) + 1] += 1000.0 * rate;
                let inst = format!("web-{h:02}:80");
                e.ingest_text(
                    &format!("http_requests_total{{job=\"web\",instance=\"{inst}\"}}"),
                    counts[2 * (h - 1)],
                    Timestamp(t),
                )
                .unwrap();
                e.ingest_text(
                    &format!("php_errors_total{{job=\"web\",instance=\"{inst}\"}}"),
                    counts[2 * (h - 1) + 1],
                    Timestamp(t),
                )
                .unwrap();
            }
        }
        out.extend(e.tick(Timestamp(t + 1)));
        t += 10_000;
    }
    out
}

#[test]
fn a_deploy_reported_before_its_hosts_first_scrape_is_still_rolled_back() {
    let mut e = engine(EngineConfig::default());
    // The deploy is known before any sample exists (as after a restart, when resumed
    // deploys are re-applied first); the hosts' series appear a minute later.
    assert!(
        e.deploy_event(&event(T0, DeployEventKind::Canary))
            .unwrap()
            .is_empty()
    );
    let mut counts = [0.0; 20];
    let ds = run(&mut e, T0 + 60_000, T0 + 900_000, 0.02, T0, &mut counts);
    let rollback = ds
        .iter()
        .find(|d| d.decision == DecisionKind::Rollback)
        .unwrap_or_else(|| panic!("a 2x error regression is rolled back: {ds:#?}"));
    assert_eq!(rollback.rule, "php_error_ratio");
    assert!(rollback.r#final);
    assert!(e.line("web").blocked.is_some());
}

#[test]
fn a_healthy_late_bound_deploy_is_not_rolled_back_and_passes_with_a_warning_for_the_typo() {
    let mut e = engine(EngineConfig::default());
    e.deploy_event(&event(T0, DeployEventKind::Canary)).unwrap();
    let mut counts = [0.0; 20];
    let ds = run(&mut e, T0 + 60_000, T0 + 600_000, 0.01, T0, &mut counts);
    assert!(!ds.iter().any(|d| d.decision.blocks_line()), "{ds:#?}");
    let fin = e
        .deploy_event(&event(T0 + 600_001, DeployEventKind::End))
        .unwrap();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].decision, DecisionKind::Pass, "{fin:#?}");
    let ev = &fin[0].evidence;
    assert_eq!(ev["no_series_matched"], serde_json::json!(["typo_ratio"]));
    assert!(
        ev["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "typo_ratio"),
        "{ev:#}"
    );
}

#[test]
fn a_deploy_without_any_data_blocks_with_no_evidence() {
    let mut e = engine(EngineConfig::default());
    e.deploy_event(&event(T0, DeployEventKind::Canary)).unwrap();
    for k in 1..30 {
        assert!(e.tick(Timestamp(T0 + k * 10_000)).is_empty());
    }
    let fin = e
        .deploy_event(&event(T0 + 300_000, DeployEventKind::End))
        .unwrap();
    assert_eq!(fin.len(), 1);
    let d = &fin[0];
    assert_eq!(d.decision, DecisionKind::Block, "{d:#?}");
    assert_eq!(d.rule, "no_evidence");
    assert!(d.r#final);
    let list = d.evidence["no_evidence"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only stopping rules are listed: {list:?}");
    assert_eq!(list[0]["rule"], "php_error_ratio");
    assert_eq!(list[0]["reason"], "no series matched");
    assert_eq!(e.line("web").blocked.unwrap().rule, "no_evidence");
}

#[test]
fn series_that_fell_silent_before_the_deploy_are_stale_and_a_setting_may_pass() {
    let mut cfg = EngineConfig::default();
    cfg.no_evidence_services
        .insert("web".into(), NoEvidence::Pass);
    let mut e = engine(cfg);
    let mut counts = [0.0; 20];
    run(&mut e, T0, T0 + 60_000, 0.01, T0, &mut counts);
    e.deploy_event(&event(T0 + 120_000, DeployEventKind::Canary))
        .unwrap();
    for k in 13..40 {
        e.tick(Timestamp(T0 + k * 10_000));
    }
    let fin = e
        .deploy_event(&event(T0 + 400_000, DeployEventKind::End))
        .unwrap();
    let d = &fin[0];
    assert_eq!(d.decision, DecisionKind::Pass, "{d:#?}");
    assert_eq!(d.evidence["unjudged"], true);
    assert_eq!(d.evidence["no_evidence"][0]["reason"], "series stale");
    assert!(
        d.evidence["summary"].as_str().unwrap().contains("unjudged"),
        "{d:#?}"
    );
    assert!(e.line("web").blocked.is_none());
}
