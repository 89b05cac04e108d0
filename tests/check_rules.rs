//! `immune check` and rule loading, end to end over real files: the shipped rules load,
//! and each broken fixture yields exactly the `file:line:column: message` lines expected,
//! all of them in one run.

use immune::model::Phase;
use immune::rules::check::check;
use immune::rules::load::{load_paths, load_str};
use immune::rules::{Baseline, Effect, MetricKind, TestKind};
use std::path::PathBuf;

const BAD: &str = "tests/fixtures/rules/bad";

fn run_check(paths: &[&str]) -> (bool, String, String) {
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let ok = check(&paths, &mut out, &mut err);
    (
        ok,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// The diagnostics of one bad fixture, as displayed.
fn diagnostics(fixture: &str) -> Vec<String> {
    let path = PathBuf::from(format!("{BAD}/{fixture}"));
    match load_paths(&[path]) {
        Ok(set) => panic!(
            "{fixture} loaded {} rules; expected errors",
            set.rules.len()
        ),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_diags(fixture: &str, expected: &[&str]) {
    let got = diagnostics(fixture);
    let expected: Vec<String> = expected
        .iter()
        .map(|e| format!("{BAD}/{fixture}:{e}"))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn shipped_rules_pass_check() {
    let (ok, out, err) = run_check(&["rules"]);
    assert!(ok, "{err}");
    assert_eq!(err, "");
    assert_eq!(
        out,
        "rules/business.yaml: 6 rules OK\n\
         rules/memcached.yaml: 3 rules OK\n\
         rules/mysql.yaml: 4 rules OK\n\
         rules/web.yaml: 8 rules OK\n"
    );
}

#[test]
fn shipped_rules_compile_as_documented() {
    let set = load_paths(&[PathBuf::from("rules")]).unwrap();
    let rule = |name: &str| {
        set.rules
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rule {name}"))
    };
    let r = rule("php_error_ratio");
    assert_eq!(r.origin.file, "rules/web.yaml");
    assert!(
        matches!(&r.kind, MetricKind::Ratio { denominator } if denominator.name == "http_requests_total")
    );
    assert_eq!(r.phases, vec![Phase::Canary]);
    assert_eq!(r.min_effect, Effect::Relative(0.5));
    let r = rule("latency_p99");
    assert_eq!(r.kind, MetricKind::HistogramQuantile { quantile: 0.99 });
    assert_eq!(r.selector.name, "http_request_duration_seconds");
    let r = rule("db_query_drift");
    assert_eq!(r.test, TestKind::Drift);
    assert_eq!(r.kind, MetricKind::Mean);
    assert_eq!(r.phases, vec![Phase::Full, Phase::Watch]);
    let r = rule("mysql_threads_running");
    assert!(r.on_missing.is_some());
    assert_eq!(r.phases, vec![Phase::Canary, Phase::Full, Phase::Watch]);
    assert_eq!(
        rule("mysql_replication_lag").min_effect,
        Effect::Absolute(30.0)
    );
    assert_eq!(
        rule("memcached_hit_ratio").min_effect,
        Effect::Relative(-0.1)
    );
    let r = rule("revenue_vs_last_week");
    assert!(matches!(r.baseline, Baseline::Seasonal { offset } if offset.0 == 7 * 86_400_000));
    // Sums of order values are amounts, judged as continuous values.
    assert!(rule("revenue_ratio").amounts);
    assert!(!rule("signup_ratio").amounts);
    let r = rule("signup_ratio_vs_pre_deploy");
    assert_eq!(r.phases, vec![Phase::Full, Phase::Watch]);
    assert!(matches!(r.baseline, Baseline::PreDeploy { window } if window.0 == 15 * 60_000));
    // Names are unique across the shipped files (load_paths would have said otherwise).
    assert_eq!(set.rules.len(), 21);
}

#[test]
fn unknown_key_suggests_nearest_valid_key() {
    assert_diags(
        "unknown_key.yaml",
        &[
            "2:5: missing field \"direction\" (rule \"typo\")",
            "6:7: unknown field \"hostlabel\", did you mean \"host_label\"? (rule \"typo\")",
            "8:5: unknown field \"direcion\", did you mean \"direction\"? (rule \"typo\")",
        ],
    );
}

#[test]
fn yaml_syntax_error_has_position() {
    let got = diagnostics("syntax.yaml");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("{BAD}/syntax.yaml:4:13: YAML syntax error: ")),
        "{got:?}"
    );
    assert!(got[0].contains("flow mapping"), "{got:?}");
}

#[test]
fn bad_selectors_point_at_the_offending_character() {
    assert_diags(
        "selector.yaml",
        &[
            "5:39: invalid selector \"php_errors_total{job=web}\": expected a quoted value (rule \"bad_selector\")",
            "6:50: invalid denominator \"http_requests_total{job=\\\"web\\\"\": expected ',' or '}' (rule \"bad_selector\")",
        ],
    );
}

#[test]
fn bad_durations_are_quoted() {
    assert_diags(
        "duration.yaml",
        &[
            "5:22: invalid duration \"10x\" for baseline_window: expected e.g. 30s, 5m, 1h30m, 7d (rule \"bad_window\")",
            "9:31: invalid duration \"soon\" for on_missing stale_after: expected e.g. 30s, 5m, 1h30m, 7d (rule \"bad_window\")",
        ],
    );
}

#[test]
fn effect_sign_must_agree_with_direction() {
    assert_diags(
        "sign.yaml",
        &["6:17: min_effect \"-20%\" contradicts direction increase (rule \"wrong_sign\")"],
    );
}

#[test]
fn unknown_baseline_suggests() {
    assert_diags(
        "baseline.yaml",
        &["4:15: unknown baseline \"contrl\", did you mean \"control\"? (rule \"wrong_baseline\")"],
    );
}

#[test]
fn alpha_and_quantile_must_be_in_open_unit_interval() {
    assert_diags(
        "ranges.yaml",
        &[
            "6:17: quantile 99 is outside (0, 1) (rule \"out_of_range\")",
            "10:12: alpha 1.5 is outside (0, 1) (rule \"out_of_range\")",
        ],
    );
}

#[test]
fn denominator_only_and_always_for_ratio() {
    assert_diags(
        "denominator.yaml",
        &[
            "3:13: kind ratio needs a denominator (the counter whose increments are the exposure) (rule \"ratio_without_denominator\")",
            "12:20: denominator is only for kind ratio, not gauge (rule \"gauge_with_denominator\")",
        ],
    );
}

#[test]
fn control_baseline_judges_canary_only() {
    let got = diagnostics("control_phases.yaml");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!(
            "{BAD}/control_phases.yaml:5:22: phase \"full\" with baseline control"
        )),
        "{got:?}"
    );
}

#[test]
fn duplicate_names_in_one_file() {
    assert_diags(
        "duplicate.yaml",
        &[&format!(
            "8:11: duplicate rule name \"twice\" (first defined at {BAD}/duplicate.yaml:2) (rule \"twice\")"
        )],
    );
}

#[test]
fn duplicate_names_across_files() {
    let (ok, out, err) = run_check(&["tests/fixtures/rules/dup"]);
    assert!(!ok);
    assert_eq!(out, "tests/fixtures/rules/dup/a.yaml: 1 rule OK\n");
    assert_eq!(
        err,
        "tests/fixtures/rules/dup/b.yaml:8:11: duplicate rule name \"shared_name\" \
         (first defined at tests/fixtures/rules/dup/a.yaml:2) (rule \"shared_name\")\n\
         1 error in 1 file\n"
    );
}

#[test]
fn empty_rule_list_is_an_error() {
    assert_diags(
        "empty.yaml",
        &["2:8: empty rule list: a rule file needs at least one rule under \"rules:\""],
    );
    let err = load_str("blank.yaml", "# nothing\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "blank.yaml:1:1: empty rule list: a rule file needs at least one rule under \"rules:\""
    );
}

#[test]
fn type_errors_do_not_hide_other_problems() {
    // `metric: 5` stops the rule (it cannot be built without a metric), but the problems
    // in other fields found before are all reported, and no spurious "missing field".
    assert_diags(
        "types.yaml",
        &[
            "3:13: metric: expected a mapping, found \"5\" (rule \"wrong_types\")",
            "8:17: missing field \"stale_after\" (rule \"wrong_types\")",
            "9:24: events: expected a whole number, found \"many\" (rule \"wrong_types\")",
        ],
    );
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    assert_diags(
        "many.yaml",
        &[
            "4:49: invalid selector \"node_load1{\": expected a label name or '}' (rule \"first\")",
            "7:17: min_effect \"-50%\" contradicts direction increase (rule \"first\")",
            "8:13: unknown action \"explode\", expected one of: rollback, block, warn (rule \"first\")",
            "10:20: unknown metric kind \"counter\", expected one of: counter_rate, ratio, gauge, mean, histogram_quantile (rule \"second\")",
            "12:22: invalid duration \"7days\" for seasonal_offset: expected e.g. 30s, 5m, 1h30m, 7d (rule \"second\")",
            "13:16: unknown direction \"up\", expected one of: increase, decrease, either (rule \"second\")",
            "16:22: unknown phase \"nightly\", expected one of: canary, full, watch (rule \"second\")",
            "21:17: invalid min_effect \"lots\": expected a relative change like \"+50%\" or an absolute one like \"0.05\" (rule \"third\")",
            "22:12: alpha 0 is outside (0, 1) (rule \"third\")",
            "24:13: shadow: expected true or false, found \"maybe\" (rule \"third\")",
        ],
    );
}

#[test]
fn check_reports_every_file_at_once() {
    let (ok, out, err) = run_check(&[BAD, "rules/web.yaml"]);
    assert!(!ok);
    assert_eq!(out, "rules/web.yaml: 8 rules OK\n");
    let lines: Vec<&str> = err.lines().collect();
    // One line per diagnostic of every bad fixture, then the summary.
    let fixtures: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(BAD)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let expected: usize = fixtures.iter().map(|f| diagnostics(f).len()).sum();
    assert_eq!(lines.len(), expected + 1, "{err}");
    for f in &fixtures {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{BAD}/{f}:"))),
            "no diagnostic for {f}:\n{err}"
        );
    }
    assert_eq!(
        *lines.last().unwrap(),
        format!("{expected} errors in {} files", fixtures.len())
    );
}

#[test]
fn unreadable_paths_are_reported() {
    let (ok, out, err) = run_check(&["tests/fixtures/rules/no-such-file.yaml"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(
        err.starts_with("tests/fixtures/rules/no-such-file.yaml: cannot read: "),
        "{err}"
    );
    let (ok, _, err) = run_check(&[]);
    assert!(!ok);
    assert_eq!(err, "no rule files given\n");
}
