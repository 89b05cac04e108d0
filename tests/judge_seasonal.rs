//! A seasonal rule judges at the agent's default 10-second evaluation interval.
//!
//! A season ago is read from per-minute history, while ticks come every 10 s: the judge must
//! compare whole minutes now with the same minutes then. (It used to compare each 10-s
//! interval now with whichever minute boundary fell in the same interval a season ago, so
//! five ticks in six read no baseline and their data was lost.)

use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DeployEvent, DeployEventKind, Timestamp};

const RULES: &str = r#"
rules:
  - name: signups_vs_last_hour
    metric: {kind: counter_rate, selector: 'signups_total'}
    baseline: seasonal
    seasonal_offset: 1h
    phases: [full, watch]
    direction: decrease
    min_effect: "-20%"
    action: rollback
"#;

/// Minute-aligned start of the data (2025-11-27 00:00 UTC).
const T0: i64 = 1_764_201_600_000;
const STEP: i64 = 10_000;

fn event(kind: DeployEventKind, at_ms: i64) -> DeployEvent {
    DeployEvent {
        at: at_ms as f64 / 1000.0,
        deploy: Some("d1".into()),
        event: kind,
        service: Some("shop".into()),
        version: None,
        commits: Vec::new(),
        canary: (kind == DeployEventKind::Canary).then(|| {
            [(
                "instance".to_string(),
                immune::model::OneOrMany::One("web-01:80".into()),
            )]
            .into()
        }),
        by: None,
        reason: None,
    }
}

/// Feeds 1 h 5 min of signups from two hosts (neither on the canary) at 1.2 per second
/// each, scraped every `scrape_ms` starting `phase_ms` after the minute, deploys (canary,
/// then full 10 s later, off the minute grid), then `after_ms` more at `rate_after` times
/// the rate, ticking every 10 s. Returns every decision.
fn run(scrape_ms: i64, phase_ms: i64, rate_after: f64, after_ms: i64) -> Vec<Decision> {
    let rules = immune::rules::load::load_str("seasonal.yaml", RULES).expect("rules load");
    let mut e = Engine::new(rules, EngineConfig::default());
    let deploy_at = T0 + 65 * 60_000 + 10_000;
    let mut counts = [0.0f64; 2];
    let mut out = Vec::new();
    let mut t = T0;
    while t <= deploy_at + after_ms {
        let per_second = if t > deploy_at + STEP {
            1.2 * rate_after
        } else {
            1.2
        };
        for (h, c) in counts.iter_mut().enumerate() {
            *c += per_second * STEP as f64 / 1000.0;
            if (t - T0 - phase_ms).rem_euclid(scrape_ms) != 0 {
                continue;
            }
            e.ingest_text(
                &format!("signups_total{{instance=\"db-0{h}:9104\"}}"),
                *c,
                Timestamp(t),
            )
            .expect("ingest");
        }
        if t == deploy_at {
            out.extend(
                e.deploy_event(&event(DeployEventKind::Canary, t))
                    .expect("canary"),
            );
        }
        if t == deploy_at + STEP {
            out.extend(
                e.deploy_event(&event(DeployEventKind::Full, t))
                    .expect("full"),
            );
        }
        out.extend(e.tick(Timestamp(t)));
        t += STEP;
    }
    out
}

fn assert_caught(ds: &[Decision]) {
    let stop = ds
        .iter()
        .find(|d| d.rule == "signups_vs_last_hour")
        .unwrap_or_else(|| {
            panic!("no decision on a 50% drop against the same minutes an hour ago: {ds:#?}")
        });
    assert_eq!(stop.decision.as_str(), "rollback", "{stop:#?}");
    let ratio = stop.evidence["effect"]["ratio"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(
        (ratio - 0.5).abs() < 0.1,
        "whole minutes on both sides: the ratio is the true one, 0.5, not {ratio}: {stop:#?}"
    );
    let now = stop.evidence["treatment"]["events"].as_f64().unwrap_or(0.0);
    let then = stop.evidence["baseline"]["events"].as_f64().unwrap_or(0.0);
    assert!(
        now >= 72.0 && (then - 2.0 * now).abs() < 1e-6,
        "every whole minute is read on both sides (72 signups a minute now, 144 then): {now} vs {then}"
    );
}

#[test]
fn half_the_signups_of_an_hour_ago_is_caught_with_10_second_scrapes() {
    assert_caught(&run(10_000, 0, 0.5, 15 * 60_000));
}

#[test]
fn half_the_signups_of_an_hour_ago_is_caught_with_minute_scrapes_off_the_minute_grid() {
    // SQL-backed business counters are typically read once a minute, at any second.
    assert_caught(&run(60_000, 20_000, 0.5, 15 * 60_000));
}

#[test]
fn the_same_signups_as_an_hour_ago_is_not_stopped() {
    for (scrape, phase) in [(10_000, 0), (60_000, 20_000)] {
        let ds = run(scrape, phase, 1.0, 15 * 60_000);
        let stops: Vec<&Decision> = ds.iter().filter(|d| d.decision.blocks_line()).collect();
        assert!(stops.is_empty(), "scrapes every {scrape} ms: {stops:#?}");
    }
}
