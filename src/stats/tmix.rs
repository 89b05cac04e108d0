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
}
