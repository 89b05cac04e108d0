//! Statistics: pure functions over numbers (TEMPORARY shims until the statistics work lands).
pub mod grid;

/// Standard normal quantile.
pub fn normal_quantile(p: f64) -> Option<f64> {
    use statrs::distribution::{ContinuousCDF, Normal};
    (p > 0.0 && p < 1.0).then(|| Normal::standard().inverse_cdf(p))
}

pub mod shape {
    /// Prometheus histogram_quantile over (le, cumulative count) sorted by le.
    pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
        let total = buckets.last()?.1;
        if total <= 0.0 || !buckets.last()?.0.is_infinite() {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, c) in buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let width = c - prev.1;
                return Some(if width > 0.0 {
                    prev.0 + (le - prev.0) * (rank - prev.1) / width
                } else {
                    le
                });
            }
            prev = (le, c);
        }
        None
    }
}

pub mod drift {
    pub struct MannKendall {
        pub p_less: f64,
        pub p_greater: f64,
        pub p_two_sided: f64,
    }
    pub struct TheilSen {
        pub slope: f64,
    }
    pub fn mann_kendall(v: &[f64]) -> Result<MannKendall, ()> {
        use statrs::distribution::{ContinuousCDF, Normal};
        let n = v.len();
        let mut s = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                s += (v[j] - v[i]).signum();
            }
        }
        let nf = n as f64;
        let var = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
        let z = if s > 0.0 {
            (s - 1.0) / var.sqrt()
        } else if s < 0.0 {
            (s + 1.0) / var.sqrt()
        } else {
            0.0
        };
        let nd = Normal::standard();
        Ok(MannKendall {
            p_greater: 1.0 - nd.cdf(z),
            p_less: nd.cdf(z),
            p_two_sided: 2.0 * (1.0 - nd.cdf(z.abs())),
        })
    }
    pub fn theil_sen(x: &[f64], y: &[f64]) -> Result<TheilSen, ()> {
        let mut sl = vec![];
        for i in 0..x.len() {
            for j in i + 1..x.len() {
                if x[j] != x[i] {
                    sl.push((y[j] - y[i]) / (x[j] - x[i]));
                }
            }
        }
        sl.sort_by(|a, b| a.total_cmp(b));
        if sl.is_empty() {
            return Err(());
        }
        let m = sl.len();
        Ok(TheilSen {
            slope: if m % 2 == 1 {
                sl[m / 2]
            } else {
                (sl[m / 2 - 1] + sl[m / 2]) / 2.0
            },
        })
    }
}

pub mod multiple {
    /// Weighted Holm.
    pub fn holm_weighted(p: &[f64], alphas: &[f64]) -> Vec<bool> {
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&a, &b| (p[a] / alphas[a]).total_cmp(&(p[b] / alphas[b])));
        let mut out = vec![false; p.len()];
        let mut remaining = p.len();
        for i in idx {
            if p[i] <= alphas[i] / remaining as f64 {
                out[i] = true;
                remaining -= 1;
            } else {
                break;
            }
        }
        out
    }
}
