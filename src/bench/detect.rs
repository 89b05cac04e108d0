//! The detection benchmark: seeded deploys from the simulator, each judged by immune and
//! by the methods people use today, on the same samples.
//!
//! Every run simulates one deploy (15 minutes of history, a 10-minute canary, 20 minutes
//! of full rollout, one more minute) on a fleet whose start moves with the seed across the
//! week, so deploys meet every part of the daily and weekly traffic shape. Each scrape
//! round's samples go straight from [`Fleet::scrape`] into an [`Engine`] with the shipped
//! rules (ticks every 10 s, deploy events in the order `immune replay` applies them: after
//! the samples of their instant, before that instant's tick; `replay_agrees` in the tests
//! checks the decisions equal the replay's), and, aggregated per side, into the baselines
//! of [`super::baselines`].

use super::BenchError;
use super::baselines::{
    FailurePolicy, Kayenta, Oracle, Outcome, Round, SideAgg, Threshold, Window,
};
use crate::engine::{Engine, EngineConfig};
use crate::model::{Decision, DecisionKind, DeployEvent, DurationMs, Phase, Sample, Timestamp};
use crate::rules::RuleSet;
use crate::sim::{DeployPlan, Fleet, FleetConfig, Scenario};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One simulated deploy to judge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    /// Web hosts in the fleet.
    pub hosts: usize,
    /// Canary hosts.
    pub canary: usize,
    /// What the deploy does.
    pub scenario: Scenario,
    /// The fleet's seed (also moves its start across the week).
    pub seed: u64,
}

/// Every method's outcome on one case.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// The case.
    pub case: Case,
    /// Seconds from the canary event to immune's promote, if it promoted.
    pub immune_promoted_after_s: Option<f64>,
    /// Outcomes by method name (see [`METHODS`]); the oracle only for error-rate cases.
    pub outcomes: BTreeMap<&'static str, Outcome>,
}

/// Method names in report order.
pub const METHODS: [&str; 6] = [
    "immune",
    "threshold-argo",
    "threshold-argo-fl3",
    "threshold-flagger",
    "kayenta",
    "oracle-sprt",
];

pub(crate) const ARGO: Threshold = Threshold {
    interval_s: 60,
    factor: 1.2,
    policy: FailurePolicy::Argo {
        failure_limit: 0,
        consecutive_error_limit: 4,
    },
};
pub(crate) const ARGO_FL3: Threshold = Threshold {
    interval_s: 60,
    factor: 1.2,
    policy: FailurePolicy::Argo {
        failure_limit: 3,
        consecutive_error_limit: 4,
    },
};
pub(crate) const FLAGGER: Threshold = Threshold {
    interval_s: 60,
    factor: 1.2,
    policy: FailurePolicy::Flagger { threshold: 5 },
};
pub(crate) const KAYENTA: Kayenta = Kayenta {
    interval_s: 300,
    step_s: 60,
    alpha: 0.02,
    tolerance: 0.25,
    pass: 95.0,
    marginal: 75.0,
};
pub(crate) const ORACLE: Oracle = Oracle {
    alpha: 0.01,
    beta: 0.05,
};

/// The start of the fleet for `seed`: 37 minutes per seed, modulo a week (as
/// `tests/judge_scenarios.rs` does), so deploys meet all of the daily shape.
pub fn start_for(seed: u64) -> Timestamp {
    FleetConfig::default().start.add(DurationMs::from_secs(
        (seed as i64 * 37 * 60) % (7 * 86_400),
    ))
}

/// The fleet and plan of a case.
pub fn plan_of(case: &Case) -> (FleetConfig, DeployPlan) {
    let cfg = FleetConfig {
        hosts: case.hosts,
        canary_hosts: case.canary,
        seed: case.seed,
        start: start_for(case.seed),
        ..FleetConfig::default()
    };
    let canary_at = cfg.start.add(DurationMs::from_secs(15 * 60));
    let plan = DeployPlan::new(&format!("d{}", case.seed), canary_at, case.scenario);
    (cfg, plan)
}

