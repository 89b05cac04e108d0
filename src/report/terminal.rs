//! The terminal view: `immune deploy status`, `immune deploy watch` and `immune lines`.
//!
//! A developer whose deploy is being judged wants, in a terminal and at a glance, what
//! the report page says: the decision (or that none was made yet), and per rule its state,
//! both sides' numbers with the effect, the evidence against its threshold as a small
//! bar, and what an undecided rule waits for. An SRE wants every service's line.
//!
//! Everything here renders the JSON the API answers (`GET /api/v1/deploys/{id}`,
//! `/api/v1/lines`, `/api/v1/deploys`) with the same words as the report page
//! ([`super::words`]), so the table, the page and the alerts say the same sentence.
//! Colour (ANSI) is used only when asked for: the caller passes
//! [`crate::logging::colour_wanted`] of standard output. [`watch`] redraws until the deploy
//! ends and returns the exit code a deploy script branches on.

use super::words::{self, change, closeness, duration, number, side_value, sides, time};
use crate::api::client::{Client, ClientError};
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// Exit code: the deploy passed or was promoted (or ended with no stop).
pub const EXIT_OK: u8 = 0;
/// Exit code: the agent could not be asked, or refused (unknown deploy, bad token).
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit code: the deploy was rolled back or blocked.
pub const EXIT_STOPPED: u8 = 3;

/// Width of the evidence bar, in cells.
const BAR: usize = 10;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// ANSI styling, or none.
#[derive(Clone, Copy, Debug)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, t: &str) -> String {
        self.wrap("1", t)
    }
    fn dim(self, t: &str) -> String {
        self.wrap("2", t)
    }
    /// Red for stops and failing rules, green for healthy, yellow for undecided.
    fn state(self, word: &str, t: &str) -> String {
        match word {
            "rollback" | "block" | "fail" | "failing" | "blocked" => self.wrap("1;31", t),
            "pass" | "promote" | "healthy" | "open" | "passed" | "promoted" => self.wrap("32", t),
            "warn" | "undecided" | "judging" => self.wrap("33", t),
            _ => t.to_string(),
        }
    }
}

/// Where a deploy stands, for the headline and the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being judged (no final decision, not done).
    Running,
    /// Ended: rolled back or blocked (`decision` is `rollback` or `block`).
    Stopped(String),
    /// Ended otherwise (`pass`, `promote`, or `ended` with no decision).
    Ended(String),
}

impl Outcome {
    /// The exit code for a deploy script: 3 stopped, 0 otherwise.
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Stopped(_) => EXIT_STOPPED,
            _ => EXIT_OK,
        }
    }
}

/// The deploy's outcome: a rollback/block (not shadow) at any time stops it; a final
/// decision or the `done` phase ends it.
pub fn outcome(view: &Value) -> Outcome {
    let (decision, _) = crate::signals::gates::decision_of(view);
    if matches!(decision, "rollback" | "block") {
        return Outcome::Stopped(decision.to_string());
    }
    let final_made = view
        .get("decisions")
        .and_then(Value::as_array)
        .is_some_and(|ds| {
            ds.iter()
                .any(|d| d.get("final") == Some(&Value::Bool(true)))
        });
    if final_made || s(view, "phase") == "done" {
        let word = match decision {
            "pending" => "ended",
            d => d,
        };
        return Outcome::Ended(word.to_string());
    }
    Outcome::Running
}

/// The evidence against its threshold as a bar of ten cells, on the same log scale as
/// the report page's ordering (full at the threshold), and the numbers.
pub fn evidence_bar(ev: &Value) -> String {
    let c = closeness(ev);
    let filled = if c.is_finite() {
        (c.clamp(0.0, 1.0) * BAR as f64).round() as usize
    } else {
        0
    };
    let bar: String = "█".repeat(filled) + &"░".repeat(BAR - filled);
    let nums = match (f(ev, "e_value"), words::e_threshold(ev)) {
        (Some(e), Some(t)) => format!("{} / {}", number(e), number(t)),
        (Some(e), None) => number(e),
        _ => match (f(ev, "p_value"), f(ev, "look_alpha")) {
            (Some(p), Some(a)) => format!("p {p:.1e} / {a:.1e}"),
            _ => return "-".into(),
        },
    };
    format!("{bar} {nums}")
}

