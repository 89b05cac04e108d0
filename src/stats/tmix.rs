//! Anytime-valid t-tests: Bayes factors for a shift in mean when the variance is unknown,
//! so a continuous rule can decide as soon as the data allow instead of first waiting for
//! enough blocks to trust a plug-in variance.
//!
//! Method: the Bayes factor of "standardised shift δ ~ N(0, g)" against "δ = 0" with the
//! right-Haar prior (flat on location, 1/σ on scale) on the nuisance parameters. In the
//! two-sample form (Gönen, Johnson, Lu & Westfall, "The Bayesian two-sample t test", The
//! American Statistician 2005) it depends on the data only through the t statistic:
//!
//! BF = (1 + n_δ g)^(-1/2) · [(1 + t²/ν) / (1 + t²/(ν (1 + n_δ g)))]^((ν+1)/2),
//!
//! with n_δ = (1/n1 + 1/n2)^-1 and ν = n1 + n2 − 2 (one-sample: n_δ = n, ν = n − 1).
//! Because the prior on the nuisance is the right-Haar measure of the location-scale
//! group, the Bayes factor is a nonnegative martingale under the null in the filtration of
//! the group-invariant statistics (Pérez-Ortiz, Lardy, de Heide & Grünwald, "E-statistics,
//! group invariance and anytime-valid testing", Annals of Statistics 2024; Lai 1976 for the
//! one-sample t mixture): by Ville's inequality P(sup BF ≥ 1/α) ≤ α whatever σ is, at
//! every look. A mixture over several g is an average of such martingales, so it is one too.
//!
//! Checked against numerical integration of the noncentral t density in SciPy
//! (scripts/stats_fixtures.py, tests/stats_reference.rs).

/// Log Bayes factor for a shift, at one prior scale `g`, from the t statistic, the
/// effective sample size `n_delta` and the degrees of freedom `nu`. An infinite `t` (no
/// spread at all, different means) gives the limit `(ν/2) ln(1 + n_δ g)`.
pub fn log_bf(t: f64, n_delta: f64, nu: f64, g: f64) -> Option<f64> {
    if !(n_delta > 0.0 && nu > 0.0 && g > 0.0) || t.is_nan() {
        return None;
    }
    let k = 1.0 + n_delta * g;
    let x = t * t / nu;
    let ratio = if x.is_infinite() {
        k.ln()
    } else {
        x.ln_1p() - (x / k).ln_1p()
    };
    Some(-0.5 * k.ln() + 0.5 * (nu + 1.0) * ratio)
}

/// Log of the mean over `gs` of the Bayes factors.
pub fn log_bf_mixture(t: f64, n_delta: f64, nu: f64, gs: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = gs
        .iter()
        .map(|g| log_bf(t, n_delta, nu, *g))
        .collect::<Option<_>>()?;
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return None;
    }
    let s: f64 = logs.iter().map(|l| (l - m).exp()).sum();
    Some(m + (s / logs.len() as f64).ln())
}

/// The pieces of a t-test: statistic, effective sample size, degrees of freedom, and the
/// estimated shift (mean of `post` minus mean of `pre`, or of `post` alone when `pre` is
/// empty). `None` while there are no degrees of freedom.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TStat {
    /// The t statistic (infinite when the data have no spread but the means differ).
    pub t: f64,
    /// (1/n1 + 1/n2)^-1, or n for one sample.
    pub n_delta: f64,
    /// Degrees of freedom.
    pub nu: f64,
    /// The estimated shift.
    pub shift: f64,
    /// The pooled standard deviation.
    pub sd: f64,
}

/// Two-sample (pooled variance) t statistic of `post` against `pre`, or the one-sample
/// statistic of `post` against 0 when `pre` is empty.
pub fn t_stat(pre: &[f64], post: &[f64]) -> Option<TStat> {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ss = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let (n1, n2) = (pre.len() as f64, post.len() as f64);
    if n2 < 1.0 {
        return None;
    }
    let m2 = mean(post);
    let (shift, ssq, nu, n_delta) = if pre.is_empty() {
        (m2, ss(post, m2), n2 - 1.0, n2)
    } else {
        let m1 = mean(pre);
        (
            m2 - m1,
            ss(pre, m1) + ss(post, m2),
            n1 + n2 - 2.0,
            1.0 / (1.0 / n1 + 1.0 / n2),
        )
    };
    if nu < 1.0 || !shift.is_finite() || !ssq.is_finite() {
        return None;
    }
    let sd = (ssq / nu).sqrt();
    let t = if sd > 0.0 {
        shift * n_delta.sqrt() / sd
    } else if shift == 0.0 {
        0.0
    } else {
        f64::INFINITY.copysign(shift)
    };
    Some(TStat {
        t,
        n_delta,
        nu,
        shift,
        sd,
    })
}

