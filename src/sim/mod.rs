//! A fleet simulator: web hosts, one MySQL, one memcached and business totals, scraped
//! every few seconds, with deploys that can go wrong in known ways.
//!
//! One simulator serves three users: the judge's tests (seeded, deterministic), `immune
//! demo` (a live feed, faster than real time) and the detection benchmark (replay files
//! plus ground truth). The statistics are tuned against it, so it models what makes real
//! data hard: a daily (3:1) and weekly traffic shape, fleet-wide bursts, host-to-host
//! differences in capacity, error rate (gamma, CV 0.2) and latency, per-interval jitter,
//! lognormal latencies and heavy-tailed order values, an autocorrelated load average,
//! missing scrapes (~0.5 %) and counter resets when a deploy restarts a host's processes.
//! Real fleets' confounders can be switched on in [`FleetConfig`]: lognormal host-to-host
//! error and latency levels (`host_sigma`), a control host degrading on its own
//! (`degrading_control`), a fleet-wide surge (`surge`) and more missing scrapes
//! (`missing_ratio`); off by default, so seeded runs keep their output.
//!
//! Requests are a Poisson process, so every count derived from them (latency buckets,
//! errors, orders, signups) is drawn as an independent Poisson by thinning; the histogram
//! `_sum` adds per-bucket truncated-lognormal draws (exact below 16 requests, normal
//! approximation above). All randomness comes from one ChaCha8 stream seeded by
//! [`FleetConfig::seed`], and time is passed in, so a seed and a call sequence fix the output.

mod random;
mod scenario;
mod write;

pub use scenario::{Scenario, ScenarioError};
pub use write::{Truth, write_replay_files};

/// The simulator's seeded random stream, for benchmarks that draw their cases with it.
pub(crate) use random::Rand;

use crate::model::{
    CanarySelector, DeployEvent, DeployEventKind, DurationMs, Labels, OneOrMany, Sample, Timestamp,
};
use random::{cdf, survival};

/// Upper bounds of the latency histogram's buckets, in seconds (the last is `+Inf`).
const LATENCY_BOUNDS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, f64::INFINITY];
const LATENCY_LE: [&str; 8] = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"];

// Offsets of a web host's series within its block.
const W_REQ: usize = 0;
const W_ERR: usize = 1;
const W_FATAL: usize = 2;
const W_CPU: usize = 3;
const W_SIGNUP: usize = 4;
const W_REV: usize = 5;
const W_DBSUM: usize = 6;
const W_DBCNT: usize = 7;
const W_BUCKET: usize = 8;
const W_LATSUM: usize = W_BUCKET + LATENCY_BOUNDS.len();
const W_LATCNT: usize = W_LATSUM + 1;
const W_LOAD: usize = W_LATCNT + 1;
const WEB_SERIES: usize = W_LOAD + 1;
const MYSQL_SERIES: usize = 6;
const MC_SERIES: usize = 6;
const BUSINESS_SERIES: usize = 2;

// Base rates of the model, per request unless said otherwise.
const ERROR_RATIO: f64 = 0.002;
const DIE_RATIO: f64 = 0.0002;
const SIGNUP_RATIO: f64 = 0.001;
const ORDER_RATIO: f64 = 0.02;
const ORDER_MEDIAN_CENTS: f64 = 3500.0;
const ORDER_SIGMA: f64 = 0.9;
const LATENCY_MEDIAN_S: f64 = 0.08;
const LATENCY_SIGMA: f64 = 0.6;
const CPU_PER_REQUEST_S: f64 = 0.035;
const DB_QUERIES_PER_REQUEST: f64 = 0.3;
const DB_MEDIAN_S: f64 = 0.005;
const DB_SIGMA: f64 = 0.5;
const MC_GETS_PER_REQUEST: f64 = 4.0;
const MC_HIT_RATIO: f64 = 0.94;
const NEW_ERRORS_FACTOR: f64 = 50.0;
const LOCKUP_DELAY: DurationMs = DurationMs::from_secs(60);
const SLOW_BURN_CAP: f64 = 50.0;

/// The simulated fleet's shape. `Default` is the reference fleet the statistics are tuned on.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// Number of web hosts (`web-01:80` …).
    pub hosts: usize,
    /// How many of the first web hosts are the canary hosts of every deploy.
    pub canary_hosts: usize,
    /// Time between scrape rounds.
    pub scrape_interval: DurationMs,
    /// Seed of the one random stream.
    pub seed: u64,
    /// The first scrape round's time.
    pub start: Timestamp,
    /// Mean requests per second of an average host at the daily mean, before bursts.
    pub base_rps: f64,
    /// Probability that a target's scrape is missing in a round (web, MySQL, memcached).
    pub missing_ratio: f64,
    /// Real fleets' host-to-host spread: when set, every web host's error, die and latency
    /// levels are lognormal across hosts with this log-scale sigma (mean 1), fixed for the
    /// whole run. `None` keeps the reference fleet's gamma (CV 0.2) error spread and 5 %
    /// latency spread. Drawn from a stream of its own, so the rest of the run stays as it
    /// would be without it.
    pub host_sigma: Option<f64>,
    /// A control host that gets worse on its own, unrelated to any deploy.
    pub degrading_control: Option<Degrade>,
    /// A fleet-wide traffic surge, whatever the deploys do (unlike [`Scenario::Surge`],
    /// it combines with any scenario).
    pub surge: Option<Surge>,
}

