//! `immune test rules` over real files: every shipped rule test under rules/tests/
//! passes, a test expecting the wrong decision fails with a readable diff, and a broken
//! test file gets every problem with its `file:line:column`.

use immune::rules::unittest::{run_file, test_rules};
use std::path::PathBuf;

fn shipped_tests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("rules/tests")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_rule_test_passes() {
    let files = shipped_tests();
    assert!(!files.is_empty());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = test_rules(&files, &mut out, &mut err);
    let err = String::from_utf8(err).unwrap();
    assert!(ok, "{err}");
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), files.len(), "{out}");
    assert!(out.lines().all(|l| l.ends_with("OK")), "{out}");
}

/// Every shipped rule has a case showing it fire (`rule: <name>,` in an expectation);
/// the generated files (scripts/rule_tests.py) add a healthy case per rule file, in
/// which every rule has data and none fires.
#[test]
fn every_shipped_rule_is_exercised_by_a_test() {
    let rules = immune::rules::load::load_paths(&[PathBuf::from("rules")]).unwrap();
    let mut text = String::new();
    for f in shipped_tests() {
        text.push_str(&std::fs::read_to_string(f).unwrap());
    }
    let untested: Vec<&str> = rules
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| !text.contains(&format!("rule: {n},")))
        .collect();
    assert!(untested.is_empty(), "rules without a test: {untested:?}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let report = run_file(&PathBuf::from("tests/fixtures/rules/unittest/wrong.yaml")).unwrap();
    assert_eq!(report.passed, 0);
    assert_eq!(report.failures.len(), 1);
    let f = &report.failures[0];
    assert!(
        f.contains("test \"expects a promote that never comes\""),
        "{f}"
    );
    assert!(
        f.contains("  - expected: promote all_rules in canary\n"),
        "{f}"
    );
    assert!(
        f.contains("  + got:      rollback php_error_ratio in canary at "),
        "{f}"
    );
}

#[test]
fn a_broken_test_file_reports_the_unknown_key_with_its_place() {
    let e = run_file(&PathBuf::from(
        "tests/fixtures/rules/unittest/unknown_key.yaml",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown_key.yaml:15:5: unknown field \"extra\""),
        "{e}"
    );
}

#[test]
fn every_bad_value_is_reported_at_once_with_its_place() {
    let e = run_file(&PathBuf::from("tests/fixtures/rules/unittest/bad.yaml"))
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = e.lines().collect();
    let expected = [
        "bad.yaml:6:8: test \"every mistake at once\": invalid series",
        "bad.yaml:7:28: test \"every mistake at once\": values of up{instance=\"a\"}: invalid",
        "bad.yaml:9:14: test \"every mistake at once\": deploys: invalid offset \"soon\"",
        "bad.yaml:10:37: test \"every mistake at once\": deploys: unknown event \"finish\"",
        "bad.yaml:12:29: test \"every mistake at once\": expect: unknown decision \"rolback\"",
        "bad.yaml:13:42: test \"every mistake at once\": expect: unknown phase \"later\"",
    ];
    assert_eq!(lines.len(), expected.len(), "{e}");
    for (got, want) in lines.iter().zip(expected) {
        assert!(got.contains(want), "{got}\nwanted {want}");
    }
}
