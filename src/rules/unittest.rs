//! `immune test rules`: unit tests for rules, in the manner of `promtool test rules`.
//!
//! A test file names rule files, and gives for each test case input series in
//! promtool's expanding notation, deploy events at offsets from the start, and the
//! decisions expected. The case is run through the real engine by [`crate::replay::run`]
//! (the same merge of samples, deploys and evaluation ticks `immune replay` does), and the
//! decisions it prints are compared with the expected ones, one to one. A test file is
//! read with the same positioned YAML as rule files, so every mistake in it is reported
//! with `file:line:column`, all at once.
//!
//! ```yaml
//! rule_files: [../web.yaml]         # relative to this file
//! scrape_interval: 10s              # default 10s; also the evaluation interval
//! tests:
//!   - name: errors triple on the canary
//!     input_series:
//!       'php_errors_total{instance="web-01:80"}': '0+9x60'
//!       'http_requests_total{instance="web-01:80"}': '0+300x60'
//!     deploys:
//!       - {at: 5m, deploy: d1, event: canary, service: web, canary: {instance: web-01:80}}
//!       - {at: 9m, deploy: d1, event: end}
//!     expect:
//!       - {rule: php_error_ratio, decision: rollback, phase: canary, at: 6m, tolerance: 1m}
//! ```
//!
//! Values: `a+bxn` and `a-bxn` (n+1 values from a, stepping by b), `axn` (a, n+1
//! times), `_` (no sample), `_xn` (n+1 missing), `stale` (no sample: immune reads silence
//! as absence), and plain numbers, separated by spaces.

use super::diagnostic::{Diagnostic, Diagnostics};
use super::load::{MAX_TEXT_BYTES, from_yaml_str};
use crate::engine::{Engine, EngineConfig};
use crate::model::{
    CanarySelector, Decision, DecisionKind, DeployEvent, DeployEventKind, DurationMs, Phase,
};
use crate::replay::{self, Input, Options};
use crate::textformat::{self, TimestampUnit};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The data's clock starts here (seconds since the epoch): any fixed instant would do.
pub const START_SECS: i64 = 1_764_201_000;

/// The most samples one test case may expand to, so a typo (`0+1x100000000`) is an
/// error, not an out-of-memory.
pub const MAX_SAMPLES: usize = 1_000_000;

/// A rule test file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files or directories, relative to the test file.
    pub rule_files: Vec<String>,
    /// Spacing of the input values, and the evaluation interval (default `10s`).
    #[serde(default)]
    pub scrape_interval: Option<String>,
    /// The test cases.
    pub tests: Vec<TestCase>,
}

/// One test case: inputs and what must come out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown in failures.
    pub name: String,
    /// Series selector (`name{label="value"}`) to values in expanding notation.
    pub input_series: BTreeMap<String, String>,
    /// Deploy events, at offsets from the start.
    #[serde(default)]
    pub deploys: Vec<DeploySpec>,
    /// Every decision expected, no more, no fewer.
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

/// A deploy event as written in a test: `at` is an offset from the start (`5m`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// Offset from the start of the input.
    pub at: String,
    /// The deploy's id.
    #[serde(default)]
    pub deploy: Option<String>,
    /// canary, full, end, abort, unblock.
    pub event: String,
    /// The service.
    #[serde(default)]
    pub service: Option<String>,
    /// The version.
    #[serde(default)]
    pub version: Option<String>,
    /// Which series are canary.
    #[serde(default)]
    pub canary: Option<CanarySelector>,
    /// Who acted.
    #[serde(default)]
    pub by: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An expected decision.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// The rule that decided (as in the decision's `rule`).
    pub rule: String,
    /// promote, pass, rollback, block, warn.
    pub decision: String,
    /// canary, full, watch; any when absent.
    #[serde(default)]
    pub phase: Option<String>,
    /// When, as an offset from the start; any time when absent.
    #[serde(default)]
    pub at: Option<String>,
    /// How far from `at` the decision may be (default: one scrape interval).
    #[serde(default)]
    pub tolerance: Option<String>,
}

/// A checked expectation.
#[derive(Clone, Debug, PartialEq)]
struct Expect {
    rule: String,
    decision: DecisionKind,
    phase: Option<Phase>,
    at: Option<(DurationMs, DurationMs)>,
}

impl Expect {
    fn matches(&self, d: &Decision) -> bool {
        self.rule == d.rule
            && self.decision == d.decision
            && self.phase.is_none_or(|p| p == d.phase)
            && self.at.is_none_or(|(at, tol)| {
                let offset_ms = (d.at - START_SECS as f64) * 1000.0;
                (offset_ms - at.0 as f64).abs() <= tol.0 as f64
            })
    }

