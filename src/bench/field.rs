//! The detection benchmark under real fleets' conditions: every deploy draws its fleet,
//! its confounders and its fault from one seeded distribution, and immune, the threshold
//! tools, the Kayenta-style judge and the SPRT oracle judge the same samples.
//!
//! The seeded suite of [`super::detect`] holds one thing fixed per table (40 identical-ish
//! hosts, 10-s scrapes, a 10-minute canary) so that methods can be compared cell by cell.
//! Real fleets vary all of it at once, and the failures that matter (a false rollback
//! because the canary hosts were already worse, a regression that waits for a floor of
//! blocks) appear only then. So each deploy here draws: a fleet of 10 to 200 web hosts
//! (log-uniform) with a canary of 2 to 4, scrapes every 10 to 30 s, a canary phase of 5 to
//! 10 minutes, a host-to-host lognormal spread of error and latency levels with sigma in
//! [0, 0.5], and, each on with probability one half, a traffic surge ×1.3–2 at the
//! canary event, 5 % missing scrapes, and a control host whose error rate triples on its
//! own within three minutes of the canary event. The fault is drawn by class (see
//! [`Class`]). Targets are those of issue 8, item 7, and the report checks each.

use super::BenchError;
use super::baselines::{Outcome, Window};
use super::detect::{
    ARGO, ARGO_FL3, FLAGGER, KAYENTA, ORACLE, immune_outcome, simulate_fleet, start_for,
};
use crate::model::DurationMs;
use crate::rules::RuleSet;
use crate::sim::{Degrade, DeployPlan, FleetConfig, Rand, Scenario, Surge};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What kind of fault a deploy carries; the classes the targets speak of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Class {
    /// No fault: every stop is a false one.
    Healthy,
    /// Canary error rate ×2.
    Errors2x,
    /// Canary error rate ×1.5.
    Errors15x,
    /// Latency (median, so mean and p99 too) +15 % to +50 %.
    Latency,
    /// Latency +25 % in a canary phase of exactly 6 minutes (the target's case).
    Latency25In6m,
    /// Signups per request −20 % to −40 %.
    Signups,
    /// MySQL locks up a minute after the canary event.
    MysqlLockup,
    /// Memcached locks up a minute after the canary event.
    MemcachedLockup,
}

impl Class {
    /// Every class with its share of the deploys, in report order.
    pub const MIX: [(Class, f64); 8] = [
        (Class::Healthy, 0.60),
        (Class::Errors2x, 0.12),
        (Class::Errors15x, 0.05),
        (Class::Latency, 0.05),
        (Class::Latency25In6m, 0.08),
        (Class::Signups, 0.05),
        (Class::MysqlLockup, 0.025),
        (Class::MemcachedLockup, 0.025),
    ];

    /// The class's name on the command line (`--classes`).
    pub fn slug(self) -> &'static str {
        match self {
            Class::Healthy => "healthy",
            Class::Errors2x => "errors-x2",
            Class::Errors15x => "errors-x1.5",
            Class::Latency => "latency",
            Class::Latency25In6m => "latency-25-6m",
            Class::Signups => "signups",
            Class::MysqlLockup => "mysql-lockup",
            Class::MemcachedLockup => "memcached-lockup",
        }
    }

    /// The class named `slug` on the command line.
    pub fn from_slug(slug: &str) -> Option<Class> {
        Class::MIX
            .iter()
            .map(|(c, _)| *c)
            .find(|c| c.slug() == slug)
    }

    /// Every slug, comma-separated, for error messages.
    pub fn slugs() -> String {
        Class::MIX
            .iter()
            .map(|(c, _)| c.slug())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The class's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Class::Healthy => "healthy",
            Class::Errors2x => "errors x2",
            Class::Errors15x => "errors x1.5",
            Class::Latency => "latency +15..50%",
            Class::Latency25In6m => "latency +25%, 6-min canary",
            Class::Signups => "signups -20..40%",
            Class::MysqlLockup => "mysql-lockup",
            Class::MemcachedLockup => "memcached-lockup",
        }
    }
}

/// One drawn deploy: its fleet, confounders and fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldCase {
    /// Seeds the draw and the fleet.
    pub seed: u64,
    /// The fault's class.
    pub class: Class,
    /// The fault itself.
    pub scenario: Scenario,
    /// Web hosts.
    pub hosts: usize,
    /// Canary hosts.
    pub canary: usize,
    /// Seconds between scrapes.
    pub scrape_s: i64,
    /// Seconds of canary phase.
    pub canary_s: i64,
    /// Log-scale sigma of the hosts' error and latency levels.
    pub sigma: f64,
    /// Traffic factor of the surge at the canary event, if any.
    pub surge: Option<f64>,
    /// Whether 5 % of scrapes are missing (else 0.5 %).
    pub missing: bool,
    /// Seconds after the canary event at which a control host's errors triple, if any.
    pub degrading_after_s: Option<f64>,
}