/// Per-host counter state, turned into per-round increases per side.
struct Tracker {
    canary_hosts: usize,
    /// `[req, err, lat_sum, lat_cnt, le 0..8]` last values per host.
    last: Vec<[Option<f64>; 12]>,
    /// Each host's first `(requests, errors)` counters: the simulator starts them "as
    /// after days of uptime" at the host's own error ratio, so their ratio is that
    /// host's true error level (to rounding).
    first: Vec<(f64, f64)>,
    /// Requests per host before the deploy (its share of traffic).
    pre_req: Vec<f64>,
    /// Whether the deploy has begun (requests stop counting towards `pre_req`).
    deployed: bool,
    round: [SideAgg; 2],
    /// Cumulative-bucket increases this round, per side.
    cum: [[f64; 8]; 2],
    mysql: bool,
    memcached: bool,
}

const LE: [&str; 8] = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];

impl Tracker {
    fn new(hosts: usize, canary_hosts: usize) -> Tracker {
        Tracker {
            canary_hosts,
            last: vec![[None; 12]; hosts],
            first: vec![(0.0, 0.0); hosts],
            pre_req: vec![0.0; hosts],
            deployed: false,
            round: [SideAgg::default(); 2],
            cum: [[0.0; 8]; 2],
            mysql: false,
            memcached: false,
        }
    }

    fn host_of(s: &Sample) -> Option<usize> {
        let inst = s.labels.iter().find(|(k, _)| k == "instance")?;
        let n = inst.1.strip_prefix("web-")?.split(':').next()?;
        n.parse::<usize>().ok()?.checked_sub(1)
    }

    fn observe(&mut self, s: &Sample) {
        if s.name.starts_with("mysql_") {
            self.mysql = true;
            return;
        }
        if s.name.starts_with("memcached_") {
            self.memcached = true;
            return;
        }
        let Some(h) = Self::host_of(s) else { return };
        let Some(last) = self.last.get_mut(h) else {
            return;
        };
        let side = usize::from(h >= self.canary_hosts);
        if s.name == "node_load1" {
            self.round[side].load_sum += s.value;
            self.round[side].load_n += 1.0;
            return;
        }
        let slot = match s.name.as_str() {
            "http_requests_total" => 0,
            "php_errors_total" => 1,
            "http_request_duration_seconds_sum" => 2,
            "http_request_duration_seconds_count" => 3,
            "http_request_duration_seconds_bucket" => {
                let le = s.labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v);
                match le.and_then(|v| LE.iter().position(|l| l == v)) {
                    Some(b) => 4 + b,
                    None => return,
                }
            }
            _ => return,
        };
        let prev = last[slot].replace(s.value);
        let Some(prev) = prev else {
            match slot {
                0 => self.first[h].0 = s.value,
                1 => self.first[h].1 = s.value,
                _ => {}
            }
            return;
        };
        // Prometheus' `increase`: a drop is a reset, counting from zero.
        let d = if s.value < prev {
            s.value
        } else {
            s.value - prev
        };
        if slot == 0 && !self.deployed {
            self.pre_req[h] += d;
        }
        let r = &mut self.round[side];
        match slot {
            0 => r.req += d,
            1 => r.err += d,
            2 => r.lat_sum += d,
            3 => r.lat_cnt += d,
            b => self.cum[side][b - 4] += d,
        }
    }

    /// The canary hosts' true error level relative to the control's, each host weighted
    /// by its traffic before the deploy.
    fn canary_level(&self) -> f64 {
        let mut acc = [(0.0, 0.0); 2];
        for (h, ((req0, err0), w)) in self.first.iter().zip(&self.pre_req).enumerate() {
            if *req0 > 0.0 {
                let side = usize::from(h >= self.canary_hosts);
                acc[side].0 += w * err0 / req0;
                acc[side].1 += w;
            }
        }
        let level = |(s, w): (f64, f64)| if w > 0.0 { s / w } else { f64::NAN };
        let c = level(acc[0]) / level(acc[1]);
        if c.is_finite() && c > 0.0 { c } else { 1.0 }
    }

    fn finish(&mut self, at: Timestamp) -> Round {
        for side in 0..2 {
            let mut prev = 0.0;
            for b in 0..8 {
                let c = self.cum[side][b];
                self.round[side].buckets[b] = (c - prev).max(0.0);
                prev = c;
            }
        }
        let r = Round {
            at,
            side: self.round,
            mysql: self.mysql,
            memcached: self.memcached,
        };
        self.round = [SideAgg::default(); 2];
        self.cum = [[0.0; 8]; 2];
        self.mysql = false;
        self.memcached = false;
        r
    }
}