    fn describe(&self) -> String {
        let mut s = format!("{} {}", self.decision.as_str(), self.rule);
        if let Some(p) = self.phase {
            s.push_str(&format!(" in {}", phase_name(p)));
        }
        if let Some((at, tol)) = self.at {
            s.push_str(&format!(" at {at} ± {tol}"));
        }
        s
    }
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

fn describe_decision(d: &Decision) -> String {
    let offset = DurationMs(((d.at - START_SECS as f64) * 1000.0).round() as i64);
    format!(
        "{} {} in {} at {offset} (deploy {})",
        d.decision.as_str(),
        d.rule,
        phase_name(d.phase),
        d.deploy
    )
}

/// Expands one series' values: `None` for a missing sample.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        if out.len() > MAX_SAMPLES {
            return Err(format!("more than {MAX_SAMPLES} values"));
        }
        if token == "_" || token == "stale" {
            out.push(None);
            continue;
        }
        let Some((head, count)) = token.rsplit_once('x') else {
            out.push(Some(number(token)?));
            continue;
        };
        let n: usize = count
            .parse()
            .map_err(|_| format!("invalid repeat count {count:?} in {token:?}"))?;
        if n >= MAX_SAMPLES {
            return Err(format!(
                "{token:?} expands to more than {MAX_SAMPLES} values"
            ));
        }
        if head == "_" {
            out.extend(std::iter::repeat_n(None, n + 1));
            continue;
        }
        // `a+b` or `a-b`; the sign of `a` itself (and of an exponent) is not a step.
        let split = head
            .char_indices()
            .skip(1)
            .find(|&(i, c)| matches!(c, '+' | '-') && !head[..i].ends_with(['e', 'E']))
            .map(|(i, _)| i);
        let (start, step) = match split {
            Some(i) => {
                let step = number(&head[i + 1..])?;
                let step = if head[i..].starts_with('-') {
                    -step
                } else {
                    step
                };
                (number(&head[..i])?, step)
            }
            None => (number(head)?, 0.0),
        };
        out.extend((0..=n).map(|k| Some(start + step * k as f64)));
    }
    if out.is_empty() {
        return Err("no values".to_string());
    }
    Ok(out)
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("invalid number {s:?}")),
    }
}

/// One test case ready to run.
struct Case {
    name: String,
    metrics: String,
    deploys: String,
    expect: Vec<Expect>,
}

/// The outcome of one test file.
#[derive(Clone, Debug, Default)]
pub struct FileReport {
    /// Test cases that passed.
    pub passed: usize,
    /// One readable block per failed case.
    pub failures: Vec<String>,
}