/// Draws the case of `seed` for `class`.
pub fn draw(seed: u64, class: Class) -> FieldCase {
    let mut r = Rand::new(seed ^ 0x5eed_f1e1_d000_0000);
    let hosts = (10.0 * (r.range(0.0, 20f64.ln())).exp()).round() as usize;
    let canary = 2 + (r.uniform() * 3.0) as usize;
    let scrape_s = 10 + 5 * (r.uniform() * 5.0) as i64;
    let mut canary_s = 300 + 30 * (r.uniform() * 11.0) as i64;
    let sigma = r.range(0.0, 0.5);
    let surge = r.chance(0.5).then(|| r.range(1.3, 2.0));
    let missing = r.chance(0.5);
    let degrading_after_s = r.chance(0.5).then(|| r.range(0.0, 180.0));
    let scenario = match class {
        Class::Healthy => Scenario::Healthy,
        Class::Errors2x => Scenario::ErrorRate(2.0),
        Class::Errors15x => Scenario::ErrorRate(1.5),
        Class::Latency => Scenario::Latency(round2(r.range(1.15, 1.5))),
        Class::Latency25In6m => {
            canary_s = 360;
            Scenario::Latency(1.25)
        }
        Class::Signups => Scenario::Signups(round2(r.range(0.6, 0.8))),
        Class::MysqlLockup => Scenario::MysqlLockup,
        Class::MemcachedLockup => Scenario::MemcachedLockup,
    };
    FieldCase {
        seed,
        class,
        scenario,
        hosts,
        canary,
        scrape_s,
        canary_s,
        sigma,
        surge,
        missing,
        degrading_after_s,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `deploys` cases in the shares of [`Class::MIX`] (at least one of each), seeds from
/// 20 000 up.
pub fn cases(deploys: usize) -> Vec<FieldCase> {
    let mut out = Vec::with_capacity(deploys);
    let mut seed = 20_000;
    for (class, share) in Class::MIX {
        let n = ((deploys as f64 * share).round() as usize).max(1);
        for _ in 0..n {
            out.push(draw(seed, class));
            seed += 1;
        }
    }
    out
}

/// Seconds of fleet history before the canary event: an agent that runs all the time holds
/// at least the control calibration window ([`crate::engine::judge::CONTROL_CALIBRATION`]),
/// so the benchmark gives it that much.
pub const HISTORY_S: i64 = crate::engine::judge::CONTROL_CALIBRATION.0 / 1000;

/// The fleet and plan of a case: an hour of history (what a running agent holds, and
/// the control calibration window), the canary phase, 10 minutes of
/// full rollout.
pub fn plan_of(c: &FieldCase) -> (FleetConfig, DeployPlan) {
    let start = start_for(c.seed);
    let canary_at = start.add(DurationMs::from_secs(HISTORY_S));
    let full_at = canary_at.add(DurationMs::from_secs(c.canary_s));
    let end_at = full_at.add(DurationMs::from_secs(600));
    let cfg = FleetConfig {
        hosts: c.hosts,
        canary_hosts: c.canary,
        scrape_interval: DurationMs::from_secs(c.scrape_s),
        seed: c.seed,
        start,
        missing_ratio: if c.missing { 0.05 } else { 0.005 },
        host_sigma: Some(c.sigma),
        degrading_control: c.degrading_after_s.map(|s| Degrade {
            at: canary_at.add(DurationMs((s * 1000.0) as i64)),
            factor: 3.0,
        }),
        surge: c.surge.map(|factor| Surge {
            from: canary_at,
            until: end_at,
            factor,
        }),
        ..FleetConfig::default()
    };
    let plan = DeployPlan {
        id: format!("f{}", c.seed),
        service: "web".to_string(),
        canary_at,
        full_at,
        end_at,
        scenario: c.scenario,
    };
    (cfg, plan)
}

/// Every method's outcome on one drawn deploy.
#[derive(Clone, Debug, Serialize)]
pub struct FieldResult {
    /// The case.
    pub case: FieldCase,
    /// Outcomes by method name (the oracle only for error-rate faults).
    pub outcomes: BTreeMap<&'static str, Outcome>,
}

/// Judges one drawn deploy with every method.
pub fn run_case(c: &FieldCase, rules: &RuleSet) -> Result<FieldResult, BenchError> {
    let (cfg, plan) = plan_of(c);
    let sim = simulate_fleet(cfg, plan, rules, &mut |_, _, _, _| {})?;
    let w = Window {
        canary_at: sim.plan.canary_at,
        full_at: sim.plan.full_at,
    };
    let mut outcomes = BTreeMap::new();
    outcomes.insert("immune", immune_outcome(&sim.decisions, &w).0);
    outcomes.insert("threshold-argo", ARGO.judge(&sim.rounds, &w));
    outcomes.insert("threshold-argo-fl3", ARGO_FL3.judge(&sim.rounds, &w));
    outcomes.insert("threshold-flagger", FLAGGER.judge(&sim.rounds, &w));
    outcomes.insert("kayenta", KAYENTA.judge(&sim.rounds, &w));
    if let Scenario::ErrorRate(m) = c.scenario {
        outcomes.insert(
            "oracle-sprt",
            ORACLE.judge(&sim.rounds, &w, m, sim.canary_error_level),
        );
    }
    Ok(FieldResult {
        case: c.clone(),
        outcomes,
    })
}

/// Runs every case on `threads` threads; results in case order. `progress(done, total)`
/// after each.
pub fn run_all(
    cases: &[FieldCase],
    rules: &RuleSet,
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<FieldResult>, BenchError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FieldResult, BenchError>>>> =
        Mutex::new((0..cases.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let r = run_case(case, rules);
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, cases.len());
                }
            });
        }
    });
    let v = results
        .into_inner()
        .map_err(|_| BenchError::Sim("a worker panicked"))?;
    v.into_iter()
        .map(|r| r.unwrap_or(Err(BenchError::Sim("a case was not run"))))
        .collect()
}

