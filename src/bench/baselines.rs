//! The methods immune is compared with, over the same simulated samples: fixed-ratio
//! threshold checks as Argo Rollouts and Flagger users write them, a Kayenta-style
//! Mann-Whitney judge, and Wald's SPRT with the scenario's true rates (the oracle).
//!
//! They see the fleet as per-round aggregates of the canary hosts and of the control
//! hosts ([`Round`]), built from the same scrapes immune ingests, so every method judges
//! exactly the same samples. They judge the canary phase only: after full rollout there
//! is no stable version left to compare with, which is how those tools work.

use crate::model::Timestamp;
use crate::stats::Alternative;
use crate::stats::mann_whitney::mann_whitney_u;
use serde::Serialize;

/// Upper bounds of the simulator's latency histogram (`le`), the last is `+Inf`.
pub const BUCKET_BOUNDS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, f64::INFINITY];

/// Increases (counters) and gauge sums of one side (canary or control) in one round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SideAgg {
    /// Requests served.
    pub req: f64,
    /// PHP errors.
    pub err: f64,
    /// Sum of request latencies, seconds.
    pub lat_sum: f64,
    /// Requests in the latency histogram.
    pub lat_cnt: f64,
    /// Requests per latency bucket (not cumulative).
    pub buckets: [f64; 8],
    /// Sum of `node_load1` over the hosts scraped this round.
    pub load_sum: f64,
    /// Hosts whose `node_load1` was scraped this round.
    pub load_n: f64,
}

impl SideAgg {
    fn add(&mut self, o: &SideAgg) {
        self.req += o.req;
        self.err += o.err;
        self.lat_sum += o.lat_sum;
        self.lat_cnt += o.lat_cnt;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.load_sum += o.load_sum;
        self.load_n += o.load_n;
    }

    fn error_ratio(&self) -> Option<f64> {
        (self.req > 0.0).then(|| self.err / self.req)
    }

    fn latency_mean(&self) -> Option<f64> {
        (self.lat_cnt > 0.0).then(|| self.lat_sum / self.lat_cnt)
    }

    fn load(&self) -> Option<f64> {
        (self.load_n > 0.0).then(|| self.load_sum / self.load_n)
    }

    /// `histogram_quantile(q)` as Prometheus computes it: linear within the bucket, the
    /// last finite bound when the quantile falls in `+Inf`.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.buckets.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut cum = 0.0;
        for (b, n) in self.buckets.iter().enumerate() {
            if cum + n >= rank && *n > 0.0 {
                let lo = if b == 0 { 0.0 } else { BUCKET_BOUNDS[b - 1] };
                let hi = BUCKET_BOUNDS[b];
                if hi.is_infinite() {
                    return Some(lo);
                }
                return Some(lo + (hi - lo) * (rank - cum) / n);
            }
            cum += n;
        }
        Some(BUCKET_BOUNDS[6])
    }
}

/// One scrape round, aggregated per side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Round {
    /// The round's time.
    pub at: Timestamp,
    /// `[canary, control]`.
    pub side: [SideAgg; 2],
    /// Whether MySQL's exporter answered this round.
    pub mysql: bool,
    /// Whether memcached's exporter answered this round.
    pub memcached: bool,
}

/// When the deploy's canary phase ran.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The canary event.
    pub canary_at: Timestamp,
    /// The full-rollout event (end of the canary phase).
    pub full_at: Timestamp,
}

/// What a method decided about one deploy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Rolled back or blocked.
    pub caught: bool,
    /// Seconds from the canary event to the decision (rollback, or the oracle's accept).
    pub after_s: Option<f64>,
    /// Decided during the canary phase.
    pub in_canary: bool,
    /// What decided (the metric or rule).
    pub by: String,
}

impl Outcome {
    fn caught(w: &Window, at: Timestamp, by: &str) -> Outcome {
        Outcome {
            caught: true,
            after_s: Some(at.since(w.canary_at).as_secs_f64()),
            in_canary: at <= w.full_at,
            by: by.to_string(),
        }
    }
}

/// Sums rounds with `from < at <= to`.
fn sum_rounds(rounds: &[Round], from: Timestamp, to: Timestamp) -> [SideAgg; 2] {
    let mut out = [SideAgg::default(); 2];
    for r in rounds.iter().filter(|r| r.at > from && r.at <= to) {
        out[0].add(&r.side[0]);
        out[1].add(&r.side[1]);
    }
    out
}

