//! Report pages: why a deploy was rolled back (or passed), at a glance.
//!
//! The developer whose deploy was just rolled back opens the link in the alert; the JSON
//! document behind it (`GET /api/v1/deploys/{id}`) holds everything but says nothing at a
//! glance. These pages say it in words first (the decision, the rule, both sides' numbers,
//! the evidence against its threshold, version, commits, who deployed), then show per rule
//! a chart of the deploy's side against its baseline and the evidence path against its
//! threshold, closest to deciding first, and what each undecided rule is waiting for.
//!
//! Pages are rendered from the deploy view JSON ([`crate::engine::Engine::deploy_view`]),
//! so the agent (`/deploys/{id}`, `/`), `immune replay --report DIR` and a deploy record
//! read back from the store after a restart all draw the same page. Everything is inline
//! (CSS, SVG): a page works from disk and without network access.

pub mod plot;
pub mod terminal;
pub mod words;

use plot::{Chart, Line, Marker};
use serde_json::Value;
use std::fmt::Write;
use words::{account, closeness, duration, esc, number, time};

/// Where the pages live, which decides how they link to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Served by the agent: `/`, `/deploys/{id}`, with the unblock form.
    Served,
    /// Files in a directory (`immune replay --report`): `index.html`, `{id}.html`.
    Files,
}

impl Mode {
    /// The link to a deploy's page.
    pub fn deploy_href(self, id: &str) -> String {
        match self {
            Mode::Served => format!("/deploys/{}", path_segment(id)),
            Mode::Files => format!("{}.html", file_stem(id)),
        }
    }

    fn index_href(self) -> &'static str {
        match self {
            Mode::Served => "/",
            Mode::Files => "index.html",
        }
    }
}

