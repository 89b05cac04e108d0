//! Rate-ratio tests for event counts observed over an exposure (requests,
//! host-seconds): canary against baseline.
//!
//! Two tools for two situations. [`poisson_ratio_exact`] conditions on the
//! total count, which cancels the common (unknown, time-varying) rate and is
//! exact for small counts. [`poisson_ratio_overdispersed`] uses per-host counts
//! to estimate extra-Poisson variation (hosts differ more than Poisson says),
//! which is what makes naive Poisson tests reject far too often on real fleets.

use super::{Alternative, StatsError, TestResult, finite, ln_choose, normal_p};
use statrs::function::beta::beta_reg;

/// Relative tolerance SciPy's `binomtest` uses when it collects the outcomes
/// "as or less likely" than the observed one (two-sided p-value).
const BINOM_RERR: f64 = 1.0 + 1e-7;

fn ln_binom_pmf(k: u64, n: u64, p: f64) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    let mut v = ln_choose(nf, kf);
    if k > 0 {
        v += kf * p.ln();
    }
    if n > k {
        v += (nf - kf) * (-p).ln_1p();
    }
    v
}

/// P(X <= k) for X ~ Binomial(n, p).
fn binom_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        1.0
    } else {
        beta_reg((n - k) as f64, k as f64 + 1.0, 1.0 - p)
    }
}

/// P(X > k) for X ~ Binomial(n, p).
fn binom_sf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        0.0
    } else {
        beta_reg(k as f64 + 1.0, (n - k) as f64, p)
    }
}

/// P(X >= k).
fn binom_ge(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 { 1.0 } else { binom_sf(k - 1, n, p) }
}

/// Exact binomial test p-value, same definition as `scipy.stats.binomtest`
/// (two-sided: total probability of outcomes no more likely than the observed
/// one, with SciPy's relative tolerance 1e-7). `p` must lie in (0, 1).
pub(crate) fn binom_test_p(k: u64, n: u64, p: f64, alt: Alternative) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let pv = match alt {
        Alternative::Greater => binom_ge(k, n, p),
        Alternative::Less => binom_cdf(k, n, p),
        Alternative::TwoSided => {
            let mean = p * n as f64;
            let kf = k as f64;
            if kf == mean {
                1.0
            } else {
                let thr = ln_binom_pmf(k, n, p) + BINOM_RERR.ln();
                if kf < mean {
                    // Upper side [ceil(np), n]: pmf is non-increasing there.
                    let (mut lo, mut hi) = (mean.ceil() as u64, n + 1);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        if ln_binom_pmf(mid, n, p) <= thr {
                            hi = mid;
                        } else {
                            lo = mid + 1;
                        }
                    }
                    let upper = if lo > n { 0.0 } else { binom_ge(lo, n, p) };
                    binom_cdf(k, n, p) + upper
                } else {
                    // Lower side [0, floor(np)]: pmf is non-decreasing there.
                    // Find the count of j with pmf(j) <= thr (a prefix).
                    let (mut lo, mut hi) = (0u64, mean.floor() as u64 + 1);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        if ln_binom_pmf(mid, n, p) <= thr {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    let lower = if lo == 0 {
                        0.0
                    } else {
                        binom_cdf(lo - 1, n, p)
                    };
                    lower + binom_ge(k, n, p)
                }
            }
        }
    };
    pv.clamp(0.0, 1.0)
}

fn check_exposure(what: &'static str, e: f64) -> Result<f64, StatsError> {
    let e = finite(what, e)?;
    if e <= 0.0 {
        return Err(StatsError::InvalidParameter { what, value: e });
    }
    Ok(e)
}

