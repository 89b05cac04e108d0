//! `immune bench experiments`: simulated experiments judged by [`crate::experiment::judge`],
//! to show what the judge promises: (1) A/A experiments looked at every minute close as
//! desired or undesired at most alpha of the time (and a fixed-horizon z-test looked at
//! daily or every minute does not keep its level); (2) how many participants a +5% and a
//! +10% effect on a 2% signup rate need, against a fixed-horizon test planned for 80% power
//! and that test peeked at daily; (3) the sample ratio check catches an assignment that
//! drops 2% of one branch, and stays quiet on a fair one.
//!
//! Simulation: participants arrive at `--per-minute` a minute and are split 50/50 (Binomial);
//! each signs up with probability 2% (times 1 + effect in the treatment) within the minute
//! of exposure; a signup brings revenue drawn from a Pareto distribution of shape 1.5
//! (infinite variance), winsorized at its 99.9th percentile. The judge sees the cumulative
//! totals after every minute.

use super::BenchError;
use crate::experiment::judge::{BranchTotals, Judge, State, Totals, Verdict};
use crate::experiment::{Branch, Direction, Experiment, Metric, MetricKind};
use crate::stats::{Alternative, normal_quantile, two_proportions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Pareto};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// `immune bench experiments`.
#[derive(Debug, clap::Args)]
pub struct ExperimentsArgs {
    /// A/A experiments (also the runs of the SRM check).
    #[arg(long, default_value_t = 400)]
    pub runs: usize,
    /// Experiments per known effect.
    #[arg(long, default_value_t = 200)]
    pub power_runs: usize,
    /// Length of an A/A experiment, in days (looked at every minute).
    #[arg(long, default_value_t = 14)]
    pub days: u64,
    /// Participants a minute (both branches).
    #[arg(long, default_value_t = 100)]
    pub per_minute: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Write the summary here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

const RATE: f64 = 0.02;
const ALPHA: f64 = 0.05;
const PARETO_SCALE: f64 = 10.0;
const PARETO_SHAPE: f64 = 1.5;
/// Longest run of an effect experiment before it counts as not detected.
const MAX_EFFECT_DAYS: u64 = 30;

fn metric(name: &str, kind: MetricKind) -> Metric {
    Metric {
        name: name.into(),
        kind,
        direction: Direction::Increase,
        min_effect: 0.05,
        alpha: Some(ALPHA),
        guardrail: false,
    }
}

/// The simulated experiment: 50/50, signups (count) and optionally revenue (amount).
pub fn experiment(with_revenue: bool) -> Experiment {
    let mut metrics = vec![metric("signups", MetricKind::Count)];
    if with_revenue {
        metrics.push(metric("revenue", MetricKind::Amount));
    }
    Experiment {
        name: "bench".into(),
        initial_rollout: 1.0,
        control: None,
        branches: vec![Branch {
            name: "treatment".into(),
            weight: 0.5,
        }],
        metrics,
        start: None,
        end: None,
        source: Default::default(),
    }
}

/// The winsorization cap: the revenue distribution's 99.9th percentile.
fn revenue_cap() -> f64 {
    PARETO_SCALE * (1.0f64 - 0.999).powf(-1.0 / PARETO_SHAPE)
}

/// One simulated experiment's cumulative state.
struct Sim {
    rng: ChaCha8Rng,
    per_minute: u64,
    effect: f64,
    keep_treatment: f64,
    revenue: Option<Pareto<f64>>,
    /// [control, treatment]: participants, signups, revenue sum, revenue sum of squares.
    n: [u64; 2],
    x: [u64; 2],
    rev: [(f64, f64); 2],
}

impl Sim {
    fn new(seed: u64, per_minute: u64, effect: f64, keep: f64, revenue: bool) -> Sim {
        Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            per_minute,
            effect,
            keep_treatment: keep,
            revenue: revenue
                .then(|| Pareto::new(PARETO_SCALE, PARETO_SHAPE).ok())
                .flatten(),
            n: [0; 2],
            x: [0; 2],
            rev: [(0.0, 0.0); 2],
        }
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |d| d.sample(&mut self.rng))
    }

    fn minute(&mut self) {
        let treated = self.binomial(self.per_minute, 0.5);
        // A broken assignment loses some of the treatment's participants entirely.
        let kept = self.binomial(treated, self.keep_treatment);
        let new = [self.per_minute - treated, kept];
        let cap = revenue_cap();
        for (b, &new) in new.iter().enumerate() {
            let p = if b == 1 {
                RATE * (1.0 + self.effect)
            } else {
                RATE
            };
            let signups = self.binomial(new, p);
            self.n[b] += new;
            self.x[b] += signups;
            if let Some(d) = self.revenue {
                for _ in 0..signups {
                    let mut v = d.sample(&mut self.rng);
                    if b == 1 {
                        v *= 1.0 + self.effect;
                    }
                    let v = v.min(cap);
                    self.rev[b].0 += v;
                    self.rev[b].1 += v * v;
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<BranchTotals> {
        (0..2)
            .map(|b| {
                let mut metrics = vec![Totals {
                    sum: self.x[b] as f64,
                    sum_sq: Some(self.x[b] as f64),
                }];
                if self.revenue.is_some() {
                    metrics.push(Totals {
                        sum: self.rev[b].0,
                        sum_sq: Some(self.rev[b].1),
                    });
                }
                BranchTotals {
                    participants: self.n[b],
                    metrics,
                }
            })
            .collect()
    }

    fn z_rejects(&self) -> bool {
        two_proportions(
            self.x[1],
            self.n[1].max(1),
            self.x[0],
            self.n[0].max(1),
            Alternative::TwoSided,
        )
        .is_ok_and(|r| r.p_value <= ALPHA)
    }
}

/// One A/A (or SRM) run's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NullRun {
    /// Some metric closed desired or undesired (a false result).
    pub false_result: bool,
    /// The sample ratio check flagged; participants at that look.
    pub srm_at: Option<u64>,
    /// The fixed z-test rejected at the planned horizon (the last day).
    pub z_at_horizon: bool,
    /// The fixed z-test rejected at some daily peek.
    pub z_daily: bool,
    /// The fixed z-test rejected at some minute.
    pub z_minutely: bool,
}

/// A/A run `seed` (`keep` < 1 drops that share of the treatment's participants).
pub fn null_run(seed: u64, days: u64, per_minute: u64, keep: f64) -> NullRun {
    let exp = experiment(true);
    let mut judge = Judge::with_intervals(&exp, false);
    let mut sim = Sim::new(seed, per_minute, 0.0, keep, true);
    let mut out = NullRun::default();
    let minutes = days * 1440;
    for m in 1..=minutes {
        sim.minute();
        let r = judge.observe(&sim.snapshot());
        if r.state == State::Mismatch && out.srm_at.is_none() {
            out.srm_at = Some(sim.n[0] + sim.n[1]);
            if keep < 1.0 {
                return out;
            }
        }
        out.false_result |= r
            .comparisons
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Desired | Verdict::Undesired));
        let z = sim.z_rejects();
        out.z_minutely |= z;
        if m % 1440 == 0 {
            out.z_daily |= z;
        }
        if m == minutes {
            out.z_at_horizon = z;
        }
    }
    out
}

