//! Mixture e-processes over a grid of alternatives, for the likelihoods the judge needs
//! when the baseline is not observed at the same time as the treatment (pre-deploy and
//! seasonal baselines: a known-rate Poisson, a known-probability binomial, a known-variance
//! Gaussian), plus the conditional binomial for canary against control.
//!
//! Method: for a point null θ0 and alternatives θa all on one side of it, the likelihood
//! ratio Π_k f(x_k; θa)/f(x_k; θ0) is a nonnegative martingale under θ0 and a
//! supermartingale under every θ on the far side of θ0 from the alternatives (for the
//! exponential families used here the expected one-step ratio is monotone in θ and equals 1
//! at θ0). A uniform mixture of such ratios inherits this, so by Ville's inequality
//! P(sup_t E_t ≥ 1/α) ≤ α under the composite null: the e-value may be checked after every
//! interval without inflating the false-alarm rate. This is the mixture SPRT of Robbins
//! (1970) with a discrete mixing distribution, as in Lindon & Malek (NeurIPS 2022) for
//! counts and Johari, Pekelis & Walsh ("Always valid inference", 2017) for Gaussian means.

/// A mixture of likelihood ratios against a point null, accumulated in log space.
#[derive(Clone, Debug, PartialEq)]
pub struct GridEProcess {
    null: f64,
    alternatives: Vec<f64>,
    log_lr: Vec<f64>,
    scale: f64,
    max_log_e: f64,
}

impl GridEProcess {
    /// `null` is the boundary parameter; `alternatives` must all lie on one side of it
    /// (checked: alternatives on the null itself or on both sides are dropped to the side
    /// of the first one). Returns `None` when no alternative remains or a value is not finite.
    pub fn new(null: f64, alternatives: &[f64]) -> Option<GridEProcess> {
        if !null.is_finite() || alternatives.is_empty() {
            return None;
        }
        let above = alternatives[0] > null;
        let alternatives: Vec<f64> = alternatives
            .iter()
            .copied()
            .filter(|a| a.is_finite() && *a != null && (*a > null) == above)
            .collect();
        if alternatives.is_empty() {
            return None;
        }
        let n = alternatives.len();
        Some(GridEProcess {
            null,
            alternatives,
            log_lr: vec![0.0; n],
            scale: 1.0,
            max_log_e: 0.0,
        })
    }

    /// The running state: each alternative's log likelihood ratio, the scale and the
    /// largest log e-value so far (kept across a restart, see [`GridEProcess::restore`]).
    pub fn state(&self) -> (&[f64], f64, f64) {
        (&self.log_lr, self.scale, self.max_log_e)
    }

    /// Puts back a state from [`GridEProcess::state`] of a process with the same null and
    /// alternatives; false (nothing changed) when the number of ratios does not fit.
    pub fn restore(&mut self, log_lr: &[f64], scale: f64, max_log_e: f64) -> bool {
        if log_lr.len() != self.log_lr.len() {
            return false;
        }
        self.log_lr.copy_from_slice(log_lr);
        self.scale = scale;
        self.max_log_e = max_log_e;
        true
    }

    /// The null boundary.
    pub fn null(&self) -> f64 {
        self.null
    }

    /// Sets the quasi-likelihood scale `1 / φ` applied to every log likelihood ratio, where
    /// φ is the dispersion of the counts (McCullagh & Nelder, *Generalized Linear Models*,
    /// ch. 9). Overdispersed counts (hosts that differ, sums of order values) carry less
    /// evidence per unit than Poisson counts; the ratios are kept unscaled so a better
    /// estimate of φ later rescales all of the past consistently. With φ estimated from the
    /// data the guarantee is asymptotic rather than exact.
    pub fn set_scale(&mut self, scale: f64) {
        if scale.is_finite() && scale > 0.0 {
            self.scale = scale;
            self.note_max();
        }
    }

    /// Log of the current e-value: log of the mean of the alternatives' likelihood ratios.
    pub fn log_e_value(&self) -> f64 {
        let m = self
            .log_lr
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            * self.scale;
        if !m.is_finite() {
            return m;
        }
        let s: f64 = self.log_lr.iter().map(|l| (l * self.scale - m).exp()).sum();
        m + (s / self.log_lr.len() as f64).ln()
    }

