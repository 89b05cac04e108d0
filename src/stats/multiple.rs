//! Multiple-testing control across the rules that judge one deploy: adding
//! rules must not add false rollbacks. Holm controls the family-wise error
//! rate (any false rejection); Benjamini–Hochberg the false discovery rate.
//!
//! NaN p-values are treated as 1 (never rejected): a rule that could not
//! compute a p-value gives no evidence, and still counts in the family size.

fn clean(p: f64) -> f64 {
    if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }
}

/// Holm step-down adjusted p-values (Holm 1979):
/// adj_(i) = min(1, max_{j≤i} (m−j+1)·p_(j)) in ascending order of p.
/// Matches statsmodels `multipletests(p, method='holm')[1]`.
pub fn holm_adjusted(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| clean(p_values[a]).total_cmp(&clean(p_values[b])));
    let mut out = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in idx.iter().enumerate() {
        let v = ((m - rank) as f64 * clean(p_values[i])).min(1.0);
        running = running.max(v);
        out[i] = running;
    }
    out
}

/// Holm's step-down procedure at family-wise level `alpha`: which hypotheses
/// are rejected (same order as `p_values`). Equivalent to
/// `holm_adjusted(p) ≤ alpha`.
pub fn holm(p_values: &[f64], alpha: f64) -> Vec<bool> {
    holm_adjusted(p_values)
        .into_iter()
        .map(|a| a <= alpha)
        .collect()
}

/// Benjamini–Hochberg adjusted p-values (Benjamini & Hochberg 1995):
/// adj_(i) = min_{j≥i} min(1, m·p_(j)/j). Matches statsmodels
/// `multipletests(p, method='fdr_bh')[1]`.
pub fn benjamini_hochberg_adjusted(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| clean(p_values[a]).total_cmp(&clean(p_values[b])));
    let mut out = vec![1.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in idx.iter().enumerate().rev() {
        let v = (m as f64 * clean(p_values[i]) / (rank + 1) as f64).min(1.0);
        running = running.min(v);
        out[i] = running;
    }
    out
}

/// Weighted Holm: rule i has its own level `alphas[i]`.
///
/// Method: step-down over the remaining set R. Rule i ∈ R is rejected when
/// p_i ≤ α_i/|R|; checking the rule with the smallest p_i/α_i suffices, since
/// the condition is p_i/α_i ≤ 1/|R| for all of R. Repeat with R minus it until
/// nothing is rejected. This is the closed-testing shortcut (Marcus, Peritz &
/// Gabriel 1976) over the weighted-Bonferroni local tests "some i ∈ I has
/// p_i ≤ α_i/|I|" (Holm 1979 weighted form; Benjamini & Hochberg 1997): each
/// local test has size ≤ mean(α_I) and its thresholds only grow as I shrinks,
/// so the shortcut is exact. Family-wise error ≤ the mean α over the true
/// nulls ≤ max α_i. With equal α it is [`holm`]. Returns one flag per rule;
/// NaN p or α_i ≤ 0 (or NaN) never rejects. Lengths must match: extra
/// p-values without an α are not rejected (they still count in |R|).
pub fn holm_weighted(p_values: &[f64], alphas: &[f64]) -> Vec<bool> {
    let m = p_values.len();
    let ratio = |i: usize| {
        let a = alphas.get(i).copied().unwrap_or(f64::NAN);
        if a.is_nan() || a <= 0.0 {
            f64::INFINITY
        } else {
            clean(p_values[i]) / a
        }
    };
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    let mut out = vec![false; m];
    for (step, &i) in idx.iter().enumerate() {
        let remaining = (m - step) as f64;
        if ratio(i) <= 1.0 / remaining {
            out[i] = true;
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_equals_holm_with_equal_alphas() {
        let p = [0.01, 0.04, 0.03, 0.005, 0.2, f64::NAN];
        let alphas = [0.05; 6];
        assert_eq!(holm_weighted(&p, &alphas), holm(&p, 0.05));
    }

    #[test]
    fn weighted_uses_each_level() {
        // Rule 0 at α=0.1: 0.04 ≤ 0.1/2 → rejected; then rule 1: 0.03 ≤ 0.01/1? no.
        assert_eq!(
            holm_weighted(&[0.04, 0.03], &[0.1, 0.01]),
            vec![true, false]
        );
        assert_eq!(holm_weighted(&[0.0, 0.0], &[0.0, 0.05]), vec![false, true]);
        assert!(holm_weighted(&[], &[]).is_empty());
    }

    #[test]
    fn nan_is_never_rejected() {
        assert_eq!(holm(&[f64::NAN, 0.001], 0.05), vec![false, true]);
        assert_eq!(holm_adjusted(&[f64::NAN]), vec![1.0]);
        assert_eq!(
            benjamini_hochberg_adjusted(&[f64::NAN, 0.01]),
            vec![1.0, 0.02]
        );
    }
}
