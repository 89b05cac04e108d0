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
fn metrics_from_standard_input_and_a_deploy_without_enough_data_passes() {
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
    assert_eq!(decisions.len(), 1, "{text}");
    assert_eq!(decisions[0]["decision"], "pass");
    assert_eq!(decisions[0]["final"], true);
    assert_eq!(decisions[0]["at"], 1764201008.0);
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
fn time_going_backwards_is_an_error() {
    let err = replay_error("up 1 1764201010\nup 1 1764201000\n", "");
    assert!(err.contains(".om:2: time goes backwards"), "{err}");
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