/// Both sides and the effect, short: "0.51% vs 0.20% (+151%)".
pub fn effect_words(ev: &Value) -> String {
    if ev.is_null() {
        return "-".into();
    }
    let sd = sides(ev);
    if sd.treatment.is_none() && sd.baseline.is_none() {
        return "-".into();
    }
    let mut out = format!(
        "{} vs {}",
        side_value(sd.treatment, sd.rate),
        side_value(sd.baseline, sd.rate)
    );
    if let Some(e) = sd.effect {
        let _ = write!(out, " ({})", change(e));
    }
    out
}

fn state_word(state: &str) -> &'static str {
    match state {
        "fail" => "failing",
        "pass" => "healthy",
        "inconclusive" => "undecided",
        _ => "no data",
    }
}

/// Display width of a cell (characters; the bar's blocks are one cell each).
fn width(t: &str) -> usize {
    t.chars().count()
}

/// Lays out rows in columns separated by two spaces; `style(column, cell, padded)` styles
/// a padded cell (column `usize::MAX` for the header), so colour codes do not upset the
/// widths.
fn table(
    head: &[&str],
    rows: &[Vec<String>],
    style: &dyn Fn(usize, &str, &str) -> String,
) -> String {
    let n = head.len();
    let mut w: Vec<usize> = head.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(width(c));
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>| -> String {
        let mut l = cells.join("  ");
        while l.ends_with(' ') {
            l.pop();
        }
        l.push('\n');
        l
    };
    out.push_str(&line(
        head.iter()
            .enumerate()
            .map(|(i, h)| style(usize::MAX, h, &format!("{h:<width$}", width = w[i])))
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(
            r.iter()
                .enumerate()
                .take(n)
                .map(|(i, c)| {
                    let pad = " ".repeat(w[i].saturating_sub(width(c)));
                    if i + 1 == n {
                        style(i, c, c)
                    } else {
                        style(i, c, &format!("{c}{pad}"))
                    }
                })
                .collect(),
        ));
    }
    out
}

