//! Counts against the concurrent control, each host against its own past.
//!
//! Each interval's counts are tested with the conditional binomial (Lindon & Malek,
//! NeurIPS 2022): given the interval's total, the canary's events are binomial with share
//! `θ e1 / (θ e1 + e0)`, which cancels whatever moves both sides at once (the daily curve,
//! a surge). Hosts differ, so before the deploy the canary already holds some share of the
//! events that is not its share of the exposure. Difference in differences: the null rate
//! ratio θ0 is the canary's own pre-deploy ratio to the control, measured over
//! [`COUNT_CALIBRATION`] before the deploy, moved to its confidence bound on the harmless
//! side. The bound costs half of the rule's alpha ([`BOUND_SHARE`]), the e-process gets the
//! rest, so P(false fail) ≤ α/2 (bound misses) + α/2 (Ville). This is the count analogue of
//! regression adjustment on pre-period values (CUPED, Deng et al., WSDM 2013; anytime-valid
//! form in Lindon, Ham, Tingley & Bojinov 2022, arXiv 2210.08589).
//!
//! The quasi-likelihood dispersion is the over-time variation of the canary/control split
//! around its fitted ratio (pre-deploy blocks and post-deploy intervals, each around their
//! own ratio), not the between-host variation, which the adjustment removes.
//!
//! Without a usable pre-period (too few blocks or events before the deploy, new hosts) the
//! test is the unadjusted one (θ0 = 1, between-host dispersion, whole alpha). The choice is
//! made at start from pre-deploy data only, so it cannot depend on the post data.

use super::evidence::{
    Evidence, dispersion, ev_json, events_to_decide, merge, more, round, verdict, waiting, z_for,
};
use super::read::{block_counts, count_agg, pearson, pearson_pairs};
use super::{COUNT_CALIBRATION, Ctx, MIN_CALIBRATION_BLOCKS, Outcome, Span};
use crate::rules::Direction;
use serde_json::{Value, json};

/// The share of the rule's alpha that pays for the pre-deploy ratio's confidence bound.
pub const BOUND_SHARE: f64 = 0.5;

/// The median of a half-normal of scale 1 (Φ⁻¹(3/4)). The DiD mixture's prior on the
/// regression has its median at `min_effect`: the rule's smallest effect worth a rollback
/// is the lower half of what it expects, since bad deploys mostly do more (a prior whose
/// scale is `min_effect` itself puts 68 % of its mass below it and pays about 1.5 nats
/// for a doubling at +50 %; errors x2 in the canary, with the hour's calibration: 90.7 %
/// → 92.6 %, median time 1.29x → 1.14x the oracle's, BENCHMARKS.md §3 round 4).
const HALF_NORMAL_MEDIAN: f64 = 0.674_489_750_196_081_7;

/// Events (both sides) the pre-deploy window must hold for the adjustment.
const MIN_PRE_EVENTS: f64 = 10.0;

/// The canary's pre-deploy ratio to the control and its bound.
#[derive(Clone, Debug)]
struct PreRatio {
    /// Point estimate of (canary rate) / (control rate) before the deploy.
    ratio: f64,
    /// The bound on the harmless side: the harm null.
    bound: f64,
    /// The bound on the other side, scaling the safe null.
    other_bound: f64,
    events: (f64, f64),
    blocks: usize,
    chi2: (f64, f64),
    /// Variance of the pre-deploy log ratio.
    var: f64,
}