/// One effect run's result: participants (both branches) when each method first rejected.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EffectRun {
    /// The anytime-valid judge (desired verdict).
    pub judge_at: Option<u64>,
    /// The fixed z-test peeked at daily.
    pub daily_at: Option<u64>,
}

/// A run with a true relative effect on signups.
pub fn effect_run(seed: u64, per_minute: u64, effect: f64) -> EffectRun {
    let exp = experiment(false);
    let mut judge = Judge::with_intervals(&exp, false);
    let mut sim = Sim::new(seed, per_minute, effect, 1.0, false);
    let mut out = EffectRun::default();
    for m in 1..=MAX_EFFECT_DAYS * 1440 {
        sim.minute();
        let total = sim.n[0] + sim.n[1];
        if out.judge_at.is_none() {
            let r = judge.observe(&sim.snapshot());
            if r.comparisons[0].verdict == Verdict::Desired {
                out.judge_at = Some(total);
            }
        }
        if m % 1440 == 0 && out.daily_at.is_none() && sim.z_rejects() && sim.x[1] > sim.x[0] {
            out.daily_at = Some(total);
        }
        if out.judge_at.is_some() && out.daily_at.is_some() {
            break;
        }
    }
    out
}

/// Participants (both branches) a fixed-horizon two-sided z-test at level alpha needs for
/// 80% power against a relative lift on a base rate (the textbook formula, as
/// statsmodels' `NormalIndPower` with Cohen's h replaced by the unpooled variance).
pub fn fixed_horizon(rate: f64, lift: f64, alpha: f64, power: f64) -> Option<u64> {
    let (p0, p1) = (rate, rate * (1.0 + lift));
    let za = normal_quantile(1.0 - alpha / 2.0)?;
    let zb = normal_quantile(power)?;
    let pbar = (p0 + p1) / 2.0;
    let num =
        za * (2.0 * pbar * (1.0 - pbar)).sqrt() + zb * (p0 * (1.0 - p0) + p1 * (1.0 - p1)).sqrt();
    let n = (num / (p1 - p0)).powi(2);
    Some(2 * n.ceil() as u64)
}

fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = threads.max(1);
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let chunks: Vec<_> = out
            .chunks_mut(n.div_ceil(threads).max(1))
            .enumerate()
            .map(|(k, chunk)| {
                let f = &f;
                let base = k * n.div_ceil(threads).max(1);
                s.spawn(move || {
                    for (i, slot) in chunk.iter_mut().enumerate() {
                        *slot = Some(f(base + i));
                    }
                })
            })
            .collect();
        for c in chunks {
            let _ = c.join();
        }
    });
    out.into_iter().flatten().collect()
}