/// The largest lag-1 autocorrelation [`TStat::for_ar1`] accounts for: beyond
/// it the effective sample size (a twentieth of the blocks) says more about the estimate's
/// noise than about the series.
pub const MAX_AUTOCORRELATION: f64 = 0.9;

/// Pooled lag-1 autocorrelation of several runs of consecutive blocks, each around its own
/// mean: r = Σ (x_t − x̄)(x_{t+1} − x̄) / Σ (x_t − x̄)² summed over the runs (the sample
/// autocorrelation function of Box & Jenkins; statsmodels' `acf(x, nlags=1)[1]` for one
/// run). r underestimates ρ by about (1 + 3ρ)/n in n blocks (Kendall 1954; Marriott &
/// Pope 1954), which on 30 blocks of a wandering metric is enough to let a t-test cross
/// 1/α too often, so the result is Kendall's correction (r·n + 1)/(n − 3), clipped to
/// [0, [`MAX_AUTOCORRELATION`]]. `None` while the runs hold no pair of consecutive blocks
/// with spread.
pub fn lag1_autocorrelation(runs: &[&[f64]]) -> Option<f64> {
    let (mut num, mut den, mut n) = (0.0, 0.0, 0.0);
    for run in runs.iter().filter(|r| r.len() >= 2) {
        let m = run.iter().sum::<f64>() / run.len() as f64;
        den += run.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        num += run.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>();
        n += run.len() as f64;
    }
    if !(den > 0.0 && num.is_finite()) {
        return None;
    }
    let r = num / den;
    let corrected = if n > 3.0 {
        (r * n + 1.0) / (n - 3.0)
    } else {
        MAX_AUTOCORRELATION
    };
    Some(corrected.clamp(0.0, MAX_AUTOCORRELATION))
}

/// Var(mean of n consecutive AR(1) blocks) / (σ²/n): 1 + 2 Σ_{k<n} (1 − k/n) ρ^k.
fn mean_variance_factor(n: f64, rho: f64) -> f64 {
    let n_int = n as usize;
    let mut sum = 0.0;
    let mut rk = 1.0;
    for k in 1..n_int {
        rk *= rho;
        if rk < 1e-12 {
            break;
        }
        sum += (1.0 - k as f64 / n) * rk;
    }
    1.0 + 2.0 * sum
}

impl TStat {
    /// The statistic with the standard deviation taken as at least `floor`. The Bayes
    /// factor only grows with |t|, so a smaller |t| keeps the test valid (its e-process is
    /// bounded by the exact one); it stops a baseline without spread (a replica at 0 s of
    /// lag for ten minutes) from making any first non-zero block infinitely significant,
    /// which the Gaussian model says and no real metric means.
    pub fn with_sd_floor(self, floor: f64) -> TStat {
        if floor.is_nan() || floor <= 0.0 || self.sd >= floor {
            return self;
        }
        TStat {
            t: self.shift * self.n_delta.sqrt() / floor,
            sd: floor,
            ..self
        }
    }