/// The compact table for one deploy (the view `GET /api/v1/deploys/{id}` answers): a
/// headline, the facts, then each rule closest to deciding first. `now` (unix seconds)
/// says how long a running deploy has run.
pub fn deploy_status(view: &Value, now: Option<f64>, colour: bool) -> String {
    let p = Paint(colour);
    let id = s(view, "deploy");
    let service = s(view, "service");
    let mut out = String::new();
    let o = outcome(view);
    let (word, headline) = match &o {
        Outcome::Running => {
            let phase = s(view, "phase");
            let since = match (now, f(view, "started_at")) {
                (Some(n), Some(t)) if n >= t => format!(" for {}", duration(n - t)),
                _ => String::new(),
            };
            let promoted = view.get("promoted").and_then(Value::as_bool) == Some(true);
            (
                "judging",
                format!(
                    "JUDGING{} in {phase}{since}",
                    if promoted { " (canary promoted)" } else { "" }
                ),
            )
        }
        Outcome::Stopped(d) | Outcome::Ended(d) => (d.as_str(), d.to_uppercase()),
    };
    let _ = writeln!(
        out,
        "{}  deploy {}  service {}",
        p.state(word, &p.bold(&headline)),
        p.bold(id),
        p.bold(service)
    );
    // The decision in words, as the report page's first paragraph.
    let stop = view
        .get("decisions")
        .and_then(Value::as_array)
        .and_then(|ds| {
            ds.iter()
                .filter(|d| d.get("shadow").and_then(Value::as_bool) != Some(true))
                .find(|d| matches!(s(d, "decision"), "rollback" | "block"))
                .or_else(|| {
                    ds.iter()
                        .rev()
                        .find(|d| d.get("final") == Some(&Value::Bool(true)))
                })
        });
    if let Some(d) = stop {
        let rule = s(d, "rule");
        let ev = d.get("evidence").unwrap_or(&Value::Null);
        let kind = ev
            .get("baseline_kind")
            .and_then(Value::as_str)
            .or_else(|| rule_of(view, rule).map(|r| s(r, "baseline")))
            .unwrap_or("");
        let why = if ev.get("treatment").is_some() {
            words::account(ev, kind)
        } else {
            s(ev, "summary").to_string()
        };
        let _ = writeln!(
            out,
            "{} by rule {rule} in {} at {}{}",
            s(d, "decision"),
            s(d, "phase"),
            time(f(d, "at").unwrap_or(f64::NAN)),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        );
        if let Some(r) = rule_of(view, rule) {
            let desc = s(r, "description");
            if !desc.is_empty() {
                let _ = writeln!(out, "  {}", p.dim(desc));
            }
            let rb = s(r, "runbook_url");
            if !rb.is_empty() {
                let _ = writeln!(out, "  runbook: {rb}");
            }
        }
    }
    let mut facts: Vec<String> = Vec::new();
    for (k, v) in [("version", s(view, "version")), ("by", s(view, "by"))] {
        if !v.is_empty() {
            facts.push(format!("{k} {v}"));
        }
    }
    let commits: Vec<&str> = view
        .get("commits")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !commits.is_empty() {
        facts.push(format!("commits {}", commits.join(" ")));
    }
    if let Some(t) = f(view, "started_at") {
        facts.push(format!("started {}", time(t)));
    }
    if let Some(t) = f(view, "full_at") {
        facts.push(format!("full {}", time(t)));
    }
    facts.push(format!("phase {}", s(view, "phase")));
    let _ = writeln!(out, "{}", p.dim(&facts.join("  ")));
    out.push('\n');

    let mut rules: Vec<&Value> = view
        .get("rules")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    rules.sort_by(|x, y| {
        let cx = x.get("evidence").map_or(f64::NEG_INFINITY, closeness);
        let cy = y.get("evidence").map_or(f64::NEG_INFINITY, closeness);
        cy.total_cmp(&cx)
    });
    // Rules with no data yet take one line after the table, not a row each.
    let (silent, judged): (Vec<&Value>, Vec<&Value>) = rules
        .into_iter()
        .partition(|r| r.get("evidence").is_none_or(Value::is_null));
    let phases = |r: &Value| -> String {
        r.get("phases")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = judged
        .iter()
        .map(|r| {
            let ev = r.get("evidence").unwrap_or(&Value::Null);
            let state = state_word(s(r, "state"));
            let waiting = if state == "failing" {
                String::new()
            } else {
                s(ev, "waiting_for").to_string()
            };
            let mut name = s(r, "rule").to_string();
            if r.get("shadow").and_then(Value::as_bool) == Some(true) {
                name.push_str(" (shadow)");
            }
            vec![
                name,
                phases(r),
                state.to_string(),
                s(r, "action").to_string(),
                effect_words(ev),
                evidence_bar(ev),
                waiting,
            ]
        })
        .collect();
    if rows.is_empty() && silent.is_empty() {
        out.push_str("no rules apply to this deploy\n");
    } else if !rows.is_empty() {
        let style = |col: usize, cell: &str, padded: &str| -> String {
            match col {
                usize::MAX => p.dim(padded),
                2 => p.state(cell, padded),
                _ => padded.to_string(),
            }
        };
        out.push_str(&table(
            &[
                "RULE",
                "PHASE",
                "STATE",
                "ACTION",
                "EFFECT",
                "EVIDENCE / THRESHOLD",
                "WAITING FOR",
            ],
            &rows,
            &style,
        ));
    }
    if !silent.is_empty() {
        let names: Vec<String> = silent
            .iter()
            .map(|r| match phases(r).as_str() {
                "" => s(r, "rule").to_string(),
                ph => format!("{} ({ph})", s(r, "rule")),
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            p.dim(&format!("no data yet: {}", names.join(", ")))
        );
    }
    out
}

fn rule_of<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view.get("rules")?
        .as_array()?
        .iter()
        .find(|r| s(r, "rule") == name)
}

/// Every service's line (`GET /api/v1/lines`), plus the services of `deploys`
/// (`GET /api/v1/deploys`) whose line was never blocked: open or blocked, by which
/// deploy and rule, since when (RFC 3339).
pub fn lines_table(lines: &Value, deploys: &[Value], colour: bool) -> String {
    let p = Paint(colour);
    let mut services: std::collections::BTreeMap<String, Value> = lines
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for d in deploys {
        let svc = s(d, "service");
        if !svc.is_empty() {
            services.entry(svc.to_string()).or_insert(Value::Null);
        }
    }
    if services.is_empty() {
        return "no service known yet (no deploy reported, no line blocked)\n".into();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|(svc, l)| match l.get("blocked").filter(|b| !b.is_null()) {
            Some(b) => vec![
                svc.clone(),
                "blocked".into(),
                time(f(b, "at").unwrap_or(f64::NAN)),
                format!(
                    "{} of deploy {} by rule {}: {}",
                    s(b, "decision"),
                    s(b, "deploy"),
                    s(b, "rule"),
                    s(b, "summary")
                        .strip_prefix(&format!("{}: ", s(b, "rule")))
                        .unwrap_or(s(b, "summary"))
                ),
            ],
            None => {
                let last = l
                    .get("history")
                    .and_then(Value::as_array)
                    .and_then(|h| h.iter().rev().find(|e| s(e, "event") == "unblock"));
                match last {
                    Some(u) => vec![
                        svc.clone(),
                        "open".into(),
                        time(f(u, "at").unwrap_or(f64::NAN)),
                        format!("unblocked by {}: {}", s(u, "by"), s(u, "reason")),
                    ],
                    None => vec![svc.clone(), "open".into(), "-".into(), String::new()],
                }
            }
        })
        .collect();
    let style = |col: usize, cell: &str, padded: &str| -> String {
        match col {
            usize::MAX => p.dim(padded),
            1 => p.state(cell, padded),
            _ => padded.to_string(),
        }
    };
    table(&["SERVICE", "LINE", "SINCE", "WHY"], &rows, &style)
}

/// How [`watch`] redraws.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Time between two looks at the deploy.
    pub interval: Duration,
    /// ANSI colour (see [`crate::logging::colour_wanted`]).
    pub colour: bool,
    /// Clear the screen before each frame (a terminal); else write changed frames only.
    pub clear: bool,
}