/// The last web host (never a canary unless every host is one) multiplies its error and
/// die ratios by `factor` from `at` on: a failing disk or a noisy neighbour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Degrade {
    /// When the host starts to degrade.
    pub at: Timestamp,
    /// Its error ratio's factor from then on (e.g. 3).
    pub factor: f64,
}

/// Traffic times `factor` across the whole fleet in `[from, until)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Surge {
    /// The surge's start.
    pub from: Timestamp,
    /// The surge's end.
    pub until: Timestamp,
    /// The traffic factor (e.g. 1.5).
    pub factor: f64,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            hosts: 40,
            canary_hosts: 2,
            scrape_interval: DurationMs::from_secs(10),
            seed: 1,
            // Tuesday 2023-11-14 00:00 UTC.
            start: Timestamp(1_699_920_000_000),
            base_rps: 20.0,
            missing_ratio: 0.005,
            host_sigma: None,
            degrading_control: None,
            surge: None,
        }
    }
}

/// One simulated deploy of `service` and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployPlan {
    /// The deploy's id, as the deploy events carry it.
    pub id: String,
    /// The deployed service, carried in the deploy events. The simulated fleet has one
    /// deployable service, so every plan acts on the web hosts whatever this says.
    pub service: String,
    /// The new version reaches the canary hosts (their counters reset).
    pub canary_at: Timestamp,
    /// The new version reaches every other web host (their counters reset).
    pub full_at: Timestamp,
    /// The rollout is finished; bad effects stop here (fixed or rolled back), except
    /// [`Scenario::SlowBurn`].
    pub end_at: Timestamp,
    /// What the deploy does.
    pub scenario: Scenario,
}

impl DeployPlan {
    /// A `web` deploy with a 10-minute canary phase and a 20-minute full phase.
    pub fn new(id: &str, canary_at: Timestamp, scenario: Scenario) -> DeployPlan {
        let full_at = canary_at.add(DurationMs::from_secs(600));
        DeployPlan {
            id: id.to_string(),
            service: "web".to_string(),
            canary_at,
            full_at,
            end_at: full_at.add(DurationMs::from_secs(1200)),
            scenario,
        }
    }

    /// Whether the new version runs on a host (canary or not) at `now`.
    fn reaches(&self, canary: bool, now: Timestamp) -> bool {
        now >= self.full_at || (canary && now >= self.canary_at)
    }

    /// Whether bad effects apply to a host at `now`.
    fn affects(&self, canary: bool, now: Timestamp) -> bool {
        now < self.end_at && self.reaches(canary, now)
    }

    /// The version string the deploy events carry, derived from the id.
    fn version(&self) -> String {
        format!("git-{:07x}", fnv(self.id.as_bytes()) & 0xfff_ffff)
    }

    /// Two made-up commit hashes derived from the id.
    fn commits(&self) -> Vec<String> {
        (0..2u8)
            .map(|i| {
                let mut key = self.id.clone().into_bytes();
                key.push(i);
                format!("{:07x}", fnv(&key) & 0xfff_ffff)
            })
            .collect()
    }
}

/// FNV-1a with a SplitMix64 finish, for stable made-up hashes that differ in every digit.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One series the fleet emits, with its exposition prefix rendered once.
struct SeriesDef {
    name: &'static str,
    labels: Labels,
    /// `name{labels} `, ready for the OpenMetrics writer.
    prefix: String,
}

impl SeriesDef {
    fn new(name: &'static str, labels: &[(&str, &str)]) -> SeriesDef {
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let mut prefix = String::from(name);
        prefix.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                prefix.push(',');
            }
            prefix.push_str(k);
            prefix.push_str("=\"");
            prefix.push_str(v);
            prefix.push('"');
        }
        prefix.push_str("} ");
        SeriesDef {
            name,
            labels,
            prefix,
        }
    }
}

/// A web host's fixed traits and running state.
struct Host {
    canary: bool,
    /// Share of load-balanced traffic relative to the average host (±15 %).
    capacity: f64,
    /// Host-to-host overdispersion of the error and die ratios (gamma, mean 1, CV 0.2).
    err_factor: f64,
    die_factor: f64,
    /// Latency and CPU differences between hosts.
    latency_factor: f64,
    cpu_factor: f64,
    /// AR(1) log-jitter of this host's latency median.
    latency_jitter: f64,
    load1: f64,
    /// Process counters (reset on deploy), in series order; latency buckets are kept
    /// per bucket here (not cumulative).
    counters: [f64; WEB_SERIES],
}

