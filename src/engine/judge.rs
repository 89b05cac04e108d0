//! The judge: how one rule turns a deploy's series into a verdict (`pass`, `fail`,
//! `inconclusive`) with the numbers behind it.
//!
//! Every method keeps two anytime-valid e-processes ([`GridEProcess`]): `harm` tests "no
//! regression" against regressions of at least `min_effect`, and `safe` tests "a regression
//! of `min_effect`" against no regression. The rule fails when `harm` crosses its threshold
//! (after Holm across the deploy's rules, done by the caller) and passes when `safe`
//! crosses `1/alpha`; both may be checked at every evaluation without inflating error rates.
//!
//! - Counts against the control ([`CountControl`]): conditional binomial on each interval's
//!   counts (Lindon & Malek 2022), quasi-likelihood scaled by the between-host dispersion.
//! - Counts against the past ([`CountPast`]): a Poisson process whose null rate is the
//!   upper (or lower) confidence bound of the baseline rate; half of alpha pays for the bound.
//! - Continuous values ([`Continuous`]): per-block relative differences, Gaussian mixture
//!   e-process with the variance measured before the deploy (Johari et al. 2017).
//! - Drift ([`Drift`]): Mann-Kendall trend test with Theil-Sen slope on per-block values,
//!   with alpha spent over looks as α·6/(π²k²), so infinitely many looks cost at most α.

use super::store::{self, Series, SeriesId, Store};
use crate::model::{DurationMs, Timestamp};
use crate::rules::{Baseline, Direction, Effect, MetricKind, Rule};
use crate::stats::grid::{GridEProcess, log_grid};
use serde_json::{Value, json};
use std::collections::HashMap;

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

/// Which series a rule reads, found once per new series.
#[derive(Clone, Debug, Default)]
pub struct RuleSeries {
    /// The selector's series (counter, gauge, or numerator).
    pub main: Vec<SeriesId>,
    /// Ratio denominators, or `_count` series of a mean.
    pub denom: Vec<SeriesId>,
    /// Histogram buckets with their upper bound.
    pub buckets: Vec<(SeriesId, f64)>,
}

impl RuleSeries {
    /// Records `series` if `rule` reads it.
    pub fn offer(&mut self, rule: &Rule, id: SeriesId, series: &Series) {
        let name = &*series.name;
        let labels = &series.labels;
        match &rule.kind {
            MetricKind::CounterRate | MetricKind::Gauge => {
                if rule.selector.matches(name, labels) {
                    self.main.push(id);
                }
            }
            MetricKind::Ratio { denominator } => {
                if rule.selector.matches(name, labels) {
                    self.main.push(id);
                }
                if denominator.matches(name, labels) {
                    self.denom.push(id);
                }
            }
            MetricKind::Mean => {
                let base = &rule.selector.name;
                if let Some(suffix) = name.strip_prefix(base.as_str())
                    && rule.selector.matches(base, labels)
                {
                    match suffix {
                        "_sum" => self.main.push(id),
                        "_count" => self.denom.push(id),
                        _ => {}
                    }
                }
            }
            MetricKind::HistogramQuantile { .. } => {
                let base = &rule.selector.name;
                if name.strip_prefix(base.as_str()) == Some("_bucket") {
                    let without_le: Vec<(String, String)> =
                        labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                    if rule.selector.matches(base, &without_le)
                        && let Some(le) = labels
                            .iter()
                            .find(|(k, _)| k == "le")
                            .and_then(|(_, v)| parse_le(v))
                    {
                        self.buckets.push((id, le));
                    }
                }
            }
        }
    }

    /// Every series that shows whether the rule's data still arrives.
    pub fn liveness(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.main
            .iter()
            .copied()
            .chain(self.buckets.iter().map(|(id, _)| *id))
    }
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

/// Which series are on a side of the comparison.
pub trait SideFilter {
    /// True when the series is on this side.
    fn includes(&self, series: &Series) -> bool;
}

/// A span of time to read: (from, to] of the recent points, or of the per-minute history
/// (for seasonal baselines, already shifted back by the offset).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Start (exclusive).
    pub from: Timestamp,
    /// End (inclusive).
    pub to: Timestamp,
    /// Read the per-minute history instead of the recent points.
    pub history: bool,
}

impl Span {
    /// Recent points over (from, to].
    pub fn recent(from: Timestamp, to: Timestamp) -> Span {
        Span {
            from,
            to,
            history: false,
        }
    }

    fn points<'s>(
        &self,
        s: &'s Series,
    ) -> Option<&'s std::collections::VecDeque<(Timestamp, f64)>> {
        if self.history {
            s.history.as_ref()
        } else {
            Some(&s.points)
        }
    }
}

