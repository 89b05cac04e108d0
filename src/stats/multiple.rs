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

/// Weighted Holm: rule i has its own level `alphas[i]` (every rule weighs the same).
/// See [`holm_weights`].
pub fn holm_weighted(p_values: &[f64], alphas: &[f64]) -> Vec<bool> {
    holm_weights(p_values, alphas, &vec![1.0; p_values.len()])
}

/// Weighted Holm with levels and weights: rule i ∈ R is rejected when
/// p_i ≤ α_i · w_i / Σ_{j∈R} w_j.
///
/// Method: step-down over the remaining set R, checking the rule with the smallest
/// p_i / (α_i w_i) (Holm 1979, weighted form; Westfall, Kropf & Finos, "Weighted
/// FWE-controlling methods in high-dimensional situations", 2004); repeat with R minus it
/// until nothing is rejected. It is the closed-testing shortcut (Marcus, Peritz & Gabriel
/// 1976) over the weighted-Bonferroni local tests "some i ∈ I has p_i ≤ α_i w_i / W_I":
/// each has size ≤ max α over I, and its thresholds only grow as I shrinks, so the
/// shortcut is exact. Family-wise error ≤ max α_i; with equal α, ≤ α whatever the
/// weights. Weights say where the family's alpha is best spent (the signal a regression
/// shows first), without adding to it. NaN p, α_i ≤ 0 or w_i ≤ 0 (or NaN) never rejects;
/// a missing α or weight counts as 0 for the rule and 1 in W_R.
pub fn holm_weights(p_values: &[f64], alphas: &[f64], weights: &[f64]) -> Vec<bool> {
    holm_weight_thresholds(p_values, alphas, weights)
        .iter()
        .map(Option::is_some)
        .collect()
}

/// [`holm_weights`] with the threshold each rejected rule met, α_i w_i / Σ_{j∈R} w_j at its
/// step (the evidence shows it); `None` for a rule not rejected.
pub fn holm_weight_thresholds(
    p_values: &[f64],
    alphas: &[f64],
    weights: &[f64],
) -> Vec<Option<f64>> {
    let m = p_values.len();
    let weight = |i: usize| {
        let w = weights.get(i).copied().unwrap_or(1.0);
        if w.is_finite() && w > 0.0 { w } else { 0.0 }
    };
    let level = |i: usize| alphas.get(i).copied().unwrap_or(f64::NAN) * weight(i);
    let ratio = |i: usize| {
        let a = level(i);
        if a.is_nan() || a <= 0.0 {
            f64::INFINITY
        } else {
            clean(p_values[i]) / a
        }
    };
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    let mut remaining: f64 = (0..m).map(weight).sum();
    let mut out = vec![None; m];
    for &i in &idx {
        if remaining > 0.0 && ratio(i) <= 1.0 / remaining {
            out[i] = Some(level(i) / remaining);
            remaining -= weight(i);
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
    fn weights_share_one_alpha() {
        // W = 4: rule 0 (w 3) at 0.05·3/4 = 0.0375 → 0.03 rejected; then rule 1 alone
        // at 0.05·1/1 = 0.05 → 0.04 rejected.
        assert_eq!(
            holm_weights(&[0.03, 0.04], &[0.05, 0.05], &[3.0, 1.0]),
            vec![true, true]
        );
        // Equal weights: 0.03 > 0.05/2, nothing.
        assert_eq!(
            holm_weights(&[0.03, 0.04], &[0.05, 0.05], &[1.0, 1.0]),
            vec![false, false]
        );
        // The thresholds each met: 0.05·3/4, then 0.05·1/1.
        let t = holm_weight_thresholds(&[0.03, 0.04], &[0.05, 0.05], &[3.0, 1.0]);
        assert!((t[0].unwrap_or(0.0) - 0.0375).abs() < 1e-12, "{t:?}");
        assert!((t[1].unwrap_or(0.0) - 0.05).abs() < 1e-12, "{t:?}");
        // A rule with weight 0 never rejects and costs the others nothing.
        assert_eq!(
            holm_weights(&[0.0, 0.04], &[0.05, 0.05], &[0.0, 1.0]),
            vec![false, true]
        );
    }

    /// Family-wise error stays at α under the global null whatever the weights: uniform
    /// p-values, 20,000 families of 6 rules, one weighted 4.
    #[test]
    fn weights_keep_the_family_wise_error() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut uniform = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let runs = 20_000;
        let mut any = 0;
        for _ in 0..runs {
            let p: Vec<f64> = (0..6).map(|_| uniform()).collect();
            if holm_weights(&p, &[0.05; 6], &[4.0, 1.0, 1.0, 1.0, 1.0, 1.0]).contains(&true) {
                any += 1;
            }
        }
        // Bonferroni's bound is exact for independent uniforms up to 1 - (1 - ...)
        // products: just under 0.05; allow the sampling error (sd 0.0015).
        let rate = any as f64 / runs as f64;
        assert!(rate <= 0.05 + 0.0045, "{rate}");
        assert!(rate >= 0.04, "{rate}");
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