/// What the deploys do to one host at one instant.
#[derive(Clone, Copy)]
struct Effects {
    err: f64,
    fatal: f64,
    latency_median: f64,
    latency_sigma: f64,
    signups: f64,
    orders: f64,
    hit_drop: f64,
    db: f64,
}

impl Effects {
    const NONE: Effects = Effects {
        err: 1.0,
        fatal: 1.0,
        latency_median: 1.0,
        latency_sigma: 1.0,
        signups: 1.0,
        orders: 1.0,
        hit_drop: 0.0,
        db: 1.0,
    };
}

/// Fleet-wide conditions at one instant.
struct FleetWide {
    traffic: f64,
    latency: f64,
    err: f64,
    db: f64,
    mysql_silent: bool,
    mc_silent: bool,
}

/// The simulated fleet. Call [`Fleet::scrape`] with increasing times.
pub struct Fleet {
    cfg: FleetConfig,
    plans: Vec<DeployPlan>,
    /// The traffic factor of each plan's surge (1 when the plan is not a surge).
    surges: Vec<f64>,
    rng: Rand,
    hosts: Vec<Host>,
    series: Vec<SeriesDef>,
    values: Vec<f64>,
    present: Vec<bool>,
    last: Option<Timestamp>,
    burst_until: Timestamp,
    burst: f64,
    mysql: [f64; MYSQL_SERIES],
    mysql_lag: f64,
    mc: [f64; MC_SERIES],
    mc_drift: f64,
    business: [f64; BUSINESS_SERIES],
}

