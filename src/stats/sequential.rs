//! Anytime-valid sequential evidence (e-values / e-processes): the engine looks
//! at a deploy after every sample and may stop at any look, so a fixed-sample
//! p-value checked repeatedly would reject far more often than its level. An
//! e-process E_t is a nonnegative process with E[E_τ] ≤ 1 at every stopping
//! time τ under the null; by Ville's inequality (Ville 1939)
//! P(sup_t E_t ≥ 1/α) ≤ α, so "reject when E_t ≥ 1/α" is valid however often
//! one looks and whenever one stops.
//!
//! - [`beta_binomial_bayes_factor`]: Beta-mixture Bayes factor against a point
//!   null proportion (Lindon & Malek 2022).
//! - [`RateRatioEProcess`]: canary-vs-baseline event counts with exposures that
//!   change over time (traffic shape), one-sided composite null on the ratio.
//! - [`NormalMixtureEProcess`] / [`msprt_normal`]: mixture SPRT for Gaussian
//!   means (Robbins 1970; Johari, Pekelis & Walsh 2017/2022).

use super::{Alternative, StatsError, finite};
use statrs::function::beta::ln_beta;

fn check_positive(what: &'static str, v: f64) -> Result<f64, StatsError> {
    let v = finite(what, v)?;
    if v <= 0.0 {
        return Err(StatsError::InvalidParameter { what, value: v });
    }
    Ok(v)
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// log Φ(t), accurate far into the lower tail.
fn log_ndtr(t: f64) -> f64 {
    if t > -30.0 {
        (0.5 * statrs::function::erf::erfc(-t / std::f64::consts::SQRT_2)).ln()
    } else {
        // Mills-ratio asymptotic series (Abramowitz & Stegun 26.2.12).
        let t2 = t * t;
        -0.5 * t2 - (-t).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 - 1.0 / t2 * (1.0 - 3.0 / t2 * (1.0 - 5.0 / t2 * (1.0 - 7.0 / t2)))).ln()
    }
}

/// log of [`beta_binomial_bayes_factor`].
pub fn log_beta_binomial_bayes_factor(
    x: u64,
    n: u64,
    p0: f64,
    a: f64,
    b: f64,
) -> Result<f64, StatsError> {
    let p0 = finite("p0", p0)?;
    if !(p0 > 0.0 && p0 < 1.0) {
        return Err(StatsError::InvalidParameter {
            what: "p0 must lie in (0, 1)",
            value: p0,
        });
    }
    let a = check_positive("a", a)?;
    let b = check_positive("b", b)?;
    if x > n {
        return Err(StatsError::InvalidParameter {
            what: "x must not exceed n",
            value: x as f64,
        });
    }
    let (xf, yf) = (x as f64, (n - x) as f64);
    Ok(ln_beta(a + xf, b + yf) - ln_beta(a, b) - xf * p0.ln() - yf * (-p0).ln_1p())
}

/// Bayes factor of a Beta(a, b) mixture alternative against the point null
/// p = p0 after x successes in n Bernoulli trials:
/// BF = B(a+x, b+n−x) / B(a, b) / (p0^x (1−p0)^(n−x)).
///
/// Method: Lindon & Malek, "Anytime-Valid Inference for Multinomial Count
/// Data", NeurIPS 2022 (the two-category case of their Dirichlet-multinomial
/// test). The BF is a nonnegative martingale under H0 (a mixture of likelihood
/// ratios), so rejecting when BF ≥ 1/α is valid at every look. For canary
/// counts: x = canary events, n = canary + control events, p0 = the canary's
/// share of exposure. Computed in log space (reference: `scipy.special.betaln`);
/// may return `+inf` when the evidence overflows f64.
pub fn beta_binomial_bayes_factor(
    x: u64,
    n: u64,
    p0: f64,
    a: f64,
    b: f64,
) -> Result<f64, StatsError> {
    log_beta_binomial_bayes_factor(x, n, p0, a, b).map(f64::exp)
}