    fn note_max(&mut self) {
        let now = self.log_e_value();
        if now > self.max_log_e {
            self.max_log_e = now;
        }
    }

    /// The current e-value.
    pub fn e_value(&self) -> f64 {
        self.log_e_value().exp()
    }

    /// The largest e-value seen so far; `1 / max` is an anytime-valid p-value.
    pub fn max_e_value(&self) -> f64 {
        self.max_log_e.exp()
    }

    /// The anytime-valid p-value `min(1, 1 / max e)`.
    pub fn p_value(&self) -> f64 {
        (-self.max_log_e).exp().min(1.0)
    }

    /// The alternative with the largest likelihood so far: the effect the data favour.
    pub fn best_alternative(&self) -> f64 {
        let mut best = (f64::NEG_INFINITY, self.alternatives[0]);
        for (l, a) in self.log_lr.iter().zip(&self.alternatives) {
            if *l > best.0 {
                best = (*l, *a);
            }
        }
        best.1
    }

    fn add(&mut self, f: impl Fn(f64) -> f64) {
        for (l, &a) in self.log_lr.iter_mut().zip(&self.alternatives) {
            let step = f(a);
            if step.is_finite() {
                *l += step;
            } else if step == f64::NEG_INFINITY {
                *l = f64::NEG_INFINITY;
            }
        }
        self.note_max();
    }

    /// Poisson counts with a known expected count: `y ~ Poisson(θ · expected)`. The
    /// parameter is the rate ratio θ.
    pub fn update_poisson(&mut self, y: f64, expected: f64) {
        if !(expected > 0.0 && expected.is_finite()) {
            return;
        }
        let t0 = self.null;
        self.add(|ta| y * (ta / t0).ln() - (ta - t0) * expected);
    }

    /// Binomial counts with a known base probability: `y ~ Binomial(n, θ · p_base)`.
    /// Alternatives whose probability would leave (0, 1) are clamped just inside.
    pub fn update_binomial(&mut self, y: u64, n: u64, p_base: f64) {
        if n == 0 || !(p_base > 0.0 && p_base < 1.0) || y > n {
            return;
        }
        let clamp = |p: f64| p.clamp(1e-12, 1.0 - 1e-12);
        let p0 = clamp(self.null * p_base);
        let (y, n) = (y as f64, n as f64);
        self.add(|ta| {
            let pa = clamp(ta * p_base);
            y * (pa / p0).ln() + (n - y) * ((1.0 - pa) / (1.0 - p0)).ln()
        });
    }

    /// Counts of treatment against a concurrent control: given the interval's total
    /// `x1 + x0`, `x1 ~ Binomial(x1 + x0, θ e1 / (θ e1 + e0))`, where e1 and e0 are the two
    /// sides' exposures in the interval. Conditioning on the total cancels whatever moves
    /// both sides at once (the daily traffic shape, a surge).
    pub fn update_conditional(&mut self, x1: f64, x0: f64, e1: f64, e0: f64) {
        let usable = e1 > 0.0 && e0 > 0.0 && e1.is_finite() && e0.is_finite() && x1 + x0 > 0.0;
        if !usable {
            return;
        }
        let share = |t: f64| t * e1 / (t * e1 + e0);
        let p0 = share(self.null);
        self.add(|ta| {
            let pa = share(ta);
            x1 * (pa / p0).ln() + x0 * ((1.0 - pa) / (1.0 - p0)).ln()
        });
    }

    /// A Gaussian observation with known variance: `x ~ N(μ, σ²)`; the parameter is μ.
    pub fn update_gaussian(&mut self, x: f64, variance: f64) {
        if !(variance > 0.0 && variance.is_finite() && x.is_finite()) {
            return;
        }
        let m0 = self.null;
        self.add(|ma| (ma - m0) * (x - (ma + m0) / 2.0) / variance);
    }
}