impl Fleet {
    /// A fleet in its steady state at `cfg.start`, with counters as after days of uptime.
    pub fn new(cfg: FleetConfig, plans: Vec<DeployPlan>) -> Fleet {
        let mut rng = Rand::new(cfg.seed);
        let canary_hosts = cfg.canary_hosts.min(cfg.hosts);
        let surges = plans
            .iter()
            .map(|p| match p.scenario {
                Scenario::Surge => rng.range(1.5, 2.0),
                _ => 1.0,
            })
            .collect();
        // Heterogeneity from its own stream: turning it on changes nothing else.
        let mut spread = cfg
            .host_sigma
            .map(|s| (Rand::new(cfg.seed ^ 0x9e37_79b9_7f4a_7c15), s.max(0.0)));
        let mut series = Vec::new();
        let mut hosts = Vec::with_capacity(cfg.hosts);
        for i in 0..cfg.hosts {
            let instance = format!("web-{:02}:80", i + 1);
            let l = [("instance", instance.as_str()), ("job", "web")];
            series.push(SeriesDef::new("http_requests_total", &l));
            series.push(SeriesDef::new("php_errors_total", &l));
            series.push(SeriesDef::new("php_fatal_errors_total", &l));
            series.push(SeriesDef::new("process_cpu_seconds_total", &l));
            series.push(SeriesDef::new("app_signups_total", &l));
            series.push(SeriesDef::new("app_revenue_cents_total", &l));
            series.push(SeriesDef::new("db_query_duration_seconds_sum", &l));
            series.push(SeriesDef::new("db_query_duration_seconds_count", &l));
            for le in LATENCY_LE {
                let lb = [l[0], l[1], ("le", le)];
                series.push(SeriesDef::new("http_request_duration_seconds_bucket", &lb));
            }
            series.push(SeriesDef::new("http_request_duration_seconds_sum", &l));
            series.push(SeriesDef::new("http_request_duration_seconds_count", &l));
            series.push(SeriesDef::new("node_load1", &l));

            let capacity = rng.range(0.85, 1.15);
            let mut err_factor = rng.gamma_mean_cv(1.0, 0.2);
            let mut die_factor = rng.gamma_mean_cv(1.0, 0.2);
            let mut latency_factor = rng.lognormal(1.0, 0.05);
            let cpu_factor = rng.range(0.9, 1.1);
            if let Some((r, sigma)) = spread.as_mut() {
                // Lognormal with mean 1: median e^(-sigma^2/2).
                let median = (-*sigma * *sigma / 2.0).exp();
                err_factor = r.lognormal(median, *sigma);
                die_factor = err_factor;
                latency_factor = r.lognormal(median, *sigma);
            }
            let uptime_s = rng.range(3600.0, 3.0 * 86400.0);
            let mut counters = [0.0; WEB_SERIES];
            let requests = (cfg.base_rps * capacity * uptime_s).round();
            let probs = bucket_probs((LATENCY_MEDIAN_S * latency_factor).ln(), LATENCY_SIGMA);
            let mut cum = 0.0;
            for (b, p) in probs.iter().enumerate() {
                let k = if b + 1 == probs.len() {
                    requests - cum
                } else {
                    (requests * p).round().min(requests - cum)
                };
                counters[W_BUCKET + b] = k;
                cum += k;
            }
            counters[W_REQ] = requests;
            counters[W_LATCNT] = requests;
            counters[W_LATSUM] =
                requests * LATENCY_MEDIAN_S * latency_factor * (LATENCY_SIGMA.powi(2) / 2.0).exp();
            counters[W_ERR] = (requests * ERROR_RATIO * err_factor).round();
            counters[W_FATAL] = (requests * DIE_RATIO * die_factor).round();
            counters[W_CPU] = requests * CPU_PER_REQUEST_S * cpu_factor + uptime_s * 0.03;
            counters[W_SIGNUP] = (requests * SIGNUP_RATIO).round();
            counters[W_REV] = (requests * ORDER_RATIO * ORDER_MEDIAN_CENTS * 1.5).round();
            counters[W_DBCNT] = (requests * DB_QUERIES_PER_REQUEST).round();
            counters[W_DBSUM] = counters[W_DBCNT] * DB_MEDIAN_S * (DB_SIGMA.powi(2) / 2.0).exp();
            let load1 = cfg.base_rps * capacity * CPU_PER_REQUEST_S * cpu_factor + 0.2;
            hosts.push(Host {
                canary: i < canary_hosts,
                capacity,
                err_factor,
                die_factor,
                latency_factor,
                cpu_factor,
                latency_jitter: 0.0,
                load1,
                counters,
            });
        }
        let l = [("instance", "db-01:3306"), ("job", "mysql")];
        for name in [
            "mysql_global_status_threads_running",
            "mysql_global_status_slow_queries",
            "mysql_global_status_aborted_connects",
            "mysql_global_status_queries",
            "mysql_slave_status_seconds_behind_master",
            "mysql_up",
        ] {
            series.push(SeriesDef::new(name, &l));
        }
        let l = [("instance", "mc-01:11211"), ("job", "memcached")];
        for (command, status) in [("get", "hit"), ("get", "miss"), ("set", "hit")] {
            let lc = [l[0], l[1], ("command", command), ("status", status)];
            series.push(SeriesDef::new("memcached_commands_total", &lc));
        }
        for name in [
            "memcached_items_evicted_total",
            "memcached_current_connections",
            "memcached_up",
        ] {
            series.push(SeriesDef::new(name, &l));
        }
        let l = [("job", "business")];
        series.push(SeriesDef::new("business_signups_total", &l));
        series.push(SeriesDef::new("business_revenue_cents_total", &l));

        let fleet_requests: f64 = hosts.iter().map(|h| h.counters[W_REQ]).sum();
        let mysql = [
            3.0,
            (fleet_requests * 1e-4).round(),
            (fleet_requests * 1e-5).round(),
            (fleet_requests * 5.0).round(),
            0.0,
            1.0,
        ];
        let gets = fleet_requests * MC_GETS_PER_REQUEST;
        let mc = [
            (gets * MC_HIT_RATIO).round(),
            (gets * (1.0 - MC_HIT_RATIO)).round(),
            (gets * 0.1).round(),
            (fleet_requests * 0.01).round(),
            (cfg.hosts * 8) as f64,
            1.0,
        ];
        let business = [
            hosts.iter().map(|h| h.counters[W_SIGNUP]).sum::<f64>() * 3.0,
            hosts.iter().map(|h| h.counters[W_REV]).sum::<f64>() * 3.0,
        ];
        let n = series.len();
        Fleet {
            burst_until: cfg.start,
            cfg,
            plans,
            surges,
            rng,
            hosts,
            series,
            values: vec![0.0; n],
            present: vec![false; n],
            last: None,
            burst: 1.0,
            mysql,
            mysql_lag: 0.0,
            mc,
            mc_drift: 0.0,
            business,
        }
    }

    /// The configuration the fleet was built with.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// The deploy plans, in the order given.
    pub fn plans(&self) -> &[DeployPlan] {
        &self.plans
    }