/// What a simulated deploy produced: immune's decisions and the per-side rounds.
pub struct Simulated {
    /// immune's decisions, in order.
    pub decisions: Vec<Decision>,
    /// Every scrape round, aggregated per side.
    pub rounds: Vec<Round>,
    /// The deploy's plan.
    pub plan: DeployPlan,
    /// The canary hosts' true error level relative to the control's before the deploy.
    pub canary_error_level: f64,
}

/// Simulates one case and runs immune over it.
pub fn simulate(case: &Case, rules: &RuleSet) -> Result<Simulated, BenchError> {
    simulate_with(case, rules, &mut |_, _, _, _| {})
}

/// Called after every tick with the time it took, whether a deploy was active, its
/// decisions and the engine (for the deploys' views).
pub type OnTick<'a> = dyn FnMut(std::time::Duration, bool, &[Decision], &Engine) + 'a;

/// [`simulate`], calling `on_tick` after every tick (the performance benchmark's decision
/// latency).
pub fn simulate_with(
    case: &Case,
    rules: &RuleSet,
    on_tick: &mut OnTick<'_>,
) -> Result<Simulated, BenchError> {
    let (cfg, plan) = plan_of(case);
    simulate_fleet(cfg, plan, rules, on_tick)
}

/// Simulates one deploy on any fleet (every confounder the config switches on) and runs
/// immune over it; one more minute after the plan's end, then every deploy is finished.
pub fn simulate_fleet(
    cfg: FleetConfig,
    plan: DeployPlan,
    rules: &RuleSet,
    on_tick: &mut OnTick<'_>,
) -> Result<Simulated, BenchError> {
    let until = plan.end_at.add(DurationMs::from_secs(60));
    let mut fleet = Fleet::new(cfg.clone(), vec![plan.clone()]);
    let mut events: Vec<(Timestamp, DeployEvent)> = Vec::new();
    for e in fleet.deploy_events() {
        let at = Timestamp::from_secs_f64(e.at).ok_or(BenchError::Sim("bad event time"))?;
        events.push((at, e));
    }
    let mut engine = Engine::new(rules.clone(), EngineConfig::default());
    let mut tracker = Tracker::new(cfg.hosts, cfg.canary_hosts.min(cfg.hosts));
    let mut samples = Vec::with_capacity(cfg.hosts * 21 + 16);
    let mut decisions = Vec::new();
    let mut rounds = Vec::new();
    let mut next_event = 0;
    let step = cfg.scrape_interval;
    let mut now = cfg.start;
    while now <= until {
        samples.clear();
        fleet.scrape(now, &mut samples);
        for s in &samples {
            engine.ingest(&s.name, &s.labels, s.value, now)?;
            tracker.observe(s);
        }
        rounds.push(tracker.finish(now));
        tracker.deployed |= now >= plan.canary_at;
        while let Some((at, ev)) = events.get(next_event)
            && *at <= now
        {
            decisions.extend(engine.deploy_event(ev)?);
            next_event += 1;
        }
        if now > cfg.start {
            let active = engine.active_deploys() > 0;
            let started = std::time::Instant::now();
            let ds = engine.tick(now);
            on_tick(started.elapsed(), active, &ds, &engine);
            decisions.extend(ds);
        }
        now = now.add(step);
    }
    let mut last = until;
    for (at, ev) in &events[next_event..] {
        last = last.max(*at);
        decisions.extend(engine.deploy_event(ev)?);
    }
    decisions.extend(engine.finish_all(last));
    Ok(Simulated {
        decisions,
        rounds,
        plan,
        canary_error_level: tracker.canary_level(),
    })
}