/// Log-spaced grid of `n` ratios from `min_ratio` to `max_ratio` inclusive,
/// for [`RateRatioEProcess::new`]. Empty when `n` is 0 or the bounds are not
/// finite and positive (`new` then refuses the empty grid); `n = 1` gives
/// `[min_ratio]`.
pub fn default_ratio_grid(min_ratio: f64, max_ratio: f64, n: usize) -> Vec<f64> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if n == 0 || !ok(min_ratio) || !ok(max_ratio) {
        return Vec::new();
    }
    if n == 1 {
        return vec![min_ratio];
    }
    let (lo, hi) = (min_ratio.ln(), max_ratio.ln());
    (0..n)
        .map(|i| {
            if i == n - 1 {
                max_ratio
            } else {
                (lo + (hi - lo) * i as f64 / (n - 1) as f64).exp()
            }
        })
        .collect()
}

/// Anytime-valid e-process for the rate ratio θ = λ_treatment / λ_baseline
/// when both groups' exposures (requests, host-seconds) change over time.
///
/// Method: in each interval, conditional on its total n = x1 + x0 and on the
/// exposures, Poisson counts give x1 ~ Binomial(n, p(θ)) with
/// p(θ) = θ·e1 / (θ·e1 + e0), whatever the common (time-varying) rate. For
/// each alternative θa on the grid the process multiplies the interval's
/// likelihood ratio (p(θa)/p(θ0))^x1 · ((1−p(θa))/(1−p(θ0)))^x0; the e-value
/// is the uniform-weight mixture Σ_a (1/K)·LR_a (a discrete-mixture version of
/// Lindon & Malek 2022; cf. Ramdas et al., "Game-theoretic statistics and
/// safe anytime-valid inference", Stat. Sci. 2023).
///
/// Why it is a test supermartingale under the composite null θ ≤ θ0 (all
/// alternatives > θ0): p(θ) is increasing in θ, so the true p ≤ p0 = p(θ0)
/// while pa = p(θa) > p0. For one Bernoulli trial,
/// E_p[LR] = p·pa/p0 + (1−p)(1−pa)/(1−p0) =: g(p), linear in p with g(p0) = 1
/// and slope pa/p0 − (1−pa)/(1−p0) > 0, so g(p) ≤ 1; the interval's LR has
/// expectation g(p)^n ≤ 1 given the past, n and the exposures. Products of such
/// factors are nonnegative supermartingales, and so is a fixed-weight mixture.
/// Ville's inequality then gives P(sup_t E_t ≥ 1/α) ≤ α. With all alternatives
/// below θ0 the argument is the mirror image (null θ ≥ θ0). Requirement: an
/// interval's exposures must not depend on how its events split between the
/// groups (true for traffic-driven exposure).
#[derive(Debug, Clone, PartialEq)]
pub struct RateRatioEProcess {
    null_ratio: f64,
    alternatives: Vec<f64>,
    log_lr: Vec<f64>,
    log_weight: f64,
    max_log_e: f64,
    intervals: u64,
}

impl RateRatioEProcess {
    /// Starts a process at e-value 1. `alternatives` must be non-empty, finite,
    /// positive and all strictly on one side of `null_ratio` (that side is the
    /// alternative hypothesis; see the type's docs).
    pub fn new(null_ratio: f64, alternatives: &[f64]) -> Result<Self, StatsError> {
        let null_ratio = check_positive("null_ratio", null_ratio)?;
        if alternatives.is_empty() {
            return Err(StatsError::Empty {
                what: "alternatives",
            });
        }
        for &a in alternatives {
            check_positive("alternatives", a)?;
        }
        let above = alternatives.iter().all(|&a| a > null_ratio);
        let below = alternatives.iter().all(|&a| a < null_ratio);
        if !(above || below) {
            return Err(StatsError::InvalidParameter {
                what: "alternatives must all be strictly above or all strictly below null_ratio",
                value: null_ratio,
            });
        }
        Ok(Self {
            null_ratio,
            alternatives: alternatives.to_vec(),
            log_lr: vec![0.0; alternatives.len()],
            log_weight: -(alternatives.len() as f64).ln(),
            max_log_e: 0.0,
            intervals: 0,
        })
    }

