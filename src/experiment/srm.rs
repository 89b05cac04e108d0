//! Sample ratio mismatch (SRM): is the observed split of participants across branches what
//! the weights promise? A broken assignment (a branch whose exposures are dropped, a
//! redirect that loses users, a bot filter applied to one branch) biases every comparison,
//! so the experiment's results are not trusted once SRM is flagged.
//!
//! Method: the Dirichlet-multinomial mixture Bayes factor of Lindon & Malek, "Anytime-valid
//! inference for multinomial count data" (NeurIPS 2022). Under the null, each participant's
//! branch is an independent categorical draw with probabilities `w` (the weights). The
//! alternative mixes the probabilities over Dirichlet(k·w):
//!
//! BF_k(x) = Γ(k) / Γ(k + n) · Π_i Γ(k w_i + x_i) / Γ(k w_i) / Π_i w_i^{x_i},
//!
//! with `n = Σ x_i`. It is the ratio of the Dirichlet-multinomial marginal likelihood to the
//! multinomial one; being exchangeable it depends only on the counts, and as a function of
//! the sequence of participants it is a nonnegative martingale with mean 1 under the null.
//! A fixed-weight average over several concentrations `k` is one too, so by Ville's
//! inequality P(sup_n BF ≥ 1/α) ≤ α: the check may run after every participant. Small `k`
//! catches gross mismatches within a few hundred participants; large `k` is needed for a
//! branch that loses 2% of its users.
//!
//! Checked against `scipy.special.gammaln` (scripts/experiment_stats_fixtures.py,
//! tests/fixtures/experiment/srm.tsv, tests/experiment_judge.rs).

use statrs::function::gamma::ln_gamma;

/// The Dirichlet concentrations mixed (equal weights).
pub const CONCENTRATIONS: [f64; 5] = [1e2, 1e3, 1e4, 1e5, 1e6];

/// The SRM level: GrowthBook and Optimizely flag SRM at p < 0.001; a false SRM withholds
/// every result of an experiment, so the level is stricter than a metric's.
pub const SRM_ALPHA: f64 = 0.001;

/// Log Bayes factor of the Dirichlet(k·w) mixture against the multinomial with
/// probabilities `weights` after `counts`. Branches of weight 0 with no participants are
/// left out; one of weight 0 with participants gives `+inf` (impossible under the null).
/// `None` when the lengths differ or a weight is negative or not finite.
pub fn log_bayes_factor(counts: &[u64], weights: &[f64], k: f64) -> Option<f64> {
    if counts.len() != weights.len() || !(k > 0.0 && k.is_finite()) {
        return None;
    }
    if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        return None;
    }
    let total_w: f64 = weights.iter().sum();
    if total_w <= 0.0 {
        return None;
    }
    let mut n = 0.0;
    let mut sum = 0.0;
    for (&x, &w) in counts.iter().zip(weights) {
        let w = w / total_w;
        let x = x as f64;
        if w == 0.0 {
            if x > 0.0 {
                return Some(f64::INFINITY);
            }
            continue;
        }
        n += x;
        sum += ln_gamma(k * w + x) - ln_gamma(k * w) - x * w.ln();
    }
    Some(ln_gamma(k) - ln_gamma(k + n) + sum)
}

/// Log of the equal-weight mixture of [`log_bayes_factor`] over [`CONCENTRATIONS`].
pub fn log_mixture(counts: &[u64], weights: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = CONCENTRATIONS
        .iter()
        .map(|k| log_bayes_factor(counts, weights, *k))
        .collect::<Option<_>>()?;
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::INFINITY {
        return Some(m);
    }
    let s: f64 = logs.iter().map(|l| (l - m).exp()).sum();
    Some(m + (s / logs.len() as f64).ln())
}

/// A running SRM check: feed it the cumulative branch counts at every look.
#[derive(Clone, Debug, PartialEq)]
pub struct SrmCheck {
    weights: Vec<f64>,
    max_log_bf: f64,
    log_bf: f64,
}

impl SrmCheck {
    /// The running state (log Bayes factor now and its largest so far), to keep it across
    /// a restart.
    pub fn state(&self) -> [f64; 2] {
        [self.log_bf, self.max_log_bf]
    }

    /// Puts back a state from [`SrmCheck::state`].
    pub fn restore(&mut self, s: [f64; 2]) {
        self.log_bf = s[0];
        self.max_log_bf = s[1];
    }

    /// A check for these branch weights (control first, as [`super::Experiment::weights`]).
    pub fn new(weights: &[f64]) -> SrmCheck {
        SrmCheck {
            weights: weights.to_vec(),
            max_log_bf: 0.0,
            log_bf: 0.0,
        }
    }

    /// Takes the cumulative participants per branch. Counts that do not fit the weights'
    /// length are ignored.
    pub fn observe(&mut self, counts: &[u64]) {
        if let Some(l) = log_mixture(counts, &self.weights) {
            self.log_bf = l;
            self.max_log_bf = self.max_log_bf.max(l);
        }
    }

    /// The current Bayes factor.
    pub fn bayes_factor(&self) -> f64 {
        self.log_bf.exp()
    }

    /// The anytime-valid p-value `min(1, 1 / max BF)`.
    pub fn p_value(&self) -> f64 {
        (-self.max_log_bf).exp().min(1.0)
    }

    /// Whether the split is flagged at [`SRM_ALPHA`].
    pub fn flagged(&self) -> bool {
        self.p_value() <= SRM_ALPHA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_evidence_without_data_and_impossible_branches() {
        assert_eq!(log_bayes_factor(&[0, 0], &[0.5, 0.5], 100.0), Some(0.0));
        assert_eq!(
            log_bayes_factor(&[3, 1], &[0.0, 1.0], 100.0),
            Some(f64::INFINITY)
        );
        assert!(log_bayes_factor(&[1], &[0.5, 0.5], 100.0).is_none());
        assert!(log_bayes_factor(&[1, 1], &[f64::NAN, 0.5], 100.0).is_none());
    }

    #[test]
    fn a_gross_mismatch_is_flagged_and_a_fair_split_is_not() {
        let mut c = SrmCheck::new(&[0.5, 0.5]);
        c.observe(&[5000, 5050]);
        assert!(!c.flagged(), "{}", c.p_value());
        c.observe(&[5000, 4000]);
        assert!(c.flagged(), "{}", c.p_value());
    }
}
