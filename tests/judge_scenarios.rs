//! The judge decides well: seeded fleets from the simulator, replayed through the engine
//! with the shipped rules, the way `immune replay` runs them.
//!
//! These are correctness tests (what is decided, in which phase); how fast immune
//! decides and how it compares with other methods is the detection benchmark's job.

use immune::defaults;
use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DecisionKind, DurationMs, Phase};
use immune::sim::{self, DeployPlan, FleetConfig, Scenario};
use immune::textformat::TimestampUnit;

/// Simulates one deploy of `scenario` on a fleet with `seed` and returns the decisions.
/// The fleet runs for 35 minutes before the canary: the judge measures each canary host
/// against its own past over up to 30 minutes before the deploy.
fn judge(seed: u64, scenario: Scenario, tweak: impl FnOnce(&mut FleetConfig)) -> Vec<Decision> {
    judge_after(35, seed, scenario, tweak)
}

/// As [`judge`], with `history_min` minutes of fleet before the canary.
fn judge_after(
    history_min: i64,
    seed: u64,
    scenario: Scenario,
    tweak: impl FnOnce(&mut FleetConfig),
) -> Vec<Decision> {
    let mut cfg = FleetConfig {
        seed,
        ..FleetConfig::default()
    };
    tweak(&mut cfg);
    let canary_at = cfg.start.add(DurationMs::from_secs(history_min * 60));
    let plan = DeployPlan::new(&format!("d{seed}"), canary_at, scenario);
    let until = plan.end_at.add(DurationMs::from_secs(60));
    let (mut metrics, mut deploys) = (Vec::new(), Vec::new());
    sim::write_replay_files(&cfg, &[plan], until, &mut metrics, &mut deploys).unwrap();
    let rules = defaults::load_rules(&[]).unwrap();
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    immune::replay::run(
        &mut engine,
        immune::replay::Input::new("sim.om", metrics.as_slice()),
        immune::replay::Input::new("sim.jsonl", deploys.as_slice()),
        immune::replay::Options {
            unit: TimestampUnit::Seconds,
            eval_interval_ms: 10_000,
        },
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn final_of(ds: &[Decision]) -> &Decision {
    let finals: Vec<&Decision> = ds.iter().filter(|d| d.r#final).collect();
    assert_eq!(finals.len(), 1, "exactly one final decision: {ds:#?}");
    finals[0]
}

/// The start of the simulated fleet for `seed`: spread over the week so deploys meet
/// every part of the daily traffic shape.
fn start_for(seed: u64) -> immune::model::Timestamp {
    FleetConfig::default().start.add(DurationMs::from_secs(
        (seed as i64 * 37 * 60) % (7 * 86_400),
    ))
}

#[test]
fn a_healthy_deploy_is_promoted_and_passes() {
    let ds = judge(3, Scenario::Healthy, |_| {});
    let fin = final_of(&ds);
    assert_eq!(fin.decision, DecisionKind::Pass, "{ds:#?}");
    assert!(
        ds.iter()
            .any(|d| d.decision == DecisionKind::Promote && d.phase == Phase::Canary),
        "a healthy canary is promoted: {ds:#?}"
    );
    assert!(!ds.iter().any(|d| d.decision.blocks_line()), "{ds:#?}");
}

#[test]
fn a_traffic_surge_at_deploy_time_is_not_a_regression() {
    for seed in 0..5 {
        let ds = judge(seed, Scenario::Surge, |c| c.start = start_for(seed));
        assert_eq!(
            final_of(&ds).decision,
            DecisionKind::Pass,
            "seed {seed}: {ds:#?}"
        );
    }
}

fn assert_explained(fin: &Decision) {
    let ev = &fin.evidence;
    let ratio = ev["effect"]["ratio"].as_f64().unwrap();
    assert!(ratio > 1.4, "effect {ratio}");
    assert!(ev["treatment"]["events"].as_f64().unwrap() > 0.0);
    assert!(ev["baseline"]["rate"].as_f64().unwrap() > 0.0);
    assert!(ev["p_value"].as_f64().unwrap() <= ev["threshold"].as_f64().unwrap());
    assert!(ev["summary"].as_str().unwrap().contains(&fin.rule));
}

#[test]
fn doubled_errors_on_two_of_forty_hosts_roll_back_during_the_canary() {
    let ds = judge(0, Scenario::ErrorRate(2.0), |c| c.start = start_for(0));
    let fin = final_of(&ds);
    assert_eq!(fin.decision, DecisionKind::Rollback, "{ds:#?}");
    assert_eq!(fin.phase, Phase::Canary);
    assert_eq!(fin.rule, "php_error_ratio");
    // The evidence explains itself: both sides' numbers, the effect, the threshold.
    assert_explained(fin);
}

/// Over seeds, host-to-host differences make some canary pairs better than the fleet
/// before the deploy, so a 2x regression can look like 1.5x; a 10-minute canary on two
/// hosts does not always hold enough errors to prove that at the family's level. Every one
/// is still rolled back before the deploy ends, most during the canary.
#[test]
fn doubled_errors_are_rolled_back_on_every_seed_mostly_during_the_canary() {
    let mut in_canary = 0;
    for seed in 0..6 {
        let ds = judge(seed, Scenario::ErrorRate(2.0), |c| {
            c.start = start_for(seed)
        });
        let fin = final_of(&ds);
        assert_eq!(fin.decision, DecisionKind::Rollback, "seed {seed}: {ds:#?}");
        assert!(
            fin.rule.starts_with("php_error_ratio"),
            "seed {seed}: {}",
            fin.rule
        );
        assert_explained(fin);
        in_canary += (fin.phase == Phase::Canary) as usize;
    }
    assert!(in_canary >= 4, "only {in_canary} of 6 in the canary");
}

#[test]
fn mysql_going_silent_mid_canary_triggers_on_missing() {
    let ds = judge(4, Scenario::MysqlLockup, |_| {});
    let fin = final_of(&ds);
    assert_eq!(fin.decision, DecisionKind::Rollback, "{ds:#?}");
    assert_eq!(fin.rule, "mysql_threads_running");
    assert_eq!(fin.evidence["test"], "missing_data");
    // The source goes silent 60 s after the canary. The rule's stale_after is 30 s, but a
    // 10-s scrape goes stale only after 5.5 of its intervals (55 s: a missed scrape is not a
    // lockup), and the engine looks every 10 s: the decision comes within the effective
    // threshold plus one interval of the last sample (plus one scrape interval of slack for
    // where the tick falls).
    let last = fin.evidence["last_sample_at"].as_f64().unwrap();
    assert_eq!(fin.evidence["stale_after_seconds"], 30.0);
    assert_eq!(fin.evidence["scrape_interval_seconds"], 10.0);
    let threshold = fin.evidence["effective_stale_after_seconds"]
        .as_f64()
        .unwrap();
    assert_eq!(threshold, 55.0);
    assert!(
        last <= ds_canary_at(4) + 60.0,
        "silence began at the lock-up"
    );
    assert!(
        fin.at >= last + threshold,
        "not before the threshold: {}",
        fin.at - last
    );
    assert!(
        fin.at <= last + threshold + 10.0 + 10.0,
        "late: {}",
        fin.at - last
    );
}

#[test]
fn memcached_going_silent_mid_canary_triggers_on_missing() {
    let ds = judge(5, Scenario::MemcachedLockup, |_| {});
    let fin = final_of(&ds);
    assert!(fin.decision.blocks_line(), "{ds:#?}");
    assert_eq!(fin.evidence["test"], "missing_data", "{fin:#?}");
}

fn ds_canary_at(seed: u64) -> f64 {
    let cfg = FleetConfig {
        seed,
        ..FleetConfig::default()
    };
    cfg.start.add(DurationMs::from_secs(35 * 60)).as_secs_f64()
}

#[test]
fn a_query_that_slows_a_little_every_minute_is_caught_by_the_drift_rule() {
    let ds = judge(6, Scenario::SlowBurn(0.01), |_| {});
    let fin = final_of(&ds);
    assert_eq!(fin.decision, DecisionKind::Rollback, "{ds:#?}");
    assert_eq!(fin.rule, "db_query_drift", "{fin:#?}");
    assert!(matches!(fin.phase, Phase::Full | Phase::Watch));
    assert!(fin.evidence["effect"]["relative"].as_f64().unwrap() >= 0.1);
    // It names the deploys that could have set it off.
    assert_eq!(fin.evidence["suspects"][0]["deploy"], "d6", "{fin:#?}");
}

/// The false-rollback rate over many healthy deploys, each judged every 10 s.
///
/// Bound: a rule's alpha is split evenly over its phase groups (the canary; full and watch
/// together; a drift rule spends its whole alpha over the phases it spans). Within a
/// period (canary, then full and watch), weighted Holm keeps the family's error at or
/// below the largest share of the rules judging it; summed over the two periods this is
/// the deploy's bound, computed here from the shipped rules.
#[test]
fn healthy_deploys_are_wrongly_stopped_at_most_at_the_configured_alpha() {
    let rules = defaults::load_rules(&[]).unwrap();
    let groups = |r: &immune::rules::Rule| {
        r.phases.contains(&Phase::Canary) as usize
            + r.phases.iter().any(|p| *p != Phase::Canary) as usize
    };
    let bound: f64 = [vec![Phase::Canary], vec![Phase::Full, Phase::Watch]]
        .iter()
        .map(|period| {
            rules
                .rules
                .iter()
                .filter(|r| {
                    r.phases.iter().any(|p| period.contains(p))
                        && !r.shadow
                        && r.action != immune::rules::Action::Warn
                })
                .map(|r| match r.test {
                    immune::rules::TestKind::Drift => r.alpha,
                    _ => r.alpha / groups(r) as f64,
                })
                .fold(0.0, f64::max)
        })
        .sum();
    let runs = 500u64;
    let mut stopped = Vec::new();
    for seed in 1000..1000 + runs {
        let scenario = if seed % 5 == 0 {
            Scenario::Surge
        } else {
            Scenario::Healthy
        };
        // 15 minutes of history: validity must hold with a short pre-period too.
        let ds = judge_after(15, seed, scenario, |c| c.start = start_for(seed));
        if final_of(&ds).decision.blocks_line() {
            stopped.push((seed, final_of(&ds).rule.clone()));
        }
    }
    let rate = stopped.len() as f64 / runs as f64;
    let tolerance = 3.0 * (bound * (1.0 - bound) / runs as f64).sqrt();
    eprintln!(
        "wrongly stopped {} of {runs} (bound {bound}): {stopped:?}",
        stopped.len()
    );
    assert!(
        rate <= bound + tolerance,
        "rate {rate} > {bound} + {tolerance}: {stopped:?}"
    );
}

/// Business metrics against the same time last week: a week of history from the fleet
/// scraped every minute, then a deploy that loses a fifth of signups once it is
/// everywhere. The seasonal rule warns; a healthy deploy at the same time does not.
#[test]
fn signups_lost_after_full_rollout_are_seen_against_last_week() {
    let run = |scenario: Scenario| {
        let cfg = FleetConfig {
            seed: 21,
            scrape_interval: DurationMs::from_secs(60),
            ..FleetConfig::default()
        };
        let canary_at = cfg.start.add(DurationMs::from_secs(7 * 86_400 + 3_600));
        let plan = DeployPlan::new("d", canary_at, scenario);
        let until = plan.end_at;
        let (mut metrics, mut deploys) = (Vec::new(), Vec::new());
        sim::write_replay_files(&cfg, &[plan], until, &mut metrics, &mut deploys).unwrap();
        let mut engine = Engine::new(defaults::load_rules(&[]).unwrap(), EngineConfig::default());
        let mut out = Vec::new();
        immune::replay::run(
            &mut engine,
            immune::replay::Input::new("m", metrics.as_slice()),
            immune::replay::Input::new("d", deploys.as_slice()),
            immune::replay::Options {
                unit: TimestampUnit::Seconds,
                eval_interval_ms: 60_000,
            },
            &mut out,
        )
        .unwrap();
        let ds: Vec<Decision> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        ds
    };
    let bad = run(Scenario::Signups(0.6));
    let warn = bad
        .iter()
        .find(|d| d.rule == "signups_vs_last_week")
        .unwrap_or_else(|| panic!("no seasonal warning: {bad:#?}"));
    assert_eq!(warn.decision, DecisionKind::Warn);
    assert!(matches!(warn.phase, Phase::Full | Phase::Watch));
    assert!(
        warn.evidence["effect"]["ratio"].as_f64().unwrap() < 0.8,
        "{warn:#?}"
    );
    let good = run(Scenario::Healthy);
    assert!(
        !good.iter().any(|d| d.rule.ends_with("_vs_last_week")),
        "{good:#?}"
    );
}
