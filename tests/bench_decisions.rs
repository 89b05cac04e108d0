//! The judge's decisions stay what they were: a fixed set of `immune bench detect
//! --confounded` deploys (two per fault class, drawn from fixed seeds, every confounder on)
//! is judged with the shipped rules, and every decision (kind, rule, phase, time, final,
//! shadow) must equal the committed fixture `tests/fixtures/bench/decisions.json`.
//!
//! Why: performance work on the engine, the store or the statistics must not change what
//! the judge decides. A change that means to change decisions regenerates the fixture with
//! `IMMUNE_UPDATE_FIXTURES=1 cargo test --release --test bench_decisions` and the diff
//! shows, deploy by deploy, what it changed.

use immune::bench::detect::simulate_fleet;
use immune::bench::field::{Class, draw, plan_of};
use serde_json::{Value, json};

const FIXTURE: &str = "tests/fixtures/bench/decisions.json";

/// Two seeds per class, far from the benchmark's own (20 000 up) so both can change apart.
fn judged() -> Value {
    let rules = immune::defaults::load_rules(&[]).expect("the shipped rules load");
    let mut out = Vec::new();
    for (n, (class, _)) in Class::MIX.iter().enumerate() {
        for k in 0..2u64 {
            let seed = 90_000 + 10 * n as u64 + k;
            let case = draw(seed, *class);
            let (cfg, plan) = plan_of(&case);
            let canary_at = plan.canary_at.as_secs_f64();
            let sim = simulate_fleet(cfg, plan, &rules, &mut |_, _, _, _| {}).expect("simulates");
            let decisions: Vec<Value> = sim
                .decisions
                .iter()
                .map(|d| {
                    json!({
                        "after_s": d.at - canary_at,
                        "decision": d.decision,
                        "rule": d.rule,
                        "phase": d.phase,
                        "final": d.r#final,
                        "shadow": d.shadow,
                    })
                })
                .collect();
            out.push(json!({
                "seed": seed,
                "class": class.name(),
                "hosts": case.hosts,
                "canary": case.canary,
                "decisions": decisions,
            }));
        }
    }
    Value::Array(out)
}

#[test]
fn decisions_match_the_fixture() {
    let got = judged();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    if std::env::var_os("IMMUNE_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&got).unwrap();
        std::fs::write(&path, text + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{FIXTURE}: {e}; create it with IMMUNE_UPDATE_FIXTURES=1"));
    let want: Value = serde_json::from_str(&text).unwrap();
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "number of deploys");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            g, w,
            "deploy seed {} ({}) decides differently from the fixture",
            w["seed"], w["class"]
        );
    }
    // The fixture is not trivial: it holds stops and passes.
    let kinds: Vec<&str> = want
        .iter()
        .flat_map(|d| d["decisions"].as_array().unwrap())
        .filter(|d| d["final"] == true)
        .filter_map(|d| d["decision"].as_str())
        .collect();
    assert!(
        kinds.contains(&"rollback") && kinds.contains(&"pass"),
        "{kinds:?}"
    );
}