    /// Ingests one interval's event counts and exposures. An interval with a
    /// zero exposure on either side or no events carries no information about
    /// the split and is a no-op. Errors (state unchanged): negative or
    /// non-finite exposure.
    pub fn update(
        &mut self,
        treatment_events: u64,
        baseline_events: u64,
        treatment_exposure: f64,
        baseline_exposure: f64,
    ) -> Result<(), StatsError> {
        let e1 = finite("treatment_exposure", treatment_exposure)?;
        let e0 = finite("baseline_exposure", baseline_exposure)?;
        if e1 < 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "treatment_exposure",
                value: e1,
            });
        }
        if e0 < 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "baseline_exposure",
                value: e0,
            });
        }
        if e1 == 0.0 || e0 == 0.0 || (treatment_events == 0 && baseline_events == 0) {
            return Ok(());
        }
        let (x1, x0) = (treatment_events as f64, baseline_events as f64);
        // ln p(θ) = ln(θ e1) − ln(θ e1 + e0); ln(1 − p(θ)) = ln e0 − ln(θ e1 + e0).
        let (ln_e1, ln_e0) = (e1.ln(), e0.ln());
        let log_p = |theta: f64| {
            let d = (theta * e1 + e0).ln();
            (theta.ln() + ln_e1 - d, ln_e0 - d)
        };
        let (lp0, lq0) = log_p(self.null_ratio);
        for (acc, &theta) in self.log_lr.iter_mut().zip(&self.alternatives) {
            let (lp, lq) = log_p(theta);
            *acc += x1 * (lp - lp0) + x0 * (lq - lq0);
        }
        self.intervals += 1;
        self.max_log_e = self.max_log_e.max(self.log_e_value());
        Ok(())
    }

    /// log of the current e-value.
    pub fn log_e_value(&self) -> f64 {
        self.log_weight + log_sum_exp(&self.log_lr)
    }

    /// Current e-value Σ_a w_a·LR_a (may be `+inf` on overwhelming evidence).
    pub fn e_value(&self) -> f64 {
        self.log_e_value().exp()
    }

    /// Largest e-value seen after any update (starts at 1). Valid to compare
    /// with 1/α: Ville's inequality bounds the running maximum.
    pub fn max_e_value_seen(&self) -> f64 {
        self.max_log_e.exp()
    }

    /// Number of informative intervals ingested.
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// The null ratio θ0.
    pub fn null_ratio(&self) -> f64 {
        self.null_ratio
    }

    /// The alternative grid.
    pub fn alternatives(&self) -> &[f64] {
        &self.alternatives
    }
}

fn check_msprt(sigma2: f64, tau2: f64) -> Result<(), StatsError> {
    check_positive("sigma2", sigma2)?;
    check_positive("tau2", tau2)?;
    Ok(())
}

/// log Λ for the normal-mixture SPRT from sufficient statistics
/// s = Σ (x_i − μ0)/σ_i² and info = Σ 1/σ_i²:
/// Λ = (1 + τ²·info)^(−1/2) · exp(τ² s² / (2(1 + τ²·info))), and for a one-sided
/// (half-normal) mixture additionally × 2Φ(±s·τ/√(1 + τ²·info)).
fn mixture_log(s: f64, info: f64, tau2: f64, alt: Alternative) -> f64 {
    let k = 1.0 + tau2 * info;
    let two_sided = -0.5 * k.ln() + tau2 * s * s / (2.0 * k);
    let r = s * (tau2 / k).sqrt();
    match alt {
        Alternative::TwoSided => two_sided,
        Alternative::Greater => two_sided + std::f64::consts::LN_2 + log_ndtr(r),
        Alternative::Less => two_sided + std::f64::consts::LN_2 + log_ndtr(-r),
    }
}

/// log of [`msprt_normal`].
pub fn msprt_normal_log(
    n: usize,
    mean: f64,
    mu0: f64,
    sigma2: f64,
    tau2: f64,
) -> Result<f64, StatsError> {
    msprt_normal_one_sided_log(n, mean, mu0, sigma2, tau2, Alternative::TwoSided)
}

/// Mixture SPRT e-value for H0: μ = μ0 after n i.i.d. N(μ, σ²) observations
/// with mean `mean`, mixing the alternative over μ ~ N(μ0, τ²):
/// Λ_n = sqrt(σ²/(σ²+nτ²)) · exp(n²τ²(x̄−μ0)² / (2σ²(σ²+nτ²))).
///
/// Method: Robbins (1970); Johari, Pekelis & Walsh, "Always valid inference",
/// Operations Research 2022, eq. (3); Lindon et al. KDD 2022 for continuous
/// metrics. Λ_n is a nonnegative martingale under H0, so Λ ≥ 1/α at any look is
/// a level-α rejection. σ² is treated as known; plugging in an estimate makes
/// the guarantee approximate (accurate for large n, as in those papers).
/// n = 0 gives 1. Computed in log space; may be `+inf`.
pub fn msprt_normal(
    n: usize,
    mean: f64,
    mu0: f64,
    sigma2: f64,
    tau2: f64,
) -> Result<f64, StatsError> {
    msprt_normal_log(n, mean, mu0, sigma2, tau2).map(f64::exp)
}