/// How a threshold tool turns failed checks into a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum FailurePolicy {
    /// Argo Rollouts: a metric fails when its failed measurements exceed `failure_limit`
    /// (default 0); a metric with no data is an error, and the analysis errors (aborts
    /// the rollout) when consecutive errors exceed `consecutive_error_limit` (default 4).
    Argo {
        /// `failureLimit`.
        failure_limit: u32,
        /// `consecutiveErrorLimit`.
        consecutive_error_limit: u32,
    },
    /// Flagger: each interval where any metric check fails (no data counts as failed)
    /// adds one failed check; rollback when failed checks reach `threshold`.
    Flagger {
        /// `analysis.threshold`.
        threshold: u32,
    },
}

/// A threshold method: every `interval_s`, canary vs stable over the last interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// Seconds between checks (and the query's range).
    pub interval_s: i64,
    /// A check fails when canary > factor × stable.
    pub factor: f64,
    /// How failures become a rollback.
    pub policy: FailurePolicy,
}

/// The metrics a threshold method checks, in order.
const THRESHOLD_METRICS: [&str; 4] = ["error_ratio", "latency_mean", "mysql_up", "memcached_up"];

/// `Some(true)` failed, `Some(false)` passed, `None` no data.
fn threshold_check(m: usize, s: &[SideAgg; 2], rounds: &[&Round], factor: f64) -> Option<bool> {
    let cmp = |c: Option<f64>, b: Option<f64>| match (c, b) {
        (Some(c), Some(b)) => Some(c > factor * b),
        _ => None,
    };
    match m {
        0 => cmp(s[0].error_ratio(), s[1].error_ratio()),
        1 => cmp(s[0].latency_mean(), s[1].latency_mean()),
        // `mysql_up == 1` / `memcached_up == 1`: an empty result when the exporter is silent.
        2 => rounds.iter().any(|r| r.mysql).then_some(false),
        _ => rounds.iter().any(|r| r.memcached).then_some(false),
    }
}

impl Threshold {
    /// Judges the canary phase of one deploy.
    pub fn judge(&self, rounds: &[Round], w: &Window) -> Outcome {
        let step = crate::model::DurationMs::from_secs(self.interval_s);
        let mut failed = [0u32; 4];
        let mut errors = [0u32; 4];
        let mut flagger_failed = 0u32;
        let mut t = w.canary_at.add(step);
        while t <= w.full_at {
            let from = t.sub(step);
            let s = sum_rounds(rounds, from, t);
            let window: Vec<&Round> = rounds.iter().filter(|r| r.at > from && r.at <= t).collect();
            let mut any_failed = None;
            for m in 0..THRESHOLD_METRICS.len() {
                let res = threshold_check(m, &s, &window, self.factor);
                match self.policy {
                    FailurePolicy::Argo {
                        failure_limit,
                        consecutive_error_limit,
                    } => match res {
                        Some(true) => {
                            errors[m] = 0;
                            failed[m] += 1;
                            if failed[m] > failure_limit {
                                return Outcome::caught(w, t, THRESHOLD_METRICS[m]);
                            }
                        }
                        Some(false) => errors[m] = 0,
                        None => {
                            errors[m] += 1;
                            if errors[m] > consecutive_error_limit {
                                return Outcome::caught(w, t, THRESHOLD_METRICS[m]);
                            }
                        }
                    },
                    FailurePolicy::Flagger { .. } => {
                        if res != Some(false) && any_failed.is_none() {
                            any_failed = Some(m);
                        }
                    }
                }
            }
            if let (FailurePolicy::Flagger { threshold }, Some(m)) = (self.policy, any_failed) {
                flagger_failed += 1;
                if flagger_failed >= threshold {
                    return Outcome::caught(w, t, THRESHOLD_METRICS[m]);
                }
            }
            t = t.add(step);
        }
        Outcome::default()
    }
}

/// A Kayenta-style judge (Spinnaker's NetflixACAJudge): at the end of each interval, every
/// metric's per-step canary values are compared with the control's since the canary began
/// (Mann-Whitney U, two-sided, at `1 - alpha` confidence); a metric is `high` when the
/// difference is significant and the canary's mean exceeds the control's by more than
/// `tolerance`. The score is the share of metrics that pass.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Kayenta {
    /// Seconds between judgements.
    pub interval_s: i64,
    /// Seconds per value of a metric's time series.
    pub step_s: i64,
    /// Significance level of the Mann-Whitney test (0.02: 98 % confidence).
    pub alpha: f64,
    /// Effect-size filter: only a relative change above this counts.
    pub tolerance: f64,
    /// Score at or above which the canary passes.
    pub pass: f64,
    /// Score at or above which it is marginal (below: fail).
    pub marginal: f64,
}

