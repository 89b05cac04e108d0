//! Compiling rules: every deserialized rule checked value by value, each problem reported
//! at the `file:line:column` of the value it concerns, and the [`Rule`] the engine runs
//! built when there is none.

use super::de::{De, Sink, parse_yaml_float};
use super::diagnostic::{Diagnostic, unknown_message};
use super::file::{MetricSpec, MinDataSpec, OnMissingSpec, RuleSpec};
use super::yaml::{Kind, MAX_DEPTH, Node, Pos, Problem};
use super::{
    Action, Baseline, Direction, Effect, MetricKind, MinData, MissingAction, OnMissing, Origin,
    Rule, Selector, TestKind,
};
use crate::model::{DurationMs, Phase};
use saphyr_parser::ScalarStyle;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// Where a rule name was first defined, for duplicate detection across files.
pub(super) type Names = HashMap<String, (String, usize)>;

pub(crate) struct FileCx<'a> {
    pub(crate) file: &'a str,
    pub(crate) lines: Vec<&'a str>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl FileCx<'_> {
    pub(crate) fn push(&mut self, pos: Pos, rule: Option<&str>, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            rule: rule.map(str::to_string),
            message,
        });
    }

    /// The position of character `offset` of a scalar's value, when the value is written
    /// on one line exactly as it reads (no escapes); otherwise `None`.
    pub(crate) fn pos_in_scalar(&self, node: &Node, offset: usize) -> Option<Pos> {
        let Kind::Scalar { value, style } = &node.kind else {
            return None;
        };
        let skip = match style {
            ScalarStyle::Plain => 0,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
            _ => return None,
        };
        let line = self.lines.get(node.pos.line.checked_sub(1)?)?;
        let written: String = line.chars().skip(node.pos.col - 1 + skip).collect();
        if !written.starts_with(value.as_str()) {
            return None;
        }
        Some(Pos {
            line: node.pos.line,
            col: node.pos.col + skip + offset,
        })
    }
}

pub(crate) const TOP_FIELDS: &[&str] = &["rules"];

