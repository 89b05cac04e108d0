//! Slow-failure detection: trend tests over a metric's history (Mann–Kendall,
//! Theil–Sen slope) and streaming change detectors (Page–Hinkley, CUSUM) for
//! regressions that creep in after a deploy (a query slowing as a table grows).

use super::{StatsError, check_finite, median, norm_cdf, norm_sf};

/// Result of [`mann_kendall`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MannKendall {
    /// S = Σ_{i<j} sign(x_j − x_i).
    pub s: f64,
    /// Var(S) with the tie correction.
    pub var_s: f64,
    /// Z with continuity correction: (S−1)/σ if S > 0, (S+1)/σ if S < 0, else 0.
    pub z: f64,
    /// Two-sided p-value (any monotonic trend).
    pub p_two_sided: f64,
    /// One-sided p-value for an increasing trend.
    pub p_increasing: f64,
    /// One-sided p-value for a decreasing trend.
    pub p_decreasing: f64,
    /// Kendall's tau-a = S / (n(n−1)/2).
    pub tau: f64,
    /// Number of values.
    pub n: usize,
}

/// Mann–Kendall trend test of a series in time order.
///
/// Method: Mann (1945), Kendall (1975): S = Σ sign(x_j − x_i),
/// Var(S) = (n(n−1)(2n+5) − Σ t(t−1)(2t+5)) / 18 over tie groups t,
/// Z = (S ∓ 1)/√Var(S). Formulas and outputs as `pymannkendall.original_test`
/// (Hussain & Mahmud 2019), which is the reference transcribed in
/// scripts/stats_fixtures.py; tau is tau-a, equal to
/// `scipy.stats.kendalltau(range(n), x)` when there are no ties (also checked).
/// Needs n ≥ 2; all-equal values give Z = 0, p = 1. O(n²).
pub fn mann_kendall(values: &[f64]) -> Result<MannKendall, StatsError> {
    check_finite("values", values)?;
    let n = values.len();
    if n < 2 {
        return Err(StatsError::TooFew {
            what: "values",
            needed: 2,
            got: n,
        });
    }
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            if values[j] > values[i] {
                s += 1;
            } else if values[j] < values[i] {
                s -= 1;
            }
        }
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let nf = n as f64;
    let mut var = nf * (nf - 1.0) * (2.0 * nf + 5.0);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        var -= t * (t - 1.0) * (2.0 * t + 5.0);
        i = j;
    }
    let var_s = var / 18.0;
    let sf = s as f64;
    let z = if var_s <= 0.0 || s == 0 {
        0.0
    } else if s > 0 {
        (sf - 1.0) / var_s.sqrt()
    } else {
        (sf + 1.0) / var_s.sqrt()
    };
    Ok(MannKendall {
        s: sf,
        var_s,
        z,
        p_two_sided: (2.0 * norm_sf(z.abs())).min(1.0),
        p_increasing: norm_sf(z),
        p_decreasing: norm_cdf(z),
        tau: sf / (0.5 * nf * (nf - 1.0)),
        n,
    })
}

/// Result of [`theil_sen`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TheilSen {
    /// Median of pairwise slopes.
    pub slope: f64,
    /// median(y) − slope·median(x).
    pub intercept: f64,
    /// Lower end of the 95% confidence interval for the slope (Sen 1968).
    pub low_slope: f64,
    /// Upper end of the 95% confidence interval for the slope.
    pub high_slope: f64,
}