/// A deploy id as a safe file name stem (letters, digits, `.`, `_`, `-`; others become `_`).
pub fn file_stem(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." | "index" => format!("deploy_{s}"),
        _ => s,
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
pub fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fff}\
main{max-width:980px;margin:0 auto;padding:16px}\
header.decision{padding:14px 18px;border-radius:6px;margin-bottom:14px}\
header.decision h1{margin:0 0 6px;font-size:22px}\
.rollback,.block{background:#fdecea;border-left:6px solid #c0392b}\
.pass,.promote{background:#eafaf1;border-left:6px solid #1e8449}\
.warn{background:#fef5e7;border-left:6px solid #d68910}\
.running{background:#ebf5fb;border-left:6px solid #2471a3}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}\
th{color:#555;font-weight:600}\
article.rule{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:10px 0}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;margin-left:6px;color:#fff;background:#777}\
.badge.fail{background:#c0392b}.badge.pass{background:#1e8449}.badge.inconclusive{background:#2471a3}\
.waiting{color:#555}.charts{display:flex;flex-wrap:wrap;gap:8px}svg.chart{width:100%;max-width:470px;height:auto}\
code{background:#f4f4f4;padding:0 3px;border-radius:3px}small{color:#666}\
nav a{margin-right:12px}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// The decision that ended the deploy, if it has ended.
fn final_decision(view: &Value) -> Option<&Value> {
    view.get("decisions")?
        .as_array()?
        .iter()
        .rev()
        .find(|d| d.get("final").and_then(Value::as_bool) == Some(true))
}

fn headline_word(kind: &str) -> &'static str {
    match kind {
        "rollback" => "Rolled back",
        "block" => "Blocked",
        "pass" => "Passed",
        "promote" => "Promoted",
        "warn" => "Warned",
        _ => "Decided",
    }
}

/// The rule entry of the view for a rule name (the canary test first).
fn rule_entry<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view.get("rules")?
        .as_array()?
        .iter()
        .find(|r| s(r, "rule") == name)
}

/// What the page says first: the decision in words.
fn headline(view: &Value, now: Option<f64>) -> (String, String, String) {
    let id = s(view, "deploy");
    let service = s(view, "service");
    if let Some(d) = final_decision(view) {
        let kind = s(d, "decision");
        let rule = s(d, "rule");
        let ev = d.get("evidence").unwrap_or(&Value::Null);
        let title = format!("{}: deploy {id} of {service}", headline_word(kind));
        let when = format!(
            "in {} at {}",
            s(d, "phase"),
            time(f(d, "at").unwrap_or(f64::NAN))
        );
        let why = if ev.get("treatment").is_some() {
            let kind_of_baseline = ev
                .get("baseline_kind")
                .and_then(Value::as_str)
                .or_else(|| rule_entry(view, rule).map(|r| s(r, "baseline")))
                .unwrap_or("");
            format!(
                "Rule {rule} decided {when}: {}.",
                account(ev, kind_of_baseline)
            )
        } else {
            let summary = s(ev, "summary");
            if summary.is_empty() {
                format!("Rule {rule} decided {when}.")
            } else {
                format!("{} {when}: {summary}.", rule_label(rule))
            }
        };
        return (kind.to_string(), title, why);
    }
    let phase = s(view, "phase");
    let since = match (now, f(view, "started_at")) {
        (Some(n), Some(t)) => format!(" for {}", duration(n - t)),
        _ => String::new(),
    };
    let promoted = view.get("promoted").and_then(Value::as_bool) == Some(true);
    let title = format!("Deploy {id} of {service}: in {phase}{since}");
    let why = if promoted {
        "The canary was promoted: every canary rule found it healthy; watching the full rollout."
            .to_string()
    } else {
        match closest_rule(view) {
            Some((name, ev)) => {
                let waiting = s(ev, "waiting_for");
                if waiting.is_empty() {
                    format!("No rule has decided yet; closest: {name}.")
                } else {
                    format!("No rule has decided yet; closest: {name}, waiting for {waiting}.")
                }
            }
            None => "No rule has data yet.".to_string(),
        }
    };
    ("running".into(), title, why)
}

fn rule_label(rule: &str) -> String {
    match rule {
        "all_rules" => "All rules".into(),
        "no_evidence" => "No evidence".into(),
        "line_blocked" => "The line was blocked".into(),
        r => format!("Rule {r}"),
    }
}

fn closest_rule(view: &Value) -> Option<(&str, &Value)> {
    view.get("rules")?
        .as_array()?
        .iter()
        .filter_map(|r| Some((s(r, "rule"), r.get("evidence").filter(|e| !e.is_null())?)))
        .max_by(|a, b| closeness(a.1).total_cmp(&closeness(b.1)))
}

/// The page for one deploy. `now` (unix seconds) says how long a running deploy has run.
pub fn deploy_page(view: &Value, mode: Mode, now: Option<f64>) -> String {
    let id = s(view, "deploy");
    let (class, title, why) = headline(view, now);
    let mut b = String::new();
    let _ = write!(b, "<nav><a href=\"{}\">All deploys</a>", mode.index_href());
    if mode == Mode::Served {
        let _ = write!(
            b,
            "<a href=\"/api/v1/deploys/{}\">JSON</a>",
            path_segment(id)
        );
    }
    b.push_str("</nav>");
    let _ = write!(
        b,
        "<header class=\"decision {}\"><h1 id=\"decision\">{}</h1><p class=\"why\">{}</p>",
        esc(&class),
        esc(&title),
        esc(&why)
    );
    if let Some(d) = final_decision(view)
        && let Some(r) = rule_entry(view, s(d, "rule"))
    {
        let desc = s(r, "description");
        if !desc.is_empty() {
            let _ = write!(b, "<p class=\"description\">{}</p>", esc(desc));
        }
        let runbook = s(r, "runbook_url");
        if runbook.starts_with("http://") || runbook.starts_with("https://") {
            let _ = write!(b, "<p><a href=\"{}\">Runbook</a></p>", esc(runbook));
        }
    }
    b.push_str("</header>");
    facts(&mut b, view);
    decisions(&mut b, view);
    rules(&mut b, view);
    page(&title, &b)
}

fn facts(b: &mut String, view: &Value) {
    b.push_str("<section><table class=\"facts\">");
    let mut row = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
        }
    };
    row("Service", esc(s(view, "service")));
    row("Version", esc(s(view, "version")));
    let commits: Vec<String> = view
        .get("commits")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(|c| format!("<code>{}</code>", esc(c)))
                .collect()
        })
        .unwrap_or_default();
    row("Commits", commits.join(" "));
    row("Deployed by", esc(s(view, "by")));
    if let Some(c) = view.get("canary").and_then(Value::as_object) {
        let hosts: Vec<String> = c
            .iter()
            .map(|(label, values)| {
                let vs: Vec<&str> = match values {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    Value::String(s) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                format!("{}={}", esc(label), esc(&vs.join(", ")))
            })
            .collect();
        row("Canary", hosts.join("; "));
    }
    row(
        "Started",
        f(view, "started_at").map(time).unwrap_or_default(),
    );
    row(
        "Full rollout",
        f(view, "full_at").map(time).unwrap_or_default(),
    );
    row("Phase", esc(s(view, "phase")));
    b.push_str("</table></section>");
}

fn decisions(b: &mut String, view: &Value) {
    let Some(ds) = view.get("decisions").and_then(Value::as_array) else {
        return;
    };
    if ds.is_empty() {
        return;
    }
    b.push_str("<section><h2>Decisions</h2><table class=\"decisions\"><tr><th>When</th><th>Decision</th><th>Phase</th><th>Rule</th><th>Why</th></tr>");
    for d in ds {
        let ev = d.get("evidence").unwrap_or(&Value::Null);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(f(d, "at").unwrap_or(f64::NAN)),
            esc(s(d, "decision")),
            if d.get("shadow").and_then(Value::as_bool) == Some(true) {
                " (shadow)"
            } else {
                ""
            },
            esc(s(d, "phase")),
            esc(s(d, "rule")),
            esc(s(ev, "summary"))
        );
    }
    b.push_str("</table></section>");
}

fn state_words(state: &str) -> (&'static str, &'static str) {
    match state {
        "fail" => ("fail", "failing"),
        "pass" => ("pass", "healthy"),
        "inconclusive" => ("inconclusive", "undecided"),
        _ => ("none", "not evaluated"),
    }
}

fn rules(b: &mut String, view: &Value) {
    let Some(rs) = view.get("rules").and_then(Value::as_array) else {
        return;
    };
    let mut order: Vec<&Value> = rs.iter().collect();
    order.sort_by(|x, y| {
        let cx = x.get("evidence").map_or(f64::NEG_INFINITY, closeness);
        let cy = y.get("evidence").map_or(f64::NEG_INFINITY, closeness);
        cy.total_cmp(&cx)
    });
    let markers = moments(view);
    b.push_str("<section><h2>Rules, closest to deciding first</h2>");
    for r in order {
        let name = s(r, "rule");
        let ev = r.get("evidence").unwrap_or(&Value::Null);
        let (class, word) = state_words(s(r, "state"));
        let phases: Vec<&str> = r
            .get("phases")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<article class=\"rule\" data-rule=\"{}\"><h3>{}<span class=\"badge {class}\">{word}</span> <small>against {} in {}{}</small></h3>",
            esc(name),
            esc(name),
            esc(s(r, "baseline")),
            esc(&phases.join(", ")),
            if r.get("shadow").and_then(Value::as_bool) == Some(true) {
                ", shadow"
            } else {
                ""
            }
        );
        let desc = s(r, "description");
        if !desc.is_empty() {
            let _ = write!(b, "<p class=\"description\">{}</p>", esc(desc));
        }
        if ev.get("treatment").is_some() {
            let _ = write!(b, "<p>{}.</p>", esc(&account(ev, s(r, "baseline"))));
        }
        let waiting = s(ev, "waiting_for");
        if !waiting.is_empty() && class != "fail" {
            let _ = write!(b, "<p class=\"waiting\">Waiting for {}.</p>", esc(waiting));
        }
        if ev.is_null() {
            b.push_str("<p class=\"waiting\">Not evaluated: no data for this rule yet.</p>");
        }
        charts(b, r, &markers);
        b.push_str("</article>");
    }
    b.push_str("</section>");
}

/// The deploy's moments every chart marks: the canary event, full rollout, decisions.
fn moments(view: &Value) -> Vec<Marker> {
    let mut m = Vec::new();
    if let Some(t) = f(view, "started_at") {
        m.push(Marker {
            at: t,
            label: "canary".into(),
        });
    }
    if let Some(t) = f(view, "full_at") {
        m.push(Marker {
            at: t,
            label: "full".into(),
        });
    }
    for d in view
        .get("decisions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if d.get("shadow").and_then(Value::as_bool) != Some(true)
            && let Some(t) = f(d, "at")
        {
            m.push(Marker {
                at: t,
                label: s(d, "decision").to_string(),
            });
        }
    }
    m
}

/// Two charts per rule from its trace (`[[at, treatment, baseline, e_value], ...]`): the
/// deploy's side against the baseline, and the evidence path against its threshold.
fn charts(b: &mut String, r: &Value, markers: &[Marker]) {
    let Some(trace) = r.get("trace").and_then(Value::as_array) else {
        return;
    };
    let col = |i: usize| -> Vec<(f64, f64)> {
        trace
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                let t = p.first()?.as_f64()?;
                Some((t, p.get(i).and_then(Value::as_f64).unwrap_or(f64::NAN)))
            })
            .collect()
    };
    let name = s(r, "rule");
    let values = Chart {
        title: format!("{name}: deploy's hosts vs {}", s(r, "baseline")),
        lines: vec![
            Line {
                label: "deploy".into(),
                colour: "#c0392b",
                points: col(1),
            },
            Line {
                label: s(r, "baseline").to_string(),
                colour: "#2471a3",
                points: col(2),
            },
        ],
        markers: markers.to_vec(),
        threshold: None,
        log: false,
    };
    let ev = r.get("evidence").unwrap_or(&Value::Null);
    let evidence = Chart {
        title: format!("{name}: evidence of a regression"),
        lines: vec![Line {
            label: "evidence (e-value)".into(),
            colour: "#6c3483",
            points: col(3),
        }],
        markers: markers.to_vec(),
        threshold: words::e_threshold(ev).map(|t| (t, format!("threshold {}", number(t)))),
        log: true,
    };
    let _ = write!(
        b,
        "<div class=\"charts\">{}{}</div>",
        values.svg(),
        evidence.svg()
    );
}