const KAYENTA_METRICS: [&str; 4] = ["error_ratio", "latency_mean", "latency_p99", "load1"];

fn kayenta_value(m: usize, s: &SideAgg) -> Option<f64> {
    match m {
        0 => s.error_ratio(),
        1 => s.latency_mean(),
        2 => s.quantile(0.99),
        _ => s.load(),
    }
}

impl Kayenta {
    /// Judges the canary phase of one deploy: rollback on a failing score, or on a
    /// marginal score twice in a row.
    pub fn judge(&self, rounds: &[Round], w: &Window) -> Outcome {
        let step = crate::model::DurationMs::from_secs(self.step_s);
        let interval = crate::model::DurationMs::from_secs(self.interval_s);
        // Per-step aggregates since the canary began.
        let mut steps: Vec<[SideAgg; 2]> = Vec::new();
        let mut t = w.canary_at.add(step);
        while t <= w.full_at {
            steps.push(sum_rounds(rounds, t.sub(step), t));
            t = t.add(step);
        }
        let per_interval = (self.interval_s / self.step_s.max(1)).max(1) as usize;
        let mut marginal_before = false;
        let mut j = w.canary_at.add(interval);
        let mut k = per_interval;
        while j <= w.full_at && k <= steps.len() {
            let mut passing = 0usize;
            let mut worst = "";
            for (m, name) in KAYENTA_METRICS.iter().enumerate() {
                let x: Vec<f64> = steps[..k]
                    .iter()
                    .filter_map(|s| kayenta_value(m, &s[0]))
                    .collect();
                let y: Vec<f64> = steps[..k]
                    .iter()
                    .filter_map(|s| kayenta_value(m, &s[1]))
                    .collect();
                if self.metric_is_high(&x, &y) {
                    worst = name;
                } else {
                    passing += 1;
                }
            }
            let score = 100.0 * passing as f64 / KAYENTA_METRICS.len() as f64;
            if score < self.marginal || (score < self.pass && marginal_before) {
                return Outcome::caught(w, j, worst);
            }
            marginal_before = score < self.pass;
            j = j.add(interval);
            k += per_interval;
        }
        Outcome::default()
    }

    /// High: significant at `alpha` and the canary mean above the control's by more than
    /// `tolerance`. No data passes (Kayenta's `Nodata` does not fail a metric by default).
    fn metric_is_high(&self, x: &[f64], y: &[f64]) -> bool {
        if x.is_empty() || y.is_empty() {
            return false;
        }
        let Ok(t) = mann_whitney_u(x, y, Alternative::TwoSided) else {
            return false;
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (mx, my) = (mean(x), mean(y));
        let effect = if my > 0.0 {
            mx / my
        } else if mx > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        t.p_value <= self.alpha && effect > 1.0 + self.tolerance
    }
}

/// Wald's SPRT on the canary's share of errors, knowing the true rates: given a round's
/// errors, each falls on the canary with probability `c q / (c q + 1 - q)` under H0 and
/// `m c q / (m c q + 1 - q)` under H1, where `q` is the canary's share of requests, `c` the
/// canary hosts' own error level relative to the control's (the simulator's per-host
/// error factors, given by the caller) and `m` the scenario's factor. With error rates
/// `alpha` and `beta` no test of H0 against H1 decides sooner on average (Wald &
/// Wolfowitz 1948).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Oracle {
    /// False-rollback rate.
    pub alpha: f64,
    /// Miss rate.
    pub beta: f64,
}