/// What a rule reads from one side over one span of time.
#[derive(Clone, Debug, Default)]
pub struct CountAgg {
    /// Events (numerator increase).
    pub events: f64,
    /// Exposure (denominator increase, or series-seconds).
    pub exposure: f64,
    /// The same per host, for the dispersion.
    pub hosts: HashMap<String, (f64, f64)>,
    /// Whether every event increase was a whole number (true counts).
    pub integral: bool,
}

/// Sums counter increases of `rs` on one side over (from, to].
pub fn count_agg(
    store: &Store,
    rule: &Rule,
    rs: &RuleSeries,
    side: &dyn SideFilter,
    span: Span,
) -> CountAgg {
    let Span { from, to, .. } = span;
    let mut agg = CountAgg {
        integral: true,
        ..CountAgg::default()
    };
    let ratio = matches!(rule.kind, MetricKind::Ratio { .. });
    for &id in &rs.main {
        let s = store.get(id);
        if !side.includes(s) {
            continue;
        }
        if let Some(inc) = span.points(s).and_then(|p| store::increase(p, from, to)) {
            agg.events += inc.value;
            agg.integral &= inc.value.fract() == 0.0;
            let h = agg
                .hosts
                .entry(s.label(&rule.host_label).to_string())
                .or_default();
            h.0 += inc.value;
            if !ratio {
                let secs = inc.span.as_secs_f64();
                agg.exposure += secs;
                h.1 += secs;
            }
        }
    }
    if ratio {
        for &id in &rs.denom {
            let s = store.get(id);
            if !side.includes(s) {
                continue;
            }
            if let Some(inc) = span.points(s).and_then(|p| store::increase(p, from, to)) {
                agg.exposure += inc.value;
                agg.hosts
                    .entry(s.label(&rule.host_label).to_string())
                    .or_default()
                    .1 += inc.value;
            }
        }
    }
    agg
}

/// Pearson χ² of per-host counts around their pooled rate, and its degrees of freedom.
/// Their ratio estimates the dispersion φ (1 for Poisson counts).
pub fn pearson(hosts: &HashMap<String, (f64, f64)>) -> (f64, f64) {
    let (x, e): (f64, f64) = hosts
        .values()
        .filter(|(_, e)| *e > 0.0)
        .fold((0.0, 0.0), |a, (x, e)| (a.0 + x, a.1 + e));
    if x <= 0.0 || e <= 0.0 {
        return (0.0, 0.0);
    }
    let rate = x / e;
    let mut chi2 = 0.0;
    let mut n: f64 = 0.0;
    for (xh, eh) in hosts.values() {
        if *eh > 0.0 {
            let expected = rate * eh;
            chi2 += (xh - expected).powi(2) / expected;
            n += 1.0;
        }
    }
    (chi2, (n - 1.0).max(0.0))
}

/// Extra-binomial variation of paired intervals (now, a season ago) around their common
/// rate ratio: Pearson χ² of each interval's split against the split the pooled ratio
/// predicts, and its degrees of freedom (intervals − 1). Measured around the fitted ratio,
/// so a real change does not pass for noise.
pub fn pearson_pairs(pairs: &[[f64; 4]]) -> (f64, f64) {
    let (x1, x0, e1, e0) = pairs.iter().fold((0.0, 0.0, 0.0, 0.0), |a, p| {
        (a.0 + p[0], a.1 + p[1], a.2 + p[2], a.3 + p[3])
    });
    if x1 <= 0.0 || x0 <= 0.0 || e1 <= 0.0 || e0 <= 0.0 {
        return (0.0, 0.0);
    }
    let theta = (x1 / e1) / (x0 / e0);
    let mut chi2 = 0.0;
    let mut n: f64 = 0.0;
    for &[a, b, ea, eb] in pairs {
        let total = a + b;
        if total <= 0.0 || ea <= 0.0 || eb <= 0.0 {
            continue;
        }
        let p = theta * ea / (theta * ea + eb);
        chi2 += (a - total * p).powi(2) / (total * p * (1.0 - p));
        n += 1.0;
    }
    (chi2, (n - 1.0).max(0.0))
}