/// log of [`msprt_normal_one_sided`].
pub fn msprt_normal_one_sided_log(
    n: usize,
    mean: f64,
    mu0: f64,
    sigma2: f64,
    tau2: f64,
    alt: Alternative,
) -> Result<f64, StatsError> {
    check_msprt(sigma2, tau2)?;
    let mu0 = finite("mu0", mu0)?;
    if n == 0 {
        return Ok(0.0);
    }
    let mean = finite("mean", mean)?;
    let nf = n as f64;
    Ok(mixture_log(
        nf * (mean - mu0) / sigma2,
        nf / sigma2,
        tau2,
        alt,
    ))
}

/// One-sided mixture SPRT: H0: μ ≤ μ0 against μ > μ0 (`Greater`) or
/// H0: μ ≥ μ0 against μ < μ0 (`Less`); `TwoSided` equals [`msprt_normal`].
///
/// Choice: the mixing distribution is the half-normal N(μ0, τ²) restricted to
/// the alternative side (density doubled), giving the closed form
/// Λ⁺ = 2Φ(n(x̄−μ0)τ / (σ·sqrt(σ²+nτ²))) · Λ_n. It only grows when the mean
/// moves in the bad direction. Validity: for every δ > 0 the likelihood ratio
/// exp(δ Σ(x_i−μ0)/σ² − nδ²/(2σ²)) has expectation exp(nδ(μ−μ0)/σ²) ≤ 1 when
/// μ ≤ μ0, so each is a supermartingale under the whole composite null and so
/// is their mixture (Ville's inequality applies as for the two-sided case).
pub fn msprt_normal_one_sided(
    n: usize,
    mean: f64,
    mu0: f64,
    sigma2: f64,
    tau2: f64,
    alt: Alternative,
) -> Result<f64, StatsError> {
    msprt_normal_one_sided_log(n, mean, mu0, sigma2, tau2, alt).map(f64::exp)
}

/// Streaming normal-mixture SPRT (see [`msprt_normal`] and
/// [`msprt_normal_one_sided`]) that accepts a per-observation variance σ_i²
/// (known, or estimated from data *before* x_i: it must not depend on x_i).
/// With varying σ_i² the sufficient statistics become s = Σ(x_i−μ0)/σ_i² and
/// info = Σ 1/σ_i², and each mixed likelihood ratio stays a (super)martingale.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalMixtureEProcess {
    mu0: f64,
    tau2: f64,
    alt: Alternative,
    s: f64,
    info: f64,
    n: u64,
    max_log_e: f64,
}

impl NormalMixtureEProcess {
    /// Two-sided test of μ = μ0 with mixing variance τ² (τ ≈ the smallest
    /// effect worth detecting is a good default).
    pub fn new(mu0: f64, tau2: f64) -> Result<Self, StatsError> {
        Self::one_sided(mu0, tau2, Alternative::TwoSided)
    }

    /// Test with the given alternative side (half-normal mixture when one-sided).
    pub fn one_sided(mu0: f64, tau2: f64, alt: Alternative) -> Result<Self, StatsError> {
        let mu0 = finite("mu0", mu0)?;
        let tau2 = check_positive("tau2", tau2)?;
        Ok(Self {
            mu0,
            tau2,
            alt,
            s: 0.0,
            info: 0.0,
            n: 0,
            max_log_e: 0.0,
        })
    }

    /// Adds one observation `x` with variance `sigma2`. Errors (state
    /// unchanged): non-finite `x`, non-positive or non-finite `sigma2`.
    pub fn update(&mut self, x: f64, sigma2: f64) -> Result<(), StatsError> {
        let x = finite("x", x)?;
        let sigma2 = check_positive("sigma2", sigma2)?;
        self.s += (x - self.mu0) / sigma2;
        self.info += 1.0 / sigma2;
        self.n += 1;
        self.max_log_e = self.max_log_e.max(self.log_e_value());
        Ok(())
    }

    /// log of the current e-value (0 before any observation).
    pub fn log_e_value(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        mixture_log(self.s, self.info, self.tau2, self.alt)
    }

    /// Current e-value.
    pub fn e_value(&self) -> f64 {
        self.log_e_value().exp()
    }