    /// The `instance` label values of the canary hosts.
    pub fn canary_instances(&self) -> Vec<String> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.canary)
            .map(|(i, _)| self.series[i * WEB_SERIES].labels[0].1.clone())
            .collect()
    }

    /// Pushes every sample of one scrape round at `now` onto `out` (missing scrapes and
    /// locked-up sources are simply absent). Rounds are meant to come every
    /// `scrape_interval`; any spacing works, and a `now` not after the previous round
    /// counts as no time passing.
    pub fn scrape(&mut self, now: Timestamp, out: &mut Vec<Sample>) {
        self.step(now);
        for (i, def) in self.series.iter().enumerate() {
            if self.present[i] {
                out.push(Sample {
                    name: def.name.to_string(),
                    labels: def.labels.clone(),
                    value: self.values[i],
                    at: now,
                });
            }
        }
    }

    /// The canary, full and end events of every plan, in time order, as the deploy tool
    /// would send them (`canary: {"instance": [...]}` names the canary hosts).
    pub fn deploy_events(&self) -> Vec<DeployEvent> {
        let canary: CanarySelector = [(
            "instance".to_string(),
            OneOrMany::Many(self.canary_instances()),
        )]
        .into_iter()
        .collect();
        let mut events = Vec::with_capacity(self.plans.len() * 3);
        for p in &self.plans {
            for (kind, at) in [
                (DeployEventKind::Canary, p.canary_at),
                (DeployEventKind::Full, p.full_at),
                (DeployEventKind::End, p.end_at),
            ] {
                events.push((
                    at,
                    DeployEvent {
                        at: at.as_secs_f64(),
                        deploy: Some(p.id.clone()),
                        event: kind,
                        service: Some(p.service.clone()),
                        version: Some(p.version()),
                        commits: p.commits(),
                        canary: (kind == DeployEventKind::Canary).then(|| canary.clone()),
                        by: None,
                        reason: None,
                    },
                ));
            }
        }
        events.sort_by_key(|(at, _)| *at);
        events.into_iter().map(|(_, e)| e).collect()
    }

    /// What the deploys do to one host at `now`.
    fn effects(&self, canary: bool, now: Timestamp) -> Effects {
        let mut e = Effects::NONE;
        for p in &self.plans {
            if let Scenario::SlowBurn(f) = p.scenario
                && now >= p.full_at
            {
                let minutes = now.since(p.full_at).as_secs_f64() / 60.0;
                e.db *= (1.0 + f * minutes).min(SLOW_BURN_CAP);
            }
            if !p.affects(canary, now) {
                continue;
            }
            match p.scenario {
                Scenario::ErrorRate(m) => e.err *= m,
                Scenario::NewErrors => e.fatal *= NEW_ERRORS_FACTOR,
                Scenario::Latency(m) => e.latency_median *= m,
                Scenario::LatencyVariance(m) => e.latency_sigma *= m,
                Scenario::HitRatioDrop(f) => e.hit_drop = 1.0 - (1.0 - e.hit_drop) * (1.0 - f),
                Scenario::Signups(m) => e.signups *= m,
                Scenario::Revenue(m) => e.orders *= m,
                Scenario::Healthy
                | Scenario::Surge
                | Scenario::MysqlLockup
                | Scenario::MemcachedLockup
                | Scenario::SlowBurn(_) => {}
            }
        }
        e
    }

    /// Fleet-wide conditions at `now`.
    fn fleet_wide(&self, now: Timestamp) -> FleetWide {
        let mut f = FleetWide {
            traffic: 1.0,
            latency: 1.0,
            err: 1.0,
            db: 1.0,
            mysql_silent: false,
            mc_silent: false,
        };
        if let Some(s) = self.cfg.surge
            && now >= s.from
            && now < s.until
        {
            f.traffic *= s.factor;
        }
        for (p, surge) in self.plans.iter().zip(&self.surges) {
            let active = now >= p.canary_at && now < p.end_at;
            let locked = now >= p.canary_at.add(LOCKUP_DELAY) && now < p.end_at;
            match p.scenario {
                Scenario::Surge if active => f.traffic *= surge,
                Scenario::MysqlLockup if locked => {
                    f.mysql_silent = true;
                    f.err *= 3.0;
                    f.latency *= 1.4;
                    f.db *= 10.0;
                }
                Scenario::MemcachedLockup if locked => {
                    f.mc_silent = true;
                    f.latency *= 1.25;
                    f.db *= 1.5;
                }
                _ => {}
            }
        }
        f
    }

    /// Advances the model to `now` and fills `values` / `present` for one scrape round.
    fn step(&mut self, now: Timestamp) {
        let dt = match self.last {
            Some(prev) => now.since(prev),
            None => self.cfg.scrape_interval,
        };
        let prev = now.sub(dt);
        self.last = Some(now.max(self.last.unwrap_or(now)));
        let dt_s = dt.as_secs_f64();

        // Fleet-wide bursts: a few per day, minutes long.
        if now >= self.burst_until {
            self.burst = 1.0;
            if self.rng.chance(dt_s / (4.0 * 3600.0)) {
                let minutes = self.rng.range(2.0, 20.0);
                self.burst_until = now.add(DurationMs((minutes * 60_000.0) as i64));
                self.burst = self.rng.range(1.2, 1.8);
            }
        }
        let fw = self.fleet_wide(now);
        let rush = self.burst * fw.traffic;
        let traffic = traffic_shape(now) * rush;
        let latency_fleet = fw.latency * (1.0 + 0.1 * (rush - 1.0));

        // Process restarts: the latest deploy event that reached each group in (prev, now].
        let mut reset_canary: Option<Timestamp> = None;
        let mut reset_other: Option<Timestamp> = None;
        for p in &self.plans {
            if prev < p.canary_at && p.canary_at <= now {
                reset_canary = reset_canary.max(Some(p.canary_at));
            }
            if prev < p.full_at && p.full_at <= now {
                reset_other = reset_other.max(Some(p.full_at));
            }
        }

        let mut fleet_requests = 0.0;
        let mut mc_hits_mean = 0.0;
        let mut mc_miss_mean = 0.0;
        let mut db_weighted = 0.0;
        let mut signups_sum = 0.0;
        let mut revenue_sum = 0.0;
        let hit_ratio = (MC_HIT_RATIO + self.mc_drift).clamp(0.5, 0.995);
        let degraded = self
            .cfg
            .degrading_control
            .filter(|d| now >= d.at)
            .map(|d| (self.hosts.len().saturating_sub(1), d.factor));
        for h in 0..self.hosts.len() {
            let canary = self.hosts[h].canary;
            let mut eff = self.effects(canary, now);
            if let Some((dh, factor)) = degraded
                && dh == h
            {
                eff.err *= factor;
                eff.fatal *= factor;
            }
            let reset = if canary { reset_canary } else { reset_other };
            let rng = &mut self.rng;
            let host = &mut self.hosts[h];
            let active_s = match reset {
                Some(t) => {
                    host.counters = [0.0; WEB_SERIES];
                    now.since(t).as_secs_f64()
                }
                None => dt_s,
            };
            let jitter = (0.04 * rng.normal() - 0.0008).exp();
            let lambda = self.cfg.base_rps * traffic * host.capacity * jitter * active_s;
            host.latency_jitter = 0.9 * host.latency_jitter + 0.03 * rng.normal();
            let mu = (LATENCY_MEDIAN_S
                * host.latency_factor
                * latency_fleet
                * eff.latency_median
                * host.latency_jitter.exp())
            .ln();
            let sigma = LATENCY_SIGMA * eff.latency_sigma;
            let mut n = 0.0;
            let mut lat_sum = 0.0;
            for b in 0..LATENCY_BOUNDS.len() {
                let lo = if b == 0 { 0.0 } else { LATENCY_BOUNDS[b - 1] };
                let hi = LATENCY_BOUNDS[b];
                let (k, s) = bucket_draw(rng, lambda, mu, sigma, lo, hi);
                host.counters[W_BUCKET + b] += k;
                n += k;
                lat_sum += s;
            }
            host.counters[W_REQ] += n;
            host.counters[W_LATCNT] += n;
            host.counters[W_LATSUM] += lat_sum;
            host.counters[W_ERR] +=
                rng.poisson(n * ERROR_RATIO * host.err_factor * eff.err * fw.err) as f64;
            host.counters[W_FATAL] +=
                rng.poisson(n * DIE_RATIO * host.die_factor * eff.fatal) as f64;
            let signups = rng.poisson(n * SIGNUP_RATIO * eff.signups) as f64;
            host.counters[W_SIGNUP] += signups;
            let orders = rng.poisson(n * ORDER_RATIO * eff.orders);
            let revenue = sum_lognormal(rng, orders, ORDER_MEDIAN_CENTS, ORDER_SIGMA, true);
            host.counters[W_REV] += revenue;
            signups_sum += signups;
            revenue_sum += revenue;
            let db_mult = eff.db * fw.db;
            let queries = rng.poisson(n * DB_QUERIES_PER_REQUEST);
            host.counters[W_DBCNT] += queries as f64;
            host.counters[W_DBSUM] +=
                sum_lognormal(rng, queries, DB_MEDIAN_S * db_mult, DB_SIGMA, false);
            db_weighted += n * db_mult;
            let cpu = (n * CPU_PER_REQUEST_S * host.cpu_factor * eff.latency_median.sqrt()
                + 0.03 * active_s)
                * (1.0 + 0.05 * rng.normal()).max(0.0);
            host.counters[W_CPU] += cpu;
            // load1: the kernel's 5-second run-queue samples, exponentially damped over a minute.
            if dt_s > 0.0 {
                let demand = cpu / dt_s + 0.2;
                let samples = ((dt_s / 5.0).round() as usize).clamp(1, 720);
                let decay = (-dt_s / samples as f64 / 60.0).exp();
                for _ in 0..samples {
                    let runnable = rng.poisson(demand) as f64;
                    host.load1 = host.load1 * decay + runnable * (1.0 - decay);
                }
            }
            fleet_requests += n;
            let gets = n * MC_GETS_PER_REQUEST;
            let h_ratio = hit_ratio * (1.0 - eff.hit_drop);
            mc_hits_mean += gets * h_ratio;
            mc_miss_mean += gets * (1.0 - h_ratio);

            let present = !rng.chance(self.cfg.missing_ratio);
            let base = h * WEB_SERIES;
            self.values[base..base + WEB_SERIES].copy_from_slice(&host.counters);
            // Buckets are kept per bucket and exposed cumulative (`le`).
            let mut cum = 0.0;
            for b in 0..LATENCY_BOUNDS.len() {
                cum += host.counters[W_BUCKET + b];
                self.values[base + W_BUCKET + b] = cum;
            }
            self.values[base + W_LOAD] = (host.load1 * 100.0).round() / 100.0;
            self.present[base..base + WEB_SERIES].fill(present);
        }

        let rng = &mut self.rng;
        // Memcached.
        self.mc_drift = 0.97 * self.mc_drift + 0.001 * rng.normal();
        let (hits, misses) = if fw.mc_silent {
            (0.0, 0.0)
        } else {
            (
                rng.poisson(mc_hits_mean) as f64,
                rng.poisson(mc_miss_mean) as f64,
            )
        };
        let sets = if fw.mc_silent {
            0.0
        } else {
            rng.poisson(0.9 * misses + 0.01 * (hits + misses)) as f64
        };
        self.mc[0] += hits;
        self.mc[1] += misses;
        self.mc[2] += sets;
        if !fw.mc_silent {
            self.mc[3] += rng.poisson(0.3 * dt_s) as f64;
        }
        self.mc[4] = ((self.cfg.hosts * 8) as f64 + 3.0 * rng.normal())
            .round()
            .max(0.0);
        let mc_base = self.hosts.len() * WEB_SERIES + MYSQL_SERIES;
        let mc_present = !fw.mc_silent && !rng.chance(self.cfg.missing_ratio);
        self.values[mc_base..mc_base + MC_SERIES].copy_from_slice(&self.mc);
        self.present[mc_base..mc_base + MC_SERIES].fill(mc_present);

        // MySQL: cache misses and every request's queries land here.
        let db_mean = if fleet_requests > 0.0 {
            db_weighted / fleet_requests
        } else {
            1.0
        };
        let uncached = if fw.mc_silent {
            fleet_requests * MC_GETS_PER_REQUEST
        } else {
            misses
        };
        let stall = if fw.mysql_silent { 0.05 } else { 1.0 };
        let queries = rng.poisson(stall * (fleet_requests * 5.0 + uncached + 30.0 * dt_s)) as f64;
        self.mysql[3] += queries;
        let qps = if dt_s > 0.0 { queries / dt_s } else { 0.0 };
        self.mysql[0] = 1.0 + rng.poisson(qps * 0.0004 * db_mean) as f64;
        self.mysql[1] += rng.poisson(0.02 * dt_s * db_mean.powf(1.5)) as f64;
        let aborted_rate = if fw.mysql_silent { 0.1 } else { 0.002 };
        self.mysql[2] += rng.poisson(aborted_rate * dt_s) as f64;
        self.mysql_lag = if self.mysql_lag > 0.0 {
            (self.mysql_lag * 0.85 - 1.0).max(0.0)
        } else if rng.chance(dt_s / 3600.0) {
            rng.range(5.0, 40.0)
        } else {
            0.0
        };
        self.mysql[4] = self.mysql_lag.round();
        let my_base = self.hosts.len() * WEB_SERIES;
        let my_present = !fw.mysql_silent && !rng.chance(self.cfg.missing_ratio);
        self.values[my_base..my_base + MYSQL_SERIES].copy_from_slice(&self.mysql);
        self.present[my_base..my_base + MYSQL_SERIES].fill(my_present);

        // Business totals: rows in SQL, never reset, never missing.
        self.business[0] += signups_sum;
        self.business[1] += revenue_sum;
        let b_base = mc_base + MC_SERIES;
        self.values[b_base..b_base + BUSINESS_SERIES].copy_from_slice(&self.business);
        self.present[b_base..b_base + BUSINESS_SERIES].fill(true);
    }
}