/// A continuous value of one side over (from, to]: mean of gauges across hosts, pooled
/// mean of `_sum`/`_count`, or the quantile of pooled histogram buckets.
pub fn continuous_value(
    store: &Store,
    rule: &Rule,
    rs: &RuleSeries,
    side: &dyn SideFilter,
    span: Span,
) -> Option<f64> {
    let Span { from, to, .. } = span;
    match &rule.kind {
        MetricKind::Gauge => {
            let (mut sum, mut n) = (0.0, 0usize);
            for &id in &rs.main {
                let s = store.get(id);
                if side.includes(s)
                    && let Some(m) = span.points(s).and_then(|p| store::mean_in(p, from, to))
                {
                    sum += m;
                    n += 1;
                }
            }
            (n > 0).then(|| sum / n as f64)
        }
        MetricKind::Mean => {
            let total = |ids: &[SeriesId]| {
                ids.iter()
                    .filter(|id| side.includes(store.get(**id)))
                    .filter_map(|id| {
                        span.points(store.get(*id))
                            .and_then(|p| store::increase(p, from, to))
                    })
                    .map(|inc| inc.value)
                    .sum::<f64>()
            };
            let (sum, count) = (total(&rs.main), total(&rs.denom));
            (count > 0.0).then(|| sum / count)
        }
        MetricKind::HistogramQuantile { quantile } => {
            let mut by_le: Vec<(f64, f64)> = Vec::new();
            for &(id, le) in &rs.buckets {
                let s = store.get(id);
                if !side.includes(s) {
                    continue;
                }
                if let Some(inc) = span.points(s).and_then(|p| store::increase(p, from, to)) {
                    match by_le.iter_mut().find(|(l, _)| *l == le) {
                        Some(b) => b.1 += inc.value,
                        None => by_le.push((le, inc.value)),
                    }
                }
            }
            by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::stats::shape::histogram_quantile(*quantile, &by_le)
        }
        MetricKind::CounterRate | MetricKind::Ratio { .. } => {
            let agg = count_agg(store, rule, rs, side, span);
            (agg.exposure > 0.0).then(|| agg.events / agg.exposure)
        }
    }
}

/// Multiplicative bounds of a log-normal-ish interval: `exp(z·se)`.
fn z_for(alpha: f64) -> f64 {
    crate::stats::normal_quantile(1.0 - alpha).unwrap_or(3.0)
}

/// The alternatives for `harm` and `safe`, as rate ratios (counts) or relative shifts
/// (continuous), for a rule's direction and smallest effect. `either` tests increases;
/// rules that care about both directions are written twice.
fn ratio_grids(direction: Direction, effect: f64) -> (f64, Vec<f64>, f64, Vec<f64>) {
    let e = effect.abs().max(0.01);
    match direction {
        Direction::Increase | Direction::Either => {
            let bad = 1.0 + e;
            let top = (1.0 + 8.0 * e).max(2.0 * bad);
            (1.0, log_grid(bad, top, 6), bad, vec![1.0, 1.0 / (1.0 + e)])
        }
        Direction::Decrease => {
            let bad = (1.0 - e).max(0.01);
            (
                1.0,
                log_grid(bad, (bad / 8.0).max(0.001), 6),
                bad,
                vec![1.0, (1.0 + e).min(1.0 / bad)],
            )
        }
    }
}

/// The change from baseline `b` to treatment `t` in the rule's terms: relative
/// (`t/b − 1`, undefined at b = 0) for relative effects, the difference for absolute ones.
fn change(rule: &Rule, t: f64, b: f64) -> Option<f64> {
    match rule.min_effect {
        Effect::Relative(_) => (b != 0.0).then(|| t / b - 1.0),
        Effect::Absolute(_) => Some(t - b),
    }
}

fn relative_effect(rule: &Rule) -> f64 {
    match rule.min_effect {
        Effect::Relative(r) => r,
        Effect::Absolute(a) => a,
    }
}

/// The two e-processes every method carries.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// H0: no regression; alternatives: regressions of at least the smallest effect.
    pub harm: GridEProcess,
    /// H0: a regression of the smallest effect; alternatives: none.
    pub safe: GridEProcess,
}

impl Evidence {
    fn for_ratio(rule: &Rule, null_shift: f64) -> Option<Evidence> {
        let (h0, halts, s0, salts) = ratio_grids(rule.direction, relative_effect(rule));
        let scale = |v: Vec<f64>| v.into_iter().map(|x| x * null_shift).collect::<Vec<_>>();
        Some(Evidence {
            harm: GridEProcess::new(h0 * null_shift, &scale(halts))?,
            safe: GridEProcess::new(s0 * null_shift, &scale(salts))?,
        })
    }

    /// Rate-ratio e-processes whose nulls are moved off 1 (the harm null to the bound on
    /// the harmless side, the safe null's smallest effect scaled by the other bound); the
    /// alternatives keep their places. Alternatives that would fall on the null's side are
    /// dropped; `None` when none remain.
    fn with_nulls(rule: &Rule, harm_null: f64, safe_scale: f64) -> Option<Evidence> {
        let (_, halts, s0, salts) = ratio_grids(rule.direction, relative_effect(rule));
        Some(Evidence {
            harm: GridEProcess::new(harm_null, &halts)?,
            safe: GridEProcess::new(s0 * safe_scale, &salts)?,
        })
    }