/// Theil–Sen robust line fit.
///
/// Method: Theil (1950), Sen (1968): slope = median of (y_j − y_i)/(x_j − x_i)
/// over pairs with x_j ≠ x_i; intercept = median(y) − slope·median(x); 95% CI
/// from Sen's eq. 2.6 with tie corrections. Matches `scipy.stats.theilslopes(y,
/// x, alpha=0.95, method='separate')` (rounding half to even, as NumPy).
/// O(n² log n).
/// Errors: length mismatch, fewer than 2 points, all x equal.
pub fn theil_sen(x: &[f64], y: &[f64]) -> Result<TheilSen, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch {
            what: "x/y",
            left: x.len(),
            right: y.len(),
        });
    }
    check_finite("x", x)?;
    check_finite("y", y)?;
    let n = x.len();
    if n < 2 {
        return Err(StatsError::TooFew {
            what: "x/y",
            needed: 2,
            got: n,
        });
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in 0..n {
            let dx = x[i] - x[j];
            if dx > 0.0 {
                slopes.push((y[i] - y[j]) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return Err(StatsError::Degenerate {
            what: "all x values are identical: the slope is undefined",
        });
    }
    let slope = median(&mut slopes); // also sorts `slopes`
    let intercept = median(&mut y.to_vec()) - slope * median(&mut x.to_vec());
    // Sen (1968) eq. 2.6.
    let tie_sum = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let mut acc = 0.0;
        let mut i = 0;
        while i < s.len() {
            let mut j = i + 1;
            while j < s.len() && s[j] == s[i] {
                j += 1;
            }
            let k = (j - i) as f64;
            acc += k * (k - 1.0) * (2.0 * k + 5.0);
            i = j;
        }
        acc
    };
    let nf = n as f64;
    let sigsq = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - tie_sum(x) - tie_sum(y)) / 18.0;
    // -norm.ppf(0.025)
    const Z: f64 = 1.959_963_984_540_054;
    let nt = slopes.len() as f64;
    let sigma = sigsq.max(0.0).sqrt();
    let last = slopes.len() - 1;
    let ru = (((nt + Z * sigma) / 2.0).round_ties_even() as usize).min(last);
    let rl = ((((nt - Z * sigma) / 2.0).round_ties_even() - 1.0).max(0.0) as usize).min(last);
    Ok(TheilSen {
        slope,
        intercept,
        low_slope: slopes[rl],
        high_slope: slopes[ru],
    })
}

/// Page–Hinkley test for an increase in the mean of a stream.
///
/// Method: Page (1954), Hinkley (1971), in the form of Gama et al. (2014):
/// m_t = Σ_{i≤t} (x_i − x̄_t − δ) with x̄_t the running mean, M_t = min m_t,
/// alarm when m_t − M_t > λ. δ is the magnitude of change tolerated, λ the
/// alarm threshold (larger λ: fewer false alarms, later detection). To watch
/// for a decrease, feed −x.
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkley {
    delta: f64,
    lambda: f64,
    n: u64,
    mean: f64,
    cum: f64,
    min_cum: f64,
}

impl PageHinkley {
    /// `delta` ≥ 0 and `lambda` > 0, both finite.
    pub fn new(delta: f64, lambda: f64) -> Result<Self, StatsError> {
        if !delta.is_finite() || delta < 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "delta",
                value: delta,
            });
        }
        if !lambda.is_finite() || lambda <= 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "lambda",
                value: lambda,
            });
        }
        Ok(Self {
            delta,
            lambda,
            n: 0,
            mean: 0.0,
            cum: 0.0,
            min_cum: 0.0,
        })
    }

    /// Adds one value; returns whether the alarm condition holds now. The
    /// state is kept after an alarm (call [`PageHinkley::reset`] to restart).
    /// A non-finite value is refused and leaves the state unchanged.
    pub fn update(&mut self, x: f64) -> Result<bool, StatsError> {
        if !x.is_finite() {
            return Err(StatsError::NonFinite { what: "x" });
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.cum += x - self.mean - self.delta;
        self.min_cum = self.min_cum.min(self.cum);
        Ok(self.statistic() > self.lambda)
    }

    /// Current statistic m_t − M_t.
    pub fn statistic(&self) -> f64 {
        self.cum - self.min_cum
    }

    /// Forgets all values.
    pub fn reset(&mut self) {
        self.n = 0;
        self.mean = 0.0;
        self.cum = 0.0;
        self.min_cum = 0.0;
    }
}