pub(crate) fn compile_file(
    cx: &mut FileCx<'_>,
    doc: Option<&Node>,
    names: &mut Names,
) -> Vec<Rule> {
    let no_rules = "empty rule list: a rule file needs at least one rule under \"rules:\"";
    let Some(doc) = doc.filter(|d| !d.is_null()) else {
        cx.push(Pos { line: 1, col: 1 }, None, no_rules.to_string());
        return Vec::new();
    };
    let Kind::Map(entries) = &doc.kind else {
        cx.push(
            doc.pos,
            None,
            format!(
                "a rule file is a mapping with a \"rules\" list, found {}",
                doc.describe()
            ),
        );
        return Vec::new();
    };
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !TOP_FIELDS.contains(&key) {
            cx.push(k.pos, None, unknown_message("field", key, TOP_FIELDS));
        }
    }
    let Some(list) = doc.get("rules") else {
        cx.push(doc.pos, None, "missing field \"rules\"".to_string());
        return Vec::new();
    };
    let items = match &list.kind {
        Kind::Seq(items) if !items.is_empty() => items,
        _ if list.is_null() || matches!(&list.kind, Kind::Seq(_)) => {
            cx.push(list.pos, None, no_rules.to_string());
            return Vec::new();
        }
        _ => {
            cx.push(
                list.pos,
                None,
                format!("rules: expected a list, found {}", list.describe()),
            );
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for item in items {
        let (spec, problems) = deserialize_rule(item);
        let name = match &spec {
            Ok(s) => Some(s.name.clone()),
            Err(()) => item.get("name").and_then(Node::as_str).map(str::to_string),
        };
        let damaged = !problems.is_empty();
        for (pos, message) in problems {
            cx.push(pos, name.as_deref(), message);
        }
        if let Some(name) = &name {
            let pos = item.pos_at(&["name"]);
            match names.get(name) {
                Some((file, line)) => cx.push(
                    pos,
                    Some(name),
                    format!("duplicate rule name {name:?} (first defined at {file}:{line})"),
                ),
                None => {
                    names.insert(name.clone(), (cx.file.to_string(), pos.line));
                }
            }
        }
        if let Ok(spec) = spec
            && let Some(rule) = compile_rule(cx, &spec, item)
            && !damaged
        {
            rules.push(rule);
        }
    }
    rules
}

/// Deserializes one rule, reporting every structural problem: after a type error in a
/// field, the field is dropped and the rule deserialized again, so the remaining fields
/// are still checked (a later "missing field" for a dropped field is not reported).
/// `Ok` may come with problems: the spec then lacks the dropped fields.
pub(crate) fn deserialize_rule(item: &Node) -> (Result<RuleSpec, ()>, Vec<Problem>) {
    let mut node = item.clone();
    let mut removed: Vec<Vec<String>> = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    // Each problem once, in linear time (a rule may carry thousands of unknown keys).
    let mut seen: HashSet<Problem> = HashSet::new();
    let mut add = |problems: &mut Vec<Problem>, p: Problem| {
        if seen.insert(p.clone()) {
            problems.push(p);
        }
    };
    loop {
        let sink = Sink::default();
        let result = RuleSpec::deserialize(De {
            node: &node,
            key: None,
            sink: &sink,
        });
        for p in sink.into_inner() {
            add(&mut problems, p);
        }
        let e = match result {
            Ok(spec) => return (Ok(spec), problems),
            Err(e) => e,
        };
        if let Some(field) = e.missing {
            let mut full = e.path.clone();
            full.push(field.to_string());
            if removed.contains(&full) {
                return (Err(()), problems);
            }
        }
        add(&mut problems, (e.pos.unwrap_or(item.pos), e.message));
        if e.path.is_empty() || removed.len() >= MAX_DEPTH || !remove_at(&mut node, &e.path) {
            return (Err(()), problems);
        }
        removed.push(e.path);
    }
}

/// Removes the entry at `path` from nested mappings; false when there is none.
pub(crate) fn remove_at(node: &mut Node, path: &[String]) -> bool {
    let Kind::Map(entries) = &mut node.kind else {
        return false;
    };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let Some(i) = entries.iter().position(|(k, _)| k.as_str() == Some(first)) else {
        return false;
    };
    if rest.is_empty() {
        entries.remove(i);
        true
    } else {
        remove_at(&mut entries[i].1, rest)
    }
}

/// Checks one deserialized rule, reporting every problem; the rule when there is none.
pub(crate) struct RuleCx<'c, 'f> {
    pub(crate) cx: &'c mut FileCx<'f>,
    pub(crate) node: &'c Node,
    pub(crate) name: String,
    pub(crate) failed: bool,
}

impl RuleCx<'_, '_> {
    pub(crate) fn fail_at(&mut self, pos: Pos, message: String) {
        self.failed = true;
        self.cx.push(pos, Some(&self.name), message);
    }

    pub(crate) fn fail(&mut self, path: &[&str], message: String) {
        let pos = self.node.pos_at(path);
        self.fail_at(pos, message);
    }

    /// One of a fixed set of names, or a diagnostic suggesting the nearest.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        path: &[&str],
        what: &str,
        value: &str,
        table: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = table.iter().find(|(n, _)| *n == value) {
            return Some(*v);
        }
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        self.fail(path, unknown_message(what, value, &names));
        None
    }

    pub(crate) fn duration(
        &mut self,
        path: &[&str],
        field: &str,
        text: &str,
        positive: bool,
    ) -> Option<DurationMs> {
        match DurationMs::parse(text) {
            Some(d) if d.0 > 0 || !positive => Some(d),
            Some(_) => {
                self.fail(path, format!("{field} {text:?} must be longer than zero"));
                None
            }
            None => {
                self.fail(
                    path,
                    format!(
                        "invalid duration {text:?} for {field}: expected e.g. 30s, 5m, 1h30m, 7d"
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn selector(&mut self, path: &[&str], field: &str, text: &str) -> Option<Selector> {
        match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                let value_node = path.iter().try_fold(self.node, |n, k| n.get(k));
                let chars = text.get(..e.offset).map_or(0, |t| t.chars().count());
                let at = value_node.and_then(|n| self.cx.pos_in_scalar(n, chars));
                let message = match at {
                    Some(_) => format!("invalid {field} {text:?}: {}", e.message),
                    None => format!("invalid {field} {text:?}: {e}"),
                };
                let pos = at.unwrap_or_else(|| self.node.pos_at(path));
                self.fail_at(pos, message);
                None
            }
        }
    }
}

pub(crate) fn valid_rule_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A parsed `min_effect`: its explicit sign, if any, its magnitude and whether it is
/// relative (a percentage).
pub(crate) struct EffectText {
    pub(crate) sign: Option<char>,
    pub(crate) magnitude: f64,
    pub(crate) relative: bool,
}

pub(crate) fn parse_effect(text: &str) -> Option<EffectText> {
    let t = text.trim();
    let (sign, rest) = match t.chars().next() {
        Some(c @ ('+' | '-')) => (Some(c), &t[1..]),
        _ => (None, t),
    };
    let (number, relative) = match rest.strip_suffix('%') {
        Some(n) => (n.trim_end(), true),
        None => (rest, false),
    };
    if number.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = parse_yaml_float(number).filter(|m| m.is_finite() && *m >= 0.0)?;
    Some(EffectText {
        sign,
        magnitude: if relative {
            magnitude / 100.0
        } else {
            magnitude
        },
        relative,
    })
}

pub(crate) const KINDS: &[(&str, u8)] = &[
    ("counter_rate", 0),
    ("ratio", 1),
    ("gauge", 2),
    ("mean", 3),
    ("histogram_quantile", 4),
];
pub(crate) const BASELINES: &[(&str, u8)] = &[("control", 0), ("pre_deploy", 1), ("seasonal", 2)];
pub(crate) const DIRECTIONS: &[(&str, Direction)] = &[
    ("increase", Direction::Increase),
    ("decrease", Direction::Decrease),
    ("either", Direction::Either),
];
pub(crate) const ACTIONS: &[(&str, Action)] = &[
    ("rollback", Action::Rollback),
    ("block", Action::Block),
    ("warn", Action::Warn),
];
pub(crate) const MISSING_ACTIONS: &[(&str, MissingAction)] = &[
    ("rollback", MissingAction::Rollback),
    ("block", MissingAction::Block),
    ("warn", MissingAction::Warn),
    ("ignore", MissingAction::Ignore),
];
pub(crate) const PHASES: &[(&str, Phase)] = &[
    ("canary", Phase::Canary),
    ("full", Phase::Full),
    ("watch", Phase::Watch),
];
pub(crate) const TESTS: &[(&str, TestKind)] =
    &[("auto", TestKind::Auto), ("drift", TestKind::Drift)];

pub(crate) const DEFAULT_ALPHA: f64 = 0.01;

/// The largest `weight`: beyond it one rule takes all of the family's alpha anyway.
const MAX_WEIGHT: f64 = 1000.0;
pub(crate) const DEFAULT_HOST_LABEL: &str = "instance";
pub(crate) const DEFAULT_BASELINE_WINDOW: DurationMs = DurationMs::from_secs(600);
pub(crate) const DEFAULT_SEASONAL_OFFSET: DurationMs = DurationMs::from_secs(7 * 86_400);

pub(crate) fn compile_rule(cx: &mut FileCx<'_>, spec: &RuleSpec, node: &Node) -> Option<Rule> {
    let mut r = RuleCx {
        cx,
        node,
        name: spec.name.clone(),
        failed: false,
    };
    if !valid_rule_name(&spec.name) {
        r.fail(
            &["name"],
            format!(
                "invalid rule name {:?}: use letters, digits, '_', '.', '-', starting with a letter or '_'",
                spec.name
            ),
        );
    }
    if let Some(Kind::Seq(items)) = node.get("services").map(|n| &n.kind) {
        for (s, item) in spec.services.iter().zip(items) {
            if s.trim().is_empty() {
                r.fail_at(item.pos, "empty service name".to_string());
            }
        }
    }
    let kind = compile_metric(&mut r, &spec.metric);
    let selector = r.selector(&["metric", "selector"], "selector", &spec.metric.selector);
    if let (Some(sel), Some(k)) = (&selector, &kind) {
        let suffix = match k {
            MetricKind::Mean => ["_sum", "_count"].iter().find(|s| sel.name.ends_with(*s)),
            MetricKind::HistogramQuantile { .. } => {
                ["_bucket"].iter().find(|s| sel.name.ends_with(*s))
            }
            _ => None,
        };
        if let Some(suffix) = suffix {
            r.fail(
                &["metric", "selector"],
                format!(
                    "selector {:?}: kind {} names the base name; drop {suffix:?}",
                    spec.metric.selector,
                    if matches!(k, MetricKind::Mean) {
                        "mean"
                    } else {
                        "histogram_quantile"
                    }
                ),
            );
        }
    }
    let host_label = spec
        .metric
        .host_label
        .clone()
        .unwrap_or_else(|| DEFAULT_HOST_LABEL.to_string());
    if !valid_label_name(&host_label) {
        r.fail(
            &["metric", "host_label"],
            format!("invalid host_label {host_label:?}: not a label name"),
        );
    }

    let amounts = match spec.metric.unit.as_deref() {
        None | Some("events") => false,
        Some("amount") => {
            if !matches!(
                kind,
                Some(MetricKind::CounterRate | MetricKind::Ratio { .. }) | None
            ) {
                r.fail(
                    &["metric", "unit"],
                    "unit applies to counter_rate and ratio only".to_string(),
                );
            }
            true
        }
        Some(other) => {
            r.fail(
                &["metric", "unit"],
                format!("unknown unit {other:?}: expected events or amount"),
            );
            false
        }
    };
    let baseline = compile_baseline(&mut r, spec);
    let direction = r.choice(&["direction"], "direction", &spec.direction, DIRECTIONS);
    let min_effect = compile_effect(&mut r, &spec.min_effect, direction);
    let alpha = spec.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        r.fail(&["alpha"], format!("alpha {alpha} is outside (0, 1)"));
    }
    let weight = spec.weight.unwrap_or(1.0);
    if !(weight > 0.0 && weight <= MAX_WEIGHT) {
        r.fail(
            &["weight"],
            format!("weight {weight} is outside (0, {MAX_WEIGHT}]"),
        );
    }
    let action = r.choice(&["action"], "action", &spec.action, ACTIONS);
    let phases = compile_phases(&mut r, spec, baseline.as_ref());
    let min_data = compile_min_data(&mut r, spec.min_data.as_ref());
    let on_missing = spec
        .on_missing
        .as_ref()
        .and_then(|m| compile_on_missing(&mut r, m));
    let test = match &spec.test {
        Some(t) => r.choice(&["test"], "test", t, TESTS),
        None => Some(TestKind::Auto),
    };

    let runbook_url = compile_runbook(&mut r, spec.runbook_url.as_deref());
    let line = node.pos_at(&["name"]).line;
    let origin = Origin {
        file: r.cx.file.to_string(),
        line,
    };
    if r.failed {
        return None;
    }
    Some(Rule {
        name: spec.name.clone(),
        description: spec.description.clone(),
        runbook_url,
        origin,
        services: spec.services.clone(),
        selector: selector?,
        kind: kind?,
        host_label,
        amounts,
        baseline: baseline?,
        direction: direction?,
        min_effect: min_effect?,
        alpha,
        weight,
        action: action?,
        shadow: spec.shadow,
        phases: phases?,
        min_data: min_data?,
        on_missing,
        test: test?,
    })
}

/// `runbook_url`: an absolute `http://` or `https://` URL with a host (it is put as a
/// link in alerts and pages, so anything else, a `javascript:` URL included, is refused).
fn compile_runbook(r: &mut RuleCx<'_, '_>, url: Option<&str>) -> Option<String> {
    let url = url?;
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Some(url.trim().to_string())
        }
        Ok(u) => {
            r.fail(
                &["runbook_url"],
                format!(
                    "runbook_url {url:?} is not an http(s) URL (scheme {:?})",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            r.fail(
                &["runbook_url"],
                format!("runbook_url {url:?} is not a URL: {e} (expected e.g. https://wiki.example/runbooks/errors)"),
            );
            None
        }
    }
}

pub(crate) fn compile_metric(r: &mut RuleCx<'_, '_>, m: &MetricSpec) -> Option<MetricKind> {
    let code = r.choice(&["metric", "kind"], "metric kind", &m.kind, KINDS)?;
    let kind_name = m.kind.as_str();
    let denominator = match (&m.denominator, code) {
        (Some(d), 1) => r.selector(&["metric", "denominator"], "denominator", d),
        (None, 1) => {
            r.fail(
                &["metric"],
                "kind ratio needs a denominator (the counter whose increments are the exposure)"
                    .to_string(),
            );
            None
        }
        (Some(_), _) => {
            r.fail(
                &["metric", "denominator"],
                format!("denominator is only for kind ratio, not {kind_name}"),
            );
            None
        }
        (None, _) => None,
    };
    let quantile = match (m.quantile, code) {
        (Some(q), 4) if q > 0.0 && q < 1.0 => Some(q),
        (Some(q), 4) => {
            r.fail(
                &["metric", "quantile"],
                format!("quantile {q} is outside (0, 1)"),
            );
            None
        }
        (None, 4) => {
            r.fail(
                &["metric"],
                "kind histogram_quantile needs a quantile, e.g. 0.99".to_string(),
            );
            None
        }
        (Some(_), _) => {
            r.fail(
                &["metric", "quantile"],
                format!("quantile is only for kind histogram_quantile, not {kind_name}"),
            );
            None
        }
        (None, _) => None,
    };
    match code {
        0 => Some(MetricKind::CounterRate),
        1 => Some(MetricKind::Ratio {
            denominator: denominator?,
        }),
        2 => Some(MetricKind::Gauge),
        3 => Some(MetricKind::Mean),
        _ => Some(MetricKind::HistogramQuantile {
            quantile: quantile?,
        }),
    }
}

pub(crate) fn compile_baseline(r: &mut RuleCx<'_, '_>, spec: &RuleSpec) -> Option<Baseline> {
    let code = r.choice(&["baseline"], "baseline", &spec.baseline, BASELINES);
    let name = spec.baseline.as_str();
    let window = match (&spec.baseline_window, code) {
        (Some(w), Some(1)) => r.duration(&["baseline_window"], "baseline_window", w, true),
        (Some(_), Some(_)) => {
            r.fail(
                &["baseline_window"],
                format!("baseline_window is only for baseline pre_deploy, not {name}"),
            );
            None
        }
        _ => Some(DEFAULT_BASELINE_WINDOW),
    };
    let offset = match (&spec.seasonal_offset, code) {
        (Some(o), Some(2)) => r.duration(&["seasonal_offset"], "seasonal_offset", o, true),
        (Some(_), Some(_)) => {
            r.fail(
                &["seasonal_offset"],
                format!("seasonal_offset is only for baseline seasonal, not {name}"),
            );
            None
        }
        _ => Some(DEFAULT_SEASONAL_OFFSET),
    };
    match code? {
        0 => Some(Baseline::Control),
        1 => Some(Baseline::PreDeploy { window: window? }),
        _ => Some(Baseline::Seasonal { offset: offset? }),
    }
}

pub(crate) fn compile_effect(
    r: &mut RuleCx<'_, '_>,
    text: &str,
    direction: Option<Direction>,
) -> Option<Effect> {
    let Some(e) = parse_effect(text) else {
        r.fail(
            &["min_effect"],
            format!(
                "invalid min_effect {text:?}: expected a relative change like \"+50%\" or an absolute one like \"0.05\""
            ),
        );
        return None;
    };
    let direction = direction?;
    let signed = match (direction, e.sign) {
        (Direction::Increase, Some('-')) | (Direction::Decrease, Some('+')) => {
            let dir = if direction == Direction::Increase {
                "increase"
            } else {
                "decrease"
            };
            r.fail(
                &["min_effect"],
                format!("min_effect {text:?} contradicts direction {dir}"),
            );
            return None;
        }
        (Direction::Either, Some(_)) => {
            r.fail(
                &["min_effect"],
                format!(
                    "min_effect {text:?} has a sign but direction is either: write it unsigned"
                ),
            );
            return None;
        }
        (Direction::Decrease, _) => -e.magnitude,
        _ => e.magnitude,
    };
    if e.relative && signed < -1.0 {
        r.fail(
            &["min_effect"],
            format!("min_effect {text:?}: a decrease cannot exceed 100%"),
        );
        return None;
    }
    Some(if e.relative {
        Effect::Relative(signed)
    } else {
        Effect::Absolute(signed)
    })
}

pub(crate) fn compile_phases(
    r: &mut RuleCx<'_, '_>,
    spec: &RuleSpec,
    baseline: Option<&Baseline>,
) -> Option<Vec<Phase>> {
    let Some(names) = &spec.phases else {
        return Some(match baseline {
            Some(Baseline::Control) => vec![Phase::Canary],
            _ => vec![Phase::Canary, Phase::Full, Phase::Watch],
        });
    };
    let node = r.node.get("phases");
    let item_pos = |i: usize| match node.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items.get(i).map(|n| n.pos),
        _ => None,
    };
    if names.is_empty() {
        r.fail(
            &["phases"],
            "phases is empty: list at least one of canary, full, watch".to_string(),
        );
        return None;
    }
    let mut phases = Vec::new();
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let pos = item_pos(i).unwrap_or_else(|| r.node.pos_at(&["phases"]));
        let Some((_, phase)) = PHASES.iter().find(|(n, _)| n == name) else {
            let all: Vec<&str> = PHASES.iter().map(|(n, _)| *n).collect();
            r.fail_at(pos, unknown_message("phase", name, &all));
            ok = false;
            continue;
        };
        if phases.contains(phase) {
            r.fail_at(pos, format!("phase {name:?} is listed twice"));
            ok = false;
        } else if *phase != Phase::Canary && baseline == Some(&Baseline::Control) {
            r.fail_at(
                pos,
                format!(
                    "phase {name:?} with baseline control: the control hosts exist only during canary; use pre_deploy or seasonal for {name}"
                ),
            );
            ok = false;
        } else {
            phases.push(*phase);
        }
    }
    phases.sort();
    ok.then_some(phases)
}

