//! The fleet simulator keeps its promises: determinism, counter semantics, scenario
//! effects of the advertised size, lockups that go silent, and a well-formed replay file.

use immune::model::{DeployEvent, DeployEventKind, DurationMs, Sample, Timestamp};
use immune::sim::{DeployPlan, Fleet, FleetConfig, Scenario, write_replay_files};
use std::collections::{BTreeMap, BTreeSet};

const MIN: i64 = 60_000;

fn small(seed: u64) -> FleetConfig {
    FleetConfig {
        hosts: 10,
        seed,
        ..FleetConfig::default()
    }
}

fn at(cfg: &FleetConfig, minutes: i64) -> Timestamp {
    cfg.start.add(DurationMs(minutes * MIN))
}

/// Every scrape round from `cfg.start` through `until`.
fn rounds(
    cfg: &FleetConfig,
    plans: &[DeployPlan],
    until: Timestamp,
) -> Vec<(Timestamp, Vec<Sample>)> {
    let mut fleet = Fleet::new(cfg.clone(), plans.to_vec());
    let mut out = Vec::new();
    let mut now = cfg.start;
    while now <= until {
        let mut samples = Vec::new();
        fleet.scrape(now, &mut samples);
        out.push((now, samples));
        now = now.add(cfg.scrape_interval);
    }
    out
}

fn files(cfg: &FleetConfig, plans: &[DeployPlan], until: Timestamp) -> (String, String) {
    let mut metrics = Vec::new();
    let mut deploys = Vec::new();
    write_replay_files(cfg, plans, until, &mut metrics, &mut deploys).unwrap();
    (
        String::from_utf8(metrics).unwrap(),
        String::from_utf8(deploys).unwrap(),
    )
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn key(s: &Sample) -> String {
    format!("{}{:?}", s.name, s.labels)
}

#[test]
fn same_seed_gives_identical_files_and_different_seeds_differ() {
    let cfg = small(42);
    let plans = vec![
        DeployPlan::new("d1", at(&cfg, 20), Scenario::ErrorRate(2.0)),
        DeployPlan::new("d2", at(&cfg, 70), Scenario::Surge),
    ];
    let until = at(&cfg, 120);
    let (m1, d1) = files(&cfg, &plans, until);
    let (m2, d2) = files(&cfg, &plans, until);
    assert_eq!(m1, m2);
    assert_eq!(d1, d2);
    let (m3, d3) = files(&small(43), &plans, until);
    assert_ne!(m1, m3);
    // The deploy events do not depend on the seed.
    assert_eq!(d1, d3);
}

#[test]
fn scrape_and_replay_file_carry_the_same_samples() {
    let cfg = small(5);
    let plans = vec![DeployPlan::new("d1", at(&cfg, 5), Scenario::Healthy)];
    let until = at(&cfg, 30);
    let (metrics, _) = files(&cfg, &plans, until);
    let from_scrape: usize = rounds(&cfg, &plans, until)
        .iter()
        .map(|(_, s)| s.len())
        .sum();
    let from_file = metrics.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(from_scrape, from_file);
    assert!(from_file > 0);
}

#[test]
fn counters_only_decrease_when_a_deploy_restarts_the_host() {
    let cfg = small(7);
    let plans = vec![
        DeployPlan::new("d1", at(&cfg, 30), Scenario::Healthy),
        DeployPlan::new("d2", at(&cfg, 95), Scenario::ErrorRate(3.0)),
    ];
    let canaries: BTreeSet<String> = Fleet::new(cfg.clone(), plans.clone())
        .canary_instances()
        .into_iter()
        .collect();
    let mut last: BTreeMap<String, (f64, Timestamp)> = BTreeMap::new();
    // (instance, reset time) pairs actually observed.
    let mut resets: BTreeSet<(String, Timestamp)> = BTreeSet::new();
    for (now, samples) in rounds(&cfg, &plans, at(&cfg, 160)) {
        let mut buckets: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &samples {
            assert_eq!(s.at, now);
            let mut sorted = s.labels.clone();
            sorted.sort();
            assert_eq!(sorted, s.labels, "labels sorted");
            let gauge = matches!(
                s.name.as_str(),
                "node_load1"
                    | "mysql_global_status_threads_running"
                    | "mysql_slave_status_seconds_behind_master"
                    | "mysql_up"
                    | "memcached_current_connections"
                    | "memcached_up"
            );
            assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
            if s.name == "http_request_duration_seconds_bucket" {
                let le = label(s, "le").unwrap();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                buckets
                    .entry(label(s, "instance").unwrap())
                    .or_default()
                    .push((le, s.value));
            }
            let k = key(s);
            if let Some((prev, prev_at)) = last.insert(k, (s.value, now))
                && !gauge
                && s.value < prev
            {
                let inst = label(s, "instance").unwrap_or("");
                assert_eq!(
                    label(s, "job"),
                    Some("web"),
                    "only web process counters reset: {s:?}"
                );
                let event = plans.iter().find_map(|p| {
                    let t = if canaries.contains(inst) {
                        p.canary_at
                    } else {
                        p.full_at
                    };
                    (prev_at < t && t <= now).then_some(t)
                });
                let Some(t) = event else {
                    panic!("{s:?} fell from {prev} at {now:?} with no deploy reaching {inst}");
                };
                resets.insert((inst.to_string(), t));
            }
        }
        for (inst, mut bs) in buckets {
            bs.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                bs.windows(2).all(|w| w[0].1 <= w[1].1),
                "{inst} buckets cumulative"
            );
        }
    }
    // Every web host was seen restarting at its deploy events (the check above is not vacuous).
    for p in &plans {
        for i in 1..=cfg.hosts {
            let inst = format!("web-{i:02}:80");
            let t = if canaries.contains(&inst) {
                p.canary_at
            } else {
                p.full_at
            };
            assert!(resets.contains(&(inst.clone(), t)), "{inst} reset at {t:?}");
        }
    }
}

