//! Every input that ever crashed, hung or exhausted a parser, replayed by plain
//! `cargo test`: the fuzz targets' findings (fuzz/, see BENCHMARKS.md "Fuzzing") and the
//! hostile files of issue 9. One directory per target under tests/fuzz_regressions/,
//! each input fed to the same public function its fuzz target calls. A regression here
//! is a hang (the test never ends), a panic, or a wrong answer asserted below.

use immune::rules::load::{
    MAX_ALIASES, MAX_DIAGNOSTICS, MAX_NODES, MAX_TEXT_BYTES, load_paths, load_str,
};
use std::path::{Path, PathBuf};

const DIR: &str = "tests/fuzz_regressions";

/// The files of one target's directory, by name.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(DIR).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
        .collect();
    files.sort();
    files
}

fn rule_errors(name: &str) -> Vec<String> {
    let path = Path::new(DIR).join("rules").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    match load_str(name, &text) {
        Ok(set) => panic!("{name} loaded {} rules; expected errors", set.rules.len()),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_rules_input_is_answered() {
    for path in inputs("rules") {
        let bytes = std::fs::read(&path).unwrap();
        // The fuzz target feeds lossy UTF-8; so does this.
        let text = String::from_utf8_lossy(&bytes);
        let name = path.display().to_string();
        let _ = load_str(&name, &text);
        let _ = immune::rules::load::from_yaml_str::<immune::config::Config>(&name, &text);
    }
}

#[test]
fn every_textformat_input_is_answered() {
    use immune::textformat::{TimestampUnit, parse_line, parse_series};
    for path in inputs("textformat") {
        let bytes = std::fs::read(&path).unwrap();
        for line in String::from_utf8_lossy(&bytes).lines() {
            for unit in [
                TimestampUnit::Auto,
                TimestampUnit::Seconds,
                TimestampUnit::Milliseconds,
            ] {
                let _ = parse_line(line, unit);
            }
            let _ = parse_series(line);
        }
    }
}

#[test]
fn every_remote_write_input_is_answered() {
    for path in inputs("remote_write") {
        let bytes = std::fs::read(&path).unwrap();
        let _ = immune::sources::push::decode_write(&bytes);
    }
}

#[test]
fn every_api_json_input_is_answered() {
    use immune::api::deploys::{DeployStep, StartDeploy, Unblock};
    for path in inputs("api_json") {
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(ev) = serde_json::from_slice::<immune::model::DeployEvent>(&bytes) {
            let _ = serde_json::to_vec(&ev);
        }
        let _ = serde_json::from_slice::<StartDeploy>(&bytes);
        let _ = serde_json::from_slice::<DeployStep>(&bytes);
        let _ = serde_json::from_slice::<Unblock>(&bytes);
    }
}

/// The fuzz target's fixed metrics, with the fuzzed deploys text, through replay.
fn replay_deploys(deploys: &[u8]) {
    use immune::engine::{Engine, EngineConfig};
    use immune::replay::{Input, Options, run};
    let metrics = std::fs::read("tests/fixtures/replay/small.om").unwrap();
    let rules = immune::defaults::load_rules(&[]).unwrap();
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    let _ = run(
        &mut engine,
        Input::new("metrics.om", metrics.as_slice()),
        Input::new("deploys.jsonl", deploys),
        Options {
            unit: immune::textformat::TimestampUnit::Auto,
            eval_interval_ms: 10_000,
        },
        &mut out,
    );
}

#[test]
fn every_replay_deploys_input_is_answered() {
    for path in inputs("replay_deploys") {
        replay_deploys(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn billion_laughs_is_refused_by_the_node_budget() {
    let errors = rule_errors("billion_laughs.yaml");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(e.starts_with("billion_laughs.yaml:"), "{e}");
    assert!(e.contains(&format!("more than {MAX_NODES} nodes")), "{e}");
    assert!(e.contains("max_nodes"), "{e}");
    // The position is the alias that crossed the budget, not the file as a whole.
    let line: usize = e.split(':').nth(1).unwrap().parse().unwrap();
    assert!((2..=9).contains(&line), "{e}");
}

#[test]
fn an_anchored_long_string_aliased_many_times_is_refused_by_the_byte_budget() {
    let errors = rule_errors("long_string_aliases.yaml");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max_expanded_bytes"), "{}", errors[0]);
    assert!(
        errors[0].starts_with("long_string_aliases.yaml:2:"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_mapping_with_50000_keys_is_answered_with_a_capped_report() {
    let errors = rule_errors("keys_50000.yaml");
    // Every key is unknown to the rule schema: the first MAX_DIAGNOSTICS are reported,
    // then one summary line counts the rest.
    assert_eq!(errors.len(), MAX_DIAGNOSTICS + 1, "{:?}", &errors[..3]);
    assert!(
        errors[0].starts_with("keys_50000.yaml:2:5: missing field \"metric\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("keys_50000.yaml:3:5: unknown field \"k0\""),
        "{}",
        errors[1]
    );
    let last = errors.last().unwrap();
    assert!(
        last.contains(&format!("{} more problems", 50_000 + 1 - MAX_DIAGNOSTICS)),
        "{last}"
    );
}

#[test]
fn fifty_thousand_duplicate_keys_are_each_reported_once() {
    let mut text = String::from("rules:\n  - name: dup\n");
    for _ in 0..50_000 {
        text.push_str("    k: 1\n");
    }
    let errors = match load_str("dup.yaml", &text) {
        Ok(_) => panic!("loaded"),
        Err(d) => d.0,
    };
    let dups = errors
        .iter()
        .filter(|d| d.message == "duplicate key \"k\" (first at line 3)")
        .count();
    assert_eq!(dups, MAX_DIAGNOSTICS - 2, "{:?}", &errors[..3]);
    assert_eq!(errors.len(), MAX_DIAGNOSTICS + 1);
}

#[test]
fn deep_nesting_is_refused_at_the_depth_limit() {
    let errors = rule_errors("deep_flow_nesting.yaml");
    assert_eq!(errors.len(), 1, "{errors:?}");
    // The parser's own recursion limit (flow nesting) or ours (block nesting) answers.
    assert!(
        errors[0].contains("max_depth") || errors[0].contains("recursion limit exceeded"),
        "{}",
        errors[0]
    );
}

#[test]
fn too_many_aliases_are_refused() {
    let mut text = String::from("a: &a x\nl: [");
    for _ in 0..=MAX_ALIASES {
        text.push_str("*a,");
    }
    text.push_str("]\n");
    let e = load_str("aliases.yaml", &text).unwrap_err().to_string();
    assert!(e.contains("max_aliases"), "{e}");
}

#[test]
fn a_file_over_the_size_cap_is_refused_unparsed() {
    let dir = scratch("big");
    let path = dir.join("big.yaml");
    // Valid YAML, one comment line: only the size is wrong.
    std::fs::write(&path, format!("#{}\n", "x".repeat(MAX_TEXT_BYTES))).unwrap();
    let e = load_paths(std::slice::from_ref(&path))
        .unwrap_err()
        .to_string();
    assert!(e.contains("file too large"), "{e}");
    assert!(e.contains("max_file_bytes"), "{e}");
}

/// The reload path (`POST /-/reload`, SIGHUP) calls `load_rules` on the agent's rule
/// directory and keeps the running rules on `Err`: a hostile file dropped next to good
/// ones must give a quick `Err` naming it, not take the process down.
#[test]
fn a_rules_directory_with_a_hostile_file_fails_to_load_and_names_it() {
    let dir = scratch("reload");
    std::fs::copy("rules/web.yaml", dir.join("web.yaml")).unwrap();
    let good = immune::defaults::load_rules(std::slice::from_ref(&dir)).unwrap();
    assert!(!good.rules.is_empty());
    std::fs::copy(
        Path::new(DIR).join("rules/billion_laughs.yaml"),
        dir.join("zz_laughs.yaml"),
    )
    .unwrap();
    let e = immune::defaults::load_rules(std::slice::from_ref(&dir)).unwrap_err();
    let text = e.0.to_string();
    assert!(text.contains("zz_laughs.yaml:"), "{text}");
    assert!(text.contains("max_nodes"), "{text}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "immune-fuzz-regressions-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn deep_block_nesting_is_refused_by_our_depth_limit() {
    let errors = rule_errors("deep_block_nesting.yaml");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max_depth"), "{}", errors[0]);
}

/// Found by the replay_deploys target: a canary in 1970 and its end in 2081 made replay
/// tick every evaluation interval across the gap (issue 9 item 2). Replay now jumps to
/// `Engine::next_change`, so this is answered in milliseconds; before, it never finished.
#[test]
fn replay_deploys_far_apart_in_time_is_answered() {
    for path in inputs("replay_deploys_hangs") {
        replay_deploys(&std::fs::read(&path).unwrap());
    }
}
