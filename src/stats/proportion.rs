//! Two-sample tests of proportions (successes out of trials): e.g. the share
//! of failed requests on canary hosts against control hosts.
//!
//! [`two_proportions`] is the large-sample pooled z-test; [`fisher_exact`] is
//! exact for small counts (and conditions on the margins, like the exact
//! Poisson test).

use super::{Alternative, StatsError, TestResult, ln_choose, normal_p};

fn check_counts(what: &'static str, x: u64, n: u64) -> Result<(), StatsError> {
    if n == 0 {
        return Err(StatsError::Empty { what });
    }
    if x > n {
        return Err(StatsError::InvalidParameter {
            what,
            value: x as f64,
        });
    }
    Ok(())
}

/// Pooled two-proportion z-test of p1 = p0.
///
/// Method: z = (p̂1 − p̂0) / sqrt(p̂(1−p̂)(1/n1 + 1/n0)) with the pooled
/// p̂ = (x1+x0)/(n1+n0) (Agresti, *Categorical Data Analysis*, 3rd ed., §3.1).
/// Matches statsmodels `proportions_ztest([x1, x0], [n1, n0], value=0)`
/// (`alternative='larger'` = [`Alternative::Greater`]).
///
/// When the pooled proportion is 0 or 1 the two observed proportions are equal
/// and the variance is zero: returns z = 0, p = 1 (statsmodels returns NaN).
/// Errors: n = 0 ([`StatsError::Empty`]), x > n.
pub fn two_proportions(
    x1: u64,
    n1: u64,
    x0: u64,
    n0: u64,
    alt: Alternative,
) -> Result<TestResult, StatsError> {
    check_counts("x1/n1", x1, n1)?;
    check_counts("x0/n0", x0, n0)?;
    let (x1f, n1f, x0f, n0f) = (x1 as f64, n1 as f64, x0 as f64, n0 as f64);
    let pooled = (x1f + x0f) / (n1f + n0f);
    let var = pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n0f);
    if var <= 0.0 {
        return Ok(TestResult {
            statistic: 0.0,
            p_value: 1.0,
        });
    }
    let z = (x1f / n1f - x0f / n0f) / var.sqrt();
    Ok(TestResult {
        statistic: z,
        p_value: normal_p(z, alt),
    })
}

/// Fisher's exact test on the 2×2 table [[x1, n1−x1], [x0, n0−x0]].
///
/// Method: conditional on all margins, x1 is hypergeometric (Fisher 1935).
/// Matches `scipy.stats.fisher_exact(table, alternative)`: the two-sided p
/// sums the probabilities of tables no more likely than the observed one
/// (relative tolerance 1e-7); `Greater` = first row's proportion larger (odds
/// ratio > 1). `statistic` is the sample odds ratio (x1·(n0−x0)) / ((n1−x1)·x0),
/// `+inf` when only the denominator is 0, and 1.0 when both products are 0
/// (SciPy reports NaN there).
pub fn fisher_exact(
    x1: u64,
    n1: u64,
    x0: u64,
    n0: u64,
    alt: Alternative,
) -> Result<TestResult, StatsError> {
    check_counts("x1/n1", x1, n1)?;
    check_counts("x0/n0", x0, n0)?;
    let (a, b, c, d) = (x1 as f64, (n1 - x1) as f64, x0 as f64, (n0 - x0) as f64);
    let num = a * d;
    let den = b * c;
    let statistic = if den == 0.0 {
        if num == 0.0 { 1.0 } else { f64::INFINITY }
    } else {
        num / den
    };
    // X = top-left cell ~ Hypergeom(total M, successes K = x1 + x0, draws N = n1).
    let m = n1 + n0;
    let k = x1 + x0;
    let lo = (n1 + k).saturating_sub(m);
    let hi = k.min(n1);
    let ln_denom = ln_choose(m as f64, n1 as f64);
    let ln_pmf = |x: u64| {
        ln_choose(k as f64, x as f64) + ln_choose((m - k) as f64, (n1 - x) as f64) - ln_denom
    };
    let sum = |from: u64, to: u64, keep: &dyn Fn(f64) -> bool| {
        let mut s = 0.0;
        for x in from..=to {
            let l = ln_pmf(x);
            if keep(l) {
                s += l.exp();
            }
        }
        s
    };
    let p = match alt {
        Alternative::Greater => sum(x1, hi, &|_| true),
        Alternative::Less => sum(lo, x1, &|_| true),
        Alternative::TwoSided => {
            let thr = ln_pmf(x1) + (1.0f64 + 1e-7).ln();
            sum(lo, hi, &|l| l <= thr)
        }
    };
    Ok(TestResult {
        statistic,
        p_value: p.clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            two_proportions(0, 0, 1, 2, alt),
            Err(StatsError::Empty { .. })
        ));
        assert!(two_proportions(3, 2, 1, 2, alt).is_err());
        assert!(fisher_exact(3, 2, 1, 2, alt).is_err());
        assert!(fisher_exact(1, 2, 0, 0, alt).is_err());
    }

    #[test]
    fn all_zero_or_all_success_is_no_evidence() {
        let r = two_proportions(0, 10, 0, 20, Alternative::TwoSided).unwrap();
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
        let r = two_proportions(10, 10, 20, 20, Alternative::Greater).unwrap();
        assert_eq!(r.p_value, 1.0);
    }
}