    fn for_shift(rule: &Rule, null: f64) -> Option<Evidence> {
        let e = relative_effect(rule).abs().max(1e-9);
        let sign = if rule.direction == Direction::Decrease {
            -1.0
        } else {
            1.0
        };
        Some(Evidence {
            harm: GridEProcess::new(
                null,
                &[
                    null + sign * e,
                    null + sign * 2.0 * e,
                    null + sign * 4.0 * e,
                ],
            )?,
            safe: GridEProcess::new(null + sign * e, &[null, null - sign * e])?,
        })
    }

    fn set_scale(&mut self, scale: f64) {
        self.harm.set_scale(scale);
        self.safe.set_scale(scale);
    }
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

/// Conditional binomial state.
#[derive(Clone, Debug)]
pub struct CountControl {
    ev: Evidence,
    treatment: (f64, f64),
    control: (f64, f64),
    chi2: (f64, f64),
    integral: bool,
    intervals: usize,
}

/// Counts against the past.
#[derive(Clone, Debug)]
pub struct CountPast {
    ev: Option<Evidence>,
    baseline: (f64, f64),
    /// The rate the e-processes' parameters are relative to.
    baseline_rate: f64,
    baseline_rate_bound: f64,
    treatment: (f64, f64),
    chi2: (f64, f64),
    integral: bool,
    seasonal: bool,
    /// Seasonal only: each interval's (x now, x then, exposure now, exposure then).
    pairs: Vec<[f64; 4]>,
}

/// Per-block relative differences.
#[derive(Clone, Debug)]
pub struct Continuous {
    ev: Evidence,
    pre: Vec<f64>,
    pre_level: Option<f64>,
    null_shift: f64,
    pre_variance: Option<f64>,
    variance: Option<f64>,
    floor: f64,
    post: Vec<f64>,
    blocks_seen: i64,
    last_treatment: Option<f64>,
    last_baseline: Option<f64>,
}

/// How long before a deploy the canary hosts' offset from the control is measured.
pub const CONTROL_CALIBRATION: DurationMs = DurationMs::from_secs(600);

/// Blocks needed before the deploy to trust a measured variance and offset.
const MIN_CALIBRATION_BLOCKS: usize = 5;

/// Trend detection state.
#[derive(Clone, Debug)]
pub struct Drift {
    level: Option<f64>,
    values: Vec<f64>,
    looks: u32,
    last_p: f64,
    last_alpha: f64,
    slope: f64,
}

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
    pub fn start(ctx: &Ctx<'_>) -> Option<Method> {
        let rule = ctx.rule;
        if rule.test == crate::rules::TestKind::Drift {
            let level = match rule.baseline {
                Baseline::PreDeploy { window } => mean(&block_values(
                    ctx,
                    ctx.treatment,
                    ctx.deploy_start.sub(window),
                    ctx.deploy_start,
                )),
                _ => None,
            };
            return Some(Method::Drift(Drift {
                level,
                values: Vec::new(),
                looks: 0,
                last_p: 1.0,
                last_alpha: ctx.alpha,
                slope: 0.0,
            }));
        }
        if rule.counts_events() {
            return match rule.baseline {
                Baseline::Control => Some(Method::CountControl(CountControl {
                    ev: Evidence::for_ratio(rule, 1.0)?,
                    treatment: (0.0, 0.0),
                    control: (0.0, 0.0),
                    chi2: (0.0, 0.0),
                    integral: true,
                    intervals: 0,
                })),
                Baseline::PreDeploy { window } => {
                    let from = ctx.deploy_start.sub(window);
                    let agg = count_agg(
                        ctx.store,
                        rule,
                        ctx.rs,
                        ctx.treatment,
                        Span::recent(from, ctx.deploy_start),
                    );
                    // Time dispersion of the baseline: per-interval counts of the same side.
                    let mut chi2 = (0.0, 0.0);
                    let step = DurationMs(ctx.block.0.max(1));
                    let mut t = from;
                    let mut per: HashMap<String, (f64, f64)> = HashMap::new();
                    while t < ctx.deploy_start {
                        let a = count_agg(
                            ctx.store,
                            rule,
                            ctx.rs,
                            ctx.treatment,
                            Span::recent(t, t.add(step)),
                        );
                        per.insert(t.0.to_string(), (a.events, a.exposure));
                        t = t.add(step);
                    }
                    let (c, d) = pearson(&per);
                    chi2.0 += c;
                    chi2.1 += d;
                    let mut past = CountPast {
                        ev: None,
                        baseline: (agg.events, agg.exposure),
                        baseline_rate: 0.0,
                        baseline_rate_bound: 0.0,
                        treatment: (0.0, 0.0),
                        chi2,
                        integral: agg.integral,
                        seasonal: false,
                        pairs: Vec::new(),
                    };
                    past.fix_bound(rule, ctx.alpha);
                    Some(Method::CountPast(past))
                }
                Baseline::Seasonal { .. } => Some(Method::CountPast(CountPast {
                    ev: Evidence::for_ratio(rule, 1.0),
                    baseline: (0.0, 0.0),
                    baseline_rate: 0.0,
                    baseline_rate_bound: 0.0,
                    treatment: (0.0, 0.0),
                    chi2: (0.0, 0.0),
                    integral: true,
                    seasonal: true,
                    pairs: Vec::new(),
                })),
            };
        }
        let (pre, pre_level) = match rule.baseline {
            Baseline::Control => (
                block_diffs(
                    ctx,
                    ctx.deploy_start.sub(CONTROL_CALIBRATION),
                    ctx.deploy_start,
                ),
                None,
            ),
            Baseline::PreDeploy { window } => {
                let vals = block_values(
                    ctx,
                    ctx.treatment,
                    ctx.deploy_start.sub(window),
                    ctx.deploy_start,
                );
                match mean(&vals) {
                    Some(m) => {
                        let d: Vec<f64> = vals.iter().filter_map(|v| change(rule, *v, m)).collect();
                        (d, Some(m))
                    }
                    None => (Vec::new(), None),
                }
            }
            Baseline::Seasonal { .. } => (Vec::new(), None),
        };
        // The variance of a block's relative difference, measured before the deploy, and
        // the null: "no change from before". For the control baseline that is the canary
        // hosts' own offset from the rest (they may differ before the deploy already); both
        // are moved by a confidence bound on the pre-deploy mean, paid with half of alpha.
        let floor = (relative_effect(rule).abs() / 4.0).powi(2);
        let calibrated = pre.len() >= MIN_CALIBRATION_BLOCKS;
        let (pre_variance, null_shift) = if calibrated {
            let v = variance(&pre).unwrap_or(floor).max(floor);
            let offset = match rule.baseline {
                Baseline::Control => mean(&pre).unwrap_or(0.0),
                _ => 0.0,
            };
            let bound = z_for(ctx.alpha / 2.0) * (v / pre.len() as f64).sqrt();
            let shift = if rule.direction == Direction::Decrease {
                offset - bound
            } else {
                offset + bound
            };
            (Some(v), shift)
        } else {
            (None, 0.0)
        };
        Some(Method::Continuous(Continuous {
            ev: Evidence::for_shift(rule, null_shift)?,
            null_shift,
            pre_variance,
            variance: pre_variance,
            floor,
            post: Vec::new(),
            blocks_seen: 0,
            last_treatment: None,
            last_baseline: None,
            pre_level,
            pre,
        }))
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
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn variance(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    (v.len() >= 2).then(|| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64)
}

/// Values of one side in consecutive blocks over [from, to).
fn block_values(ctx: &Ctx<'_>, side: &dyn SideFilter, from: Timestamp, to: Timestamp) -> Vec<f64> {
    let mut out = Vec::new();
    let mut t = from;
    while t.add(ctx.block) <= to {
        if let Some(v) = continuous_value(
            ctx.store,
            ctx.rule,
            ctx.rs,
            side,
            Span::recent(t, t.add(ctx.block)),
        ) {
            out.push(v);
        }
        t = t.add(ctx.block);
    }
    out
}

/// Relative differences treatment/control − 1 in consecutive blocks over [from, to).
fn block_diffs(ctx: &Ctx<'_>, from: Timestamp, to: Timestamp) -> Vec<f64> {
    let mut out = Vec::new();
    let mut t = from;
    while t.add(ctx.block) <= to {
        let a = continuous_value(
            ctx.store,
            ctx.rule,
            ctx.rs,
            ctx.treatment,
            Span::recent(t, t.add(ctx.block)),
        );
        let b = continuous_value(
            ctx.store,
            ctx.rule,
            ctx.rs,
            ctx.control,
            Span::recent(t, t.add(ctx.block)),
        );
        if let Some(d) = a.zip(b).and_then(|(a, b)| change(ctx.rule, a, b)) {
            out.push(d);
        }
        t = t.add(ctx.block);
    }
    out
}

fn verdict(ev: &Evidence, alpha: f64, enough: bool) -> Verdict {
    if !enough {
        Verdict::Inconclusive
    } else if ev.harm.p_value() <= alpha {
        Verdict::Fail
    } else if ev.safe.p_value() <= alpha {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    }
}

fn dispersion(chi2: (f64, f64), integral: bool) -> f64 {
    let phi = if chi2.1 > 0.0 { chi2.0 / chi2.1 } else { 1.0 };
    if integral {
        phi.max(1.0)
    } else {
        phi.max(1e-9)
    }
}

fn ev_json(ev: &Evidence) -> Value {
    json!({
        "e_value": round(ev.harm.e_value()),
        "max_e_value": round(ev.harm.max_e_value()),
        "p_value": round(ev.harm.p_value()),
        "healthy_e_value": round(ev.safe.e_value()),
    })
}

/// Rounds to 6 significant digits for readable evidence.
pub fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return if x.is_finite() {
            0.0
        } else {
            f64::MAX.copysign(x)
        };
    }
    let digits = 6 - x.abs().log10().ceil() as i32;
    let f = 10f64.powi(digits.clamp(-300, 300));
    (x * f).round() / f
}

