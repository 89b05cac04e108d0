//! The shared e-process plumbing: the two mixtures every method carries (`harm`, `safe`),
//! their grids of alternatives, the verdict they give, and the numbers for the evidence.
//!
//! One invariant holds for every grid built here: the `harm` alternatives lie strictly
//! beyond the `harm` null in the direction the rule watches, and the `safe` alternatives
//! strictly on the harmless side of the `safe` null. A null moved by a confidence bound can
//! pass some of the rule's usual alternatives; those are replaced by alternatives placed
//! beyond the moved null, so a rule never gathers evidence for a change it does not watch.

use super::Verdict;
use crate::rules::{Direction, Effect, Rule};
use crate::stats::grid::{GridEProcess, log_grid};
use serde_json::{Value, json};

/// Multiplicative bounds of a log-normal-ish interval: `exp(z·se)`.
pub(super) fn z_for(alpha: f64) -> f64 {
    crate::stats::normal_quantile(1.0 - alpha).unwrap_or(3.0)
}

/// The alternatives for `harm` and `safe`, as rate ratios (counts) or relative shifts
/// (continuous), for a rule's direction and smallest effect. `either` tests increases;
/// rules that care about both directions are written twice.
pub(super) fn ratio_grids(direction: Direction, effect: f64) -> (f64, Vec<f64>, f64, Vec<f64>) {
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
pub(super) fn change(rule: &Rule, t: f64, b: f64) -> Option<f64> {
    match rule.min_effect {
        Effect::Relative(_) => (b != 0.0).then(|| t / b - 1.0),
        Effect::Absolute(_) => Some(t - b),
    }
}

pub(super) fn relative_effect(rule: &Rule) -> f64 {
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
    pub(super) fn for_ratio(rule: &Rule, null_shift: f64) -> Option<Evidence> {
        let (h0, halts, s0, salts) = ratio_grids(rule.direction, relative_effect(rule));
        let scale = |v: Vec<f64>| v.into_iter().map(|x| x * null_shift).collect::<Vec<_>>();
        Some(Evidence {
            harm: GridEProcess::new(h0 * null_shift, &scale(halts))?,
            safe: GridEProcess::new(s0 * null_shift, &scale(salts))?,
        })
    }

    /// Rate-ratio e-processes whose nulls are moved off 1 (the harm null to the bound on
    /// the harmless side, the safe null's smallest effect scaled by the other bound), with
    /// every rate relative to `center` (the point estimate the nulls were moved from).
    /// Alternatives keep their places where they lie beyond their null in the right
    /// direction; the others are dropped, and when fewer than two remain the grid is
    /// rebuilt from the moved null outwards. So a wide bound never turns `harm` into a test
    /// of the unwatched direction (the cause of a `decrease` rule failing on +7%).
    pub(super) fn with_nulls(
        rule: &Rule,
        center: f64,
        harm_null: f64,
        safe_scale: f64,
    ) -> Option<Evidence> {
        let e = relative_effect(rule).abs().max(0.01);
        let (_, halts, s0, salts) = ratio_grids(rule.direction, e);
        let up = rule.direction != Direction::Decrease;
        let step = if up { 1.0 + e } else { (1.0 - e).max(0.01) };
        let harm_null = harm_null * center;
        let safe_null = s0 * safe_scale * center;
        let harm = beyond(
            harm_null,
            halts.iter().map(|a| a * center).collect(),
            up,
            step,
        );
        let safe = beyond(
            safe_null,
            salts.iter().map(|a| a * center).collect(),
            !up,
            1.0 / step,
        );
        Some(Evidence {
            harm: GridEProcess::new(harm_null, &harm)?,
            safe: GridEProcess::new(safe_null, &safe)?,
        })
    }

    pub(super) fn set_scale(&mut self, scale: f64) {
        self.harm.set_scale(scale);
        self.safe.set_scale(scale);
    }
}

/// The alternatives of `alts` strictly beyond `null` (above it when `up`), or when fewer
/// than two remain, a grid of four starting one `step` (a ratio) beyond the null.
pub(super) fn beyond(null: f64, alts: Vec<f64>, up: bool, step: f64) -> Vec<f64> {
    let kept: Vec<f64> = alts
        .into_iter()
        .filter(|a| if up { *a > null } else { *a < null })
        .collect();
    if kept.len() >= 2 {
        return kept;
    }
    (1..=4).map(|k| null * step.powi(k)).collect()
}

/// Adds `waiting_for` (what an inconclusive rule waits for, in words) to the evidence.
pub(super) fn waiting(evidence: &mut Value, verdict: Verdict, what: String) {
    if verdict == Verdict::Inconclusive {
        merge(evidence, json!({"waiting_for": what}));
    }
}

/// "3 more events", "1 more block", for `waiting_for`.
pub(super) fn more(n: f64, unit: &str) -> String {
    let n = n.ceil().max(1.0);
    if n == 1.0 {
        format!("1 more {unit}")
    } else {
        format!("{n} more {unit}s")
    }
}

/// How many more events (at the current evidence per event) the harm or safe e-process
/// needs to reach its threshold, for `waiting_for`; `None` when the evidence does not grow.
pub(super) fn events_to_decide(ev: &Evidence, alpha: f64, events: f64) -> Option<f64> {
    let target = (1.0 / alpha).ln();
    let best = ev.harm.log_e_value().max(ev.safe.log_e_value());
    if best >= target || events <= 0.0 || best <= 0.0 {
        return None;
    }
    Some(events * (target - best) / best)
}

pub(super) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(super) fn variance(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    (v.len() >= 2).then(|| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64)
}

pub(super) fn verdict(ev: &Evidence, alpha: f64, enough: bool) -> Verdict {
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

pub(super) fn dispersion(chi2: (f64, f64), integral: bool) -> f64 {
    let phi = if chi2.1 > 0.0 { chi2.0 / chi2.1 } else { 1.0 };
    if integral {
        phi.max(1.0)
    } else {
        phi.max(1e-9)
    }
}

pub(super) fn ev_json(ev: &Evidence) -> Value {
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

pub(super) fn merge(a: &mut Value, b: Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        a.extend(b);
    }
}
