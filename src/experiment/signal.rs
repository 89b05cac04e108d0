//! An experiment's decisions for the signal sinks: `stop` (a guardrail shows harm) and
//! `close` (the experiment was closed, with its result). They go through the same outbox
//! and delivery as deploy decisions ([`crate::signals::Signals::record_experiment`]), only to
//! sinks that list the kind in their `decisions` (experiment-aware sinks), and block no line.
//!
//! The body is the deploy decision's body (see [`crate::signals::webhook`]) with the same
//! fields, so a receiver's parser keeps working, plus fields of its own:
//!
//! ```json
//! {"signal_id": "…", "decision": "stop", "experiment": "GDCEurope2011",
//!  "deploy": "", "service": "", "version": null, "commits": [], "phase": "experiment",
//!  "rule": "errors_total", "final": false, "shadow": false, "at": 1700000000.0,
//!  "summary": "…", "evidence": {…the experiment's state…},
//!  "link": "https://immune.example/api/v1/experiments/GDCEurope2011",
//!  "by": null, "description": null, "runbook_url": null, "effect": "…", "time": "…",
//!  "report_url": "https://immune.example/experiments/GDCEurope2011", "message": "…",
//!  "harm": ["Enhanced/errors_total"], "result": [], "close_reason": null}
//! ```
//!
//! `evidence` is the experiment's state as `GET /api/v1/experiments/{name}` answers it;
//! `rule` is the first harmed guardrail (`stop`) or empty (`close`); `final` is true on
//! `close`; `by` is who closed it; `result` is the closing lines (per goal and branch:
//! `outcome` desired / undesired / not_significant, `effect`, `ci`, `more_participants`);
//! `close_reason` is `end` or `asked`. The signal id is derived from the experiment, its
//! start, the kind and the sink, so an experiment is stopped and closed once per sink,
//! across restarts.

use super::Experiment;
use crate::model::DecisionKind;
use serde_json::{Value, json};

/// A decision to record.
#[derive(Clone, Debug)]
pub struct Announcement {
    /// The experiment.
    pub experiment: String,
    /// `stop` or `close`.
    pub kind: DecisionKind,
    /// What the signal id is derived from besides kind and sink: name and start.
    pub key: String,
    /// When it was decided (seconds).
    pub at: f64,
    /// The body, without `signal_id` (set per sink).
    pub body: Value,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:+.1}%", x * 100.0))
}

fn ci(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!(
            " (confidence interval {} to {})",
            pct(Some(a)),
            pct(Some(b))
        ),
        _ => String::new(),
    }
}

fn path_segment(s: &str) -> String {
    crate::report::path_segment(s)
}

impl Announcement {
    /// The decision of `kind` for `exp`, decided at `at`, from its state `status`.
    pub fn new(
        kind: DecisionKind,
        exp: &Experiment,
        at: f64,
        status: &Value,
        public_url: &str,
    ) -> Announcement {
        let base = public_url.trim_end_matches('/');
        let name = &exp.name;
        let life = &status["lifecycle"];
        let harm: Vec<&Value> = status["comparisons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["verdict"] == "harm")
            .collect();
        let result = status["closing"].clone();
        let (rule, effect, message) = if kind == DecisionKind::Stop {
            let words: Vec<String> = harm
                .iter()
                .map(|c| {
                    format!(
                        "{} {} in {}{}",
                        c["metric"].as_str().unwrap_or("?"),
                        pct(c["effect"].as_f64()),
                        c["branch"].as_str().unwrap_or("?"),
                        ci(&c["ci"])
                    )
                })
                .collect();
            let effect = if words.is_empty() {
                "a guardrail shows harm".to_string()
            } else {
                format!("guardrail harm: {}", words.join("; "))
            };
            (
                harm.first()
                    .and_then(|c| c["metric"].as_str())
                    .unwrap_or("")
                    .to_string(),
                effect.clone(),
                format!("Stopped: experiment {name}: {effect}. Turn the experiment off."),
            )
        } else {
            let words: Vec<String> = result
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let outcome = c["outcome"].as_str().unwrap_or("?").replace('_', " ");
                    let more = c["more_participants"]
                        .as_u64()
                        .map(|n| format!(", about {n} more participants to see min_effect"))
                        .unwrap_or_default();
                    format!(
                        "{} in {}: {outcome}, {}{}{more}",
                        c["metric"].as_str().unwrap_or("?"),
                        c["branch"].as_str().unwrap_or("?"),
                        pct(c["effect"].as_f64()),
                        ci(&c["ci"])
                    )
                })
                .collect();
            let effect = if words.is_empty() {
                "no goal metric".to_string()
            } else {
                words.join("; ")
            };
            let why = match life["close_reason"].as_str() {
                Some("end") => "at its end",
                _ => "as asked",
            };
            (
                String::new(),
                effect.clone(),
                format!("Closed {why}: experiment {name}: {effect}."),
            )
        };
        let body = json!({
            "decision": kind,
            "experiment": name,
            "deploy": "",
            "service": "",
            "version": null,
            "commits": [],
            "phase": "experiment",
            "rule": rule,
            "final": kind == DecisionKind::Close,
            "shadow": false,
            "at": at,
            "summary": message,
            "evidence": status,
            "link": format!("{base}/api/v1/experiments/{}", path_segment(name)),
            "by": life["closed_by"],
            "description": null,
            "runbook_url": null,
            "effect": effect,
            "time": crate::report::words::time(at),
            "report_url": format!("{base}/experiments/{}", path_segment(name)),
            "message": message,
            "harm": life["harm"],
            "result": if kind == DecisionKind::Close { result } else { json!([]) },
            "close_reason": if kind == DecisionKind::Close { life["close_reason"].clone() } else { Value::Null },
        });
        Announcement {
            experiment: name.clone(),
            kind,
            key: format!("{name}\n{}", exp.start.as_deref().unwrap_or("")),
            at,
            body,
        }
    }
}