/// Methods in report order (the oracle only where it applies).
const METHODS: [&str; 6] = [
    "immune",
    "kayenta",
    "threshold-argo",
    "threshold-argo-fl3",
    "threshold-flagger",
    "oracle-sprt",
];

/// Stop statistics of one method over some runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stops {
    /// Runs with an outcome for the method.
    pub runs: usize,
    /// Rolled back or blocked, at any time.
    pub stopped: usize,
    /// Rolled back or blocked during the canary phase.
    pub in_canary: usize,
    /// Median seconds from the canary event to the stop, over stopped runs.
    pub median_s: Option<f64>,
}

impl Stops {
    fn of(os: &[&Outcome]) -> Stops {
        let mut t: Vec<f64> = os
            .iter()
            .filter(|o| o.caught)
            .filter_map(|o| o.after_s)
            .collect();
        t.sort_by(f64::total_cmp);
        Stops {
            runs: os.len(),
            stopped: os.iter().filter(|o| o.caught).count(),
            in_canary: os.iter().filter(|o| o.caught && o.in_canary).count(),
            median_s: median(&t),
        }
    }

    fn share(&self, k: usize) -> String {
        if self.runs == 0 {
            "–".into()
        } else {
            format!("{:.1}%", 100.0 * k as f64 / self.runs as f64)
        }
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[(sorted.len() - 1) / 2])
}

fn outcomes<'a>(rs: &[&'a FieldResult], method: &str) -> Vec<&'a Outcome> {
    rs.iter().filter_map(|r| r.outcomes.get(method)).collect()
}

/// One target of issue 8 and how a method meets it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The goal, in words.
    pub goal: String,
    /// The measured value per method (immune first).
    pub values: Vec<(String, String)>,
    /// Whether immune meets it (None where the target has no number).
    pub met: Option<bool>,
}

