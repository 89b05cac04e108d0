//! Small, explicit samplers over one ChaCha8 stream.
//!
//! The simulator's output must be byte-identical for a seed across rand releases, so the
//! distributions are written here (uniform from raw 53-bit draws, Box-Muller normals,
//! Knuth / PTRS Poisson, Marsaglia-Tsang gamma) instead of borrowed from `rand_distr`,
//! whose algorithms may change between versions.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use statrs::function::erf::{erfc, erfc_inv};
use statrs::function::gamma::ln_gamma;
use std::f64::consts::{PI, SQRT_2};

/// The simulator's random stream: a seeded ChaCha8 plus the spare Box-Muller normal.
pub(crate) struct Rand {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Rand {
    /// A stream determined by `seed` alone.
    pub(crate) fn new(seed: u64) -> Rand {
        Rand {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Uniform on [0, 1) with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform on (0, 1): safe to take the logarithm of.
    fn open01(&mut self) -> f64 {
        loop {
            let u = self.uniform();
            if u > 0.0 {
                return u;
            }
        }
    }

    /// Uniform on [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.open01().ln()).sqrt();
        let theta = 2.0 * PI * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Lognormal with the given median and log-scale sigma.
    pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Gamma with the given mean and coefficient of variation (Marsaglia-Tsang, 2000).
    pub(crate) fn gamma_mean_cv(&mut self, mean: f64, cv: f64) -> f64 {
        let shape = 1.0 / (cv * cv);
        let scale = mean / shape;
        self.gamma(shape) * scale
    }

    /// Gamma(shape, 1).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            // Boost: G(a) = G(a + 1) * U^(1/a).
            let u = self.open01();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let z = self.normal();
            let v = 1.0 + c * z;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.open01();
            if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Poisson with mean `lambda` (Knuth's product method below 12, Hörmann's PTRS above).
    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 12.0 {
            let limit = (-lambda).exp();
            let mut k = 0u64;
            let mut prod = self.uniform();
            while prod > limit {
                k += 1;
                prod *= self.uniform();
            }
            return k;
        }
        // Hörmann (1993), "The transformed rejection method for generating Poisson random
        // variables", as in NumPy's legacy generator.
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_gamma(k + 1.0)
            {
                return k as u64;
            }
        }
    }

    /// A standard normal restricted to (lo, hi), by inverting the survival function.
    pub(crate) fn truncated_normal(&mut self, lo: f64, hi: f64) -> f64 {
        let s_lo = survival(lo);
        let s_hi = survival(hi);
        let s = s_hi + (s_lo - s_hi) * self.open01();
        let z = SQRT_2 * erfc_inv(2.0 * s);
        z.clamp(lo, hi)
    }
}

/// Standard normal CDF.
pub(crate) fn cdf(z: f64) -> f64 {
    if z == f64::INFINITY {
        1.0
    } else if z == f64::NEG_INFINITY {
        0.0
    } else {
        0.5 * erfc(-z / SQRT_2)
    }
}

/// Standard normal survival function, accurate in the upper tail.
pub(crate) fn survival(z: f64) -> f64 {
    if z == f64::INFINITY {
        0.0
    } else if z == f64::NEG_INFINITY {
        1.0
    } else {
        0.5 * erfc(z / SQRT_2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, v)
    }

    #[test]
    fn poisson_mean_and_variance_match_lambda() {
        let mut r = Rand::new(7);
        for lambda in [0.3, 5.0, 40.0, 900.0] {
            let xs: Vec<f64> = (0..40_000).map(|_| r.poisson(lambda) as f64).collect();
            let (m, v) = mean_var(&xs);
            assert!(
                (m - lambda).abs() < 0.05 * lambda.max(1.0),
                "{lambda}: mean {m}"
            );
            assert!((v / lambda - 1.0).abs() < 0.06, "{lambda}: var {v}");
        }
    }

    #[test]
    fn gamma_has_requested_mean_and_cv() {
        let mut r = Rand::new(8);
        let xs: Vec<f64> = (0..40_000).map(|_| r.gamma_mean_cv(2.0, 0.2)).collect();
        let (m, v) = mean_var(&xs);
        assert!((m - 2.0).abs() < 0.02);
        assert!((v.sqrt() / m - 0.2).abs() < 0.01);
        let xs: Vec<f64> = (0..40_000).map(|_| r.gamma_mean_cv(1.0, 1.5)).collect();
        let (m, _) = mean_var(&xs);
        assert!((m - 1.0).abs() < 0.05);
    }

    #[test]
    fn normal_is_standard() {
        let mut r = Rand::new(9);
        let xs: Vec<f64> = (0..40_000).map(|_| r.normal()).collect();
        let (m, v) = mean_var(&xs);
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.03);
    }

    #[test]
    fn truncated_normal_stays_inside_even_in_the_far_tail() {
        let mut r = Rand::new(10);
        for _ in 0..1000 {
            let z = r.truncated_normal(6.0, f64::INFINITY);
            assert!((6.0..7.5).contains(&z), "{z}");
            let z = r.truncated_normal(-0.5, 0.25);
            assert!((-0.5..=0.25).contains(&z));
        }
    }
}