    /// Largest e-value seen so far (starts at 1).
    pub fn max_e_value_seen(&self) -> f64 {
        self.max_log_e.exp()
    }

    /// Number of observations.
    pub fn n(&self) -> u64 {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, Poisson};

    const ALPHA: f64 = 0.05;
    const SEQS: usize = 2000;
    const LOOKS: usize = 100;

    /// α plus three binomial standard errors of a rejection fraction.
    fn bound() -> f64 {
        ALPHA + 3.0 * (ALPHA * (1.0 - ALPHA) / SEQS as f64).sqrt()
    }

    fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        match Poisson::new(mean) {
            Ok(d) => d.sample(rng) as u64,
            Err(_) => 0,
        }
    }

    /// Fraction of sequences whose e-value ever reaches 1/α within LOOKS
    /// intervals, with the canary's exposure share and the overall traffic
    /// both varying from interval to interval.
    fn rate_ratio_crossings(theta: f64, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let grid = default_ratio_grid(1.25, 4.0, 8);
        let mut crossed = 0;
        for _ in 0..SEQS {
            let mut ep = RateRatioEProcess::new(1.0, &grid).unwrap();
            for t in 0..LOOKS {
                // Diurnal-like traffic and a canary share between 2% and 30%.
                let traffic = 50.0 * (1.0 + 0.8 * (t as f64 / 10.0).sin());
                let share = 0.02 + 0.28 * rng.random::<f64>();
                let (e1, e0) = (traffic * share, traffic * (1.0 - share));
                let rate = 0.2;
                let x1 = poisson(&mut rng, theta * rate * e1);
                let x0 = poisson(&mut rng, rate * e0);
                ep.update(x1, x0, e1, e0).unwrap();
                if ep.e_value() >= 1.0 / ALPHA {
                    crossed += 1;
                    break;
                }
            }
        }
        crossed as f64 / SEQS as f64
    }

    #[test]
    fn rate_ratio_type_one_error_under_null() {
        let frac = rate_ratio_crossings(1.0, 7);
        assert!(frac <= bound(), "null crossing fraction {frac}");
        // Composite null: a *lower* true ratio is even less likely to cross.
        let frac_low = rate_ratio_crossings(0.7, 8);
        assert!(
            frac_low <= bound(),
            "theta=0.7 crossing fraction {frac_low}"
        );
    }

    #[test]
    fn rate_ratio_power_under_alternative() {
        let frac = rate_ratio_crossings(2.0, 9);
        assert!(frac >= 0.9, "theta=2 crossing fraction {frac}");
    }

    fn normal_crossings(mu: f64, alt: Alternative, seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let Ok(noise) = Normal::new(mu, 1.0) else {
            panic!("normal")
        };
        let mut crossed = 0;
        for _ in 0..SEQS {
            let mut ep = NormalMixtureEProcess::one_sided(0.0, 0.25, alt).unwrap();
            for _ in 0..LOOKS {
                ep.update(noise.sample(&mut rng), 1.0).unwrap();
                if ep.e_value() >= 1.0 / ALPHA {
                    crossed += 1;
                    break;
                }
            }
        }
        crossed as f64 / SEQS as f64
    }

    #[test]
    fn normal_mixture_type_one_error_under_null() {
        for (i, alt) in [Alternative::TwoSided, Alternative::Greater]
            .into_iter()
            .enumerate()
        {
            let frac = normal_crossings(0.0, alt, 11 + i as u64);
            assert!(frac <= bound(), "{alt:?} null crossing fraction {frac}");
        }
        // One-sided composite null: μ below μ0.
        let frac = normal_crossings(-0.3, Alternative::Greater, 13);
        assert!(frac <= bound(), "mu=-0.3 crossing fraction {frac}");
    }

    #[test]
    fn normal_mixture_power_under_alternative() {
        let frac = normal_crossings(0.5, Alternative::Greater, 14);
        assert!(frac >= 0.9, "mu=0.5 crossing fraction {frac}");
    }

    #[test]
    fn free_fn_matches_streaming() {
        let xs = [0.3, -0.1, 0.8, 0.5, 1.2];
        let mut ep = NormalMixtureEProcess::new(0.1, 0.5).unwrap();
        for &x in &xs {
            ep.update(x, 2.0).unwrap();
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let l = msprt_normal_log(xs.len(), mean, 0.1, 2.0, 0.5).unwrap();
        assert!((l - ep.log_e_value()).abs() < 1e-12);
        assert_eq!(msprt_normal(0, 0.0, 0.0, 1.0, 1.0).unwrap(), 1.0);
        // Half-normal mixture: one-sided e-value is 2Φ(r) times the two-sided one.
        let g = msprt_normal_one_sided_log(5, mean, 0.1, 2.0, 0.5, Alternative::Greater).unwrap();
        let le = msprt_normal_one_sided_log(5, mean, 0.1, 2.0, 0.5, Alternative::Less).unwrap();
        // 2Φ(r) + 2Φ(−r) = 2, so the two halves average to the two-sided value.
        assert!((0.5 * (g.exp() + le.exp()) - l.exp()).abs() < 1e-12);
    }

    #[test]
    fn errors_and_no_ops() {
        assert!(RateRatioEProcess::new(1.0, &[]).is_err());
        assert!(RateRatioEProcess::new(1.0, &[0.5, 2.0]).is_err());
        assert!(RateRatioEProcess::new(1.0, &[1.0]).is_err());
        assert!(RateRatioEProcess::new(f64::NAN, &[2.0]).is_err());
        assert!(RateRatioEProcess::new(1.0, &[f64::INFINITY]).is_err());
        let mut ep = RateRatioEProcess::new(1.0, &[2.0, 3.0]).unwrap();
        assert!(ep.update(1, 1, f64::NAN, 1.0).is_err());
        assert!(ep.update(1, 1, -1.0, 1.0).is_err());
        ep.update(5, 0, 0.0, 1.0).unwrap();
        ep.update(0, 0, 1.0, 1.0).unwrap();
        assert_eq!((ep.e_value(), ep.intervals()), (1.0, 0));
        assert!(beta_binomial_bayes_factor(3, 2, 0.5, 1.0, 1.0).is_err());
        assert!(beta_binomial_bayes_factor(1, 2, 1.0, 1.0, 1.0).is_err());
        assert!(beta_binomial_bayes_factor(1, 2, 0.5, 0.0, 1.0).is_err());
        assert!(beta_binomial_bayes_factor(1, 2, f64::NAN, 1.0, 1.0).is_err());
        assert_eq!(
            beta_binomial_bayes_factor(0, 0, 0.3, 2.0, 3.0).unwrap(),
            1.0
        );
        assert!(msprt_normal(3, f64::NAN, 0.0, 1.0, 1.0).is_err());
        assert!(msprt_normal(3, 0.0, 0.0, 0.0, 1.0).is_err());
        let mut nm = NormalMixtureEProcess::new(0.0, 1.0).unwrap();
        assert!(nm.update(f64::INFINITY, 1.0).is_err());
        assert!(nm.update(1.0, -1.0).is_err());
        assert_eq!(nm.n(), 0);
    }

    #[test]
    fn rate_ratio_single_interval_is_binomial_lr() {
        // One alternative: e-value = (pa/p0)^x1 ((1-pa)/(1-p0))^x0.
        let mut ep = RateRatioEProcess::new(1.0, &[2.0]).unwrap();
        ep.update(7, 3, 1.0, 3.0).unwrap();
        let (p0, pa): (f64, f64) = (0.25, 2.0 / 5.0);
        let expect = (pa / p0).powi(7) * ((1.0 - pa) / (1.0 - p0)).powi(3);
        assert!((ep.e_value() / expect - 1.0).abs() < 1e-12);
        assert!(ep.max_e_value_seen() >= ep.e_value());
        let grid = default_ratio_grid(1.5, 6.0, 3);
        assert_eq!(grid.len(), 3);
        assert!((grid[1] - 3.0).abs() < 1e-12 && grid[0] == 1.5 && grid[2] == 6.0);
    }

    #[test]
    fn log_ndtr_tail() {
        // log Φ(−40) = −804.6084420137539 (scipy.special.log_ndtr).
        assert!((log_ndtr(-40.0) + 804.608_442_013_754).abs() < 1e-6);
        assert!((log_ndtr(0.0) - 0.5f64.ln()).abs() < 1e-15);
        // Both sides of the switch to the asymptotic series (scipy.special.log_ndtr).
        assert!((log_ndtr(-29.9) + 451.322_912_458_528_7).abs() < 1e-9);
        assert!((log_ndtr(-30.5) - (-469.4627373229121)).abs() < 1e-9);
    }
}