/// immune's outcome from its decisions: the final decision, caught when it blocks the line.
pub(crate) fn immune_outcome(ds: &[Decision], w: &Window) -> (Outcome, Option<f64>) {
    let canary = w.canary_at.as_secs_f64();
    let promoted = ds
        .iter()
        .find(|d| d.decision == DecisionKind::Promote && !d.shadow)
        .map(|d| d.at - canary);
    let stop = ds
        .iter()
        .find(|d| d.decision.blocks_line() && !d.shadow && d.r#final);
    let o = match stop {
        Some(d) => Outcome {
            caught: true,
            after_s: Some(d.at - canary),
            in_canary: d.phase == Phase::Canary,
            by: d.rule.clone(),
        },
        None => Outcome::default(),
    };
    (o, promoted)
}

/// Judges one case with every method.
pub fn run_case(case: &Case, rules: &RuleSet) -> Result<RunResult, BenchError> {
    let sim = simulate(case, rules)?;
    let w = Window {
        canary_at: sim.plan.canary_at,
        full_at: sim.plan.full_at,
    };
    let (immune, promoted) = immune_outcome(&sim.decisions, &w);
    let mut outcomes = BTreeMap::new();
    outcomes.insert("immune", immune);
    outcomes.insert("threshold-argo", ARGO.judge(&sim.rounds, &w));
    outcomes.insert("threshold-argo-fl3", ARGO_FL3.judge(&sim.rounds, &w));
    outcomes.insert("threshold-flagger", FLAGGER.judge(&sim.rounds, &w));
    outcomes.insert("kayenta", KAYENTA.judge(&sim.rounds, &w));
    if let Scenario::ErrorRate(m) = case.scenario
        && m > 1.0
    {
        outcomes.insert(
            "oracle-sprt",
            ORACLE.judge(&sim.rounds, &w, m, sim.canary_error_level),
        );
    }
    Ok(RunResult {
        case: case.clone(),
        immune_promoted_after_s: promoted,
        outcomes,
    })
}

/// Runs every case on `threads` threads (work-stealing by index); results in case order.
/// `progress` is called after each case with (done, total).
pub fn run_all(
    cases: &[Case],
    rules: &RuleSet,
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<RunResult>, BenchError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult, BenchError>>>> =
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

/// The suite's cases: every scenario on the reference fleet (40 hosts, 2 canaries), plus
/// 10 and 200 hosts for the error-rate and healthy scenarios, plus a canary of 4.
/// Healthy and surge get `healthy_seeds`, bad scenarios `seeds`; the variants fewer.
pub fn suite(seeds: u64, healthy_seeds: u64, scenarios: &[Scenario]) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |hosts: usize, canary: usize, scenario: Scenario, n: u64| {
        for i in 0..n {
            cases.push(Case {
                hosts,
                canary,
                scenario,
                seed: 10_000 + i,
            });
        }
    };
    let n_for = |s: &Scenario, div: u64| {
        if s.is_bad() {
            (seeds / div).max(1)
        } else {
            (healthy_seeds / div).max(1)
        }
    };
    for s in scenarios {
        add(40, 2, *s, n_for(s, 1));
    }
    // The variants: error rates and healthy deploys (surges too for the 4-host canary);
    // 200 hosts cost five times as much per deploy, so they get a third of the healthy seeds.
    for (hosts, canary, surge, healthy_div) in
        [(10, 2, false, 2), (200, 2, false, 3), (40, 4, true, 2)]
    {
        for s in scenarios {
            let take = match s {
                Scenario::Healthy => Some(healthy_div),
                Scenario::Surge if surge => Some(healthy_div),
                Scenario::ErrorRate(_) => Some(2),
                _ => None,
            };
            if let Some(div) = take {
                add(hosts, canary, *s, n_for(s, div));
            }
        }
    }
    cases
}

/// The scenarios of the issue, in report order.
pub fn default_scenarios() -> Vec<Scenario> {
    [
        "healthy",
        "surge",
        "error-rate:1.2",
        "error-rate:1.5",
        "error-rate:2",
        "error-rate:5",
        "new-errors",
        "latency:1.1",
        "latency:1.3",
        "latency-variance:2",
        "mysql-lockup",
        "memcached-lockup",
        "hit-ratio:0.2",
        "signups:0.8",
        "revenue:0.9",
        "slow-burn:0.01",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

/// One line of the report: a method on a scenario and fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Web hosts.
    pub hosts: usize,
    /// Canary hosts.
    pub canary: usize,
    /// Scenario name.
    pub scenario: String,
    /// Whether the scenario is bad (caught is right) or healthy (caught is a false rollback).
    pub bad: bool,
    /// Method name.
    pub method: String,
    /// Runs.
    pub runs: usize,
    /// Share rolled back or blocked.
    pub caught: f64,
    /// Share rolled back or blocked during the canary phase.
    pub caught_in_canary: f64,
    /// Median seconds from the canary event to the rollback, over caught runs.
    pub median_s: Option<f64>,
    /// 90th percentile of the same.
    pub p90_s: Option<f64>,
    /// immune's median time over the oracle's median time (error-rate scenarios).
    pub vs_oracle: Option<f64>,
    /// What decided, most frequent first (rule or metric: count).
    pub by: Vec<(String, usize)>,
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// Summarises results per fleet, scenario and method.
pub fn summarize(results: &[RunResult]) -> Vec<Row> {
    type Key = (usize, usize, String);
    let mut groups: Vec<(Key, Vec<&RunResult>)> = Vec::new();
    for r in results {
        let key = (r.case.hosts, r.case.canary, r.case.scenario.to_string());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut rows = Vec::new();
    for ((hosts, canary, scenario), runs) in groups {
        let bad = runs[0].case.scenario.is_bad();
        let mut medians: BTreeMap<&str, f64> = BTreeMap::new();
        let mut group_rows = Vec::new();
        for method in METHODS {
            let os: Vec<&Outcome> = runs.iter().filter_map(|r| r.outcomes.get(method)).collect();
            if os.is_empty() {
                continue;
            }
            let n = os.len() as f64;
            let mut times: Vec<f64> = os
                .iter()
                .filter(|o| o.caught)
                .filter_map(|o| o.after_s)
                .collect();
            times.sort_by(f64::total_cmp);
            let median = quantile(&times, 0.5);
            if let Some(m) = median {
                medians.insert(method, m);
            }
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for o in os.iter().filter(|o| o.caught) {
                *by.entry(o.by.clone()).or_default() += 1;
            }
            let mut by: Vec<(String, usize)> = by.into_iter().collect();
            by.sort_by_key(|b| std::cmp::Reverse(b.1));
            group_rows.push(Row {
                hosts,
                canary,
                scenario: scenario.clone(),
                bad,
                method: method.to_string(),
                runs: os.len(),
                caught: os.iter().filter(|o| o.caught).count() as f64 / n,
                caught_in_canary: os.iter().filter(|o| o.caught && o.in_canary).count() as f64 / n,
                median_s: median,
                p90_s: quantile(&times, 0.9),
                vs_oracle: None,
                by,
            });
        }
        if let (Some(i), Some(o)) = (medians.get("immune"), medians.get("oracle-sprt"))
            && *o > 0.0
            && let Some(row) = group_rows.iter_mut().find(|r| r.method == "immune")
        {
            row.vs_oracle = Some(i / o);
        }
        rows.extend(group_rows);
    }
    rows
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |s| format!("{s:.0}"))
}

/// The rows as Markdown tables, one per fleet shape.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    for r in rows {
        if !shapes.contains(&(r.hosts, r.canary)) {
            shapes.push((r.hosts, r.canary));
        }
    }
    for (hosts, canary) in shapes {
        out.push_str(&format!(
            "\n#### {hosts} hosts, {canary}-host canary\n\n\
             | scenario | method | runs | stopped | in canary | median s | p90 s | vs oracle | decided by |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---|\n"
        ));
        for r in rows
            .iter()
            .filter(|r| r.hosts == hosts && r.canary == canary)
        {
            let by: Vec<String> =
                r.by.iter()
                    .take(2)
                    .map(|(k, n)| format!("{k} ({n})"))
                    .collect();
            let label = if r.bad {
                r.scenario.clone()
            } else {
                format!("{} (healthy)", r.scenario)
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                label,
                r.method,
                r.runs,
                pct(r.caught),
                pct(r.caught_in_canary),
                secs(r.median_s),
                secs(r.p90_s),
                r.vs_oracle.map_or_else(String::new, |x| format!("{x:.2}x")),
                by.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults;
    use crate::textformat::TimestampUnit;

    /// The in-memory loop decides what `immune replay` decides on the same deploy.
    #[test]
    fn replay_agrees() {
        let rules = defaults::load_rules(&[]).unwrap_or_default();
        for (seed, scenario) in [(3u64, "error-rate:2"), (4, "healthy"), (5, "mysql-lockup")] {
            let case = Case {
                hosts: 12,
                canary: 2,
                scenario: scenario.parse().unwrap(),
                seed,
            };
            let sim = simulate(&case, &rules).unwrap();
            let (cfg, plan) = plan_of(&case);
            let until = plan.end_at.add(DurationMs::from_secs(60));
            let (mut m, mut d) = (Vec::new(), Vec::new());
            crate::sim::write_replay_files(&cfg, &[plan], until, &mut m, &mut d).unwrap();
            let mut engine = Engine::new(rules.clone(), EngineConfig::default());
            let mut out = Vec::new();
            crate::replay::run(
                &mut engine,
                crate::replay::Input::new("m", m.as_slice()),
                crate::replay::Input::new("d", d.as_slice()),
                crate::replay::Options {
                    unit: TimestampUnit::Seconds,
                    eval_interval_ms: 10_000,
                },
                &mut out,
            )
            .unwrap();
            let replayed: Vec<(f64, DecisionKind, String)> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Decision>(l).unwrap())
                .map(|d| (d.at, d.decision, d.rule))
                .collect();
            let direct: Vec<(f64, DecisionKind, String)> = sim
                .decisions
                .iter()
                .map(|d| (d.at, d.decision, d.rule.clone()))
                .collect();
            assert_eq!(direct, replayed, "seed {seed} {scenario}");
        }
    }

    #[test]
    fn rounds_carry_the_canary_share_of_traffic() {
        let rules = defaults::load_rules(&[]).unwrap_or_default();
        let case = Case {
            hosts: 10,
            canary: 2,
            scenario: Scenario::Healthy,
            seed: 1,
        };
        let sim = simulate(&case, &rules).unwrap();
        let (req0, req1): (f64, f64) = sim.rounds.iter().fold((0.0, 0.0), |a, r| {
            (a.0 + r.side[0].req, a.1 + r.side[1].req)
        });
        let share = req0 / (req0 + req1);
        assert!((0.15..0.25).contains(&share), "share {share}");
        let buckets: f64 = sim
            .rounds
            .iter()
            .map(|r| r.side[1].buckets.iter().sum::<f64>())
            .sum();
        let counts: f64 = sim.rounds.iter().map(|r| r.side[1].lat_cnt).sum();
        assert!((buckets - counts).abs() < 1e-6 * counts);
        assert!(sim.rounds.iter().filter(|r| r.mysql).count() > sim.rounds.len() * 9 / 10);
        // Host error factors have CV 0.2: a two-host canary is rarely off by 2x.
        assert!((0.5..2.0).contains(&sim.canary_error_level));
        assert_ne!(sim.canary_error_level, 1.0);
    }

    #[test]
    fn the_suite_has_every_shape() {
        let cases = suite(4, 10, &default_scenarios());
        assert_eq!(default_scenarios().len(), 16);
        assert!(cases.iter().any(|c| c.hosts == 200));
        assert!(cases.iter().any(|c| c.canary == 4));
        let healthy = cases
            .iter()
            .filter(|c| c.hosts == 40 && c.canary == 2 && c.scenario == Scenario::Healthy)
            .count();
        assert_eq!(healthy, 10);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.9), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