pub(crate) fn compile_min_data(r: &mut RuleCx<'_, '_>, m: Option<&MinDataSpec>) -> Option<MinData> {
    let mut out = MinData::default();
    let Some(m) = m else {
        return Some(out);
    };
    let mut ok = true;
    if let Some(e) = m.events {
        out.events = e;
    }
    if let Some(s) = m.samples {
        if s < 2 {
            r.fail(
                &["min_data", "samples"],
                format!("min_data samples {s} is too few: a comparison needs at least 2"),
            );
            ok = false;
        }
        out.samples = s;
    }
    if let Some(d) = &m.duration {
        match r.duration(&["min_data", "duration"], "min_data duration", d, false) {
            Some(d) => out.duration = d,
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(crate) fn compile_on_missing(r: &mut RuleCx<'_, '_>, m: &OnMissingSpec) -> Option<OnMissing> {
    let stale_after = r.duration(
        &["on_missing", "stale_after"],
        "on_missing stale_after",
        &m.stale_after,
        true,
    );
    let action = r.choice(
        &["on_missing", "action"],
        "on_missing action",
        &m.action,
        MISSING_ACTIONS,
    );
    Some(OnMissing {
        stale_after: stale_after?,
        action: action?,
    })
}

#[cfg(test)]
mod tests {
    use crate::rules::load::load_str;

    fn rule(extra: &str) -> String {
        format!(
            "rules:\n  - name: errors\n    metric:\n      kind: ratio\n      selector: 'e_total'\n      denominator: 'r_total'\n    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n{extra}"
        )
    }

    #[test]
    fn runbook_url_is_kept_and_must_be_an_http_url() {
        let set = load_str(
            "t.yaml",
            &rule("    runbook_url: https://wiki.example/rb/errors\n"),
        )
        .unwrap();
        assert_eq!(
            set.rules[0].runbook_url.as_deref(),
            Some("https://wiki.example/rb/errors")
        );
        assert_eq!(
            load_str("t.yaml", &rule("")).unwrap().rules[0].runbook_url,
            None
        );
        for (bad, says) in [
            ("wiki/errors", "is not a URL"),
            ("javascript:alert(1)", "is not an http(s) URL"),
        ] {
            let e =
                load_str("t.yaml", &rule(&format!("    runbook_url: \"{bad}\"\n"))).unwrap_err();
            let text = e.0[0].to_string();
            assert!(text.starts_with("t.yaml:11:18: runbook_url"), "{text}");
            assert!(text.contains(says), "{text}");
        }
    }
}