/// Canary and control error ratios (errors / requests) over the canary phase of `plan`.
fn canary_error_ratios(cfg: &FleetConfig, plan: &DeployPlan) -> (f64, f64) {
    let mut fleet = Fleet::new(cfg.clone(), vec![plan.clone()]);
    let canaries: BTreeSet<String> = fleet.canary_instances().into_iter().collect();
    // Per instance: (requests, errors) at the first and the latest round in the window.
    let mut first: BTreeMap<String, [f64; 2]> = BTreeMap::new();
    let mut latest: BTreeMap<String, [f64; 2]> = BTreeMap::new();
    let mut now = cfg.start;
    while now < plan.full_at {
        let mut samples = Vec::new();
        fleet.scrape(now, &mut samples);
        if now >= plan.canary_at {
            let mut round: BTreeMap<String, [f64; 2]> = BTreeMap::new();
            for s in &samples {
                let slot = match s.name.as_str() {
                    "http_requests_total" => 0,
                    "php_errors_total" => 1,
                    _ => continue,
                };
                round
                    .entry(label(s, "instance").unwrap().to_string())
                    .or_default()[slot] = s.value;
            }
            for (inst, v) in round {
                // Canary counters restarted at the canary event: they count from zero.
                let start = if canaries.contains(&inst) {
                    [0.0, 0.0]
                } else {
                    v
                };
                first.entry(inst.clone()).or_insert(start);
                latest.insert(inst, v);
            }
        }
        now = now.add(cfg.scrape_interval);
    }
    let mut sums = [[0.0; 2]; 2];
    for (inst, l) in &latest {
        let f = first[inst];
        let g = usize::from(!canaries.contains(inst));
        sums[g][0] += l[0] - f[0];
        sums[g][1] += l[1] - f[1];
    }
    (sums[0][1] / sums[0][0], sums[1][1] / sums[1][0])
}