/// Traffic relative to the long-run mean: a daily sinusoid (peak 20:00 UTC, trough 08:00,
/// 3:1) times a weekly shape (weekends ×0.75), blended over four hours around midnight.
fn traffic_shape(now: Timestamp) -> f64 {
    const DAY: i64 = 86_400_000;
    let ms = now.0.rem_euclid(DAY);
    let day = now.0.div_euclid(DAY);
    let frac = ms as f64 / DAY as f64;
    let daily = 1.0 + 0.5 * (2.0 * std::f64::consts::PI * (frac - 20.0 / 24.0)).cos();
    // 1970-01-01 was a Thursday; 0 = Sunday.
    let weekday = |d: i64| -> f64 {
        match (d + 4).rem_euclid(7) {
            0 | 6 => 0.75,
            _ => 1.0,
        }
    };
    let hours = frac * 24.0;
    let weekly = if hours < 2.0 {
        let w = 0.5 + hours / 4.0;
        w * weekday(day) + (1.0 - w) * weekday(day - 1)
    } else if hours > 22.0 {
        let w = 0.5 + (24.0 - hours) / 4.0;
        w * weekday(day) + (1.0 - w) * weekday(day + 1)
    } else {
        weekday(day)
    };
    daily * weekly
}

/// Probability of each latency bucket for a lognormal(mu, sigma).
fn bucket_probs(mu: f64, sigma: f64) -> [f64; 8] {
    let mut p = [0.0; 8];
    for (b, out) in p.iter_mut().enumerate() {
        let lo = if b == 0 { 0.0 } else { LATENCY_BOUNDS[b - 1] };
        let (za, zb) = (z_of(lo, mu, sigma), z_of(LATENCY_BOUNDS[b], mu, sigma));
        *out = mass(za, zb);
    }
    p
}