    /// The statistic of blocks that follow an AR(1) process with lag-1 autocorrelation
    /// `rho`, `n_pre` blocks right before `n_post` (none before: the one-sample test)
    /// instead of independent ones. The shift's variance is then (Priestley, "Spectral
    /// Analysis and Time Series", 1981, §5.3, for a mean; the cross term for two adjacent
    /// runs follows from Cov(x_i, x_j) = σ² ρ^|j−i|):
    ///
    /// Var(ȳ₂ − ȳ₁) = σ² [f(n₁)/n₁ + f(n₂)/n₂ − 2 ρ (1−ρ^n₁)(1−ρ^n₂) / ((1−ρ)² n₁ n₂)],
    ///
    /// with f(n) = 1 + 2 Σ_{k<n} (1 − k/n) ρ^k, against σ² (1/n₁ + 1/n₂) for independent
    /// blocks. t and n_δ shrink by that ratio; t also by the pooled variance's own bias
    /// (each run's squares around its mean hold σ² (n − f(n)), not σ² (n − 1)), and ν by
    /// the long-run factor (1−ρ)/(1+ρ) (Bayley & Hammersley 1946), as the pooled variance
    /// rests on fewer independent blocks. A single block after a long pre-period costs almost nothing (its own
    /// variance is σ², and it lies close to the pre-period's end); a run of post blocks
    /// costs what a wander of that length can fake. Real metrics drift slowly (a host's
    /// latency wanders for minutes), and a test that took one-minute blocks as independent
    /// read such a wander as a regression.
    pub fn for_ar1(self, rho: f64, n_pre: usize, n_post: usize) -> TStat {
        let rho = rho.clamp(0.0, MAX_AUTOCORRELATION);
        let (n1, n2) = (n_pre as f64, n_post as f64);
        if rho == 0.0 || n2 < 1.0 {
            return self;
        }
        let (iid, ar) = if n1 < 1.0 {
            (1.0 / n2, mean_variance_factor(n2, rho) / n2)
        } else {
            let cross =
                rho * (1.0 - rho.powf(n1)) * (1.0 - rho.powf(n2)) / ((1.0 - rho).powi(2) * n1 * n2);
            (
                1.0 / n1 + 1.0 / n2,
                mean_variance_factor(n1, rho) / n1 + mean_variance_factor(n2, rho) / n2
                    - 2.0 * cross,
            )
        };
        // Never credit the autocorrelation with more information than independence.
        let keep = (iid / ar).min(1.0);
        let long_run = (1.0 - rho) / (1.0 + rho);
        // Each run's squares around its own mean hold σ² (n − f(n)), not σ² (n − 1): the
        // pooled variance underestimates σ² by that much.
        let run_df = |n: f64| {
            if n >= 1.0 {
                n - mean_variance_factor(n, rho)
            } else {
                0.0
            }
        };
        let held = (run_df(n1) + run_df(n2)).max(self.nu * long_run);
        let under = (held / self.nu).min(1.0);
        TStat {
            t: self.t * (keep * under).sqrt(),
            n_delta: self.n_delta * keep,
            nu: (self.nu * long_run).max(1.0_f64.min(self.nu)),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn no_evidence_at_t_zero_and_a_ceiling_without_spread() {
        assert!(log_bf(0.0, 5.0, 8.0, 1.0).unwrap() < 0.0);
        let top = log_bf(f64::INFINITY, 2.0, 3.0, 1.0).unwrap();
        assert!((top - 1.5 * 3f64.ln()).abs() < 1e-12);
        assert!(log_bf(1e9, 2.0, 3.0, 1.0).unwrap() <= top + 1e-9);
        assert!(log_bf(1.0, 0.0, 3.0, 1.0).is_none());
    }

    #[test]
    fn t_stat_matches_the_textbook_pooled_statistic() {
        let s = t_stat(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        // pooled sd 1, n_delta 1.5: t = 3 * sqrt(1.5).
        assert!((s.t - 3.0 * 1.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.nu, 4.0);
        let one = t_stat(&[], &[1.0, 3.0]).unwrap();
        assert!((one.t - 2.0 * 2f64.sqrt() / 2f64.sqrt()).abs() < 1e-12);
        assert!(t_stat(&[], &[1.0]).is_none());
    }

    /// Ville's inequality in action: with any variance, few null paths ever cross 1/α,
    /// looking after every observation.
    #[test]
    fn repeated_looks_under_the_null_stay_below_alpha() {
        let alpha: f64 = 0.05;
        let runs = 2000;
        let gs = [1.0, 10.0, 100.0];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut crossed = 0;
        for run in 0..runs {
            let sd = [0.01, 1.0, 300.0][run % 3];
            let noise = Normal::new(0.0, sd).unwrap();
            // Two-sample against ten earlier blocks, or one-sample against 0.
            let n_pre = if run % 2 == 0 { 10 } else { 0 };
            let pre: Vec<f64> = (0..n_pre).map(|_| noise.sample(&mut rng)).collect();
            let mut post = Vec::new();
            let mut hit = false;
            for _ in 0..60 {
                post.push(noise.sample(&mut rng));
                if let Some(s) = t_stat(&pre, &post)
                    && let Some(l) = log_bf_mixture(s.t, s.n_delta, s.nu, &gs)
                {
                    hit |= l >= (1.0 / alpha).ln();
                }
            }
            crossed += hit as usize;
        }
        let rate = crossed as f64 / runs as f64;
        assert!(rate <= alpha, "crossed {crossed} of {runs}");
    }

    #[test]
    fn a_large_shift_is_seen_within_a_few_observations() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise = Normal::new(0.0, 0.05).unwrap();
        let pre: Vec<f64> = (0..10).map(|_| noise.sample(&mut rng)).collect();
        let post: Vec<f64> = (0..3).map(|_| 1.0 + noise.sample(&mut rng)).collect();
        let s = t_stat(&pre, &post).unwrap();
        let l = log_bf_mixture(s.t, s.n_delta, s.nu, &[1.0, 10.0, 100.0]).unwrap();
        assert!(l > 1000f64.ln(), "{l}");
    }

    #[test]
    fn a_floor_on_the_spread_bounds_t() {
        let s = t_stat(&[0.0, 0.0, 0.0], &[24.0]).unwrap();
        assert!(s.t.is_infinite());
        let f = s.with_sd_floor(4.0);
        // 24 / (4 · sqrt(1/3 + 1)) = 5.196
        assert!((f.t - 24.0 * (0.75f64).sqrt() / 4.0).abs() < 1e-12, "{f:?}");
        // A spread above the floor is left alone.
        let wide = t_stat(&[0.0, 10.0, -10.0], &[24.0]).unwrap();
        assert_eq!(wide.with_sd_floor(4.0), wide);
    }

    #[test]
    fn ar1_variance_of_a_shift() {
        // One block after thirty at ρ = 0.64: the covariance with the pre-period's end
        // offsets the post block's own; about what independence gives.
        let s = TStat {
            t: 2.0,
            n_delta: 30.0 / 31.0,
            nu: 29.0,
            shift: 1.0,
            sd: 1.0,
        };
        let one = s.for_ar1(0.64, 30, 1);
        assert!(one.n_delta > 0.9 * s.n_delta, "{one:?}");
        // Six blocks: Var ratio (f(30)/30 + f(6)/6 − 2 cross) / (1/30 + 1/6), by hand
        // f(6) = 3.0218, f(30) ≈ 4.30.
        let six = TStat { n_delta: 5.0, ..s }.for_ar1(0.64, 30, 6);
        assert!(
            six.n_delta > 5.0 / 3.3 && six.n_delta < 5.0 / 2.6,
            "{six:?}"
        );
        // Independent blocks are left alone.
        assert_eq!(s.for_ar1(0.0, 30, 6), s);
    }

    #[test]
    fn lag1_autocorrelation_matches_the_sample_acf() {
        // statsmodels.tsa.stattools.acf([1, 2, 3, 4, 5], nlags=1)[1] = 0.4; Kendall's bias
        // correction over 5 blocks in one run: (0.4 · 5 + 1) / (5 − 3) = 1.5, clipped.
        let r = lag1_autocorrelation(&[&[1.0, 2.0, 3.0, 4.0, 5.0]]).unwrap();
        assert!((r - MAX_AUTOCORRELATION).abs() < 1e-12, "{r}");
        // statsmodels acf([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], nlags=1)[1] = -0.07704;
        // corrected: (-0.07704 · 12 + 1) / 9 = 0.008386.
        let r =
            lag1_autocorrelation(&[&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0]])
                .unwrap();
        assert!((r - 0.008386).abs() < 1e-6, "{r}");
        // Negative autocorrelation counts as none; no spread gives no estimate.
        assert_eq!(lag1_autocorrelation(&[&[1.0, -1.0, 1.0, -1.0]]), Some(0.0));
        assert_eq!(lag1_autocorrelation(&[&[2.0, 2.0], &[1.0]]), None);
    }

    /// Blocks that wander (AR(1), ρ = 0.8, as a host's latency does) break the independent
    /// blocks' guarantee; the effective sample size, with ρ estimated from the data,
    /// restores it. Both halves are asserted, so the test shows the correction is needed.
    #[test]
    fn autocorrelated_blocks_need_the_effective_sample_size() {
        let alpha: f64 = 0.05;
        let runs = 4000;
        let gs = [1.0, 10.0, 100.0];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let (mut naive, mut corrected) = (0, 0);
        for _ in 0..runs {
            let mut x: f64 = noise.sample(&mut rng) / (1.0f64 - 0.64).sqrt();
            let mut step = || {
                x = 0.8 * x + noise.sample(&mut rng);
                x
            };
            let pre: Vec<f64> = (0..30).map(|_| step()).collect();
            let mut post = Vec::new();
            let (mut hit_naive, mut hit_corrected) = (false, false);
            for _ in 0..30 {
                post.push(step());
                let Some(s) = t_stat(&pre, &post) else {
                    continue;
                };
                let over = |s: TStat| {
                    log_bf_mixture(s.t, s.n_delta, s.nu, &gs)
                        .is_some_and(|l| l >= (1.0 / alpha).ln())
                };
                hit_naive |= over(s);
                let rho = lag1_autocorrelation(&[&pre, &post]).unwrap_or(0.0);
                hit_corrected |= over(s.for_ar1(rho, pre.len(), post.len()));
            }
            naive += usize::from(hit_naive);
            corrected += usize::from(hit_corrected);
        }
        let limit = (alpha * runs as f64) as usize;
        assert!(naive > 2 * limit, "independent blocks: {naive} of {runs}");
        assert!(
            corrected <= limit,
            "effective sample size: {corrected} of {runs}"
        );
    }
}