#[test]
fn doubled_error_rate_doubles_the_canary_error_ratio() {
    // Four canary hosts and a 30-minute canary phase; the 2x world must land in
    // [1.6, 2.5] and the 1x world must not, on every seed.
    for seed in 1..=5 {
        let cfg = FleetConfig {
            canary_hosts: 4,
            seed,
            ..FleetConfig::default()
        };
        let mut plan = DeployPlan::new("d1", at(&cfg, 10), Scenario::ErrorRate(2.0));
        plan.full_at = at(&cfg, 40);
        plan.end_at = at(&cfg, 60);
        let (canary, control) = canary_error_ratios(&cfg, &plan);
        let bad = canary / control;
        plan.scenario = Scenario::ErrorRate(1.0);
        let (canary, control) = canary_error_ratios(&cfg, &plan);
        let healthy = canary / control;
        eprintln!("seed {seed}: 2x world {bad:.3}, 1x world {healthy:.3}, control {control:.5}");
        assert!(
            (1.6..=2.5).contains(&bad),
            "seed {seed}: 2x world ratio {bad}"
        );
        assert!(
            !(1.6..=2.5).contains(&healthy),
            "seed {seed}: 1x world ratio {healthy}"
        );
        assert!(
            (0.7..=1.4).contains(&healthy),
            "seed {seed}: 1x world ratio {healthy}"
        );
        // The base error ratio is about 0.2 %.
        assert!(
            (0.0015..0.0025).contains(&control),
            "seed {seed}: control {control}"
        );
    }
}

#[test]
fn lockups_silence_their_source_until_the_deploy_ends() {
    for (scenario, job) in [
        (Scenario::MysqlLockup, "mysql"),
        (Scenario::MemcachedLockup, "memcached"),
    ] {
        let cfg = small(11);
        let plan = DeployPlan::new("d1", at(&cfg, 20), scenario);
        let (mut before, mut during, mut after, mut rounds_before, mut rounds_after) =
            (0, 0, 0, 0, 0);
        for (now, samples) in rounds(&cfg, std::slice::from_ref(&plan), at(&cfg, 80)) {
            let seen = samples.iter().any(|s| label(s, "job") == Some(job));
            if now < plan.canary_at.add(DurationMs::from_secs(60)) {
                rounds_before += 1;
                before += usize::from(seen);
            } else if now < plan.end_at {
                during += usize::from(seen);
            } else {
                rounds_after += 1;
                after += usize::from(seen);
            }
            // Web hosts and business totals keep reporting.
            assert!(samples.iter().any(|s| label(s, "job") == Some("business")));
        }
        assert_eq!(during, 0, "{job} silent during the lockup");
        assert!(
            before * 10 >= rounds_before * 9,
            "{job} before: {before}/{rounds_before}"
        );
        assert!(
            after * 10 >= rounds_after * 9,
            "{job} after: {after}/{rounds_after}"
        );
    }
}

#[test]
fn replay_file_is_well_formed_openmetrics() {
    let cfg = small(3);
    let plans = vec![
        DeployPlan::new("d1", at(&cfg, 10), Scenario::Latency(1.3)),
        DeployPlan::new("d2", at(&cfg, 45), Scenario::MysqlLockup),
    ];
    let (metrics, deploys) = files(&cfg, &plans, at(&cfg, 90));
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    assert!(metrics.ends_with("# EOF\n"));
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut in_samples = false;
    let mut last_ts = f64::MIN;
    let mut names = BTreeSet::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(!in_samples, "TYPE lines come first");
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind));
            assert!(
                families
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "one TYPE per family: {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        in_samples = true;
        let (series, rest) = line.split_once("} ").unwrap();
        let (name, _) = series.split_once('{').unwrap();
        let (value, ts) = rest.split_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let ts: f64 = ts.parse().unwrap();
        assert!(ts >= last_ts, "time-ordered: {line}");
        last_ts = ts;
        names.insert(name.to_string());
        let family = [
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", ""),
            ("_count", ""),
        ]
        .iter()
        .find_map(|(suffix, kind)| {
            let f = name.strip_suffix(suffix)?;
            let k = families.get(f)?;
            (kind.is_empty() || k == kind).then_some(f)
        })
        .or_else(|| families.contains_key(name).then_some(name));
        assert!(family.is_some(), "{name} belongs to a declared family");
    }
    assert_eq!(families.len(), 21);
    assert!(names.contains("mysql_up") && names.contains("business_revenue_cents_total"));
    assert_eq!(families["http_requests"], "counter");
    assert_eq!(families["http_request_duration_seconds"], "histogram");

    let events: Vec<DeployEvent> = deploys
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    let canary = events
        .iter()
        .find(|e| e.event == DeployEventKind::Canary)
        .unwrap();
    assert_eq!(canary.deploy.as_deref(), Some("d1"));
    assert_eq!(canary.service.as_deref(), Some("web"));
    let sel = canary.canary.as_ref().unwrap();
    assert_eq!(sel["instance"].values(), vec!["web-01:80", "web-02:80"]);
    assert_eq!(canary.at, at(&cfg, 10).as_secs_f64());
}

