//! Short and thin baselines are safe (issue 8 item 5): a 1-minute `baseline_window` on
//! every `pre_deploy` rule widens the uncertainty of the bundled example's baselines; it
//! must not roll back the healthy deploy, and the bad deploy is still rolled back.

use immune::defaults;
use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DecisionKind};
use std::path::PathBuf;

/// The shipped rule files with every `pre_deploy` rule's window set to `window`, written
/// into a fresh directory under the system's temp dir.
fn rules_with_window(window: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "immune-judge-baselines-{}-{window}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in defaults::RULE_FILES {
        let mut out = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("baseline_window:") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line.trim() == "baseline: pre_deploy" {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}baseline_window: {window}\n"));
            }
        }
        let file = dir.join(PathBuf::from(name).file_name().unwrap());
        std::fs::write(file, out).unwrap();
    }
    dir
}

fn replay_example(rules: PathBuf) -> Vec<Decision> {
    let rules = defaults::load_rules(&[rules]).unwrap();
    let windows: Vec<_> = rules
        .rules
        .iter()
        .filter_map(|r| match r.baseline {
            immune::rules::Baseline::PreDeploy { window } => Some(window),
            _ => None,
        })
        .collect();
    assert!(windows.len() >= 5, "the rewrite found the pre_deploy rules");
    assert!(windows.iter().all(|w| w.0 == 60_000), "{windows:?}");
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    defaults::replay_example(&mut engine, 10_000, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn one_minute_baselines_do_not_roll_back_the_healthy_example_deploy() {
    let dir = rules_with_window("1m");
    let ds = replay_example(dir.clone());
    let _ = std::fs::remove_dir_all(&dir);
    let stopped: Vec<&Decision> = ds
        .iter()
        .filter(|d| d.deploy == "d1" && d.decision.blocks_line())
        .collect();
    assert!(stopped.is_empty(), "healthy d1 stopped: {stopped:#?}");
    assert!(
        ds.iter()
            .any(|d| d.deploy == "d2" && d.decision == DecisionKind::Rollback),
        "the bad deploy d2 is still rolled back: {ds:#?}"
    );
    // No pre_deploy rule fails in the direction it does not watch: a `decrease` rule never
    // reports a rise as its reason.
    for d in ds.iter().filter(|d| d.rule.ends_with("_vs_pre_deploy")) {
        if let Some(r) = d.evidence["effect"]["ratio"].as_f64() {
            assert!(
                !(d.decision.blocks_line() && r > 1.0 && d.rule.starts_with("signup")),
                "{d:#?}"
            );
        }
    }
}
