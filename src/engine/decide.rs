//! Turning a rule's outcome into a decision: the action a rule's failure takes, the
//! one-line summary and rule settings added to a failing outcome's evidence, and the
//! summary of every rule's state that a deploy's final decision carries.
//!
//! Kept apart from the evaluation loop so the wording of decisions (part of the replay
//! JSON Lines and webhook contract) lives in one place.

use super::Analysis;
use crate::engine::judge::{self, Verdict};
use crate::model::{Decision, DecisionKind, Timestamp};
use crate::rules::{Action, Rule};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The decision a failing rule with action `a` makes.
pub(super) fn action_kind(a: Action) -> DecisionKind {
    match a {
        Action::Rollback => DecisionKind::Rollback,
        Action::Block => DecisionKind::Block,
        Action::Warn => DecisionKind::Warn,
    }
}

/// Which failing rule a decision names first: rollback before block before warn.
pub(super) fn action_rank(a: Action) -> u8 {
    match a {
        Action::Rollback => 2,
        Action::Block => 1,
        Action::Warn => 0,
    }
}

/// Adds the rule's settings and a one-line summary to a failing outcome's evidence.
pub(super) fn annotate(ev: &mut Value, rule: &Rule, alpha: f64, threshold: f64, family: usize) {
    let num = |path: &[&str]| {
        let mut v = &*ev;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    };
    let effect = num(&["effect", "ratio"])
        .map(|r| format!("{:+.0}%", (r - 1.0) * 100.0))
        .or_else(|| num(&["effect", "relative"]).map(|r| format!("{:+.1}%", r * 100.0)))
        .unwrap_or_else(|| "n/a".into());
    let (t, b) = match (num(&["treatment", "rate"]), num(&["baseline", "rate"])) {
        (Some(t), Some(b)) => (t, b),
        _ => (
            num(&["treatment", "value"])
                .or(num(&["treatment", "last_value"]))
                .unwrap_or(f64::NAN),
            num(&["baseline", "value"])
                .or(num(&["baseline", "level"]))
                .unwrap_or(f64::NAN),
        ),
    };
    let p = num(&["p_value"]).unwrap_or(f64::NAN);
    let summary = format!(
        "{}: {} {:.4} vs {} {:.4} ({}), p={:.2e} <= {:.2e} ({} rules, Holm)",
        rule.name,
        "deploy",
        t,
        rule.baseline.as_str(),
        b,
        effect,
        p,
        threshold,
        family
    );
    if let Value::Object(m) = ev {
        m.insert("summary".into(), json!(summary));
        m.insert("baseline_kind".into(), json!(rule.baseline.as_str()));
        m.insert("alpha".into(), json!(alpha));
        m.insert("threshold".into(), json!(judge::round(threshold)));
        m.insert("family_size".into(), json!(family));
        m.insert("selector".into(), json!(rule.selector.to_string()));
        m.insert(
            "origin".into(),
            json!(format!("{}:{}", rule.origin.file, rule.origin.line)),
        );
    }
}

/// Every rule's state in one object, with a one-line tally: the evidence of a promote
/// and of a deploy's final decision.
pub(super) fn summary_of(a: &Analysis, rules: &[Rule]) -> Value {
    let mut states = serde_json::Map::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in &a.states {
        let verdict = s.last.as_ref().map(|o| o.verdict);
        let name = match verdict {
            Some(Verdict::Pass) => "healthy",
            Some(Verdict::Fail) => "failing",
            Some(Verdict::Inconclusive) => "inconclusive",
            Some(Verdict::NoData) | None => "not evaluated",
        };
        *counts.entry(name).or_default() += 1;
        let key = if s.phases.len() == 1 {
            format!("{}@{}", rules[s.rule].name, s.phases[0].as_str())
        } else {
            rules[s.rule].name.clone()
        };
        states.insert(key, verdict.map_or(json!("not_evaluated"), |v| json!(v)));
    }
    let warnings: Vec<&str> = a
        .decisions
        .iter()
        .filter(|d| d.decision == DecisionKind::Warn)
        .map(|d| d.rule.as_str())
        .collect();
    let tally: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    json!({
        "summary": format!(
            "{} rule checks: {}; {} warnings{}",
            a.states.len(),
            tally.join(", "),
            warnings.len(),
            if warnings.is_empty() { String::new() } else { format!(" ({})", warnings.join(", ")) }
        ),
        "rules": states,
        "warnings": warnings,
    })
}

/// A decision of deploy `a` at `at`.
pub(super) fn decision(
    a: &Analysis,
    at: Timestamp,
    kind: DecisionKind,
    rule: &str,
    fin: bool,
    shadow: bool,
    evidence: Value,
) -> Decision {
    Decision {
        at: at.as_secs_f64(),
        deploy: a.id.clone(),
        service: a.service.clone(),
        version: a.version.clone(),
        decision: kind,
        phase: a.phase,
        rule: rule.to_string(),
        r#final: fin,
        shadow,
        evidence,
    }
}