#[test]
fn truth_names_each_deploy_and_whether_it_is_bad() {
    let cfg = small(1);
    let plans = vec![
        DeployPlan::new("good", at(&cfg, 5), Scenario::Surge),
        DeployPlan::new("bad", at(&cfg, 40), "signups:0.8".parse().unwrap()),
    ];
    let mut sink = Vec::new();
    let truth = write_replay_files(&cfg, &plans, at(&cfg, 10), &mut sink, &mut Vec::new()).unwrap();
    let json = serde_json::to_string(&truth).unwrap();
    assert_eq!(
        json,
        r#"{"deploys":[["good","surge",false],["bad","signups:0.8",true]]}"#
    );
}

/// Counts sample lines (newlines) written, discarding the bytes.
struct LineCounter(usize);

impl std::io::Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.iter().filter(|&&b| b == b'\n').count();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Measures the writer's throughput (prints it; asserts nothing about time). Run with
/// `cargo test --release --test sim_fleet write_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn write_speed() {
    let cfg = FleetConfig::default();
    let plans: Vec<DeployPlan> = (0..30)
        .map(|i| DeployPlan::new(&format!("d{i}"), at(&cfg, 30 + 60 * i), Scenario::Healthy))
        .collect();
    // About 770 samples per round: 13 000 rounds (36 hours) make about 10 M samples.
    let until = cfg.start.add(DurationMs(12_999 * 10_000));
    let mut counter = LineCounter(0);
    let started = std::time::Instant::now();
    write_replay_files(&cfg, &plans, until, &mut counter, &mut Vec::new()).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let samples = counter.0 - 22; // TYPE lines and # EOF
    assert!(samples > 9_000_000);
    println!(
        "{samples} samples in {secs:.2} s: {:.0} samples/s",
        samples as f64 / secs
    );
}

/// Per-host error ratios over `minutes` from the start: (ratio, requests) per web host.
fn host_error_ratios(cfg: &FleetConfig, minutes: i64) -> Vec<(f64, f64)> {
    let rs = rounds(cfg, &[], at(cfg, minutes));
    let per = |name: &str, round: &[Sample]| -> BTreeMap<String, f64> {
        round
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| Some((label(s, "instance")?.to_string(), s.value)))
            .collect()
    };
    let (first, last) = (&rs[0].1, &rs[rs.len() - 1].1);
    let (r0, r1) = (
        per("http_requests_total", first),
        per("http_requests_total", last),
    );
    let (e0, e1) = (
        per("php_errors_total", first),
        per("php_errors_total", last),
    );
    r0.keys()
        .filter_map(|h| {
            let req = r1.get(h)? - r0.get(h)?;
            let err = e1.get(h)? - e0.get(h)?;
            Some((err / req, req))
        })
        .collect()
}

/// The host-to-host coefficient of variation of the true error levels, estimated from
/// observed ratios by removing the Poisson part of their variance (method of moments).
fn level_cv(ratios: &[(f64, f64)]) -> f64 {
    let n = ratios.len() as f64;
    let mean = ratios.iter().map(|r| r.0).sum::<f64>() / n;
    let var = ratios.iter().map(|r| (r.0 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let poisson = ratios.iter().map(|r| mean / r.1).sum::<f64>() / n;
    ((var - poisson).max(0.0)).sqrt() / mean
}

/// The earlier note "15-minute per-host error ratios span 0.8-4.0 per mille on seed 10001,
/// wider than CV 0.2": the observed spread is the host levels' CV 0.2 plus Poisson noise
/// (about 36 errors per host in 15 minutes at the daily mean, fewer at night), and with
/// the Poisson part removed the levels' CV is 0.2 as stated.
#[test]
fn reference_host_spread_is_cv_point_two_plus_poisson_noise() {
    let cfg = FleetConfig {
        hosts: 400,
        seed: 10_001,
        ..FleetConfig::default()
    };
    let ratios = host_error_ratios(&cfg, 60);
    let cv = level_cv(&ratios);
    assert!((0.15..0.25).contains(&cv), "level CV {cv}");
    // The raw spread is much wider than the levels' own.
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r.0), hi.max(r.0)));
    assert!(hi / lo > 2.0, "raw spread {lo}..{hi}");
}