fn merge(a: &mut Value, b: Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        a.extend(b);
    }
}

impl CountControl {
    fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let t = count_agg(
            ctx.store,
            ctx.rule,
            ctx.rs,
            ctx.treatment,
            Span::recent(ctx.from, ctx.to),
        );
        let c = count_agg(
            ctx.store,
            ctx.rule,
            ctx.rs,
            ctx.control,
            Span::recent(ctx.from, ctx.to),
        );
        if t.exposure > 0.0 && c.exposure > 0.0 {
            self.intervals += 1;
            self.ev
                .harm
                .update_conditional(t.events, c.events, t.exposure, c.exposure);
            self.ev
                .safe
                .update_conditional(t.events, c.events, t.exposure, c.exposure);
            self.treatment.0 += t.events;
            self.treatment.1 += t.exposure;
            self.control.0 += c.events;
            self.control.1 += c.exposure;
            let (chi, df) = pearson(&c.hosts);
            self.chi2.0 += chi;
            self.chi2.1 += df;
            self.integral &= t.integral && c.integral;
        }
        let phi = dispersion(self.chi2, self.integral);
        self.ev.set_scale(1.0 / phi);
        let events = self.treatment.0 + self.control.0;
        let enough = events >= ctx.rule.min_data.events as f64
            && ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let rate = |(x, e): (f64, f64)| if e > 0.0 { x / e } else { 0.0 };
        let ratio = if rate(self.control) > 0.0 {
            rate(self.treatment) / rate(self.control)
        } else {
            f64::NAN
        };
        let mut evidence = json!({
            "test": "conditional_binomial_mixture",
            "treatment": {"events": round(self.treatment.0), "exposure": round(self.treatment.1), "rate": round(rate(self.treatment))},
            "baseline": {"events": round(self.control.0), "exposure": round(self.control.1), "rate": round(rate(self.control))},
            "effect": {"ratio": if ratio.is_finite() { json!(round(ratio)) } else { Value::Null }},
            "dispersion": round(phi),
            "intervals": self.intervals,
        });
        merge(&mut evidence, ev_json(&self.ev));
        Outcome {
            verdict: verdict(&self.ev, ctx.alpha, enough),
            p_value: if enough { self.ev.harm.p_value() } else { 1.0 },
            alpha: ctx.alpha,
            enough_data: enough,
            harm_e_value: self.ev.harm.e_value(),
            evidence,
        }
    }
}

