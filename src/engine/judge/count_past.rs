//! Counts against the past: a fixed pre-deploy rate ([`Baseline::PreDeploy`]) or the same
//! interval a season ago ([`Baseline::Seasonal`]).
//!
//! Pre-deploy: a Poisson process whose null rate is the pre-deploy rate's confidence bound
//! on the harmless side; half of the rule's alpha pays for the bound, half for the
//! e-process (Lindon & Malek 2022 for the Poisson mixture). The bound's width follows the
//! baseline's events and its over-time dispersion, so a short or thin baseline widens it
//! instead of raising false alarms. A baseline the store has not seen enough of (the agent
//! started less than a window before the deploy) makes the rule inconclusive, and says so.
//!
//! Seasonal: the conditional binomial of each whole minute against the same minute a season
//! ago, quasi-likelihood scaled by the pairs' extra-binomial variation. A season ago is read
//! from the store's per-minute history (the last value of each minute), so both sides are
//! read on the minute grid: a tick between minute boundaries waits for the minute to close
//! rather than comparing ten seconds now with whatever minute boundary fell in the span
//! then (which wasted five of every six ticks' data at a 10-s evaluation interval).

use super::evidence::{
    Evidence, dispersion, ev_json, events_to_decide, merge, more, round, verdict, waiting, z_for,
};
use super::read::{block_side_counts, count_agg, coverage, pearson, pearson_pairs};
use super::{Ctx, Outcome, Span, Verdict};
use crate::model::{DurationMs, Timestamp};
use crate::rules::{Baseline, Direction, Rule};
use serde_json::{Value, json};

/// The seasonal history's grain: one point per minute.
const MINUTE: DurationMs = DurationMs::from_secs(60);

fn floor_minute(t: Timestamp) -> Timestamp {
    Timestamp(t.0 - t.0.rem_euclid(MINUTE.0))
}

fn ceil_minute(t: Timestamp) -> Timestamp {
    let f = floor_minute(t);
    if f == t {
        f
    } else {
        Timestamp(f.0.saturating_add(MINUTE.0))
    }
}

/// The share of a pre-deploy window the store must hold before the baseline is trusted.
const MIN_COVERAGE: f64 = 0.9;

/// Counts against the past.
#[derive(Clone, Debug)]
pub struct CountPast {
    pub(super) ev: Option<Evidence>,
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
    /// Seasonal only: the minute boundary up to which both sides have been read.
    read_to: Option<Timestamp>,
    /// Why the baseline cannot be used (pre-deploy only), with its evidence.
    unusable: Option<(String, Value)>,
    pub(super) blocks_read: u64,
}