/// Log e-value of the Gaussian difference in differences at information `info`.
///
/// X = I·(post − pre log ratio), signed so that harm is positive, is under the null
/// Brownian motion in information time whose drift is the pre-period estimate's error,
/// ε ~ N(0, v): X ~ N(0, I + I²v). The alternative adds a regression δ ≥ 0 with a
/// half-normal prior of scale τ (the smallest effect, as a log ratio): the ratio of the
/// two marginal likelihoods is
///
/// E = 2 · √((1+Iv)/(1+Iw)) · exp(½ X² (w−v) / ((1+Iv)(1+Iw))) · Φ(√q · I X / s²),
///
/// w = v + τ², s² = I + I²v, q = (1/τ² + I²/s²)⁻¹: twice the two-sided N(0, τ²) mixture
/// times the posterior probability that δ > 0. A Bayes factor with fixed priors on both
/// sides is a martingale under the null in information time, so sup E ≥ 1/α has
/// probability at most α (Ville). The one-sided prior puts no mass on improvements, which
/// the rule does not watch, and so gains up to ln 2 of evidence over the two-sided one.
fn did_log_e(x: f64, info: f64, v: f64, tau: f64) -> f64 {
    let w = v + tau * tau;
    let two_sided = 0.5 * ((1.0 + info * v) / (1.0 + info * w)).ln()
        + 0.5 * x * x * (w - v) / ((1.0 + info * v) * (1.0 + info * w));
    let s2 = info + info * info * v;
    let q = 1.0 / (1.0 / (tau * tau) + info * info / s2);
    let z = q.sqrt() * info * x / s2;
    std::f64::consts::LN_2 + two_sided + crate::stats::norm_cdf(z).ln()
}

/// Conditional binomial state.
#[derive(Clone, Debug)]
pub struct CountControl {
    pub(super) ev: Evidence,
    treatment: (f64, f64),
    control: (f64, f64),
    /// Between-host χ² of the control's hosts (the unadjusted test's dispersion).
    host_chi2: (f64, f64),
    /// Post-deploy intervals `[x1, x0, e1, e0]`, for the over-time dispersion.
    pairs: Vec<[f64; 4]>,
    integral: bool,
    intervals: usize,
    pre: Option<PreRatio>,
    /// Why there is no adjustment, when there is none.
    unadjusted_reason: Option<String>,
    pub(super) blocks_read: u64,
    /// Running maximum of the Gaussian difference-in-differences e-process.
    did_max_e: f64,
}

impl CountControl {
    /// Reads the pre-deploy window before `ctx.deploy_start` (never after it) and chooses
    /// the adjusted or the unadjusted test.
    pub(super) fn start(ctx: &Ctx<'_>) -> Option<CountControl> {
        let rule = ctx.rule;
        let from = ctx.deploy_start.sub(COUNT_CALIBRATION);
        let (blocks, blocks_read) = block_counts(ctx, from, ctx.deploy_start);
        let (x1, x0, e1, e0) = blocks.iter().fold((0.0, 0.0, 0.0, 0.0), |a, p| {
            (a.0 + p[0], a.1 + p[1], a.2 + p[2], a.3 + p[3])
        });
        let integral = blocks
            .iter()
            .all(|p| p[0].fract() == 0.0 && p[1].fract() == 0.0);
        let reason = if blocks.len() < MIN_CALIBRATION_BLOCKS {
            Some(format!(
                "only {} pre-deploy blocks with data on both sides (need {MIN_CALIBRATION_BLOCKS})",
                blocks.len()
            ))
        } else if x1 + x0 < MIN_PRE_EVENTS || x0 <= 0.0 {
            Some(format!(
                "only {} pre-deploy events (need {MIN_PRE_EVENTS}, some on the control)",
                round(x1 + x0)
            ))
        } else {
            None
        };
        let pre = if reason.is_none() {
            // Half-event continuity correction keeps a canary with no errors before the
            // deploy finite; the log ratio's variance is φ(1/x1 + 1/x0) (delta method).
            let chi2 = pearson_pairs(&blocks);
            let phi = dispersion(chi2, integral);
            let ratio = ((x1 + 0.5) / e1) / ((x0 + 0.5) / e0);
            let se = (phi * (1.0 / (x1 + 0.5) + 1.0 / (x0 + 0.5))).sqrt();
            let f = (z_for(ctx.alpha * BOUND_SHARE) * se).exp();
            let (bound, other_bound) = match rule.direction {
                Direction::Decrease => (ratio / f, ratio * f),
                _ => (ratio * f, ratio / f),
            };
            Some(PreRatio {
                ratio,
                bound,
                other_bound,
                events: (x1, x0),
                blocks: blocks.len(),
                chi2,
                var: se * se,
            })
        } else {
            None
        };
        let ev = match &pre {
            Some(p) => Evidence::with_nulls(rule, p.ratio, p.bound / p.ratio, {
                // The safe null is the smallest effect from the other bound.
                p.other_bound / p.ratio
            })?,
            None => Evidence::for_ratio(rule, 1.0)?,
        };
        Some(CountControl {
            ev,
            treatment: (0.0, 0.0),
            control: (0.0, 0.0),
            host_chi2: (0.0, 0.0),
            pairs: Vec::new(),
            integral: true,
            intervals: 0,
            pre,
            unadjusted_reason: reason,
            blocks_read,
            did_max_e: 1.0,
        })
    }