fn quantile(xs: &[u64], q: f64) -> Option<u64> {
    let mut v = xs.to_vec();
    v.sort_unstable();
    let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(k - 1).copied()
}

fn share(k: usize, n: usize) -> String {
    format!("{:.3} ({k}/{n})", k as f64 / n.max(1) as f64)
}

fn thousands(n: Option<u64>) -> String {
    n.map_or("-".into(), |n| format!("{}k", (n as f64 / 1000.0).round()))
}

/// Runs the benchmark, printing Markdown tables.
pub fn run(args: ExperimentsArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    if args.runs == 0 || args.days == 0 || args.per_minute == 0 {
        return Err(BenchError::Usage(
            "--runs, --days and --per-minute must be positive".into(),
        ));
    }
    let started = std::time::Instant::now();
    let aa = parallel(args.runs, args.threads, |i| {
        null_run(1_000 + i as u64, args.days, args.per_minute, 1.0)
    });
    eprintln!(
        "bench experiments: A/A done, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let srm = parallel(args.runs, args.threads, |i| {
        null_run(50_000 + i as u64, args.days, args.per_minute, 0.98)
    });
    eprintln!(
        "bench experiments: SRM done, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let n = aa.len();
    let count = |f: &dyn Fn(&NullRun) -> bool, v: &[NullRun]| v.iter().filter(|r| f(r)).count();
    writeln!(
        out,
        "### A/A: {n} experiments, 50/50, {} days, {} participants a minute, looked at every minute\n",
        args.days, args.per_minute
    )?;
    writeln!(
        out,
        "| method | share closed desired/undesired (alpha {ALPHA}) |"
    )?;
    writeln!(out, "|---|---|")?;
    writeln!(
        out,
        "| immune judge (signups + revenue, Holm), every minute | {} |",
        share(count(&|r| r.false_result, &aa), n)
    )?;
    writeln!(
        out,
        "| fixed z-test on signups, once at day {} | {} |",
        args.days,
        share(count(&|r| r.z_at_horizon, &aa), n)
    )?;
    writeln!(
        out,
        "| fixed z-test on signups, peeked daily | {} |",
        share(count(&|r| r.z_daily, &aa), n)
    )?;
    writeln!(
        out,
        "| fixed z-test on signups, peeked every minute | {} |",
        share(count(&|r| r.z_minutely, &aa), n)
    )?;
    writeln!(
        out,
        "| sample ratio check flagged (false SRM, alpha {}) | {} |\n",
        crate::experiment::srm::SRM_ALPHA,
        share(count(&|r| r.srm_at.is_some(), &aa), n)
    )?;
    let caught: Vec<u64> = srm.iter().filter_map(|r| r.srm_at).collect();
    writeln!(
        out,
        "### SRM: the assignment drops 2% of the treatment's participants ({} runs)\n",
        srm.len()
    )?;
    writeln!(
        out,
        "| flagged within {} days | participants at flag: median | 90th percentile |",
        args.days
    )?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| {} | {} | {} |\n",
        share(caught.len(), srm.len()),
        thousands(quantile(&caught, 0.5)),
        thousands(quantile(&caught, 0.9))
    )?;
    let mut effects = Vec::new();
    writeln!(
        out,
        "### Known effects on a 2% signup rate ({} runs each, up to {MAX_EFFECT_DAYS} days)\n",
        args.power_runs
    )?;
    writeln!(
        out,
        "| lift | fixed horizon, 80% power | immune: detected | median | 80th percentile | fixed test peeked daily: median at first rejection |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for (k, lift) in [0.05, 0.10].into_iter().enumerate() {
        let runs = parallel(args.power_runs, args.threads, |i| {
            effect_run(100_000 * (k as u64 + 1) + i as u64, args.per_minute, lift)
        });
        let judged: Vec<u64> = runs.iter().filter_map(|r| r.judge_at).collect();
        let daily: Vec<u64> = runs.iter().filter_map(|r| r.daily_at).collect();
        let fixed = fixed_horizon(RATE, lift, ALPHA, 0.8);
        writeln!(
            out,
            "| +{:.0}% | {} | {} | {} | {} | {} |",
            lift * 100.0,
            thousands(fixed),
            share(judged.len(), runs.len()),
            thousands(quantile(&judged, 0.5)),
            thousands(quantile(&judged, 0.8)),
            thousands(quantile(&daily, 0.5)),
        )?;
        effects.push(serde_json::json!({
            "lift": lift, "fixed_horizon": fixed, "runs": runs,
        }));
        eprintln!(
            "bench experiments: +{:.0}% done, {:.0} s",
            lift * 100.0,
            started.elapsed().as_secs_f64()
        );
    }
    writeln!(
        out,
        "\n(participants: both branches together; judged in {:.0} s on {} threads)",
        started.elapsed().as_secs_f64(),
        args.threads
    )?;
    if let Some(path) = args.out {
        let report = serde_json::json!({"aa": aa, "srm": srm, "effects": effects});
        let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        serde_json::to_writer(f, &report).map_err(std::io::Error::other)?;
    }
    Ok(())
}