/// The report: a table per class, the targets, the false stops per confounder.
pub fn report(results: &[FieldResult]) -> (String, Vec<Target>) {
    let mut md = String::new();
    let of_class =
        |c: Class| -> Vec<&FieldResult> { results.iter().filter(|r| r.case.class == c).collect() };

    // Per class and method.
    md.push_str(
        "| fault | method | runs | stopped | in canary | median s |\n|---|---|---:|---:|---:|---:|\n",
    );
    for (class, _) in Class::MIX {
        let rs = of_class(class);
        for m in METHODS {
            let s = Stops::of(&outcomes(&rs, m));
            if s.runs == 0 {
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {m} | {} | {} | {} | {} |",
                class.name(),
                s.runs,
                s.share(s.stopped),
                s.share(s.in_canary),
                s.median_s.map_or("–".into(), |x| format!("{x:.0}"))
            );
        }
    }

    // Targets.
    let mut targets = Vec::new();
    let healthy = of_class(Class::Healthy);
    let per_method = |rs: &[&FieldResult], f: &dyn Fn(&Stops) -> String| -> Vec<(String, String)> {
        METHODS[..5]
            .iter()
            .map(|m| (m.to_string(), f(&Stops::of(&outcomes(rs, m)))))
            .collect()
    };
    let hs = Stops::of(&outcomes(&healthy, "immune"));
    targets.push(Target {
        what: format!("healthy deploys stopped (of {})", hs.runs),
        goal: "<= 0.5% of >= 1000".into(),
        values: per_method(&healthy, &|s| s.share(s.stopped)),
        met: Some(hs.runs >= 1000 && hs.stopped as f64 <= 0.005 * hs.runs as f64),
    });
    let e2 = of_class(Class::Errors2x);
    let decided: Vec<&FieldResult> = e2
        .iter()
        .copied()
        .filter(|r| {
            r.outcomes
                .get("oracle-sprt")
                .is_some_and(|o| o.caught && o.in_canary)
        })
        .collect();
    let es = Stops::of(&outcomes(&decided, "immune"));
    targets.push(Target {
        what: format!(
            "errors x2 stopped in the canary, where the oracle decides there ({} of {})",
            decided.len(),
            e2.len()
        ),
        goal: ">= 95%".into(),
        values: per_method(&decided, &|s| s.share(s.in_canary)),
        met: Some(es.runs > 0 && es.in_canary as f64 >= 0.95 * es.runs as f64),
    });
    let canary_times = |m: &str| -> Option<f64> {
        let mut t: Vec<f64> = outcomes(&decided, m)
            .iter()
            .filter(|o| o.caught && o.in_canary)
            .filter_map(|o| o.after_s)
            .collect();
        t.sort_by(f64::total_cmp);
        median(&t)
    };
    let oracle_t = canary_times("oracle-sprt");
    let ratio = |m: &str| match (canary_times(m), oracle_t) {
        (Some(a), Some(o)) if o > 0.0 => Some(a / o),
        _ => None,
    };
    targets.push(Target {
        what: format!(
            "errors x2: median time to stop in the canary vs the oracle's ({} s)",
            oracle_t.map_or("–".into(), |x| format!("{x:.0}"))
        ),
        goal: "<= 1.3x".into(),
        values: METHODS[..5]
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    ratio(m).map_or("–".into(), |x| format!("{x:.2}x")),
                )
            })
            .collect(),
        met: Some(ratio("immune").is_some_and(|x| x <= 1.3)),
    });
    let l25 = of_class(Class::Latency25In6m);
    let ls = Stops::of(&outcomes(&l25, "immune"));
    targets.push(Target {
        what: format!("latency +25% stopped in a 6-minute canary (of {})", ls.runs),
        goal: ">= 90%".into(),
        values: per_method(&l25, &|s| s.share(s.in_canary)),
        met: Some(ls.runs > 0 && ls.in_canary as f64 >= 0.9 * ls.runs as f64),
    });
    let su = of_class(Class::Signups);
    targets.push(Target {
        what: format!(
            "signups -20..40% stopped, any phase (of {})",
            Stops::of(&outcomes(&su, "immune")).runs
        ),
        goal: "caught".into(),
        values: per_method(&su, &|s| s.share(s.stopped)),
        met: None,
    });
    md.push_str("\n| target | goal | immune | kayenta | argo | argo fl3 | flagger | met |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---|\n");
    for t in &targets {
        let vals: Vec<&str> = t.values.iter().map(|(_, v)| v.as_str()).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            vals.join(" | "),
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }

    // False stops per confounder.
    md.push_str(
        "\n| healthy deploys with | runs | immune | kayenta | argo | argo fl3 | flagger |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    type Pred = Box<dyn Fn(&FieldCase) -> bool>;
    let rows: Vec<(&str, Pred)> = vec![
        ("all", Box::new(|_| true)),
        ("host sigma < 0.17", Box::new(|c| c.sigma < 0.5 / 3.0)),
        (
            "host sigma 0.17..0.33",
            Box::new(|c| (0.5 / 3.0..1.0 / 3.0).contains(&c.sigma)),
        ),
        ("host sigma >= 0.33", Box::new(|c| c.sigma >= 1.0 / 3.0)),
        ("surge", Box::new(|c| c.surge.is_some())),
        ("no surge", Box::new(|c| c.surge.is_none())),
        ("5% missing scrapes", Box::new(|c| c.missing)),
        ("0.5% missing scrapes", Box::new(|c| !c.missing)),
        (
            "degrading control host",
            Box::new(|c| c.degrading_after_s.is_some()),
        ),
        (
            "no degrading host",
            Box::new(|c| c.degrading_after_s.is_none()),
        ),
        ("scrapes 10-15 s", Box::new(|c| c.scrape_s <= 15)),
        ("scrapes 20-30 s", Box::new(|c| c.scrape_s >= 20)),
        ("10-29 hosts", Box::new(|c| c.hosts < 30)),
        ("30-79 hosts", Box::new(|c| (30..80).contains(&c.hosts))),
        ("80-200 hosts", Box::new(|c| c.hosts >= 80)),
        ("2-host canary", Box::new(|c| c.canary == 2)),
        ("3-4-host canary", Box::new(|c| c.canary >= 3)),
        (
            "surge, 5% missing and degrading host",
            Box::new(|c| c.surge.is_some() && c.missing && c.degrading_after_s.is_some()),
        ),
    ];
    for (name, pred) in &rows {
        let rs: Vec<&FieldResult> = healthy.iter().copied().filter(|r| pred(&r.case)).collect();
        let vals: Vec<String> = METHODS[..5]
            .iter()
            .map(|m| {
                let s = Stops::of(&outcomes(&rs, m));
                s.share(s.stopped)
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} | {} |", rs.len(), vals.join(" | "));
    }

    // What stopped immune's healthy deploys, and its misses' most common phase.
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for o in outcomes(&healthy, "immune").iter().filter(|o| o.caught) {
        let phase = if o.in_canary { "canary" } else { "later" };
        *by.entry(format!("{} ({phase})", o.by)).or_default() += 1;
    }
    let mut by: Vec<(String, usize)> = by.into_iter().collect();
    by.sort_by_key(|b| std::cmp::Reverse(b.1));
    let list: Vec<String> = by.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    let _ = writeln!(
        md,
        "\nimmune's false stops by rule: {}",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    );
    (md, targets)
}

/// The time a fleet deploy costs, in host-rounds (hosts × scrape rounds): what the run's
/// size is planned on.
pub fn host_rounds(c: &FieldCase) -> f64 {
    let seconds = 15.0 * 60.0 + c.canary_s as f64 + 660.0;
    c.hosts as f64 * seconds / c.scrape_s as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_cover_the_ranges_and_are_seeded() {
        let cs = cases(400);
        assert_eq!(draw(20_001, Class::Healthy), draw(20_001, Class::Healthy));
        assert!(cs.iter().all(|c| (10..=200).contains(&c.hosts)));
        assert!(cs.iter().all(|c| (2..=4).contains(&c.canary)));
        assert!(cs.iter().all(|c| (10..=30).contains(&c.scrape_s)));
        assert!(cs.iter().all(|c| (300..=600).contains(&c.canary_s)));
        assert!(cs.iter().all(|c| (0.0..0.5).contains(&c.sigma)));
        assert!(cs.iter().any(|c| c.hosts < 15) && cs.iter().any(|c| c.hosts > 150));
        assert!(cs.iter().any(|c| c.scrape_s == 30) && cs.iter().any(|c| c.scrape_s == 10));
        let healthy = cs.iter().filter(|c| c.class == Class::Healthy).count();
        assert_eq!(healthy, 240);
        let surge = cs.iter().filter(|c| c.surge.is_some()).count();
        assert!((150..250).contains(&surge), "surges {surge}");
        assert!(
            cs.iter()
                .filter(|c| c.class == Class::Latency25In6m)
                .all(|c| c.canary_s == 360 && c.scenario == Scenario::Latency(1.25))
        );
        let (cfg, plan) = plan_of(&cs[0]);
        assert_eq!(
            plan.full_at.since(plan.canary_at).as_secs_f64(),
            cs[0].canary_s as f64
        );
        assert_eq!(cfg.host_sigma, Some(cs[0].sigma));
    }

    #[test]
    fn report_checks_the_targets() {
        let rules = crate::defaults::load_rules(&[]).unwrap_or_default();
        let mut c = draw(3, Class::Errors2x);
        c.hosts = 12;
        let r = run_case(&c, &rules).unwrap();
        assert!(r.outcomes.contains_key("oracle-sprt"));
        let (md, targets) = report(&[r]);
        assert_eq!(targets.len(), 5);
        assert!(md.contains("| errors x2 | immune | 1 |"));
        // One healthy run is far from the 1000 the target asks for.
        assert_eq!(targets[0].met, Some(false));
    }
}