/// The standard-normal coordinate of latency `x`.
fn z_of(x: f64, mu: f64, sigma: f64) -> f64 {
    if x <= 0.0 {
        f64::NEG_INFINITY
    } else {
        (x.ln() - mu) / sigma
    }
}

/// Standard-normal mass between za and zb, accurate in both tails.
fn mass(za: f64, zb: f64) -> f64 {
    if za > 0.0 {
        survival(za) - survival(zb)
    } else {
        cdf(zb) - cdf(za)
    }
}

/// The count of requests in latency bucket (lo, hi] out of a Poisson(`lambda`) stream, and
/// the sum of their latencies (exact truncated draws below 16, normal approximation above).
fn bucket_draw(rng: &mut Rand, lambda: f64, mu: f64, sigma: f64, lo: f64, hi: f64) -> (f64, f64) {
    let (za, zb) = (z_of(lo, mu, sigma), z_of(hi, mu, sigma));
    let p = mass(za, zb);
    let k = rng.poisson(lambda * p);
    if k == 0 {
        return (0.0, 0.0);
    }
    let sum = if k <= 16 || p < 1e-12 {
        (0..k)
            .map(|_| {
                (mu + sigma * rng.truncated_normal(za, zb))
                    .exp()
                    .clamp(lo, hi)
            })
            .sum()
    } else {
        // Partial moments of the lognormal: E[X^r; lo<X<=hi] = e^(r mu + r^2 sigma^2/2) *
        // (Phi(zb - r sigma) - Phi(za - r sigma)).
        let m1 = (mu + sigma * sigma / 2.0).exp() * mass(za - sigma, zb - sigma) / p;
        let m2 =
            (2.0 * mu + 2.0 * sigma * sigma).exp() * mass(za - 2.0 * sigma, zb - 2.0 * sigma) / p;
        let var = (m2 - m1 * m1).max(0.0);
        let kf = k as f64;
        (kf * m1 + (kf * var).sqrt() * rng.normal()).clamp(kf * lo, kf * hi)
    };
    (k as f64, sum)
}