impl CountPast {
    /// Sets the null rate to the baseline rate's confidence bound on the harmless side,
    /// spending half of alpha on the bound (so the e-process gets the other half).
    fn fix_bound(&mut self, rule: &Rule, alpha: f64) {
        let (x0, e0) = self.baseline;
        if e0 <= 0.0 {
            return;
        }
        let phi = dispersion(self.chi2, self.integral);
        let z = z_for(alpha / 2.0);
        if x0 > 0.0 {
            // Rates are expressed relative to the baseline's point estimate. The harm
            // null is the bound on the harmless side (the true baseline is no further
            // than it with probability 1 - alpha/2); the alternatives stay at the smallest
            // effect and beyond, relative to the estimate, so the bound's width does not
            // add to the effect that must be shown. The safe null takes the other bound.
            self.baseline_rate = x0 / e0;
            let f = (z * (phi / x0).sqrt()).exp();
            let (harm_null, safe_scale) = match rule.direction {
                Direction::Decrease => (1.0 / f, f),
                _ => (f, 1.0 / f),
            };
            self.baseline_rate_bound = self.baseline_rate * harm_null;
            self.ev = Evidence::with_nulls(rule, harm_null, safe_scale);
        } else if rule.direction != Direction::Decrease {
            // Zero events: the exact Poisson upper bound is -ln(alpha/2) events.
            self.baseline_rate = -(alpha / 2.0).ln() * phi / e0;
            self.baseline_rate_bound = self.baseline_rate;
            self.ev = Evidence::for_ratio(rule, 1.0);
        }
    }

    fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let t = count_agg(
            ctx.store,
            ctx.rule,
            ctx.rs,
            ctx.treatment,
            Span::recent(ctx.from, ctx.to),
        );
        let alpha_e = if self.seasonal {
            ctx.alpha
        } else {
            ctx.alpha / 2.0
        };
        if self.seasonal {
            if let Baseline::Seasonal { offset } = ctx.rule.baseline {
                let then = Span {
                    from: ctx.from.sub(offset),
                    to: ctx.to.sub(offset),
                    history: true,
                };
                let a = count_agg(ctx.store, ctx.rule, ctx.rs, ctx.treatment, then);
                let b = (a.exposure > 0.0).then_some((a.events, a.exposure));
                if let (Some(ev), Some((bx, be))) = (self.ev.as_mut(), b)
                    && t.exposure > 0.0
                    && be > 0.0
                {
                    ev.harm.update_conditional(t.events, bx, t.exposure, be);
                    ev.safe.update_conditional(t.events, bx, t.exposure, be);
                    self.baseline.0 += bx;
                    self.baseline.1 += be;
                    self.treatment.0 += t.events;
                    self.treatment.1 += t.exposure;
                    self.pairs.push([t.events, bx, t.exposure, be]);
                    self.chi2 = pearson_pairs(&self.pairs);
                    self.integral &= t.integral;
                }
            }
        } else if let Some(ev) = self.ev.as_mut()
            && t.exposure > 0.0
        {
            let expected = self.baseline_rate * t.exposure;
            let phi = dispersion(self.chi2, self.integral);
            ev.harm.update_poisson(t.events, expected);
            ev.safe.update_poisson(t.events, expected);
            ev.set_scale(1.0 / phi);
            self.treatment.0 += t.events;
            self.treatment.1 += t.exposure;
        }
        if self.seasonal
            && let Some(ev) = self.ev.as_mut()
        {
            ev.set_scale(1.0 / dispersion(self.chi2, self.integral));
        }
        let events = self.treatment.0 + self.baseline.0;
        let enough = self.ev.is_some()
            && events >= ctx.rule.min_data.events as f64
            && ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let rate = |(x, e): (f64, f64)| if e > 0.0 { x / e } else { 0.0 };
        let base_rate = rate(self.baseline);
        let ratio = if base_rate > 0.0 {
            rate(self.treatment) / base_rate
        } else {
            f64::NAN
        };
        let mut evidence = json!({
            "test": if self.seasonal { "conditional_binomial_mixture" } else { "poisson_mixture_vs_baseline_bound" },
            "treatment": {"events": round(self.treatment.0), "exposure": round(self.treatment.1), "rate": round(rate(self.treatment))},
            "baseline": {"events": round(self.baseline.0), "exposure": round(self.baseline.1), "rate": round(base_rate)},
            "effect": {"ratio": if ratio.is_finite() { json!(round(ratio)) } else { Value::Null }},
            "dispersion": round(dispersion(self.chi2, self.integral)),
        });
        if !self.seasonal {
            merge(
                &mut evidence,
                json!({"baseline_rate_bound": round(self.baseline_rate_bound)}),
            );
        }
        let harm_e_value = self.ev.as_ref().map_or(1.0, |ev| ev.harm.e_value());
        let (verdict_now, p) = match &self.ev {
            Some(ev) => {
                merge(&mut evidence, ev_json(ev));
                (
                    verdict(ev, alpha_e, enough),
                    if enough { ev.harm.p_value() } else { 1.0 },
                )
            }
            None => (Verdict::Inconclusive, 1.0),
        };
        Outcome {
            verdict: verdict_now,
            p_value: p,
            alpha: alpha_e,
            enough_data: enough,
            harm_e_value,
            evidence,
        }
    }
}

