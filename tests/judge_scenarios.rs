//! The judge decides well: seeded fleets from the simulator, replayed through the engine
//! with the shipped rules, the way `immune replay` runs them.
//!
//! These are correctness tests (what is decided, in which phase); how fast immune
//! decides and how it compares with other methods is the detection benchmark's job.

use immune::defaults;
use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DecisionKind, DurationMs, Phase, Timestamp};
use immune::sim::{self, DeployPlan, FleetConfig, Scenario};
use immune::textformat::TimestampUnit;

/// Simulates one deploy of `scenario` on a fleet with `seed` and returns the decisions.
fn judge(seed: u64, scenario: Scenario, tweak: impl FnOnce(&mut FleetConfig)) -> Vec<Decision> {
    let mut cfg = FleetConfig {
        seed,
        ..FleetConfig::default()
    };
    tweak(&mut cfg);
    let canary_at = cfg.start.add(DurationMs::from_secs(15 * 60));
    let plan = DeployPlan::new(&format!("d{seed}"), canary_at, scenario);
    let until = plan.end_at.add(DurationMs::from_secs(60));
    let (mut metrics, mut deploys) = (Vec::new(), Vec::new());
    sim::write_replay_files(&cfg, &[plan], until, &mut metrics, &mut deploys).unwrap();
    let rules = defaults::load_rules(&[]).unwrap();
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    immune::replay::run(
        &mut engine,
        "sim.om",
        metrics.as_slice(),
        "sim.jsonl",
        deploys.as_slice(),
        TimestampUnit::Seconds,
        10_000,
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

#[test]
#[ignore = "exploration: prints which rules fire on healthy deploys"]
fn explore_healthy() {
    let mut fired = std::collections::BTreeMap::<String, usize>::new();
    let n = 60;
    for seed in 0..n {
        for d in judge(seed, Scenario::Healthy, |_| {}) {
            if d.decision != DecisionKind::Pass && d.decision != DecisionKind::Promote {
                *fired
                    .entry(format!("{}:{:?}", d.rule, d.decision))
                    .or_default() += 1;
                eprintln!("{}", serde_json::to_string(&d).unwrap());
            }
        }
    }
    eprintln!("{fired:#?} over {n}");
}
