//! Experiments (the hypothesis builder): a feature ships dark and an experiment decides
//! who sees it. This module holds the experiment file schema, its loading through the same
//! YAML loader as rule files (so errors carry `file:line:column` and hostile YAML meets the
//! same budgets), and deterministic assignment ([`assign`]).
//!
//! Judging ([`judge`], [`srm`]), the agent's participants and outcomes ([`registry`]) and
//! the status table ([`show`]) build on these.

pub mod assign;
pub mod judge;
pub mod registry;
pub mod show;
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

    /// Problems the schema cannot express (ranges, sums, duplicates).
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let who = format!("experiment {:?}", self.name);
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
