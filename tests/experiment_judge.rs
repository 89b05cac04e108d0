//! The experiment judge's promises, on simulated experiments and reference values:
//! A/A experiments looked at every minute rarely close as desired or undesired (at most
//! alpha, heavy-tailed revenue included); known effects are found; the sample ratio check
//! catches a broken assignment and matches SciPy; a guardrail's harm stops the experiment;
//! confidence sequences cover the true effect at every look; closing says how many more
//! participants a non-significant goal needs.

use immune::bench::experiments::{effect_run, experiment, fixed_horizon, null_run};
use immune::experiment::judge::{BranchTotals, Judge, Outcome, State, Totals, Verdict, half_width};
use immune::experiment::srm::log_bayes_factor;
use immune::experiment::{Branch, Direction, Experiment, Metric, MetricKind};
use immune::stats::{Alternative, msprt_normal_one_sided_log};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/experiment/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_over_a_looked_at_every_minute_stays_within_alpha() {
    let runs = 200;
    let false_results = (0..runs)
        .filter(|i| null_run(7_000 + i, 2, 100, 1.0).false_result)
        .count();
    let alpha: f64 = 0.05;
    let bound = alpha + 3.0 * (alpha * (1.0 - alpha) / runs as f64).sqrt();
    assert!(
        (false_results as f64 / runs as f64) <= bound,
        "{false_results} of {runs} A/A experiments closed with a result"
    );
}

#[test]
fn a_known_lift_is_found_and_the_fixed_horizon_matches_the_textbook() {
    let runs = 40;
    let found = (0..runs)
        .filter(|i| effect_run(9_000 + i, 100, 0.20).judge_at.is_some())
        .count();
    assert!(found >= 38, "+20% found in {found} of {runs}");
    // n per branch = (z_{.975} sqrt(2 p̄ q̄) + z_{.8} sqrt(p0 q0 + p1 q1))² / Δ²,
    // statsmodels samplesize_proportions_2indep_onetail (fixtures/experiment/samplesize.tsv).
    for line in fixture("samplesize.tsv").lines().skip(1) {
        let f: Vec<f64> = line.split('\t').map(|v| v.parse().unwrap()).collect();
        let (rate, lift, per_branch) = (f[0], f[1], f[2]);
        let ours = fixed_horizon(rate, lift, 0.05, 0.8).unwrap() as f64;
        assert!(
            (ours / 2.0 - per_branch).abs() <= 1.0,
            "rate {rate} lift {lift}: {ours} vs 2 x {per_branch}"
        );
    }
}

#[test]
fn sample_ratio_check_matches_scipy_and_catches_a_dropped_share() {
    for line in fixture("srm.tsv").lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let counts: Vec<u64> = cols[0].split(',').map(|v| v.parse().unwrap()).collect();
        let weights: Vec<f64> = cols[1].split(',').map(|v| v.parse().unwrap()).collect();
        let k: f64 = cols[2].parse().unwrap();
        let want: f64 = cols[3].parse().unwrap();
        let got = log_bayes_factor(&counts, &weights, k).unwrap();
        assert!(
            (got - want).abs() <= 1e-8 * want.abs().max(1.0),
            "{line}: {got}"
        );
    }
    // 10% of the treatment lost: flagged within a day at 100 participants a minute.
    let r = null_run(3, 1, 100, 0.90);
    assert!(r.srm_at.is_some_and(|n| n < 100_000), "{:?}", r.srm_at);
}

fn with_metrics(metrics: Vec<Metric>) -> Experiment {
    Experiment {
        name: "t".into(),
        initial_rollout: 1.0,
        control: None,
        branches: vec![Branch {
            name: "b".into(),
            weight: 0.5,
        }],
        metrics,
        start: None,
        end: None,
        source: Default::default(),
    }
}

fn count_metric(name: &str, direction: Direction, guardrail: bool) -> Metric {
    Metric {
        name: name.into(),
        kind: MetricKind::Count,
        direction,
        min_effect: 0.1,
        alpha: None,
        guardrail,
    }
}

fn totals(n: u64, xs: &[f64]) -> BranchTotals {
    BranchTotals {
        participants: n,
        metrics: xs
            .iter()
            .map(|&x| Totals {
                sum: x,
                sum_sq: None,
            })
            .collect(),
    }
}

#[test]
fn guardrail_harm_stops_and_goals_close() {
    let exp = with_metrics(vec![
        count_metric("signups", Direction::Increase, false),
        count_metric("errors", Direction::Decrease, true),
    ]);
    let mut judge = Judge::new(&exp);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut n, mut s, mut e) = ([0u64; 2], [0.0f64; 2], [0.0f64; 2]);
    let mut report = None;
    for _ in 0..200 {
        for b in 0..2 {
            n[b] += 500;
            s[b] += Binomial::new(500, 0.02).unwrap().sample(&mut rng) as f64;
            // The treatment doubles errors.
            let p = if b == 1 { 0.02 } else { 0.01 };
            e[b] += Binomial::new(500, p).unwrap().sample(&mut rng) as f64;
        }
        let r = judge.observe(&[totals(n[0], &[s[0], e[0]]), totals(n[1], &[s[1], e[1]])]);
        let stop = r.state == State::Stop;
        report = Some(r);
        if stop {
            break;
        }
    }
    let report = report.unwrap();
    assert_eq!(report.state, State::Stop, "{report:?}");
    assert_eq!(report.comparisons[1].verdict, Verdict::Harm);
    assert_eq!(report.comparisons[0].verdict, Verdict::Pending);
    let closing = judge.close(&report);
    assert_eq!(closing.len(), 1, "guardrails do not close");
    assert_eq!(closing[0].outcome, Outcome::NotSignificant);
    let more = closing[0].more_participants.unwrap();
    assert!(more > 0, "{closing:?}");
    let (lo, hi) = closing[0].ci.unwrap();
    assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
}

