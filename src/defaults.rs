//! Embedded defaults: the shipped rule files compiled into the binary, and the bundled
//! example that `immune replay` runs when given no files.
//!
//! Embedding keeps the README's first command working from any directory on a machine
//! that has only the binary.

use crate::engine::Engine;
use crate::replay::{self, ReplayError, ReplaySummary};
use crate::rules::RuleSet;
use crate::rules::load;
use crate::sim::{self, DeployPlan, FleetConfig, Scenario};
use crate::textformat::TimestampUnit;
use std::io::Write;
use std::path::PathBuf;

/// The shipped rule files as (name, text), the same files as in `rules/`.
pub const RULE_FILES: &[(&str, &str)] = &[
    ("rules/web.yaml", include_str!("../rules/web.yaml")),
    ("rules/mysql.yaml", include_str!("../rules/mysql.yaml")),
    (
        "rules/memcached.yaml",
        include_str!("../rules/memcached.yaml"),
    ),
    (
        "rules/business.yaml",
        include_str!("../rules/business.yaml"),
    ),
];

/// Why rules could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(pub load::Diagnostics);

/// Loads rules from `paths`, or the embedded rule files when `paths` is empty.
pub fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
    if paths.is_empty() {
        load::load_sources(RULE_FILES).map_err(RulesError)
    } else {
        load::load_paths(paths).map_err(RulesError)
    }
}

/// The bundled example: a 40-host fleet, a healthy deploy, then one that triples the
/// PHP error rate on its canary hosts.
pub fn example_plans(cfg: &FleetConfig) -> Vec<DeployPlan> {
    let min = |m: i64| cfg.start.add(crate::model::DurationMs::from_secs(60 * m));
    vec![
        DeployPlan::new("d1", min(15), Scenario::Healthy),
        DeployPlan::new("d2", min(50), Scenario::ErrorRate(3.0)),
    ]
}

/// Simulates the example fleet and replays it through `engine`.
pub fn replay_example(
    engine: &mut Engine,
    eval_interval_ms: i64,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let cfg = FleetConfig::default();
    let plans = example_plans(&cfg);
    let until = cfg.start.add(crate::model::DurationMs::from_secs(80 * 60));
    let mut metrics = Vec::new();
    let mut deploys = Vec::new();
    sim::write_replay_files(&cfg, &plans, until, &mut metrics, &mut deploys)?;
    replay::run(
        engine,
        "example.om",
        metrics.as_slice(),
        "example.jsonl",
        deploys.as_slice(),
        TimestampUnit::Seconds,
        eval_interval_ms,
        out,
    )
}
