//! Distribution shape: the two-sample Kolmogorov–Smirnov test (a change in
//! spread or in a tail is a regression even when the mean holds), sample
//! quantiles, and Prometheus-style quantiles from cumulative histogram buckets.

use super::{Alternative, StatsError, TestResult, check_sample, finite, ln_choose};

/// How [`ks_2samp_with`] computes the p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    /// Exact when max(n1, n2) ≤ 10 000 (SciPy's rule) *and* n1·n2 ≤ 10⁷ (our
    /// cost bound: the exact method is O(n1·n2)); asymptotic otherwise.
    Auto,
    /// Exact lattice-path probability (O(n1·n2) time, O(n2) memory).
    Exact,
    /// Large-sample approximation.
    Asymptotic,
}

const AUTO_MAX_N: usize = 10_000;
const AUTO_MAX_WORK: usize = 10_000_000;

/// Two-sample Kolmogorov–Smirnov test with [`KsMethod::Auto`].
pub fn ks_2samp(x: &[f64], y: &[f64], alt: Alternative) -> Result<TestResult, StatsError> {
    ks_2samp_with(x, y, alt, KsMethod::Auto)
}

/// Two-sample Kolmogorov–Smirnov test.
///
/// Statistic: D = sup |F_x − F_y| (two-sided). Direction follows this module's
/// convention, which is the reverse of SciPy's naming: [`Alternative::Greater`]
/// (x stochastically larger, so F_x lies *below* F_y) uses D⁻ = sup (F_y − F_x)
/// and equals SciPy `alternative='less'`; `Less` uses D⁺ = sup (F_x − F_y) and
/// equals SciPy `'greater'`.
///
/// Exact p-value: the probability that a uniformly random monotone lattice
/// path from (0,0) to (n1,n2) touches the rejection region (Hodges 1957),
/// summed over first-touch points so small p-values keep their relative
/// accuracy; same quantity as `scipy.stats.ks_2samp(method='exact')`.
/// Asymptotic: one-sided uses SciPy's formula exp(−2z² − 2z(m+2n)/(3√(mn(m+n))))
/// with z = √(mn/(m+n))·D (m ≥ n); two-sided uses the Kolmogorov limit
/// distribution at λ = (√ne + 0.12 + 0.11/√ne)·D (Stephens 1970) where SciPy
/// uses `kstwo.sf(D, round(ne))`; they agree to about 1e-3 for ne ≥ 100 (see
/// tests/stats_reference.rs).
pub fn ks_2samp_with(
    x: &[f64],
    y: &[f64],
    alt: Alternative,
    method: KsMethod,
) -> Result<TestResult, StatsError> {
    check_sample("x", x)?;
    check_sample("y", y)?;
    let (n1, n2) = (x.len(), y.len());
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    // Integer ECDF differences scaled by n1·n2: i·n2 − j·n1.
    let (a, b) = (n2 as i128, n1 as i128);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut dplus, mut dminus) = (0i128, 0i128);
    while i < n1 || j < n2 {
        let v = match (xs.get(i), ys.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        while i < n1 && xs[i] == v {
            i += 1;
        }
        while j < n2 && ys[j] == v {
            j += 1;
        }
        let diff = i as i128 * a - j as i128 * b;
        dplus = dplus.max(diff);
        dminus = dminus.max(-diff);
    }
    let dint = match alt {
        Alternative::TwoSided => dplus.max(dminus),
        Alternative::Greater => dminus,
        Alternative::Less => dplus,
    };
    let nn = (n1 * n2) as f64;
    let d = dint as f64 / nn;
    let use_exact = match method {
        KsMethod::Exact => true,
        KsMethod::Asymptotic => false,
        KsMethod::Auto => n1.max(n2) <= AUTO_MAX_N && n1.saturating_mul(n2) <= AUTO_MAX_WORK,
    };
    let p = if dint == 0 {
        1.0
    } else if use_exact {
        exact_outside(n1, n2, dint, alt)
    } else {
        let (m, n) = if n1 >= n2 {
            (n1 as f64, n2 as f64)
        } else {
            (n2 as f64, n1 as f64)
        };
        let en = m * n / (m + n);
        match alt {
            Alternative::TwoSided => {
                let s = en.sqrt();
                kolmogorov_sf((s + 0.12 + 0.11 / s) * d)
            }
            _ => {
                let z = en.sqrt() * d;
                (-2.0 * z * z - 2.0 * z * (m + 2.0 * n) / (m * n * (m + n)).sqrt() / 3.0).exp()
            }
        }
    };
    Ok(TestResult {
        statistic: d,
        p_value: p.clamp(0.0, 1.0),
    })
}

/// P(path touches the region where the scaled ECDF difference reaches `dint`).
fn exact_outside(n1: usize, n2: usize, dint: i128, alt: Alternative) -> f64 {
    let (a, b) = (n2 as i128, n1 as i128);
    let outside = |i: usize, j: usize| {
        let diff = i as i128 * a - j as i128 * b;
        match alt {
            Alternative::TwoSided => diff.abs() >= dint,
            Alternative::Greater => -diff >= dint,
            Alternative::Less => diff >= dint,
        }
    };
    let total = (n1 + n2) as f64;
    let ln_all = ln_choose(total, n1 as f64);
    // row[j] = probability-normalised count of paths reaching (i, j) while
    // staying strictly inside: N_inside(i,j) / C(i+j, i).
    let mut row = vec![0.0f64; n2 + 1];
    let mut p = 0.0;
    for i in 0..=n1 {
        for j in 0..=n2 {
            let arrive = if i == 0 && j == 0 {
                1.0
            } else {
                let s = (i + j) as f64;
                let from_left = if i > 0 { row[j] * i as f64 / s } else { 0.0 };
                let from_below = if j > 0 {
                    row[j - 1] * j as f64 / s
                } else {
                    0.0
                };
                from_left + from_below
            };
            if arrive > 0.0 && outside(i, j) {
                // Weight of all paths through (i, j), first touch here.
                let ln_through = ln_choose((i + j) as f64, i as f64)
                    + ln_choose(total - (i + j) as f64, (n1 - i) as f64)
                    - ln_all;
                p += arrive * ln_through.exp();
                row[j] = 0.0;
            } else {
                row[j] = if outside(i, j) { 0.0 } else { arrive };
            }
        }
    }
    p
}