impl Oracle {
    /// Judges the canary phase of an error-rate deploy with factor `m`, the canary's
    /// error level before the deploy being `c` times the control's. A decision for H0
    /// (healthy) is a miss; `after_s` is set for both decisions.
    pub fn judge(&self, rounds: &[Round], w: &Window, m: f64, c: f64) -> Outcome {
        let upper = ((1.0 - self.beta) / self.alpha).ln();
        let lower = (self.beta / (1.0 - self.alpha)).ln();
        let mut llr = 0.0;
        for r in rounds
            .iter()
            .filter(|r| r.at > w.canary_at && r.at <= w.full_at)
        {
            let total_req = r.side[0].req + r.side[1].req;
            let n = r.side[0].err + r.side[1].err;
            if total_req <= 0.0 || n <= 0.0 {
                continue;
            }
            let q = r.side[0].req / total_req;
            let p0 = c * q / (c * q + 1.0 - q);
            let p1 = m * c * q / (m * c * q + 1.0 - q);
            if !(p0 > 0.0 && p0 < 1.0 && p1 > 0.0 && p1 < 1.0) {
                continue;
            }
            let k = r.side[0].err;
            llr += k * (p1 / p0).ln() + (n - k) * ((1.0 - p1) / (1.0 - p0)).ln();
            if llr >= upper {
                return Outcome::caught(w, r.at, "sprt");
            }
            if llr <= lower {
                return Outcome {
                    caught: false,
                    after_s: Some(r.at.since(w.canary_at).as_secs_f64()),
                    in_canary: true,
                    by: "sprt_accepts_h0".into(),
                };
            }
        }
        Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(at: i64, canary: (f64, f64), control: (f64, f64)) -> Round {
        let side = |(req, err): (f64, f64)| SideAgg {
            req,
            err,
            lat_sum: req * 0.1,
            lat_cnt: req,
            buckets: [0.0, req, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            load_sum: 1.0,
            load_n: 1.0,
        };
        Round {
            at: Timestamp(at * 1000),
            side: [side(canary), side(control)],
            mysql: true,
            memcached: true,
        }
    }

    fn window() -> Window {
        Window {
            canary_at: Timestamp(0),
            full_at: Timestamp(600_000),
        }
    }

    fn rounds(canary_err: f64) -> Vec<Round> {
        (-90..=60)
            .map(|i| {
                let e = if i > 0 { canary_err } else { 1.0 };
                round(i * 10, (100.0, e), (1900.0, 19.0))
            })
            .collect()
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let s = SideAgg {
            buckets: [50.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ..SideAgg::default()
        };
        assert!((s.quantile(0.5).unwrap() - 0.05).abs() < 1e-12);
        assert!((s.quantile(0.75).unwrap() - 0.075).abs() < 1e-12);
    }

    #[test]
    fn argo_rolls_back_on_the_first_failure_and_flagger_on_the_fifth() {
        let argo = Threshold {
            interval_s: 60,
            factor: 1.2,
            policy: FailurePolicy::Argo {
                failure_limit: 0,
                consecutive_error_limit: 4,
            },
        };
        let o = argo.judge(&rounds(3.0), &window());
        assert!(o.caught && o.in_canary);
        assert_eq!(o.after_s, Some(60.0));
        assert_eq!(o.by, "error_ratio");
        let flagger = Threshold {
            policy: FailurePolicy::Flagger { threshold: 5 },
            ..argo
        };
        assert_eq!(flagger.judge(&rounds(3.0), &window()).after_s, Some(300.0));
        assert!(!flagger.judge(&rounds(1.0), &window()).caught);
    }

    #[test]
    fn silence_counts_as_failure_for_flagger_and_as_errors_for_argo() {
        let mut rs = rounds(1.0);
        for r in rs.iter_mut().filter(|r| r.at > Timestamp(0)) {
            r.mysql = false;
        }
        let argo = Threshold {
            interval_s: 60,
            factor: 1.2,
            policy: FailurePolicy::Argo {
                failure_limit: 0,
                consecutive_error_limit: 4,
            },
        };
        let o = argo.judge(&rs, &window());
        assert_eq!((o.after_s, o.by.as_str()), (Some(300.0), "mysql_up"));
    }

    #[test]
    fn kayenta_fails_a_clear_regression_and_passes_a_healthy_canary() {
        let k = Kayenta {
            interval_s: 300,
            step_s: 60,
            alpha: 0.02,
            tolerance: 0.25,
            pass: 95.0,
            marginal: 75.0,
        };
        // One of four metrics high: marginal at 5 min, marginal again at 10 min.
        let o = k.judge(&rounds(3.0), &window());
        assert!(o.caught);
        assert_eq!(o.after_s, Some(600.0));
        assert!(!k.judge(&rounds(1.0), &window()).caught);
    }

    #[test]
    fn the_oracle_decides_for_the_truth() {
        let o = Oracle {
            alpha: 0.01,
            beta: 0.05,
        };
        let bad = o.judge(&rounds(3.0), &window(), 3.0, 1.0);
        assert!(bad.caught);
        let healthy = o.judge(&rounds(1.0), &window(), 3.0, 1.0);
        assert!(!healthy.caught && healthy.after_s.is_some());
    }
}