/// Redraws the deploy's table every `interval` until it ends; returns its exit code (0
/// passed/promoted/ended, 3 rolled back/blocked, 2 the agent refused or stayed unreachable
/// for three tries in a row). On a terminal (`clear`) each frame replaces the last; else a
/// frame is written only when it differs from the previous one, so a log stays short.
/// `now` reads the clock for "in canary for 4m" (the CLI edge passes the system clock).
pub async fn watch(
    client: &Client,
    id: &str,
    opts: WatchOptions,
    now: &dyn Fn() -> f64,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> std::io::Result<u8> {
    let WatchOptions {
        interval,
        colour,
        clear,
    } = opts;
    let mut failures = 0u32;
    let mut last = String::new();
    loop {
        match client.status(id).await {
            Ok(view) => {
                failures = 0;
                let frame = deploy_status(&view, Some(now()), colour);
                let o = outcome(&view);
                if clear {
                    write!(out, "\x1b[H\x1b[2J{frame}")?;
                } else if frame != last {
                    if !last.is_empty() {
                        writeln!(out)?;
                    }
                    write!(out, "{frame}")?;
                }
                out.flush()?;
                last = frame;
                if o != Outcome::Running {
                    return Ok(o.code());
                }
            }
            Err(e @ ClientError::Refused { .. }) => {
                writeln!(err, "immune: {e}")?;
                return Ok(EXIT_UNREACHABLE);
            }
            Err(e) => {
                failures += 1;
                writeln!(err, "immune: {e}")?;
                if failures >= 3 {
                    return Ok(EXIT_UNREACHABLE);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> Value {
        json!({
            "deploy": "d2", "service": "web", "version": "v7", "commits": ["082e9c6"], "by": "alice",
            "started_at": 1699922800.0, "phase": "canary", "promoted": false,
            "rules": [
                {"rule": "latency_p99", "state": "inconclusive", "action": "rollback", "phases": ["canary"],
                 "evidence": {"treatment": {"value": 0.21}, "baseline": {"value": 0.2},
                              "effect": {"relative": 0.05}, "e_value": 0.8, "alpha": 0.005,
                              "waiting_for": "2 more minutes of data"}},
                {"rule": "signups", "state": null, "action": "block", "evidence": null},
                {"rule": "php_error_ratio", "state": "fail", "action": "rollback",
                 "description": "PHP errors per request", "runbook_url": "https://wiki/php",
                 "baseline": "control",
                 "evidence": {"treatment": {"rate": 0.0051}, "baseline": {"rate": 0.002},
                              "effect": {"ratio": 2.55}, "e_value": 1112.5, "threshold": 0.00142857}}
            ],
            "decisions": []
        })
    }

    #[test]
    fn a_running_deploy_shows_rules_closest_first_with_bars_and_waits() {
        let t = deploy_status(&view(), Some(1699922800.0 + 270.0), false);
        assert!(
            t.starts_with("JUDGING in canary for 4m 30s  deploy d2  service web\n"),
            "{t}"
        );
        assert!(t.contains("version v7  by alice  commits 082e9c6"), "{t}");
        let php = t.find("php_error_ratio").unwrap();
        let p99 = t.find("latency_p99").unwrap();
        let su = t.find("signups").unwrap();
        assert!(php < p99 && p99 < su, "{t}");
        assert!(t.contains("0.51% vs 0.20% (+155%)"), "{t}");
        assert!(t.contains("██████████ 1,113 / 700"), "{t}");
        assert!(t.contains("░░░░░░░░░░ 0.8 / 200"), "{t}");
        assert!(t.contains("2 more minutes of data"), "{t}");
        assert!(t.contains("\nno data yet: signups\n"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("latency_p99 ") && l.contains(" canary  undecided ")),
            "{t}"
        );
        assert!(!t.contains('\x1b'), "no colour unless asked");
        assert!(deploy_status(&view(), None, true).contains("\x1b["));
        assert_eq!(outcome(&view()), Outcome::Running);
    }

    #[test]
    fn a_rolled_back_deploy_says_why_and_exits_3() {
        let mut v = view();
        v["phase"] = json!("done");
        v["decisions"] = json!([{"at": 1699923130.0, "decision": "rollback", "phase": "canary",
            "rule": "php_error_ratio", "final": true, "shadow": false,
            "evidence": {"treatment": {"rate": 0.0051}, "baseline": {"rate": 0.002},
                         "effect": {"ratio": 2.55}, "e_value": 1112.5, "threshold": 0.00142857}}]);
        let t = deploy_status(&v, None, false);
        assert!(t.starts_with("ROLLBACK  deploy d2"), "{t}");
        assert!(t.contains("rollback by rule php_error_ratio in canary at 2023-11-14T00:52:10Z: 0.51% on the deploy's hosts vs 0.20% on the other hosts (+155%)"), "{t}");
        assert!(t.contains("PHP errors per request") && t.contains("runbook: https://wiki/php"));
        assert_eq!(outcome(&v).code(), 3);
        v["decisions"] = json!([{"decision": "pass", "final": true}]);
        assert_eq!(outcome(&v), Outcome::Ended("pass".into()));
        assert_eq!(outcome(&v).code(), 0);
    }

    #[test]
    fn lines_list_every_service_with_why_and_since() {
        let lines = json!({
            "web": {"blocked": {"deploy": "d2", "rule": "php_error_ratio", "decision": "rollback",
                                 "at": 1699923130.0, "summary": "php_error_ratio: worse"}, "history": []},
            "api": {"blocked": null, "history": [{"at": 1699923130.0, "event": "unblock", "by": "bob", "reason": "fixed"}]}
        });
        let deploys = [json!({"service": "shop"}), json!({"service": "web"})];
        let t = lines_table(&lines, &deploys, false);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert!(rows[0].starts_with("SERVICE  LINE"), "{t}");
        assert!(
            rows[1].starts_with("api")
                && rows[1].contains("open")
                && rows[1].contains("unblocked by bob: fixed")
        );
        assert!(rows[2].starts_with("shop") && rows[2].contains("open"));
        assert!(rows[3].contains("blocked  2023-11-14T00:52:10Z  rollback of deploy d2 by rule php_error_ratio: worse"), "{t}");
    }
}
