//! Mann–Whitney U (Wilcoxon rank-sum) test: does one sample tend to have
//! larger values than the other? Rank-based, so a few wild latencies do not
//! dominate it the way they dominate a t-test.

use super::{Alternative, StatsError, TestResult, check_sample, norm_sf};

/// Largest C(n1+n2, min(n1,n2)) handled by the exact (integer) distribution;
/// beyond it the normal approximation is used. Keeps i128 sums exact.
const EXACT_MAX_PATHS: f64 = 1e36;

/// Mid-ranks (1-based, ties get their average rank) and the tie-group sizes.
pub(crate) fn rank_average(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && values[idx[j]] == values[idx[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j: average (i+1+j)/2.
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        ties.push(j - i);
        i = j;
    }
    (ranks, ties)
}

/// P(U >= k) under H0 without ties, exact: the counts of U are the
/// coefficients of the Gaussian binomial [n1+n2 choose m] (Mann & Whitney
/// 1947), built as ∏_{i=1..m} (1 − q^{n+i}) / (1 − q^i) in exact integers.
fn exact_sf(k: u64, n1: usize, n2: usize) -> f64 {
    let (m, n) = if n1 <= n2 { (n1, n2) } else { (n2, n1) };
    let max = m * n;
    let mut c = vec![0i128; max + 1];
    c[0] = 1;
    for i in 1..=m {
        let kk = n + i;
        if kk <= max {
            for u in (kk..=max).rev() {
                c[u] -= c[u - kk];
            }
        }
        for u in i..=max {
            c[u] += c[u - i];
        }
    }
    let total: i128 = c.iter().sum();
    let k = (k as usize).min(max + 1);
    let tail: i128 = c[k..].iter().sum();
    tail as f64 / total as f64
}

/// Mann–Whitney U test of `x` against `y`.
///
/// Method: U1 = R1 − n1(n1+1)/2 from mid-ranks (Mann & Whitney 1947). Follows
/// `scipy.stats.mannwhitneyu(x, y, alternative, method='auto')`: the exact null
/// distribution when there are no ties and min(n1, n2) ≤ 8, otherwise the
/// normal approximation with tie-corrected variance
/// σ² = n1·n2/12 · ((n+1) − Σ(t³−t)/(n(n−1))) and continuity correction 0.5.
/// Two-sided p = 2·P(U ≥ max(U1, U2)), capped at 1. One deviation: when the
/// exact distribution would need more than 1e36 paths (e.g. 8 against >40 000
/// values) the normal approximation is used.
///
/// `statistic` is U1 (the U of `x`); `Greater` = `x` tends to be larger.
/// All values tied gives p = 1.
pub fn mann_whitney_u(x: &[f64], y: &[f64], alt: Alternative) -> Result<TestResult, StatsError> {
    check_sample("x", x)?;
    check_sample("y", y)?;
    let (n1, n2) = (x.len(), y.len());
    let mut all = Vec::with_capacity(n1 + n2);
    all.extend_from_slice(x);
    all.extend_from_slice(y);
    let (ranks, ties) = rank_average(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u1 = r1 - n1f * (n1f + 1.0) / 2.0;
    let u2 = n1f * n2f - u1;
    let (u, factor) = match alt {
        Alternative::Greater => (u1, 1.0),
        Alternative::Less => (u2, 1.0),
        Alternative::TwoSided => (u1.max(u2), 2.0),
    };
    let has_ties = ties.iter().any(|&t| t > 1);
    let small = n1.min(n2);
    let exact = !has_ties
        && small <= 8
        && super::ln_choose((n1 + n2) as f64, small as f64) < EXACT_MAX_PATHS.ln();
    let p = if exact {
        exact_sf(u.round() as u64, n1, n2)
    } else {
        let n = n1f + n2f;
        let tie_term: f64 = ties
            .iter()
            .map(|&t| {
                let t = t as f64;
                t * t * t - t
            })
            .sum();
        let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
        if var <= 0.0 {
            1.0
        } else {
            norm_sf((u - n1f * n2f / 2.0 - 0.5) / var.sqrt())
        }
    };
    Ok(TestResult {
        statistic: u1,
        p_value: (p * factor).clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let alt = Alternative::TwoSided;
        assert!(matches!(
            mann_whitney_u(&[], &[1.0], alt),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            mann_whitney_u(&[1.0, f64::NAN], &[1.0], alt),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(mann_whitney_u(&[1.0], &[f64::NEG_INFINITY], alt).is_err());
    }

    #[test]
    fn all_ties_p_one() {
        let r = mann_whitney_u(&[2.0; 5], &[2.0; 7], Alternative::TwoSided).unwrap();
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.statistic, 17.5);
    }

    #[test]
    fn exact_small_known_value() {
        // Full separation, 3 vs 3: P(U >= 9) = 1/C(6,3) = 1/20.
        let r = mann_whitney_u(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0], Alternative::Greater).unwrap();
        assert_eq!(r.statistic, 9.0);
        assert!((r.p_value - 0.05).abs() < 1e-15);
    }
}