/// Reads, checks and runs one test file. `Err` is a problem with the file (or its rule
/// files), with positions; `Ok` tells which cases failed and how.
pub fn run_file(path: &Path) -> Result<FileReport, Diagnostics> {
    let name = path.display().to_string();
    let whole = |message: String| {
        Diagnostics(vec![Diagnostic {
            file: name.clone(),
            line: 0,
            column: 0,
            rule: None,
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(whole(format!(
            "file too large: over the limit of {MAX_TEXT_BYTES} bytes"
        )));
    }
    let file: TestFile = from_yaml_str(&name, &text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut diags = Vec::new();
    let mut problem = |needle: Option<&str>, message: String| {
        let (line, column) = needle.map_or((0, 0), |n| locate(&lines, n));
        diags.push(Diagnostic {
            file: name.clone(),
            line,
            column,
            rule: None,
            message,
        });
    };
    let interval = match &file.scrape_interval {
        None => DurationMs::from_secs(10),
        Some(t) => match DurationMs::parse(t).filter(|d| d.0 > 0) {
            Some(d) => d,
            None => {
                problem(
                    Some("scrape_interval"),
                    format!("scrape_interval: invalid duration {t:?}"),
                );
                DurationMs::from_secs(10)
            }
        },
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_paths: Vec<PathBuf> = file.rule_files.iter().map(|f| base.join(f)).collect();
    if rule_paths.is_empty() {
        problem(Some("rule_files"), "rule_files: empty list".to_string());
    }
    let mut cases = Vec::new();
    for case in &file.tests {
        let mut bad = |needle: &str, message: String| {
            problem(Some(needle), format!("test {:?}: {message}", case.name));
        };
        if let Some(c) = build_case(case, interval, &mut bad) {
            cases.push(c);
        }
    }
    if !diags.is_empty() {
        diags.sort_by_key(|d| (d.line, d.column));
        return Err(Diagnostics(diags));
    }
    let rules = super::load::load_paths(&rule_paths)?;
    let mut report = FileReport::default();
    for case in cases {
        match run_case(&case, rules.clone(), interval) {
            Ok(()) => report.passed += 1,
            Err(diff) => report
                .failures
                .push(format!("{name}: test {:?}\n{diff}", case.name)),
        }
    }
    Ok(report)
}

/// The first place `needle` is written, for messages about values that deserialized but
/// do not check (the tree's positions are not kept past deserialization here).
fn locate(lines: &[&str], needle: &str) -> (usize, usize) {
    for (i, l) in lines.iter().enumerate() {
        if let Some(c) = l.find(needle) {
            return (i + 1, l[..c].chars().count() + 1);
        }
    }
    (0, 0)
}

fn build_case(
    case: &TestCase,
    interval: DurationMs,
    bad: &mut dyn FnMut(&str, String),
) -> Option<Case> {
    let mut ok = true;
    let mut series = Vec::new();
    let mut total = 0usize;
    for (selector, values) in &case.input_series {
        let parsed = textformat::parse_series(selector);
        let expanded = expand_values(values);
        match (parsed, expanded) {
            (Ok((name, labels)), Ok(v)) => {
                total += v.len();
                let mut text = String::new();
                textformat::format_series(&name, &labels, &mut text);
                series.push((text, v));
            }
            (Err(e), _) => {
                ok = false;
                bad(selector, format!("invalid series {selector:?}: {e}"));
            }
            (_, Err(e)) => {
                ok = false;
                bad(values, format!("values of {selector}: {e}"));
            }
        }
    }
    if total > MAX_SAMPLES {
        ok = false;
        bad("input_series", format!("more than {MAX_SAMPLES} samples"));
    }
    let mut deploys = String::new();
    for d in &case.deploys {
        let at = DurationMs::parse(&d.at);
        let event =
            serde_json::from_value::<DeployEventKind>(serde_json::Value::String(d.event.clone()));
        match (at, event) {
            (Some(at), Ok(event)) => {
                let ev = DeployEvent {
                    at: START_SECS as f64 + at.0 as f64 / 1000.0,
                    deploy: d.deploy.clone(),
                    event,
                    service: d.service.clone(),
                    version: d.version.clone(),
                    commits: Vec::new(),
                    canary: d.canary.clone(),
                    by: d.by.clone(),
                    reason: d.reason.clone(),
                };
                match serde_json::to_string(&ev) {
                    Ok(line) => {
                        deploys.push_str(&line);
                        deploys.push('\n');
                    }
                    Err(e) => {
                        ok = false;
                        bad(&d.at, format!("deploy event: {e}"));
                    }
                }
            }
            (None, _) => {
                ok = false;
                bad(&d.at, format!("deploys: invalid offset {:?}", d.at));
            }
            (_, Err(_)) => {
                ok = false;
                bad(
                    &d.event,
                    format!(
                        "deploys: unknown event {:?}, expected one of: canary, full, end, abort, unblock",
                        d.event
                    ),
                );
            }
        }
    }
    let mut expect = Vec::new();
    for e in &case.expect {
        let decision =
            serde_json::from_value::<DecisionKind>(serde_json::Value::String(e.decision.clone()));
        let phase = e
            .phase
            .as_ref()
            .map(|p| serde_json::from_value::<Phase>(serde_json::Value::String(p.clone())));
        let at = e.at.as_ref().map(|t| DurationMs::parse(t));
        let tolerance = match &e.tolerance {
            Some(t) => DurationMs::parse(t),
            None => Some(interval),
        };
        let decision = match decision {
            Ok(d) => Some(d),
            Err(_) => {
                bad(
                    &e.decision,
                    format!(
                        "expect: unknown decision {:?}, expected one of: promote, pass, rollback, block, warn",
                        e.decision
                    ),
                );
                None
            }
        };
        let phase = match phase {
            None => Some(None),
            Some(Ok(p)) => Some(Some(p)),
            Some(Err(_)) => {
                let p = e.phase.as_deref().unwrap_or_default();
                bad(
                    p,
                    format!("expect: unknown phase {p:?}, expected one of: canary, full, watch"),
                );
                None
            }
        };
        let at = match (at, tolerance) {
            (None, _) => Some(None),
            (Some(Some(a)), Some(t)) => Some(Some((a, t))),
            (Some(None), _) => {
                let t = e.at.as_deref().unwrap_or_default();
                bad(t, format!("expect: invalid offset {t:?}"));
                None
            }
            (_, None) => {
                let t = e.tolerance.as_deref().unwrap_or_default();
                bad(t, format!("expect: invalid tolerance {t:?}"));
                None
            }
        };
        match (decision, phase, at) {
            (Some(decision), Some(phase), Some(at)) => expect.push(Expect {
                rule: e.rule.clone(),
                decision,
                phase,
                at,
            }),
            _ => ok = false,
        }
    }
    if !ok {
        return None;
    }
    // Samples in time order, every series at each step.
    let steps = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let mut metrics = String::new();
    for k in 0..steps {
        let ts = START_SECS * 1000 + interval.0 * k as i64;
        for (name, values) in &series {
            if let Some(Some(v)) = values.get(k) {
                metrics.push_str(&format!("{name} {v} {ts}\n"));
            }
        }
    }
    metrics.push_str("# EOF\n");
    Some(Case {
        name: case.name.clone(),
        metrics,
        deploys,
        expect,
    })
}

/// Runs a case through replay and the engine; the readable diff when it fails.
fn run_case(case: &Case, rules: super::RuleSet, interval: DurationMs) -> Result<(), String> {
    let mut engine = Engine::new(
        rules,
        EngineConfig {
            eval_interval: interval,
            ..EngineConfig::default()
        },
    );
    let mut out = Vec::new();
    replay::run(
        &mut engine,
        Input::new("input_series", case.metrics.as_bytes()),
        Input::new("deploys", case.deploys.as_bytes()),
        Options {
            unit: TimestampUnit::Milliseconds,
            eval_interval_ms: interval.0,
        },
        &mut out,
    )
    .map_err(|e| format!("  replay failed: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let mut got: Vec<Decision> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let d = serde_json::from_str(line).map_err(|e| format!("  unreadable decision: {e}"))?;
        got.push(d);
    }
    let mut unmatched: Vec<Option<&Decision>> = got.iter().map(Some).collect();
    let mut missing = Vec::new();
    for e in &case.expect {
        match unmatched
            .iter_mut()
            .find(|slot| slot.is_some_and(|d| e.matches(d)))
        {
            Some(slot) => *slot = None,
            None => missing.push(e),
        }
    }
    let unexpected: Vec<&Decision> = unmatched.into_iter().flatten().collect();
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let mut diff = String::new();
    for e in &missing {
        diff.push_str(&format!("  - expected: {}\n", e.describe()));
    }
    for d in &unexpected {
        diff.push_str(&format!("  + got:      {}\n", describe_decision(d)));
    }
    diff.push_str("  all decisions:\n");
    if got.is_empty() {
        diff.push_str("    (none)\n");
    }
    for d in &got {
        diff.push_str(&format!("    {}\n", describe_decision(d)));
    }
    Err(diff)
}

/// Runs test files, printing `FILE: N tests OK` per passing file and every failure or
/// problem to `err`; false when anything failed (the CLI exits 1).
pub fn test_rules(paths: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    if paths.is_empty() {
        let _ = writeln!(err, "no test files given");
        return false;
    }
    let mut ok = true;
    for path in paths {
        match run_file(path) {
            Ok(report) if report.failures.is_empty() => {
                let n = report.passed;
                let noun = if n == 1 { "test" } else { "tests" };
                let _ = writeln!(out, "{}: {n} {noun} OK", path.display());
            }
            Ok(report) => {
                ok = false;
                for f in &report.failures {
                    let _ = write!(err, "{f}");
                }
                let _ = writeln!(
                    err,
                    "{}: {} passed, {} failed",
                    path.display(),
                    report.passed,
                    report.failures.len()
                );
            }
            Err(diags) => {
                ok = false;
                let _ = writeln!(err, "{diags}");
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        let v = |t: &str| expand_values(t).unwrap();
        assert_eq!(v("0+3x2"), vec![Some(0.0), Some(3.0), Some(6.0)]);
        assert_eq!(v("10-2x2"), vec![Some(10.0), Some(8.0), Some(6.0)]);
        assert_eq!(v("-1+1x1"), vec![Some(-1.0), Some(0.0)]);
        assert_eq!(v("5x2"), vec![Some(5.0); 3]);
        assert_eq!(v("1 _ stale 2"), vec![Some(1.0), None, None, Some(2.0)]);
        assert_eq!(v("_x1 1e3"), vec![None, None, Some(1000.0)]);
        assert_eq!(v("1e-3+1x1"), vec![Some(0.001), Some(1.001)]);
        assert!(expand_values("").is_err());
        assert!(expand_values("abc").is_err());
        assert!(expand_values("0+1x99999999999").is_err());
    }
}