/// The sum of `k` lognormal(median, sigma) values: exact below 64 terms, a normal
/// approximation above. `whole` rounds each term (cents).
fn sum_lognormal(rng: &mut Rand, k: u64, median: f64, sigma: f64, whole: bool) -> f64 {
    if k <= 64 {
        (0..k)
            .map(|_| {
                let x = rng.lognormal(median, sigma);
                if whole { x.round().max(1.0) } else { x }
            })
            .sum()
    } else {
        let s2 = sigma * sigma;
        let mean = median * (s2 / 2.0).exp();
        let var = (s2.exp() - 1.0) * median * median * s2.exp();
        let kf = k as f64;
        let s = (kf * mean + (kf * var).sqrt() * rng.normal()).max(0.0);
        if whole { s.round() } else { s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_shape_is_three_to_one_and_lower_on_weekends() {
        let tue = Timestamp(1_699_920_000_000);
        let h = |t: Timestamp, hours: i64| traffic_shape(t.add(DurationMs(hours * 3_600_000)));
        assert!((h(tue, 20) / h(tue, 8) - 3.0).abs() < 1e-9);
        // Saturday 20:00 vs Tuesday 20:00.
        assert!((h(tue, 4 * 24 + 20) / h(tue, 20) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn bucket_probabilities_sum_to_one() {
        let p = bucket_probs(0.08f64.ln(), 0.6);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p[1] > p[0] && p[1] > p[2]);
    }

    #[test]
    fn series_are_named_and_labelled_as_promised() {
        let f = Fleet::new(FleetConfig::default(), vec![]);
        assert_eq!(
            f.series.len(),
            40 * WEB_SERIES + MYSQL_SERIES + MC_SERIES + BUSINESS_SERIES
        );
        assert_eq!(
            f.series[W_BUCKET].prefix,
            "http_request_duration_seconds_bucket{instance=\"web-01:80\",job=\"web\",le=\"0.05\"} "
        );
        let mc = &f.series[40 * WEB_SERIES + MYSQL_SERIES];
        assert_eq!(
            mc.prefix,
            "memcached_commands_total{command=\"get\",instance=\"mc-01:11211\",job=\"memcached\",status=\"hit\"} "
        );
        assert_eq!(f.canary_instances(), vec!["web-01:80", "web-02:80"]);
    }
}
