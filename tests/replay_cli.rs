//! `immune replay` and `immune check` as a user runs them: the real binary, real files,
//! JSON Lines on standard output only, `file:line: message` and a non-zero exit on bad
//! input, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn immune(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(args)
        .env("IMMUNE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/replay")
        .join(name)
        .display()
        .to_string()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("immune-replay-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_bundled_example_prints_only_decisions_and_ends_every_deploy_once() {
    let out = immune(&["replay"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is a JSON decision"))
        .collect();
    for deploy in ["d1", "d2"] {
        let finals: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|d| d["deploy"] == deploy && d["final"] == true)
            .collect();
        assert_eq!(finals.len(), 1, "{deploy}: {lines:#?}");
    }
    let d2 = lines
        .iter()
        .find(|d| d["deploy"] == "d2" && d["final"] == true)
        .unwrap();
    assert_eq!(d2["decision"], "rollback");
    assert!(
        d2["evidence"]["summary"]
            .as_str()
            .unwrap()
            .contains("php_error_ratio")
    );
}

#[test]
fn metrics_from_standard_input_and_a_deploy_without_data_is_blocked_for_no_evidence() {
    let metrics = std::fs::read(fixture("small.om")).unwrap();
    let out = immune(
        &[
            "replay",
            "--metrics",
            "-",
            "--deploys",
            &fixture("small.jsonl"),
        ],
        Some(&metrics),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let decisions: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The deploy ran from 1764201005 to 1764201008, and no sample came in between: its
    // stopping rules had nothing to judge, and silence is not health.
    assert_eq!(decisions.len(), 1, "{text}");
    assert_eq!(decisions[0]["decision"], "block");
    assert_eq!(decisions[0]["rule"], "no_evidence");
    assert_eq!(decisions[0]["final"], true);
    assert_eq!(decisions[0]["at"], 1764201008.0);
    let reasons = decisions[0]["evidence"]["no_evidence"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r["rule"] == "php_error_ratio" && r["reason"] == "series stale"),
        "{text}"
    );
}

fn replay_ok(metrics: &[u8], deploys: &str) -> (Vec<serde_json::Value>, String) {
    let m = temp_file("metrics.om", "");
    std::fs::write(&m, metrics).unwrap();
    let d = temp_file("deploys.jsonl", deploys);
    let out = immune(
        &[
            "replay",
            "--metrics",
            &m.display().to_string(),
            "--deploys",
            &d.display().to_string(),
        ],
        None,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let decisions = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (decisions, err)
}

const WEB_DEPLOY: &str = "{\"at\": 1764201005.0, \"deploy\": \"d1\", \"event\": \"canary\", \"service\": \"web\", \"canary\": {\"instance\": [\"a\"]}}\n";

#[test]
fn a_forward_time_jump_completes() {
    // Without gap skipping this ticked every 10 s across 285,000 years.
    let (ds, _) = replay_ok(
        b"up{instance=\"a\"} 1 1764201000\nup{instance=\"a\"} 1 8999999999999\n# EOF\n",
        WEB_DEPLOY,
    );
    let finals: Vec<_> = ds.iter().filter(|d| d["final"] == true).collect();
    assert_eq!(finals.len(), 1, "{ds:#?}");
    // A deploy far in the future of the data is accepted and costs nothing either.
    let (ds, _) = replay_ok(
        b"up{instance=\"a\"} 1 1764201000\nup{instance=\"a\"} 1 1764201010\n# EOF\n",
        "{\"at\": 8999999999.0, \"deploy\": \"far\", \"event\": \"canary\", \"service\": \"web\", \"canary\": {\"instance\": [\"a\"]}}\n",
    );
    assert_eq!(ds.len(), 1, "{ds:#?}");
    assert_eq!(ds[0]["deploy"], "far");
}

#[test]
fn a_one_millisecond_interval_over_a_days_gap_and_a_huge_baseline_window_complete() {
    let m = temp_file(
        "gap.om",
        "up{instance=\"a\"} 1 1764201000\nup{instance=\"a\"} 1 1764287400\n# EOF\n",
    );
    let d = temp_file("gap.jsonl", WEB_DEPLOY);
    let out = immune(
        &[
            "replay",
            "--metrics",
            &m.display().to_string(),
            "--deploys",
            &d.display().to_string(),
            "--eval-interval",
            "1ms",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    let rules = temp_file(
        "huge.yaml",
        "rules:\n  - name: up_vs_pre_deploy\n    metric: {kind: gauge, selector: 'up'}\n    baseline: pre_deploy\n    baseline_window: 106751991167d\n    direction: decrease\n    min_effect: \"-50%\"\n    action: rollback\n",
    );
    let out = immune(
        &[
            "replay",
            "--rules",
            &rules.display().to_string(),
            "--metrics",
            &m.display().to_string(),
            "--deploys",
            &d.display().to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"final\":true"), "{text}");
}

#[test]
fn out_of_order_and_duplicate_samples_are_dropped_and_counted_per_file() {
    let (ds, err) = replay_ok(
        b"up 1 1764201000\nup 1 1764201010\nup 2 1764201010\nup 1 1764201005\nother 1 1764201001\nup 1 1764201020\n# EOF\n",
        "",
    );
    assert!(ds.is_empty());
    assert!(
        err.contains("metrics.om: dropped 2 out-of-order samples (1 of them duplicates"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_names_its_file_and_line_once() {
    let m = temp_file("bad.om", "");
    std::fs::write(&m, b"up 1 1764201000\nup{x=\"\xff\"} 1 1764201010\n").unwrap();
    let d = temp_file("ok.jsonl", "");
    let out = immune(
        &[
            "replay",
            "--metrics",
            &m.display().to_string(),
            "--deploys",
            &d.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.om:2: invalid UTF-8 at byte 7"), "{err}");
    assert_eq!(err.matches("UTF-8").count(), 1, "said once: {err}");

    let d = temp_file("bad.jsonl", "");
    std::fs::write(
        &d,
        b"\n{\"at\": 1.0, \"event\": \"unblock\", \"service\": \"\xfe\"}\n",
    )
    .unwrap();
    let out = immune(
        &[
            "replay",
            "--metrics",
            &fixture("small.om"),
            "--deploys",
            &d.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.jsonl:2: invalid UTF-8"), "{err}");
    assert_eq!(err.matches("UTF-8").count(), 1, "said once: {err}");
}

#[test]
fn content_after_eof_is_an_error_and_a_missing_eof_a_warning() {
    let err = replay_error("up 1 1764201000\n# EOF\nup 1 1764201010\n", "");
    assert!(
        err.contains(".om:3: content after `# EOF` (line 2)"),
        "{err}"
    );
    let (_, err) = replay_ok(b"up 1 1764201000\nup 1 1764201010\n", "");
    assert!(
        err.contains("metrics.om:2: no `# EOF` at the end of OpenMetrics input"),
        "{err}"
    );
}

fn replay_error(metrics: &str, deploys: &str) -> String {
    let m = temp_file("metrics.om", metrics);
    let d = temp_file("deploys.jsonl", deploys);
    let out = immune(
        &[
            "replay",
            "--metrics",
            &m.display().to_string(),
            "--deploys",
            &d.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty()
            || String::from_utf8_lossy(&out.stdout)
                .lines()
                .all(|l| l.starts_with('{'))
    );
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_malformed_metrics_line_names_its_file_and_line() {
    let err = replay_error("up 1 1764201000\nup{job=\"x\" 2 1764201010\n", "");
    assert!(err.contains(".om:2: "), "{err}");
    assert!(err.contains("unterminated label set"), "{err}");
}

#[test]
fn a_malformed_value_of_a_known_series_names_its_line() {
    // The first two lines teach the reader the series; the third takes the path for a
    // known series, whose errors must read as the full parser's.
    let err = replay_error("up 1 1764201000\nup 2 1764201010\nup x 1764201020\n", "");
    assert!(
        err.contains(".om:3: column 4: invalid value \"x\""),
        "{err}"
    );
    let err = replay_error("up 1 1764201000\nup 2 1764201010\nup 3\n", "");
    assert!(err.contains(".om:3: sample has no timestamp"), "{err}");
}

#[test]
fn deploy_time_going_backwards_is_an_error() {
    let err = replay_error(
        "up 1 1764201000\n",
        "{\"at\": 10.0, \"event\": \"unblock\", \"service\": \"web\"}\n{\"at\": 5.0, \"event\": \"unblock\", \"service\": \"web\"}\n",
    );
    assert!(err.contains(".jsonl:2: time goes backwards"), "{err}");
}

#[test]
fn an_unknown_event_or_field_is_an_error_with_its_line() {
    let err = replay_error(
        "up 1 1764201000\nup 1 1764201010\n",
        "\n{\"at\": 1764201000.0, \"deploy\": \"d\", \"event\": \"explode\"}\n",
    );
    assert!(
        err.contains(".jsonl:2: invalid deploy event: unknown variant `explode`"),
        "{err}"
    );
    let err = replay_error(
        "up 1 1764201000\nup 1 1764201010\n",
        "{\"at\": 1764201000.0, \"deploy\": \"d\", \"event\": \"full\"}\n",
    );
    assert!(err.contains(".jsonl:1: unknown deploy \"d\""), "{err}");
    let err = replay_error(
        "up 1 1764201000\n",
        "{\"at\": 1764201000.0, \"deploy\": \"d\", \"event\": \"canary\", \"service\": \"web\"}\n",
    );
    assert!(err.contains("needs the field \"canary\""), "{err}");
}

#[test]
fn a_sample_without_timestamp_is_an_error() {
    let err = replay_error("up 1\n", "");
    assert!(err.contains(".om:1: sample has no timestamp"), "{err}");
}

#[test]
fn check_prints_a_line_per_good_file_and_fails_on_errors() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = immune(&["check", &rules.display().to_string()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().all(|l| l.ends_with("rules OK")), "{text}");

    let bad = temp_file("bad.yaml", "rules:\n  - name: x\n    direcion: increase\n");
    let out = immune(&["check", &bad.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml:3:5: unknown field \"direcion\", did you mean \"direction\"?"),
        "{err}"
    );
}