impl Continuous {
    fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        // Blocks are aligned to the phase start; each completed block is one observation.
        let blocks_done = ctx.to.since(ctx.phase_start).0 / ctx.block.0.max(1);
        while self.blocks_seen < blocks_done {
            self.blocks_seen += 1;
            let end = ctx
                .phase_start
                .add(DurationMs(self.blocks_seen * ctx.block.0));
            let start = end.sub(ctx.block);
            let t = continuous_value(
                ctx.store,
                ctx.rule,
                ctx.rs,
                ctx.treatment,
                Span::recent(start, end),
            );
            let b = match ctx.rule.baseline {
                Baseline::Control => continuous_value(
                    ctx.store,
                    ctx.rule,
                    ctx.rs,
                    ctx.control,
                    Span::recent(start, end),
                ),
                Baseline::PreDeploy { .. } => self.pre_level,
                Baseline::Seasonal { offset } => {
                    let then = Span {
                        from: start.sub(offset),
                        to: end.sub(offset),
                        history: true,
                    };
                    continuous_value(ctx.store, ctx.rule, ctx.rs, ctx.treatment, then)
                }
            };
            self.last_treatment = t;
            self.last_baseline = b;
            if let Some(d) = t.zip(b).and_then(|(t, b)| change(ctx.rule, t, b)) {
                self.post.push(d);
                self.ev.harm.update_gaussian(d, 1.0);
                self.ev.safe.update_gaussian(d, 1.0);
            }
        }
        // Without a pre-deploy measurement the variance is the deploy's own (plug-in),
        // never below a floor that keeps one quiet stretch from deciding.
        if self.pre_variance.is_none() && self.post.len() >= MIN_CALIBRATION_BLOCKS {
            self.variance = variance(&self.post).map(|v| v.max(self.floor));
        }
        if let Some(v) = self.variance {
            self.ev.set_scale(1.0 / v);
        }
        let alpha_e = if self.pre_variance.is_some() {
            ctx.alpha / 2.0
        } else {
            ctx.alpha
        };
        let enough = self.variance.is_some()
            && self.post.len() >= ctx.rule.min_data.samples
            && ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let offset = match ctx.rule.baseline {
            Baseline::Control => mean(&self.pre).unwrap_or(0.0),
            _ => 0.0,
        };
        let mut evidence = json!({
            "test": "gaussian_mixture_relative_shift",
            "treatment": {"value": self.last_treatment.map(round), "blocks": self.post.len()},
            "baseline": {"value": self.last_baseline.map(round), "pre_deploy_blocks": self.pre.len()},
            "effect": {"relative": mean(&self.post).map(|m| round(m - offset))},
            "null": round(self.null_shift),
            "variance": self.variance.map(round),
        });
        merge(&mut evidence, ev_json(&self.ev));
        Outcome {
            verdict: verdict(&self.ev, alpha_e, enough),
            p_value: if enough { self.ev.harm.p_value() } else { 1.0 },
            alpha: alpha_e,
            enough_data: enough,
            harm_e_value: self.ev.harm.e_value(),
            evidence,
        }
    }
}

impl Drift {
    fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let elapsed = ctx.to.since(ctx.phase_start).0;
        let blocks_done = (elapsed / ctx.block.0.max(1)) as usize;
        let mut looked = false;
        while self.values.len() < blocks_done {
            let end = ctx
                .phase_start
                .add(DurationMs(((self.values.len() + 1) as i64) * ctx.block.0));
            match continuous_value(
                ctx.store,
                ctx.rule,
                ctx.rs,
                ctx.treatment,
                Span::recent(end.sub(ctx.block), end),
            ) {
                Some(v) => self.values.push(v),
                None => break,
            }
            looked = true;
        }
        let n = self.values.len();
        let enough = n >= ctx.rule.min_data.samples.max(4)
            && ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let mut relative = 0.0;
        if looked && enough {
            self.looks += 1;
            let k = self.looks as f64;
            self.last_alpha = ctx.alpha * 6.0 / (std::f64::consts::PI.powi(2) * k * k);
            let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
            if let (Ok(mk), Ok(ts)) = (
                crate::stats::drift::mann_kendall(&self.values),
                crate::stats::drift::theil_sen(&xs, &self.values),
            ) {
                self.slope = ts.slope;
                self.last_p = match ctx.rule.direction {
                    Direction::Decrease => mk.p_decreasing,
                    Direction::Increase => mk.p_increasing,
                    Direction::Either => mk.p_two_sided,
                };
            }
        }
        let level = self
            .level
            .or_else(|| self.values.first().copied())
            .unwrap_or(0.0);
        if level != 0.0 {
            relative = self.slope * n as f64 / level;
        }
        let big_enough = match ctx.rule.direction {
            Direction::Decrease => relative <= -relative_effect(ctx.rule).abs(),
            _ => relative >= relative_effect(ctx.rule).abs(),
        };
        let fail = enough && self.last_p <= self.last_alpha && big_enough;
        let evidence = json!({
            "test": "mann_kendall_theil_sen",
            "treatment": {"blocks": n, "last_value": self.values.last().copied().map(round)},
            "baseline": {"level": round(level)},
            "effect": {"relative": round(relative), "slope_per_block": round(self.slope)},
            "p_value": round(self.last_p),
            "look_alpha": round(self.last_alpha),
        });
        Outcome {
            verdict: if fail {
                Verdict::Fail
            } else {
                Verdict::Inconclusive
            },
            // Expressed against the rule's alpha so Holm can compare it with the others.
            p_value: if enough && big_enough {
                (self.last_p * ctx.alpha / self.last_alpha).min(1.0)
            } else {
                1.0
            },
            alpha: ctx.alpha,
            enough_data: enough,
            harm_e_value: 1.0,
            evidence,
        }
    }
}