/// Kolmogorov limiting survival function Q(λ) = 2 Σ (−1)^{k−1} e^{−2k²λ²}.
fn kolmogorov_sf(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let kf = k as f64;
        let term = (-2.0 * kf * kf * lambda * lambda).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-300 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Sample quantile with linear interpolation between order statistics
/// (Hyndman & Fan 1996 type 7; `numpy.quantile(method='linear')`, R's default).
/// Input need not be sorted. `q` must lie in [0, 1].
pub fn quantile(values: &[f64], q: f64) -> Result<f64, StatsError> {
    check_sample("values", values)?;
    let q = finite("q", q)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::InvalidParameter {
            what: "q",
            value: q,
        });
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor();
    let t = h - lo;
    let lo = lo as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let (a, b) = (v[lo], v[hi]);
    // NumPy's _lerp: interpolate from the nearer end for monotonicity.
    let diff = b - a;
    Ok(if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    })
}

/// Quantile `q` from cumulative histogram buckets `(le, cumulative_count)`,
/// with Prometheus `histogram_quantile` semantics (promql/quantile.go
/// `BucketQuantile`): buckets are sorted by `le`; equal `le` are merged; counts
/// are forced monotonic; the highest bucket must be `+Inf`; the result is
/// interpolated linearly inside the bucket holding rank q·total, the lowest
/// bucket's lower bound is 0 (or the bucket's `le` itself if that is ≤ 0), and a
/// rank in the `+Inf` bucket returns the second-highest `le`.
///
/// q < 0 gives `-inf`, q > 1 gives `+inf` (as Prometheus). `None` where
/// Prometheus returns NaN: q NaN, fewer than 2 buckets, no `+Inf` bucket, zero
/// observations, or NaN in the buckets.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() || buckets.iter().any(|(le, c)| le.is_nan() || c.is_nan()) {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut bs = buckets.to_vec();
    bs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if bs.last().is_none_or(|&(le, _)| le != f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(bs.len());
    for (le, c) in bs {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 < max {
            b.1 = max;
        }
        max = b.1;
    }
    if merged.len() < 2 {
        return None;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let last = merged.len() - 1;
    let b = merged[..last]
        .iter()
        .position(|&(_, c)| c >= rank)
        .unwrap_or(last);
    if b == last {
        return Some(merged[last - 1].0);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return Some(merged[0].0);
    }
    let end = merged[b].0;
    let mut count = merged[b].1;
    let mut start = 0.0;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    let v = start + (end - start) * (rank / count);
    if v.is_nan() { None } else { Some(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            ks_2samp(&[], &[1.0], alt),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            ks_2samp(&[1.0], &[f64::NAN], alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(quantile(&[], 0.5).is_err());
        assert!(quantile(&[1.0], f64::NAN).is_err());
        assert!(quantile(&[1.0], 1.5).is_err());
        assert!(quantile(&[f64::INFINITY], 0.5).is_err());
    }

    #[test]
    fn ks_identical_inputs() {
        let x = [1.0, 2.0, 3.0];
        let r = ks_2samp(&x, &x, Alternative::TwoSided).unwrap();
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
    }

    #[test]
    fn histogram_quantile_prometheus_cases() {
        let inf = f64::INFINITY;
        let b = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (inf, 40.0)];
        // rank 20 lies in (0.1, 0.5]: 0.1 + 0.4 * (10/20).
        assert_eq!(histogram_quantile(0.5, &b), Some(0.30000000000000004));
        // rank 4 in the first bucket: lower bound 0.
        assert!((histogram_quantile(0.1, &b).unwrap() - 0.04).abs() < 1e-15);
        // Rank in the +Inf bucket returns the highest finite bound.
        let b2 = [(0.1, 10.0), (inf, 20.0)];
        assert_eq!(histogram_quantile(0.9, &b2), Some(0.1));
        assert_eq!(histogram_quantile(-0.1, &b), Some(f64::NEG_INFINITY));
        assert_eq!(histogram_quantile(1.1, &b), Some(inf));
        assert_eq!(histogram_quantile(0.5, &[(1.0, 1.0), (2.0, 2.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(inf, 3.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]), None);
        // Unsorted input and non-monotonic counts are repaired.
        let b3 = [(inf, 40.0), (1.0, 40.0), (0.5, 30.0), (0.1, 10.0)];
        assert_eq!(histogram_quantile(0.5, &b3), histogram_quantile(0.5, &b));
        let b4 = [(1.0, 10.0), (2.0, 8.0), (inf, 10.0)];
        // Count at le=2 forced to 10: rank 5 -> 0 + 1 * 5/10.
        assert_eq!(histogram_quantile(0.5, &b4), Some(0.5));
        // Negative lowest bound returns the bound.
        let b5 = [(-1.0, 5.0), (1.0, 10.0), (inf, 10.0)];
        assert_eq!(histogram_quantile(0.2, &b5), Some(-1.0));
    }
}
