//! Rules: what ops write (YAML files) and the checked, compiled form the engine runs.
//!
//! `file` holds the serde structs of the rule-file schema, `load` is the one place that
//! touches YAML and turns files into a [`RuleSet`] or a list of diagnostics carrying
//! `file:line:column`, and `selector` parses and matches Prometheus-style selectors.
//! `immune check` and the engine both go through [`load::load_paths`], so what `check`
//! accepts is exactly what runs.

pub mod check;
mod compile;
mod de;
mod diagnostic;
pub mod file;
pub mod load;
pub mod selector;
pub mod unittest;
mod yaml;

use crate::model::{DurationMs, Phase};
pub use selector::Selector;

/// Every compiled rule from a set of files, in file order.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// The rules.
    pub rules: Vec<Rule>,
}

/// Where a rule was defined, for error messages and evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file it came from.
    pub file: String,
    /// 1-based line of the rule's `name`.
    pub line: usize,
}

/// How a metric's samples become the numbers a rule compares.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// A counter read as events per unit exposure; exposure is series-seconds.
    CounterRate,
    /// Increments of a counter over increments of another (errors / requests); the
    /// denominator's increments are the exposure.
    Ratio {
        /// The denominator counter.
        denominator: Selector,
    },
    /// A gauge compared by its values (load average, CPU, threads running).
    Gauge,
    /// Increments of `<name>_sum` over increments of `<name>_count` (mean latency), a
    /// continuous value per host and interval.
    Mean,
    /// A quantile of a Prometheus histogram (`<name>_bucket` series with `le`).
    HistogramQuantile {
        /// The quantile in (0, 1), e.g. 0.99.
        quantile: f64,
    },
}

impl MetricKind {
    /// True for the kinds read from counter increments (`counter_rate`, `ratio`).
    pub fn is_counter(&self) -> bool {
        matches!(self, MetricKind::CounterRate | MetricKind::Ratio { .. })
    }
}

/// What the deploy's numbers are compared with.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// The non-canary series over the same window (canary phase only).
    Control,
    /// The same series over `window` just before the deploy started.
    PreDeploy {
        /// How far back before the deploy the baseline reaches.
        window: DurationMs,
    },
    /// The same series `offset` ago (e.g. 7d), over the same span as the deploy so far.
    Seasonal {
        /// How far back the comparison window is shifted.
        offset: DurationMs,
    },
}

impl Baseline {
    /// The name used in rule files and evidence.
    pub fn as_str(&self) -> &'static str {
        match self {
            Baseline::Control => "control",
            Baseline::PreDeploy { .. } => "pre_deploy",
            Baseline::Seasonal { .. } => "seasonal",
        }
    }
}

/// Which way is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (errors, latency).
    Increase,
    /// Lower is worse (signups, hit ratio).
    Decrease,
    /// Any change is suspicious.
    Either,
}

/// The smallest change that matters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Effect {
    /// Relative to the baseline: `+50%` is 0.5, `-20%` is -0.2.
    Relative(f64),
    /// In the metric's own units.
    Absolute(f64),
}

/// What a failing rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Roll the deploy back and block the line.
    Rollback,
    /// Block the line.
    Block,
    /// Report only.
    Warn,
}

/// The statistical test a rule uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// Chosen from the metric kind: counts get the sequential conditional-binomial test,
    /// continuous metrics the sequential location/spread comparison.
    Auto,
    /// Trend detection for slow failures (Mann-Kendall with Theil-Sen slope).
    Drift,
}

/// What silence means for a rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnMissing {
    /// Series not updated for this long are missing.
    pub stale_after: DurationMs,
    /// What to do when the rule's deploy-side series are all missing.
    pub action: MissingAction,
}

/// The action taken on missing data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingAction {
    /// Roll back.
    Rollback,
    /// Block the line.
    Block,
    /// Warn.
    Warn,
    /// Treat as no data: the rule stays inconclusive.
    Ignore,
}

/// The least data a rule needs before it may judge. Below it, the rule is `inconclusive`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinData {
    /// For count kinds: events on both sides together.
    pub events: u64,
    /// For continuous kinds: evaluation intervals with data on each side.
    pub samples: usize,
    /// Time since the phase began.
    pub duration: DurationMs,
}

impl Default for MinData {
    fn default() -> Self {
        MinData {
            events: 20,
            // The continuous test handles an unknown variance itself (t mixture), so two
            // blocks are enough to start judging; a clear regression decides in minutes.
            samples: 2,
            duration: DurationMs::from_secs(60),
        }
    }
}

/// A checked, compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name across the set.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// What to do when it fires (an absolute http(s) URL), for alerts and the report page.
    pub runbook_url: Option<String>,
    /// Where it was defined.
    pub origin: Origin,
    /// Services whose deploys it judges; empty means every service.
    pub services: Vec<String>,
    /// The series it reads.
    pub selector: Selector,
    /// How it reads them.
    pub kind: MetricKind,
    /// The label that names a host (default `instance`).
    pub host_label: String,
    /// The counter sums amounts (cents, seconds), not events: judged as a continuous
    /// value per block rather than with count statistics.
    pub amounts: bool,
    /// What it compares with.
    pub baseline: Baseline,
    /// Which way is bad.
    pub direction: Direction,
    /// The smallest change that matters.
    pub min_effect: Effect,
    /// The false-alarm probability this rule may spend over a whole deploy.
    pub alpha: f64,
    /// Its share of the family's alpha in weighted Holm (default 1).
    pub weight: f64,
    /// What a failure asks for.
    pub action: Action,
    /// Evaluated and reported, never acted on.
    pub shadow: bool,
    /// The phases it judges.
    pub phases: Vec<Phase>,
    /// The least data needed to judge.
    pub min_data: MinData,
    /// What silence means; `None` means silence is just no data.
    pub on_missing: Option<OnMissing>,
    /// Which test.
    pub test: TestKind,
}

impl Rule {
    /// Whether this rule is judged with event-count statistics.
    pub fn counts_events(&self) -> bool {
        self.kind.is_counter() && !self.amounts
    }

    /// The selectors this rule reads (its numerator, denominator, `_sum`/`_count` or
    /// `_bucket` series): the series it matches are the ones matching any of them. The
    /// live store, the TSDB fill and `check --against` all ask this one place.
    pub fn selectors(&self) -> Vec<Selector> {
        let sel = &self.selector;
        match &self.kind {
            MetricKind::CounterRate | MetricKind::Gauge => vec![sel.clone()],
            MetricKind::Ratio { denominator } => vec![sel.clone(), denominator.clone()],
            MetricKind::Mean => vec![
                sel.with_name(&format!("{}_sum", sel.name)),
                sel.with_name(&format!("{}_count", sel.name)),
            ],
            MetricKind::HistogramQuantile { .. } => {
                vec![sel.with_name(&format!("{}_bucket", sel.name))]
            }
        }
    }

    /// Whether this rule judges deploys of `service` in `phase`.
    pub fn applies(&self, service: &str, phase: Phase) -> bool {
        self.phases.contains(&phase)
            && (self.services.is_empty() || self.services.iter().any(|s| s == service))
    }
}