/// `n` points spaced evenly in log space from `from` to `to` (both > 0).
pub fn log_grid(from: f64, to: f64, n: usize) -> Vec<f64> {
    if n <= 1 || from <= 0.0 || to <= 0.0 {
        return vec![from];
    }
    let (a, b) = (from.ln(), to.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, Poisson};

    #[test]
    fn rejects_degenerate_grids() {
        assert!(GridEProcess::new(1.0, &[]).is_none());
        assert!(GridEProcess::new(1.0, &[1.0]).is_none());
        assert!(GridEProcess::new(f64::NAN, &[2.0]).is_none());
        let g = GridEProcess::new(1.0, &[2.0, 0.5]).unwrap();
        assert_eq!(g.alternatives, vec![2.0]);
    }

    #[test]
    fn strong_evidence_grows_and_p_value_is_running_minimum() {
        let mut g = GridEProcess::new(1.0, &log_grid(1.5, 8.0, 6)).unwrap();
        for _ in 0..20 {
            g.update_conditional(10.0, 40.0, 1.0, 9.0); // 10/50 on a 10% share: ratio ~2.25
        }
        assert!(g.e_value() > 1e3, "{}", g.e_value());
        let p = g.p_value();
        g.update_conditional(0.0, 200.0, 1.0, 9.0);
        assert!(g.e_value() < g.max_e_value());
        assert_eq!(g.p_value(), p);
        assert!((g.best_alternative() - 2.0).abs() < 1.0);
    }

    /// Ville's inequality in action: under the null, few paths ever cross 1/α.
    #[test]
    fn false_alarm_rate_under_the_null_stays_below_alpha() {
        let alpha = 0.05;
        let runs = 2000;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut crossed = [0usize; 3];
        for _ in 0..runs {
            let mut pois = GridEProcess::new(1.0, &log_grid(1.2, 4.0, 5)).unwrap();
            let mut cond = GridEProcess::new(1.0, &log_grid(1.2, 4.0, 5)).unwrap();
            let mut gauss = GridEProcess::new(0.0, &[0.25, 0.5, 1.0]).unwrap();
            let mut hit = [false; 3];
            for k in 0..100 {
                // Exposure shares that change over time, as traffic does.
                let e1 = 1.0 + (k % 7) as f64;
                let e0 = 20.0 + (k % 13) as f64 * 3.0;
                let x1 = Poisson::new(e1 * 0.5).unwrap().sample(&mut rng);
                let x0 = Poisson::new(e0 * 0.5).unwrap().sample(&mut rng);
                pois.update_poisson(x1, e1 * 0.5);
                cond.update_conditional(x1, x0, e1, e0);
                gauss.update_gaussian(Normal::new(0.0, 1.0).unwrap().sample(&mut rng), 1.0);
                for (h, g) in hit.iter_mut().zip([&pois, &cond, &gauss]) {
                    *h |= g.e_value() >= 1.0 / alpha;
                }
            }
            for (c, h) in crossed.iter_mut().zip(hit) {
                *c += h as usize;
            }
        }
        let tolerance = 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt();
        for c in crossed {
            assert!(
                (c as f64 / runs as f64) <= alpha + tolerance,
                "crossed {c} of {runs}"
            );
        }
    }

    #[test]
    fn detects_a_doubling_quickly() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut detected = 0;
        for _ in 0..200 {
            let mut cond = GridEProcess::new(1.0, &log_grid(1.5, 8.0, 6)).unwrap();
            for _ in 0..50 {
                let x1 = Poisson::new(2.0 * 1.0).unwrap().sample(&mut rng);
                let x0 = Poisson::new(19.0).unwrap().sample(&mut rng);
                cond.update_conditional(x1, x0, 1.0, 19.0);
            }
            detected += (cond.max_e_value() >= 100.0) as usize;
        }
        assert!(detected >= 180, "detected {detected} of 200");
    }
}

#[cfg(test)]
mod cross_check {
    use super::*;
    use crate::stats::sequential::RateRatioEProcess;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `update_conditional` and `stats::sequential::RateRatioEProcess` were written
    /// independently from the same paper; on the same data they must agree.
    #[test]
    fn conditional_update_agrees_with_the_rate_ratio_e_process() {
        let grid = log_grid(1.5, 6.0, 6);
        let mut mine = GridEProcess::new(1.0, &grid).unwrap();
        let mut theirs = RateRatioEProcess::new(1.0, &grid).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let (x1, x0) = (rng.random_range(0..6u64), rng.random_range(0..60u64));
            let (e1, e0) = (rng.random_range(1.0..3.0), rng.random_range(20.0..60.0));
            mine.update_conditional(x1 as f64, x0 as f64, e1, e0);
            theirs.update(x1, x0, e1, e0).unwrap();
            let (a, b) = (mine.log_e_value(), theirs.log_e_value());
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
