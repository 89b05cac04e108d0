//! Experiments (the hypothesis builder): a feature ships dark and an experiment decides
//! who sees it. This module holds the experiment file schema, its loading through the same
//! YAML loader as rule files (so errors carry `file:line:column` and hostile YAML meets the
//! same budgets), and deterministic assignment ([`assign`]).
//!
//! Judging ([`judge`], [`srm`]), the agent's participants and outcomes ([`registry`]) and
//! the status table ([`show`]) build on these.

pub mod agent;
pub mod assign;
pub mod counters;
pub mod judge;
pub mod lifecycle;
pub mod looking;
pub mod persist;
pub mod registry;
pub mod show;
pub mod signal;
pub mod srm;

use crate::rules::load::{Diagnostic, Diagnostics, MAX_TEXT_BYTES, from_yaml_str};
use serde::Deserialize;
use std::path::Path;

/// The name used for the control branch when a file does not name one.
pub const DEFAULT_CONTROL: &str = "control";

/// One experiment file: a list of experiments.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// The experiments defined in this file.
    pub experiments: Vec<Experiment>,
}

/// One experiment, as written in YAML.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Unique name; part of the assignment hash, so renaming reshuffles everyone.
    pub name: String,
    /// Share of users in the experiment at all, in [0, 1]. Raising it only adds users;
    /// lowering it only takes users out (see [`assign`]).
    #[serde(default)]
    pub initial_rollout: f64,
    /// The control branch's name (default `control`); it gets whatever weight the
    /// other branches leave.
    #[serde(default)]
    pub control: Option<String>,
    /// The treatment branches with their weights (share of participants), in order.
    pub branches: Vec<Branch>,
    /// The metrics judged.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Optional start (RFC 3339), kept as written.
    #[serde(default)]
    pub start: Option<String>,
    /// Optional end (RFC 3339), kept as written.
    #[serde(default)]
    pub end: Option<String>,
    /// Where participants and outcomes come from: `events` (the events endpoint, the
    /// default) or `metrics` (the `experiment_exposures_total{experiment,branch}` counter
    /// and each metric's counter with a `branch` label, from any source immune reads).
    #[serde(default)]
    pub source: Source,
}

/// Where an experiment's participants and outcomes come from.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /api/v1/experiments/{name}/events`.
    #[default]
    Events,
    /// Counters read from the engine's samples (scrape, push, remote_write): see
    /// [`counters`].
    Metrics,
}

/// A treatment branch.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// Branch name as the application sees it (`Enhanced`).
    pub name: String,
    /// Share of participants in this branch, in (0, 1].
    pub weight: f64,
}

/// What a metric counts per participant.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Events per participant (signups): conditional binomial on exposures.
    Count,
    /// An amount per participant (revenue): a heavy-tail-robust mean test.
    Amount,
}

/// Which way is good.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better.
    Increase,
    /// Lower is better.
    Decrease,
}

/// A metric judged branch against control.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The counter's name (it carries a `branch` label), or an outcome name posted to the API.
    pub name: String,
    /// Count or amount.
    pub kind: MetricKind,
    /// Which way is desired.
    pub direction: Direction,
    /// The smallest relative effect worth detecting (0.05 = 5%).
    pub min_effect: f64,
    /// Error rate for this metric (default 0.05).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Harm on a guardrail stops the experiment; otherwise the metric is a goal.
    #[serde(default)]
    pub guardrail: bool,
}

impl Experiment {
    /// The control branch's name.
    pub fn control_name(&self) -> &str {
        self.control.as_deref().unwrap_or(DEFAULT_CONTROL)
    }

    /// Every branch with its weight, control first (its weight is what the others leave).
    pub fn weights(&self) -> Vec<(&str, f64)> {
        let treated: f64 = self.branches.iter().map(|b| b.weight).sum();
        let mut out = vec![(self.control_name(), (1.0 - treated).max(0.0))];
        out.extend(self.branches.iter().map(|b| (b.name.as_str(), b.weight)));
        out
    }

    /// The start in seconds since the epoch, when set and valid.
    pub fn start_secs(&self) -> Option<f64> {
        self.start.as_deref().and_then(parse_time)
    }

    /// The end in seconds since the epoch, when set and valid.
    pub fn end_secs(&self) -> Option<f64> {
        self.end.as_deref().and_then(parse_time)
    }