    /// The alpha the e-process is judged at: what the bound left.
    fn alpha_e(&self, alpha: f64) -> f64 {
        if self.pre.is_some() {
            alpha * (1.0 - BOUND_SHARE)
        } else {
            alpha
        }
    }

    /// The dispersion used: over time around the fitted ratio (adjusted), or between hosts.
    fn phi(&self) -> (f64, f64) {
        let hosts = dispersion(self.host_chi2, self.integral);
        match &self.pre {
            Some(p) => {
                let post = pearson_pairs(&self.pairs);
                let chi2 = (p.chi2.0 + post.0, p.chi2.1 + post.1);
                (dispersion(chi2, self.integral), hosts)
            }
            None => (hosts, hosts),
        }
    }

    pub(super) fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let span = Span::recent(ctx.from, ctx.to);
        let t = count_agg(ctx.store, ctx.rule, ctx.rs, ctx.treatment, span);
        let c = count_agg(ctx.store, ctx.rule, ctx.rs, ctx.control, span);
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
            let (chi, df) = pearson(c.hosts.values());
            self.host_chi2.0 += chi;
            self.host_chi2.1 += df;
            self.pairs
                .push([t.events, c.events, t.exposure, c.exposure]);
            self.integral &= t.integral && c.integral;
        }
        let (phi, phi_hosts) = self.phi();
        self.ev.set_scale(1.0 / phi);
        let alpha_e = self.alpha_e(ctx.alpha);
        let events = self.treatment.0 + self.control.0;
        let enough_events = events >= ctx.rule.min_data.events as f64;
        let enough_time = ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let enough = enough_events && enough_time;
        let rate = |(x, e): (f64, f64)| if e > 0.0 { x / e } else { 0.0 };
        let unadjusted = if rate(self.control) > 0.0 {
            rate(self.treatment) / rate(self.control)
        } else {
            f64::NAN
        };
        let offset = self.pre.as_ref().map_or(1.0, |p| p.ratio);
        let ratio = unadjusted / offset;
        let num = |x: f64| {
            if x.is_finite() {
                json!(round(x))
            } else {
                Value::Null
            }
        };
        let adjustment = match &self.pre {
            Some(p) => json!({
                "used": true,
                "pre_deploy_ratio": round(p.ratio),
                "null_ratio": round(p.bound),
                "pre_deploy_events": {"treatment": round(p.events.0), "control": round(p.events.1)},
                "pre_deploy_blocks": p.blocks,
                "bound_alpha": round(ctx.alpha * BOUND_SHARE),
            }),
            None => json!({
                "used": false,
                "reason": self.unadjusted_reason.clone().unwrap_or_default(),
            }),
        };
        // Gaussian difference in differences (`did_log_e`): the whole alpha.
        let mut did_e = 1.0;
        if let Some(p) = &self.pre
            && self.treatment.1 > 0.0
            && self.control.1 > 0.0
        {
            let (x1, e1) = self.treatment;
            let (x0, e0) = self.control;
            let post = ((x1 + 0.5) / e1).ln() - ((x0 + 0.5) / e0).ln();
            let info = 1.0 / (phi * (1.0 / (x1 + 0.5) + 1.0 / (x0 + 0.5)));
            let sign = if ctx.rule.direction == Direction::Decrease {
                -1.0
            } else {
                1.0
            };
            let x = info * (post - p.ratio.ln()) * sign;
            let tau = match ctx.rule.min_effect {
                crate::rules::Effect::Relative(r) => {
                    (1.0 + r.abs()).ln().max(0.05) / HALF_NORMAL_MEDIAN
                }
                _ => 0.4 / HALF_NORMAL_MEDIAN,
            };
            let log_e = did_log_e(x, info, p.var, tau);
            if log_e.is_finite() {
                did_e = log_e.exp();
                self.did_max_e = self.did_max_e.max(did_e);
            }
        }
        let mut evidence = json!({
            "test": "conditional_binomial_mixture",
            "treatment": {"events": round(self.treatment.0), "exposure": round(self.treatment.1), "rate": round(rate(self.treatment))},
            "baseline": {"events": round(self.control.0), "exposure": round(self.control.1), "rate": round(rate(self.control))},
            "effect": {"ratio": num(ratio), "unadjusted_ratio": num(unadjusted)},
            "adjustment": adjustment,
            "dispersion": round(phi),
            "between_host_dispersion": round(phi_hosts),
            "variance_removed": round((1.0 - phi / phi_hosts).max(0.0)),
            "intervals": self.intervals,
            "alpha": round(alpha_e),
        });
        merge(&mut evidence, ev_json(&self.ev));
        let mut v = verdict(&self.ev, alpha_e, enough);
        let did_p = 1.0 / self.did_max_e;
        if self.pre.is_some() {
            evidence["conditional_binomial"] = ev_json(&self.ev);
            evidence["test"] = json!("gaussian_difference_in_differences_mixture");
            evidence["e_value"] = json!(round(did_e));
            evidence["max_e_value"] = json!(round(self.did_max_e));
            evidence["p_value"] = json!(round(did_p));
            evidence["alpha"] = json!(round(ctx.alpha));
            if enough && did_p <= ctx.alpha {
                v = crate::engine::judge::Verdict::Fail;
            } else if v == crate::engine::judge::Verdict::Fail {
                v = crate::engine::judge::Verdict::Inconclusive;
            }
        }
        let wait = if !enough_events {
            format!(
                "about {} at current rates (min_data.events {})",
                more(ctx.rule.min_data.events as f64 - events, "event"),
                ctx.rule.min_data.events
            )
        } else if !enough_time {
            more(
                (ctx.rule.min_data.duration.0 - ctx.to.since(ctx.phase_start).0) as f64 / 1000.0,
                "second",
            )
        } else {
            match events_to_decide(&self.ev, alpha_e, events) {
                Some(n) => format!("about {} at current rates", more(n, "event")),
                None => "more events: the evidence does not lean either way yet".to_string(),
            }
        };
        waiting(&mut evidence, v, wait);
        Outcome {
            verdict: v,
            p_value: if !enough {
                1.0
            } else if self.pre.is_some() {
                did_p
            } else {
                self.ev.harm.p_value()
            },
            alpha: if self.pre.is_some() {
                ctx.alpha
            } else {
                alpha_e
            },
            enough_data: enough,
            harm_e_value: self.ev.harm.e_value(),
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::did_log_e;

    /// The closed form against the ratio of marginal likelihoods integrated numerically:
    /// ∫₀^∞ 2 φ(δ/τ)/τ · N(X; Iδ, s²) dδ / N(X; 0, s²).
    #[test]
    fn did_e_value_matches_numerical_integration() {
        let normal = |x: f64, m: f64, var: f64| {
            (-(x - m).powi(2) / (2.0 * var)).exp() / (2.0 * std::f64::consts::PI * var).sqrt()
        };
        for &(x, info, v, tau) in &[
            (3.0, 20.0, 0.01, 0.405),
            (-2.0, 50.0, 0.004, 0.405),
            (40.0, 200.0, 0.02, 0.693),
            (0.5, 5.0, 0.05, 0.2),
        ] {
            let s2 = info + info * info * v;
            let (steps, top) = (200_000, 12.0 * tau);
            let h = top / steps as f64;
            let mut num = 0.0;
            for k in 0..steps {
                let d = (k as f64 + 0.5) * h;
                num += 2.0 * normal(d, 0.0, tau * tau) * normal(x, info * d, s2) * h;
            }
            let expect = (num / normal(x, 0.0, s2)).ln();
            let got = did_log_e(x, info, v, tau);
            assert!(
                (got - expect).abs() < 1e-6,
                "{x} {info} {v} {tau}: {got} vs {expect}"
            );
        }
    }
}