impl CountPast {
    /// Against the pre-deploy window `(deploy_start − window, deploy_start]` of the deploy's
    /// own side. Reads only data before the deploy, so it may be called at any time after.
    pub(super) fn start_pre(ctx: &Ctx<'_>, window: DurationMs) -> CountPast {
        let rule = ctx.rule;
        let from = ctx.deploy_start.sub(window);
        let agg = count_agg(
            ctx.store,
            rule,
            ctx.rs,
            ctx.treatment,
            Span::recent(from, ctx.deploy_start),
        );
        // Time dispersion of the baseline: per-block counts of the same side.
        let (per_block, blocks_read) =
            block_side_counts(ctx, ctx.treatment, from, ctx.deploy_start);
        let chi2 = pearson(per_block.iter());
        let seen = coverage(ctx, ctx.treatment, window);
        let minutes = |d: DurationMs| round(d.as_secs_f64() / 60.0);
        let unusable = if (seen.0 as f64) < MIN_COVERAGE * window.0 as f64 {
            Some((
                format!(
                    "a pre-deploy baseline: only {} of {} minutes seen",
                    minutes(seen),
                    minutes(window)
                ),
                json!({"coverage_seconds": round(seen.as_secs_f64()), "window_seconds": round(window.as_secs_f64()),
                       "reason": "the store holds less of the pre-deploy window than the rule reads (the agent started recently, or the series is new)"}),
            ))
        } else if agg.exposure <= 0.0 {
            Some((
                "a pre-deploy baseline with exposure: none in the window".to_string(),
                json!({"coverage_seconds": round(seen.as_secs_f64()), "window_seconds": round(window.as_secs_f64()),
                       "reason": "no exposure on the deploy's side before the deploy"}),
            ))
        } else {
            None
        };
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
            read_to: None,
            unusable,
            blocks_read,
        };
        if past.unusable.is_none() {
            past.fix_bound(rule, ctx.alpha);
        }
        past
    }

    /// Against the same interval a season ago.
    pub(super) fn start_seasonal(ctx: &Ctx<'_>) -> CountPast {
        CountPast {
            ev: Evidence::for_ratio(ctx.rule, 1.0),
            baseline: (0.0, 0.0),
            baseline_rate: 0.0,
            baseline_rate_bound: 0.0,
            treatment: (0.0, 0.0),
            chi2: (0.0, 0.0),
            integral: true,
            seasonal: true,
            pairs: Vec::new(),
            read_to: None,
            unusable: None,
            blocks_read: 0,
        }
    }

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
            self.ev = Evidence::with_nulls(rule, 1.0, harm_null, safe_scale);
        } else if rule.direction != Direction::Decrease {
            // Zero events: the exact Poisson upper bound is -ln(alpha/2) events.
            self.baseline_rate = -(alpha / 2.0).ln() * phi / e0;
            self.baseline_rate_bound = self.baseline_rate;
            self.ev = Evidence::for_ratio(rule, 1.0);
        }
    }

    pub(super) fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let alpha_e = if self.seasonal {
            ctx.alpha
        } else {
            ctx.alpha / 2.0
        };
        if self.seasonal {
            if let Baseline::Seasonal { offset } = ctx.rule.baseline {
                // Whole minutes since the phase began: (read_to, end] now, and the history
                // keys one minute earlier a season ago (a key holds its minute's last value,
                // the value at the minute's end).
                let read_to = *self.read_to.get_or_insert(ceil_minute(ctx.phase_start));
                let end = floor_minute(ctx.to);
                if end > read_to {
                    self.read_to = Some(end);
                    let now = count_agg(
                        ctx.store,
                        ctx.rule,
                        ctx.rs,
                        ctx.treatment,
                        Span::recent(read_to, end),
                    );
                    let shift = offset.0.saturating_add(MINUTE.0);
                    let then = Span {
                        from: read_to.sub(DurationMs(shift)),
                        to: end.sub(DurationMs(shift)),
                        history: true,
                    };
                    let a = count_agg(ctx.store, ctx.rule, ctx.rs, ctx.treatment, then);
                    let b = (a.exposure > 0.0).then_some((a.events, a.exposure));
                    if let (Some(ev), Some((bx, be))) = (self.ev.as_mut(), b)
                        && now.exposure > 0.0
                    {
                        ev.harm.update_conditional(now.events, bx, now.exposure, be);
                        ev.safe.update_conditional(now.events, bx, now.exposure, be);
                        self.baseline.0 += bx;
                        self.baseline.1 += be;
                        self.treatment.0 += now.events;
                        self.treatment.1 += now.exposure;
                        self.pairs.push([now.events, bx, now.exposure, be]);
                        self.chi2 = pearson_pairs(&self.pairs);
                        self.integral &= now.integral;
                    }
                }
            }
        } else if let Some(ev) = self.ev.as_mut() {
            let t = count_agg(
                ctx.store,
                ctx.rule,
                ctx.rs,
                ctx.treatment,
                Span::recent(ctx.from, ctx.to),
            );
            if t.exposure > 0.0 {
                let expected = self.baseline_rate * t.exposure;
                let phi = dispersion(self.chi2, self.integral);
                ev.harm.update_poisson(t.events, expected);
                ev.safe.update_poisson(t.events, expected);
                ev.set_scale(1.0 / phi);
                self.treatment.0 += t.events;
                self.treatment.1 += t.exposure;
            }
        }
        if self.seasonal
            && let Some(ev) = self.ev.as_mut()
        {
            ev.set_scale(1.0 / dispersion(self.chi2, self.integral));
        }
        let events = self.treatment.0 + self.baseline.0;
        let enough = self.ev.is_some()
            && self.unusable.is_none()
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
        let wait = if let Some((why, ev)) = &self.unusable {
            if let Some(b) = evidence.get_mut("baseline") {
                merge(b, ev.clone());
            }
            why.clone()
        } else if self.ev.is_none() {
            "a baseline with events: none before the deploy, so no lower bound exists".to_string()
        } else if events < ctx.rule.min_data.events as f64 {
            format!(
                "about {} at current rates (min_data.events {})",
                more(ctx.rule.min_data.events as f64 - events, "event"),
                ctx.rule.min_data.events
            )
        } else if ctx.to.since(ctx.phase_start) < ctx.rule.min_data.duration {
            more(
                (ctx.rule.min_data.duration.0 - ctx.to.since(ctx.phase_start).0) as f64 / 1000.0,
                "second",
            )
        } else {
            match self
                .ev
                .as_ref()
                .and_then(|ev| events_to_decide(ev, alpha_e, self.treatment.0))
            {
                Some(n) => format!("about {} at current rates", more(n, "event")),
                None => "more events: the evidence does not lean either way yet".to_string(),
            }
        };
        waiting(&mut evidence, verdict_now, wait);
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