/// Exact conditional test of the Poisson rate ratio λ1/λ0 against `ratio_null`.
///
/// Method: given n = count1 + count0, count1 ~ Binomial(n, p) with
/// p = r·e1 / (r·e1 + e0) under H0: λ1/λ0 = r (Przyborowski & Wilenski 1940;
/// Gu, Ng, Tang & Schucany 2008). Matches statsmodels
/// `test_poisson_2indep(count1, exposure1, count0, exposure0, value=ratio_null,
/// method='exact-cond', compare='ratio')`, which calls `scipy.stats.binomtest`.
/// The conditioning cancels the common rate, so traffic shape does not matter.
///
/// `statistic` is the observed rate ratio (count1/e1)/(count0/e0): `+inf` when
/// count0 = 0 < count1, and 1.0 when both counts are 0 (no events: no evidence,
/// p = 1).
pub fn poisson_ratio_exact(
    count1: u64,
    exposure1: f64,
    count0: u64,
    exposure0: f64,
    ratio_null: f64,
    alt: Alternative,
) -> Result<TestResult, StatsError> {
    let e1 = check_exposure("exposure1", exposure1)?;
    let e0 = check_exposure("exposure0", exposure0)?;
    let r = check_exposure("ratio_null", ratio_null)?;
    let n = count1
        .checked_add(count0)
        .ok_or(StatsError::InvalidParameter {
            what: "count1 + count0 overflows",
            value: f64::INFINITY,
        })?;
    if n == 0 {
        return Ok(TestResult {
            statistic: 1.0,
            p_value: 1.0,
        });
    }
    let re1 = r * e1;
    let p = re1 / (re1 + e0);
    if !(p > 0.0 && p < 1.0) {
        return Err(StatsError::InvalidParameter {
            what: "ratio_null * exposure1 / exposure0 is out of floating-point range",
            value: p,
        });
    }
    let statistic = if count0 == 0 {
        f64::INFINITY
    } else {
        (count1 as f64 / e1) / (count0 as f64 / e0)
    };
    Ok(TestResult {
        statistic,
        p_value: binom_test_p(count1, n, p, alt),
    })
}

/// Result of [`poisson_ratio_overdispersed`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OverdispersedResult {
    /// Estimated rate ratio (group 1 / group 0) = exp(log_ratio).
    pub rate_ratio: f64,
    /// Estimated log rate ratio (the GLM group coefficient).
    pub log_ratio: f64,
    /// Standard error of `log_ratio`, inflated by `dispersion`.
    pub se: f64,
    /// Quasi-Poisson dispersion φ = Pearson χ² / (N − 2), floored at 1.
    pub dispersion: f64,
    /// Dispersion before the floor (Pearson χ² / (N − 2)); 1 when N = 2.
    pub dispersion_raw: f64,
    /// Wald statistic log_ratio / se.
    pub z: f64,
    /// p-value from the standard normal (as statsmodels GLM's default).
    pub p_value: f64,
    /// Number of units (hosts) used (units with zero exposure and zero count are skipped).
    pub units: usize,
}