    /// Problems the schema cannot express (ranges, sums, duplicates).
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let who = format!("experiment {:?}", self.name);
        for (key, v) in [("start", &self.start), ("end", &self.end)] {
            if let Some(t) = v
                && parse_time(t).is_none()
            {
                p.push(format!(
                    "{who}: {key} {t:?} is not an RFC 3339 time (2026-12-02T16:00:00Z)"
                ));
            }
        }
        if let (Some(a), Some(b)) = (self.start_secs(), self.end_secs())
            && b <= a
        {
            p.push(format!("{who}: end is not after start"));
        }
        if self.name.trim().is_empty() {
            p.push("experiment name is empty".to_string());
        }
        if !(0.0..=1.0).contains(&self.initial_rollout) {
            p.push(format!(
                "{who}: initial_rollout {} is outside [0, 1]",
                self.initial_rollout
            ));
        }
        if self.branches.is_empty() {
            p.push(format!("{who}: no branches besides control"));
        }
        let mut names = vec![self.control_name()];
        for b in &self.branches {
            if !(b.weight > 0.0 && b.weight <= 1.0) {
                p.push(format!(
                    "{who}: branch {:?} weight {} is outside (0, 1]",
                    b.name, b.weight
                ));
            }
            if names.contains(&b.name.as_str()) {
                p.push(format!(
                    "{who}: branch {:?} appears twice (or is the control)",
                    b.name
                ));
            }
            names.push(&b.name);
        }
        let sum: f64 = self.branches.iter().map(|b| b.weight).sum();
        if sum > 1.0 + 1e-9 {
            p.push(format!(
                "{who}: branch weights sum to {}, over 1",
                (sum * 1e9).round() / 1e9
            ));
        }
        for m in &self.metrics {
            if !(m.min_effect > 0.0 && m.min_effect.is_finite()) {
                p.push(format!(
                    "{who}: metric {:?} min_effect must be positive",
                    m.name
                ));
            }
            if self.source == Source::Metrics && m.kind == MetricKind::Amount {
                p.push(format!(
                    "{who}: metric {:?} is an amount, which needs per-participant totals: use source: events",
                    m.name
                ));
            }
            if let Some(a) = m.alpha
                && !(a > 0.0 && a < 0.5)
            {
                p.push(format!(
                    "{who}: metric {:?} alpha {a} is outside (0, 0.5)",
                    m.name
                ));
            }
        }
        p
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-02T16:00:00Z`, offsets allowed).
pub fn parse_time(text: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .or_else(|| {
            // humantime takes only `Z`; an explicit offset is applied here.
            let (base, sign, off) = split_offset(text.trim())?;
            let t = humantime::parse_rfc3339_weak(base).ok()?;
            let d = std::time::Duration::from_secs(off);
            if sign > 0 {
                t.checked_sub(d)
            } else {
                t.checked_add(d)
            }
        })?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    secs.is_finite().then_some(secs)
}

/// `2026-12-02T16:00:00+01:00` -> (`2026-12-02T16:00:00`, +1, 3600).
fn split_offset(text: &str) -> Option<(&str, i8, u64)> {
    let (base, off) = text.split_at(text.len().checked_sub(6)?);
    let sign = match off.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = off[1..].split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && base.contains('T')).then_some((base, sign, h * 3600 + m * 60))
}

/// Parses and checks an experiment file's text.
pub fn load_str(file_name: &str, text: &str) -> Result<Vec<Experiment>, Diagnostics> {
    let file: ExperimentFile = from_yaml_str(file_name, text)?;
    let mut diags = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for e in &file.experiments {
        for message in e.problems() {
            diags.push(whole(file_name, message));
        }
        if seen.contains(&e.name.as_str()) {
            diags.push(whole(
                file_name,
                format!("experiment {:?} defined twice", e.name),
            ));
        }
        seen.push(&e.name);
    }
    if diags.is_empty() {
        Ok(file.experiments)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Reads and checks an experiment file, refusing one over the YAML text budget unread.
pub fn load_file(path: &Path) -> Result<Vec<Experiment>, Diagnostics> {
    let name = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| Diagnostics(vec![whole(&name, e.to_string())]))?;
    if meta.len() > MAX_TEXT_BYTES as u64 {
        return Err(Diagnostics(vec![whole(
            &name,
            format!(
                "file is {} bytes, over the {MAX_TEXT_BYTES}-byte limit",
                meta.len()
            ),
        )]));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics(vec![whole(&name, e.to_string())]))?;
    load_str(&name, &text)
}

/// Whether a YAML text looks like an experiment file (a top-level `experiments:` key), so
/// `immune check` can take both kinds of file.
pub fn looks_like_experiments(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("experiments:"))
}

fn whole(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: 0,
        column: 0,
        rule: None,
        message,
    }
}
