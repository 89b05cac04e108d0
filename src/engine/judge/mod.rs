//! The judge: how one rule turns a deploy's series into a verdict (`pass`, `fail`,
//! `inconclusive`) with the numbers behind it.
//!
//! Every method keeps an anytime-valid `harm` test ("no regression" against regressions
//! of at least `min_effect`) and a `safe` one ("a regression of `min_effect`" against no
//! regression). The rule fails when `harm` crosses its threshold (after Holm across the
//! deploy's rules, done by the caller) and passes when `safe` crosses `1/alpha`; both may
//! be checked at every evaluation without inflating error rates. One file per method:
//!
//! - `count_control.rs`: counts, canary against control, each host against its own past
//!   (difference in differences on the conditional binomial, Lindon & Malek 2022).
//! - `count_past.rs`: counts against the pre-deploy rate's confidence bound, or against
//!   the same interval a season ago.
//! - `continuous.rs`: per-block changes, anytime-valid two-sample t-test against the
//!   pre-deploy blocks (unknown variance inside the test).
//! - `drift.rs`: Mann-Kendall trend test with Theil-Sen slope, alpha spent over looks.
//!
//! `evidence.rs` holds the shared e-process pair and the evidence helpers, `read.rs` the
//! series readers and the block walks (which skip stretches without data). The alpha
//! accounting is written down in docs/ARCHITECTURE.md ("The judge").

mod continuous;
mod count_control;
mod count_past;
mod drift;
mod evidence;
mod read;

pub use continuous::Continuous;
pub use count_control::CountControl;
pub use count_past::CountPast;
pub use drift::Drift;
pub use evidence::{Evidence, round};
pub use read::{
    CountAgg, RuleSeries, SideFilter, Span, continuous_value, count_agg, pearson, pearson_pairs,
};

use super::store::Store;
use crate::model::{DurationMs, Timestamp};
use crate::rules::{Baseline, Rule};
use serde_json::Value;

/// A rule's verdict at one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Evidence of a regression of at least the rule's smallest effect.
    Fail,
    /// Evidence that any regression is smaller than the rule's smallest effect.
    Pass,
    /// Not enough evidence either way (or not enough data yet).
    Inconclusive,
    /// No series matched on the deploy's side.
    NoData,
}

/// Per-rule, per-phase state.
#[derive(Clone, Debug)]
pub enum Method {
    /// Counts, treatment against concurrent control.
    CountControl(CountControl),
    /// Counts against a fixed pre-deploy rate or the same interval a season ago.
    CountPast(CountPast),
    /// Continuous values.
    Continuous(Continuous),
    /// Trend.
    Drift(Drift),
}

/// How long before a deploy the canary hosts' share of a count (errors, signups) is
/// measured. Events accumulate slowly, and the difference in differences pays for the
/// pre-period estimate's variance, 1/(pre-deploy events): an hour holds twice the events of
/// half an hour and halves that price (errors x2 in a 2-to-4-host canary: 86.6 % stopped
/// in the canary with 30 minutes, 90.7 % with 60, BENCHMARKS.md §3 round 4).
pub const COUNT_CALIBRATION: DurationMs = DurationMs::from_secs(3600);

/// How long before a deploy the canary hosts' offset and block spread of a continuous
/// metric (latency) are measured. Longer is not better here: a host's latency wanders over
/// tens of minutes, and an hour of blocks mixes older levels into the offset (latency p99
/// stopped 5 healthy canaries of 1020 with an hour, 2 with half an hour).
pub const CONTINUOUS_CALIBRATION: DurationMs = DurationMs::from_secs(1800);

/// The longest stretch before a deploy the judge reads: what the store and a prefill must
/// hold for the control calibrations.
pub const CONTROL_CALIBRATION: DurationMs = COUNT_CALIBRATION;

/// Blocks needed before the deploy to trust a measured variance and offset.
pub(super) const MIN_CALIBRATION_BLOCKS: usize = 5;

/// What one evaluation of a rule produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The verdict before multiple-testing control.
    pub verdict: Verdict,
    /// Anytime-valid p-value for "regression", compared by the caller (Holm) with
    /// `alpha_for_p` to decide.
    pub p_value: f64,
    /// The alpha this p-value is judged against on its own.
    pub alpha: f64,
    /// Whether the rule has enough data to judge.
    pub enough_data: bool,
    /// The current e-value against "no regression" (1 means no evidence either way).
    pub harm_e_value: f64,
    /// The numbers, for the decision's evidence.
    pub evidence: Value,
}

/// Everything a method needs to read one interval.
pub struct Ctx<'a> {
    /// The store.
    pub store: &'a Store,
    /// The rule.
    pub rule: &'a Rule,
    /// Its series.
    pub rs: &'a RuleSeries,
    /// The deploy side.
    pub treatment: &'a dyn SideFilter,
    /// The baseline side (control), if the baseline is concurrent.
    pub control: &'a dyn SideFilter,
    /// Interval start (exclusive).
    pub from: Timestamp,
    /// Interval end (inclusive).
    pub to: Timestamp,
    /// When the phase began.
    pub phase_start: Timestamp,
    /// When the deploy began (its canary event).
    pub deploy_start: Timestamp,
    /// The alpha of this rule in this phase.
    pub alpha: f64,
    /// The continuous block length.
    pub block: DurationMs,
}

impl Method {
    /// Fresh state for a rule in a phase; reads the pre-deploy window where needed.
    /// `None` when the rule's configuration cannot form a test (reported as no data).
    ///
    /// May be called at any time after the canary event: every pre-period is read
    /// relative to `ctx.deploy_start` and ends there, so post-deploy data never shapes the
    /// baseline (nor the choice between the adjusted and the unadjusted test).
    pub fn start(ctx: &Ctx<'_>) -> Option<Method> {
        let rule = ctx.rule;
        if rule.test == crate::rules::TestKind::Drift {
            return Some(Method::Drift(Drift::start(ctx)));
        }
        if rule.counts_events() {
            return match rule.baseline {
                Baseline::Control => CountControl::start(ctx).map(Method::CountControl),
                Baseline::PreDeploy { window } => {
                    Some(Method::CountPast(CountPast::start_pre(ctx, window)))
                }
                Baseline::Seasonal { .. } => {
                    Some(Method::CountPast(CountPast::start_seasonal(ctx)))
                }
            };
        }
        Some(Method::Continuous(Continuous::start(ctx)))
    }

    /// Reads the interval (ctx.from, ctx.to] and returns the rule's state.
    pub fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        match self {
            Method::CountControl(m) => m.evaluate(ctx),
            Method::CountPast(m) => m.evaluate(ctx),
            Method::Continuous(m) => m.evaluate(ctx),
            Method::Drift(m) => m.evaluate(ctx),
        }
    }

    /// How many blocks this method has read so far (pre-deploy walks and per-block
    /// evaluations): the work the judge did, which follows the data, not the clock.
    pub fn blocks_read(&self) -> u64 {
        match self {
            Method::CountControl(m) => m.blocks_read,
            Method::CountPast(m) => m.blocks_read,
            Method::Continuous(m) => m.blocks_read,
            Method::Drift(m) => m.blocks_read,
        }
    }
}

#[cfg(test)]
mod tests;