/// Quasi-Poisson rate-ratio test from per-unit (per-host) counts and exposures.
///
/// Method: log-linear model log μ_i = β0 + β1·g_i + log e_i (McCullagh & Nelder
/// 1989, §6.2; Wedderburn 1974 quasi-likelihood). With one binary covariate the
/// MLE is closed-form: exp(β1) = (C1/E1)/(C0/E0), Var(β1) = φ(1/C1 + 1/C0),
/// φ = Pearson χ² / (N − 2). This matches statsmodels
/// `GLM(y, [1, g], family=Poisson(), offset=log(e)).fit(scale='X2')` (params,
/// bse, two-sided normal p-value) whenever φ ≥ 1. Deliberate difference: φ is
/// floored at 1 so under-dispersed data never make the test *more* confident
/// than plain Poisson. With N = 2 (one unit per group) φ cannot be estimated
/// and is taken as 1 (plain Poisson Wald test).
///
/// Units with zero exposure and zero count carry no information and are
/// skipped. Errors: a group whose total count is zero makes the log ratio
/// infinite ([`StatsError::Degenerate`]); use [`poisson_ratio_exact`] then.
pub fn poisson_ratio_overdispersed(
    counts1: &[u64],
    exposures1: &[f64],
    counts0: &[u64],
    exposures0: &[f64],
    alt: Alternative,
) -> Result<OverdispersedResult, StatsError> {
    fn group(
        what: &'static str,
        counts: &[u64],
        exposures: &[f64],
    ) -> Result<Vec<(f64, f64)>, StatsError> {
        if counts.len() != exposures.len() {
            return Err(StatsError::LengthMismatch {
                what,
                left: counts.len(),
                right: exposures.len(),
            });
        }
        let mut out = Vec::with_capacity(counts.len());
        for (&c, &e) in counts.iter().zip(exposures) {
            let e = finite(what, e)?;
            if e < 0.0 || (e == 0.0 && c > 0) {
                return Err(StatsError::InvalidParameter { what, value: e });
            }
            if e > 0.0 {
                out.push((c as f64, e));
            }
        }
        if out.is_empty() {
            return Err(StatsError::Empty { what });
        }
        Ok(out)
    }
    let g1 = group("counts1/exposures1", counts1, exposures1)?;
    let g0 = group("counts0/exposures0", counts0, exposures0)?;
    let tot = |g: &[(f64, f64)]| {
        g.iter()
            .fold((0.0, 0.0), |(c, e), &(ci, ei)| (c + ci, e + ei))
    };
    let (c1, e1) = tot(&g1);
    let (c0, e0) = tot(&g0);
    if c1 == 0.0 || c0 == 0.0 {
        return Err(StatsError::Degenerate {
            what: "a group has zero total count: the log rate ratio is infinite; use poisson_ratio_exact",
        });
    }
    let (rate1, rate0) = (c1 / e1, c0 / e0);
    let pearson = |g: &[(f64, f64)], rate: f64| {
        g.iter()
            .map(|&(c, e)| {
                let mu = rate * e;
                (c - mu) * (c - mu) / mu
            })
            .sum::<f64>()
    };
    let x2 = pearson(&g1, rate1) + pearson(&g0, rate0);
    let units = g1.len() + g0.len();
    let dispersion_raw = if units > 2 {
        x2 / (units - 2) as f64
    } else {
        1.0
    };
    let dispersion = dispersion_raw.max(1.0);
    let log_ratio = rate1.ln() - rate0.ln();
    let se = (dispersion * (1.0 / c1 + 1.0 / c0)).sqrt();
    let z = log_ratio / se;
    Ok(OverdispersedResult {
        rate_ratio: log_ratio.exp(),
        log_ratio,
        se,
        dispersion,
        dispersion_raw,
        z,
        p_value: normal_p(z, alt),
        units,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_exposures() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            poisson_ratio_exact(1, f64::NAN, 1, 1.0, 1.0, alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(matches!(
            poisson_ratio_exact(1, 1.0, 1, f64::INFINITY, 1.0, alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(poisson_ratio_exact(1, 0.0, 1, 1.0, 1.0, alt).is_err());
        assert!(poisson_ratio_exact(1, 1.0, 1, 1.0, -1.0, alt).is_err());
    }

    #[test]
    fn zero_counts_give_no_evidence() {
        let r = poisson_ratio_exact(0, 10.0, 0, 5.0, 1.0, Alternative::TwoSided).unwrap();
        assert_eq!(r.p_value, 1.0);
        let r = poisson_ratio_exact(12, 10.0, 0, 5.0, 1.0, Alternative::Greater).unwrap();
        // P(X = 12 | n = 12, p = 2/3) = (2/3)^12.
        assert!(r.statistic.is_infinite());
        assert!((r.p_value - (2.0f64 / 3.0).powi(12)).abs() < 1e-12);
    }

    #[test]
    fn overdispersed_errors() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            poisson_ratio_overdispersed(&[], &[], &[1], &[1.0], alt),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            poisson_ratio_overdispersed(&[1], &[1.0, 2.0], &[1], &[1.0], alt),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            poisson_ratio_overdispersed(&[1], &[f64::NAN], &[1], &[1.0], alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(matches!(
            poisson_ratio_overdispersed(&[0, 0], &[1.0, 1.0], &[3], &[1.0], alt),
            Err(StatsError::Degenerate { .. })
        ));
        // Zero-exposure, zero-count units are skipped.
        let a =
            poisson_ratio_overdispersed(&[3, 0], &[1.0, 0.0], &[4, 5], &[1.0, 1.0], alt).unwrap();
        let b = poisson_ratio_overdispersed(&[3], &[1.0], &[4, 5], &[1.0, 1.0], alt).unwrap();
        assert_eq!(a, b);
    }
}
