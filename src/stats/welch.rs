//! Mean comparisons with Student t statistics: Welch's test when both groups
//! have enough values, and a prediction test when the treatment group is tiny
//! (one or two canary hosts) and only the control group can estimate the spread.

use super::{Alternative, StatsError, TestResult, check_sample, t_p};

/// Mean and unbiased (ddof = 1) variance, two-pass for accuracy.
pub(crate) fn mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let ss: f64 = xs.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, ss / (n - 1.0))
}

/// Result when the standard error is zero: equal means are no evidence
/// (t = 0, p = 1); different means are a certain difference (t = ±inf, p = 0
/// on the matching side, 1 on the other).
fn zero_se(diff: f64, alt: Alternative) -> TestResult {
    if diff == 0.0 {
        return TestResult {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    let statistic = if diff > 0.0 {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    };
    TestResult {
        statistic,
        p_value: t_p(statistic, 1.0, alt),
    }
}

fn check_len(what: &'static str, xs: &[f64], needed: usize) -> Result<(), StatsError> {
    check_sample(what, xs)?;
    if xs.len() < needed {
        return Err(StatsError::TooFew {
            what,
            needed,
            got: xs.len(),
        });
    }
    Ok(())
}

/// Welch's unequal-variance t-test of mean(x) against mean(y).
///
/// Method: t = (x̄ − ȳ) / sqrt(s²x/nx + s²y/ny), Welch–Satterthwaite degrees
/// of freedom (Welch 1947). Matches `scipy.stats.ttest_ind(x, y,
/// equal_var=False, alternative)`. Needs at least 2 values per sample. When
/// both samples are constant (zero standard error), SciPy returns NaN; we
/// return t = 0, p = 1 for equal means and t = ±inf (p = 0 on that side)
/// otherwise.
pub fn welch_t(x: &[f64], y: &[f64], alt: Alternative) -> Result<TestResult, StatsError> {
    check_len("x", x, 2)?;
    check_len("y", y, 2)?;
    let (mx, vx) = mean_var(x);
    let (my, vy) = mean_var(y);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (ax, ay) = (vx / nx, vy / ny);
    let se2 = ax + ay;
    if se2 <= 0.0 {
        return Ok(zero_se(mx - my, alt));
    }
    let df = se2 * se2 / (ax * ax / (nx - 1.0) + ay * ay / (ny - 1.0));
    let t = (mx - my) / se2.sqrt();
    Ok(TestResult {
        statistic: t,
        p_value: t_p(t, df, alt),
    })
}

/// Prediction t-test: is the mean of a small treatment group (even one value)
/// consistent with the control group?
///
/// Method: if treatment values come from the control distribution
/// N(μ, σ²), then t = (x̄_t − x̄_c) / (s_c·sqrt(1/n_t + 1/n_c)) follows Student t
/// with n_c − 1 degrees of freedom, since x̄_t − x̄_c ~ N(0, σ²(1/n_t + 1/n_c))
/// is independent of s_c (the classical prediction interval for a future
/// mean; Hahn & Meeker, *Statistical Intervals*, 1991, §4.7). Only the
/// control's variance is used, so n_t = 1 works. Reference: direct
/// `scipy.stats.t.sf` computation. Needs n_c ≥ 2.
///
/// When s_c = 0 (constant control): equal means give t = 0, p = 1; any
/// difference gives t = ±inf and p = 0 on that side. That is the honest
/// limit, but a constant control usually means a stuck gauge: callers may
/// prefer to treat it as inconclusive.
pub fn prediction_t(
    treatment: &[f64],
    control: &[f64],
    alt: Alternative,
) -> Result<TestResult, StatsError> {
    check_len("treatment", treatment, 1)?;
    check_len("control", control, 2)?;
    let mt = treatment.iter().sum::<f64>() / treatment.len() as f64;
    let (mc, vc) = mean_var(control);
    let (nt, nc) = (treatment.len() as f64, control.len() as f64);
    let se = (vc * (1.0 / nt + 1.0 / nc)).sqrt();
    if se <= 0.0 {
        return Ok(zero_se(mt - mc, alt));
    }
    let t = (mt - mc) / se;
    Ok(TestResult {
        statistic: t,
        p_value: t_p(t, nc - 1.0, alt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            welch_t(&[1.0], &[1.0, 2.0], alt),
            Err(StatsError::TooFew { .. })
        ));
        assert!(matches!(
            welch_t(&[], &[1.0, 2.0], alt),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            welch_t(&[1.0, f64::NAN], &[1.0, 2.0], alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(prediction_t(&[1.0], &[1.0], alt).is_err());
        assert!(prediction_t(&[f64::INFINITY], &[1.0, 2.0], alt).is_err());
        assert!(prediction_t(&[], &[1.0, 2.0], alt).is_err());
    }

    #[test]
    fn constant_samples() {
        let r = welch_t(&[3.0, 3.0], &[3.0, 3.0, 3.0], Alternative::TwoSided).unwrap();
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
        let r = welch_t(&[4.0, 4.0], &[3.0, 3.0, 3.0], Alternative::Greater).unwrap();
        assert_eq!((r.statistic, r.p_value), (f64::INFINITY, 0.0));
        let r = prediction_t(&[4.0], &[3.0, 3.0, 3.0], Alternative::Less).unwrap();
        assert_eq!(r.p_value, 1.0);
    }
}