#[test]
fn host_sigma_gives_lognormal_levels_of_that_spread() {
    let cfg = FleetConfig {
        hosts: 400,
        seed: 7,
        host_sigma: Some(0.5),
        ..FleetConfig::default()
    };
    let cv = level_cv(&host_error_ratios(&cfg, 60));
    // Lognormal sigma 0.5: CV sqrt(e^0.25 - 1) = 0.53.
    assert!((0.43..0.63).contains(&cv), "level CV {cv}");
    let flat = FleetConfig {
        host_sigma: Some(0.0),
        ..cfg
    };
    let cv0 = level_cv(&host_error_ratios(&flat, 60));
    assert!(cv0 < 0.1, "sigma 0 leaves CV {cv0}");
}

#[test]
fn confounders_off_by_default_and_do_what_they_say() {
    let base = small(5);
    assert_eq!(base.host_sigma, None);
    assert_eq!(base.degrading_control, None);
    assert_eq!(base.surge, None);
    // Host spread comes from its own stream: the MySQL and memcached series do not move.
    let spread = FleetConfig {
        host_sigma: Some(0.3),
        ..base.clone()
    };
    let only = |cfg: &FleetConfig, prefix: &str| -> Vec<f64> {
        rounds(cfg, &[], at(cfg, 5))
            .iter()
            .flat_map(|(_, s)| {
                s.iter()
                    .filter(|s| s.name.starts_with(prefix))
                    .map(|s| s.value)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(only(&base, "memcached_up"), only(&spread, "memcached_up"));

    // A surge doubles the requests in its window; the degrading host triples its errors.
    let cfg = FleetConfig {
        surge: Some(immune::sim::Surge {
            from: at(&base, 30),
            until: at(&base, 60),
            factor: 2.0,
        }),
        degrading_control: Some(immune::sim::Degrade {
            at: at(&base, 30),
            factor: 3.0,
        }),
        ..base.clone()
    };
    let rs = rounds(&cfg, &[], at(&cfg, 60));
    let value = |i: usize, name: &str, host: &str| -> f64 {
        rs[i]
            .1
            .iter()
            .filter(|s| s.name == name && label(s, "instance") == Some(host))
            .map(|s| s.value)
            .next()
            .unwrap_or(f64::NAN)
    };
    let per_round = 6; // 10-s scrapes
    let window = |name: &str, host: &str, from: i64, to: i64| {
        let (a, b) = ((from * per_round) as usize, (to * per_round) as usize);
        // Tolerate a missing scrape at either end by stepping inwards.
        let v = |i: usize, step: isize| {
            (0..6)
                .map(|k| value((i as isize + step * k) as usize, name, host))
                .find(|x| x.is_finite())
                .unwrap_or(f64::NAN)
        };
        v(b, -1) - v(a, 1)
    };
    let fleet = |from, to| -> f64 {
        (1..=10)
            .map(|h| window("http_requests_total", &format!("web-{h:02}:80"), from, to))
            .sum()
    };
    let surge = fleet(35, 55) / fleet(5, 25);
    assert!((1.6..2.5).contains(&surge), "surge x{surge}");
    let err = |host: &str, from, to| {
        window("php_errors_total", host, from, to) / window("http_requests_total", host, from, to)
    };
    let last = err("web-10:80", 35, 60) / err("web-10:80", 0, 25);
    assert!(last > 2.0, "degrading host x{last}");
}