/// One-sided upper tabular CUSUM (Page 1954; Montgomery, *Introduction to
/// Statistical Quality Control*, §9.1): S_t = max(0, S_{t−1} + x_t − target − k),
/// alarm when S_t > h. Typical choice with in-control σ: k = σ/2 (detects a
/// shift of one σ), h = 4σ or 5σ. To watch for decreases, feed −x and −target.
#[derive(Debug, Clone, PartialEq)]
pub struct Cusum {
    target: f64,
    k: f64,
    h: f64,
    s: f64,
}

impl Cusum {
    /// `target` finite, `k` ≥ 0, `h` > 0.
    pub fn new(target: f64, k: f64, h: f64) -> Result<Self, StatsError> {
        if !target.is_finite() {
            return Err(StatsError::NonFinite { what: "target" });
        }
        if !k.is_finite() || k < 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "k",
                value: k,
            });
        }
        if !h.is_finite() || h <= 0.0 {
            return Err(StatsError::InvalidParameter {
                what: "h",
                value: h,
            });
        }
        Ok(Self {
            target,
            k,
            h,
            s: 0.0,
        })
    }

    /// Adds one value; returns whether S_t > h. A non-finite value is refused.
    pub fn update(&mut self, x: f64) -> Result<bool, StatsError> {
        if !x.is_finite() {
            return Err(StatsError::NonFinite { what: "x" });
        }
        self.s = (self.s + x - self.target - self.k).max(0.0);
        Ok(self.s > self.h)
    }

    /// Current S_t.
    pub fn statistic(&self) -> f64 {
        self.s
    }

    /// Sets S back to 0.
    pub fn reset(&mut self) {
        self.s = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        assert!(mann_kendall(&[1.0]).is_err());
        assert!(mann_kendall(&[1.0, f64::NAN]).is_err());
        assert!(theil_sen(&[1.0, 2.0], &[1.0]).is_err());
        assert!(theil_sen(&[1.0, 1.0], &[1.0, 2.0]).is_err());
        assert!(theil_sen(&[1.0, f64::INFINITY], &[1.0, 2.0]).is_err());
        assert!(PageHinkley::new(-1.0, 1.0).is_err());
        assert!(PageHinkley::new(0.0, 0.0).is_err());
        assert!(Cusum::new(0.0, 0.5, f64::NAN).is_err());
        let mut ph = PageHinkley::new(0.0, 1.0).unwrap();
        assert!(ph.update(f64::NAN).is_err());
        let mut c = Cusum::new(0.0, 0.5, 4.0).unwrap();
        assert!(c.update(f64::INFINITY).is_err());
    }

    #[test]
    fn all_ties_no_trend() {
        let r = mann_kendall(&[3.0; 6]).unwrap();
        assert_eq!((r.s, r.var_s, r.z, r.p_two_sided), (0.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn page_hinkley_detects_step_not_noise_free_constant() {
        let mut ph = PageHinkley::new(0.05, 5.0).unwrap();
        for _ in 0..100 {
            assert!(!ph.update(1.0).unwrap());
        }
        let mut alarmed_at = None;
        for i in 0..100 {
            if ph.update(3.0).unwrap() {
                alarmed_at = Some(i);
                break;
            }
        }
        // After the step each value adds about 2 − δ to m_t: alarm within a few values.
        assert!(alarmed_at.is_some_and(|i| i < 5), "{alarmed_at:?}");
    }

    #[test]
    fn cusum_known_sequence() {
        let mut c = Cusum::new(10.0, 0.5, 2.0).unwrap();
        let mut out = vec![];
        for x in [10.0, 11.0, 11.0, 9.0, 12.0] {
            out.push((c.update(x).unwrap(), c.statistic()));
        }
        // S: 0, 0.5, 1.0, 0, 1.5
        assert_eq!(
            out,
            vec![
                (false, 0.0),
                (false, 0.5),
                (false, 1.0),
                (false, 0.0),
                (false, 1.5)
            ]
        );
        assert!(c.update(12.0).unwrap()); // 1.5 + 1.5 = 3 > 2
    }
}