/// The index: deploys in flight and recent, and every service's line with who or what
/// blocked it (and, served, a form to unblock it with a token).
pub fn index_page(deploys: &[Value], lines: &Value, mode: Mode) -> String {
    let mut b = String::from("<h1>immune</h1>");
    let line_map = lines.as_object();
    b.push_str("<section><h2>Lines</h2>");
    match line_map.filter(|m| !m.is_empty()) {
        None => b.push_str("<p>No line has been blocked.</p>"),
        Some(m) => {
            b.push_str("<table class=\"lines\"><tr><th>Service</th><th>Line</th><th>Blocked by</th><th></th></tr>");
            for (service, l) in m {
                match l.get("blocked").filter(|x| !x.is_null()) {
                    Some(bl) => {
                        let deploy = s(bl, "deploy");
                        let _ = write!(
                            b,
                            "<tr class=\"blocked\"><td>{}</td><td>blocked</td><td><a href=\"{}\">{}</a>: {} {} at {}<br><small>{}</small></td><td>",
                            esc(service),
                            esc(&mode.deploy_href(deploy)),
                            esc(deploy),
                            esc(s(bl, "decision")),
                            esc(s(bl, "rule")),
                            time(f(bl, "at").unwrap_or(f64::NAN)),
                            esc(s(bl, "summary"))
                        );
                        if mode == Mode::Served {
                            let _ = write!(
                                b,
                                "<form method=\"post\" action=\"/lines/{}/unblock\"><input name=\"token\" type=\"password\" placeholder=\"token\" autocomplete=\"off\"> <input name=\"reason\" placeholder=\"reason\" required> <button>Unblock</button></form>",
                                path_segment(service)
                            );
                        }
                        b.push_str("</td></tr>");
                    }
                    None => {
                        let _ = write!(
                            b,
                            "<tr><td>{}</td><td>open</td><td></td><td></td></tr>",
                            esc(service)
                        );
                    }
                }
            }
            b.push_str("</table>");
        }
    }
    b.push_str("</section><section><h2>Deploys</h2>");
    if deploys.is_empty() {
        b.push_str("<p>No deploys yet.</p>");
    } else {
        b.push_str("<table class=\"deploys\"><tr><th>Deploy</th><th>Service</th><th>Version</th><th>Started</th><th>Phase</th><th>Decision</th></tr>");
        for v in deploys {
            let id = s(v, "deploy");
            let decided = final_decision(v).map_or_else(
                || {
                    if v.get("promoted").and_then(Value::as_bool) == Some(true) {
                        "promoted".to_string()
                    } else {
                        "judging".to_string()
                    }
                },
                |d| format!("{} ({})", s(d, "decision"), s(d, "rule")),
            );
            let _ = write!(
                b,
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&mode.deploy_href(id)),
                esc(id),
                esc(s(v, "service")),
                esc(s(v, "version")),
                time(f(v, "started_at").unwrap_or(f64::NAN)),
                esc(s(v, "phase")),
                esc(&decided)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
    page("immune: deploys and lines", &b)
}

/// Writes `index.html` and one page per deploy into `dir` (created if missing).
pub fn write_dir(
    dir: &std::path::Path,
    deploys: &[Value],
    lines: &Value,
) -> Result<(), ReportError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ReportError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for v in deploys {
        let path = dir.join(Mode::Files.deploy_href(s(v, "deploy")));
        std::fs::write(&path, deploy_page(v, Mode::Files, None)).map_err(io(&path))?;
    }
    let path = dir.join("index.html");
    std::fs::write(&path, index_page(deploys, lines, Mode::Files)).map_err(io(&path))
}

/// A report file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write report {}: {source}", path.display())]
pub struct ReportError {
    /// The file or directory.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rolled_back() -> Value {
        json!({
            "deploy": "d2", "service": "web", "version": "git-082e9c6", "commits": ["082e9c6"],
            "by": "alice", "canary": {"instance": ["web-01:80", "web-02:80"]},
            "started_at": 1699922800.0, "phase": "done", "promoted": false,
            "rules": [
                {"rule": "php_error_ratio", "phases": ["canary"], "baseline": "control", "shadow": false,
                 "state": "fail", "description": "PHP errors per request",
                 "evidence": {"treatment": {"rate": 0.0051}, "baseline": {"rate": 0.002},
                              "effect": {"ratio": 2.55}, "e_value": 1112.5, "threshold": 0.00142857},
                 "trace": [[1699922810.0, 0.004, 0.002, 1.5], [1699922820.0, 0.005, 0.002, 30.0], [1699923130.0, 0.0051, 0.002, 1112.5]]},
                {"rule": "latency_p99", "phases": ["canary"], "baseline": "control", "shadow": false,
                 "state": "inconclusive",
                 "evidence": {"treatment": {"value": 0.21}, "baseline": {"value": 0.2},
                              "effect": {"relative": 0.05}, "e_value": 0.8, "alpha": 0.005,
                              "waiting_for": "2 more minutes of data"}},
                {"rule": "signups", "phases": ["full"], "baseline": "pre_deploy", "shadow": false,
                 "state": null, "evidence": null}
            ],
            "decisions": [
                {"at": 1699923130.0, "deploy": "d2", "service": "web", "decision": "rollback", "phase": "canary",
                 "rule": "php_error_ratio", "final": true, "shadow": false,
                 "evidence": {"treatment": {"rate": 0.0051}, "baseline": {"rate": 0.002}, "effect": {"ratio": 2.55},
                              "e_value": 1112.5, "threshold": 0.00142857, "baseline_kind": "control",
                              "summary": "php_error_ratio: deploy 0.0051 vs control 0.0020"}}
            ]
        })
    }

    #[test]
    fn a_rolled_back_deploy_says_why_first() {
        let html = deploy_page(&rolled_back(), Mode::Served, None);
        assert!(html.contains("<h1 id=\"decision\">Rolled back: deploy d2 of web</h1>"));
        assert!(html.contains(
            "Rule php_error_ratio decided in canary at 2023-11-14T00:52:10Z: 0.51% on the deploy&#39;s hosts vs 0.20% on the other hosts (+155%); evidence 1,113 against a threshold of 700."
        ), "{html}");
        assert!(html.contains("PHP errors per request"));
        assert!(html.contains("<code>082e9c6</code>"));
        assert!(html.contains("alice"));
        // The failing rule comes first, then the one closest to deciding.
        let fail = html.find("data-rule=\"php_error_ratio\"").unwrap();
        let p99 = html.find("data-rule=\"latency_p99\"").unwrap();
        let none = html.find("data-rule=\"signups\"").unwrap();
        assert!(fail < p99 && p99 < none);
        assert!(html.contains("Waiting for 2 more minutes of data."));
        assert_eq!(
            html.matches("<svg").count(),
            2,
            "two charts for the traced rule"
        );
        assert!(html.contains("threshold 700"));
    }

    #[test]
    fn a_running_deploy_names_the_closest_rule() {
        let mut v = rolled_back();
        v["decisions"] = json!([]);
        v["phase"] = json!("canary");
        let html = deploy_page(&v, Mode::Files, Some(1699922800.0 + 270.0));
        assert!(html.contains("Deploy d2 of web: in canary for 4m 30s"));
        assert!(html.contains("closest: php_error_ratio"));
        assert!(html.contains("href=\"index.html\""));
    }

    #[test]
    fn the_index_lists_lines_and_deploys() {
        let lines = json!({"web": {"blocked": {"deploy": "d2", "rule": "php_error_ratio", "decision": "rollback", "at": 1699923130.0, "summary": "s"}, "history": []},
                           "api": {"blocked": null, "history": []}});
        let html = index_page(&[rolled_back()], &lines, Mode::Served);
        assert!(html.contains("action=\"/lines/web/unblock\""));
        assert!(html.contains("<td>api</td><td>open</td>"));
        assert!(html.contains("href=\"/deploys/d2\""));
        assert!(html.contains("rollback (php_error_ratio)"));
        let files = index_page(&[rolled_back()], &lines, Mode::Files);
        assert!(!files.contains("<form"), "no form on disk");
        assert!(files.contains("href=\"d2.html\""));
    }

    #[test]
    fn ids_become_safe_names_and_segments() {
        assert_eq!(file_stem("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_stem("index"), "deploy_index");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn pages_are_written_to_a_directory() {
        let dir = std::env::temp_dir().join(format!("immune-report-{}", std::process::id()));
        write_dir(&dir, &[rolled_back()], &json!({})).unwrap();
        assert!(dir.join("index.html").exists());
        let page = std::fs::read_to_string(dir.join("d2.html")).unwrap();
        assert!(page.contains("Rolled back"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