#[test]
fn count_confidence_sequences_cover_the_truth_at_every_look() {
    let exp = with_metrics(vec![count_metric("signups", Direction::Increase, false)]);
    let runs = 100;
    let truth = 0.10;
    let mut missed = 0;
    for seed in 0..runs {
        let mut judge = Judge::new(&exp);
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        let (mut n, mut x) = ([0u64; 2], [0.0f64; 2]);
        let mut miss = false;
        for _ in 0..48 {
            for b in 0..2 {
                let new = Binomial::new(6000, 0.5).unwrap().sample(&mut rng);
                n[b] += new;
                let p = 0.02 * if b == 1 { 1.0 + truth } else { 1.0 };
                x[b] += Binomial::new(new, p).unwrap().sample(&mut rng) as f64;
            }
            let r = judge.observe(&[totals(n[0], &[x[0]]), totals(n[1], &[x[1]])]);
            if let Some((lo, hi)) = r.comparisons[0].ci {
                // The grid's resolution is 1%: allow one step.
                miss |= truth < lo - 0.011 || truth > hi + 0.011;
            }
        }
        missed += miss as usize;
    }
    assert!(missed <= 8, "missed the truth in {missed} of {runs}");
}

#[test]
fn amount_interval_is_the_inversion_of_the_e_value() {
    let (v, tau2, alpha) = (0.3, 0.05, 0.01);
    let h = half_width(v, tau2, alpha);
    let l = msprt_normal_one_sided_log(1, h, 0.0, v, tau2, Alternative::TwoSided).unwrap();
    assert!((l - (1.0f64 / alpha).ln()).abs() < 1e-9, "{l}");
}

#[test]
fn an_srm_withholds_every_result() {
    let exp = experiment(false);
    let mut judge = Judge::new(&exp);
    let r = judge.observe(&[totals(60_000, &[1200.0]), totals(40_000, &[1600.0])]);
    assert_eq!(r.state, State::Mismatch);
    assert!(r.srm.flagged);
    assert_eq!(r.comparisons[0].verdict, Verdict::Withheld);
}

/// A revenue lift is desired, a signup drop undesired, each named on its own metric.
#[test]
fn amounts_and_the_wrong_direction_are_found() {
    let exp = with_metrics(vec![
        count_metric("signups", Direction::Increase, false),
        Metric {
            name: "revenue".into(),
            kind: MetricKind::Amount,
            direction: Direction::Increase,
            min_effect: 0.05,
            alpha: None,
            guardrail: false,
        },
    ]);
    let mut judge = Judge::new(&exp);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let noise = rand_distr::Exp::new(0.1).unwrap();
    let mut n = [0u64; 2];
    let mut signups = [0.0f64; 2];
    let mut rev = [(0.0f64, 0.0f64); 2];
    let mut last = None;
    for _ in 0..100 {
        for b in 0..2 {
            n[b] += 1000;
            let p = if b == 1 { 0.016 } else { 0.02 };
            signups[b] += Binomial::new(1000, p).unwrap().sample(&mut rng) as f64;
            for _ in 0..1000 {
                let v: f64 = noise.sample(&mut rng) * if b == 1 { 1.2 } else { 1.0 };
                rev[b].0 += v;
                rev[b].1 += v * v;
            }
        }
        let side = |b: usize| BranchTotals {
            participants: n[b],
            metrics: vec![
                Totals {
                    sum: signups[b],
                    sum_sq: Some(signups[b]),
                },
                Totals {
                    sum: rev[b].0,
                    sum_sq: Some(rev[b].1),
                },
            ],
        };
        last = Some(judge.observe(&[side(0), side(1)]));
    }
    let r = last.unwrap();
    assert_eq!(r.comparisons[0].verdict, Verdict::Undesired, "{r:?}");
    assert_eq!(r.comparisons[1].verdict, Verdict::Desired, "{r:?}");
    let (lo, hi) = r.comparisons[1].ci.unwrap();
    assert!(lo > 0.0 && lo < 0.2 && hi > 0.2, "revenue ci {lo} {hi}");
    let (lo, hi) = r.comparisons[0].ci.unwrap();
    assert!(hi < 0.0 && lo < -0.2 && hi > -0.2, "signups ci {lo} {hi}");
    let closing = judge.close(&r);
    assert_eq!(closing[0].outcome, Outcome::Undesired);
    assert_eq!(closing[1].outcome, Outcome::Desired);
    assert_eq!(closing[1].more_participants, None);
}
