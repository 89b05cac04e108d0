//! Criterion benchmarks of immune's hot paths: parsing a text line, finding an existing
//! series and appending to its window, and one evaluation tick over a deploy with the
//! shipped rules. `cargo bench --bench hot_paths`.

use criterion::{Criterion, criterion_group, criterion_main};
use immune::engine::store::{Series, SeriesId, SeriesNeeds, SeriesObserver, Store};
use immune::engine::{Engine, EngineConfig};
use immune::model::{DeployEvent, DeployEventKind, DurationMs, Sample, Timestamp};
use immune::sim::{DeployPlan, Fleet, FleetConfig, Scenario};
use immune::textformat::{self, TimestampUnit};
use std::hint::black_box;
use std::time::{Duration, Instant};

const LINE: &str = "http_request_duration_seconds_bucket{instance=\"web-17:80\",job=\"web\",le=\"0.25\"} 1234567 1699920010";
const SERIES: &str =
    "http_request_duration_seconds_bucket{instance=\"web-17:80\",job=\"web\",le=\"0.25\"}";

fn parse(c: &mut Criterion) {
    c.bench_function("parse_line (OpenMetrics sample)", |b| {
        b.iter(|| textformat::parse_line(black_box(LINE), TimestampUnit::Seconds))
    });
}

fn engine() -> Engine {
    let rules = immune::defaults::load_rules(&[]).unwrap_or_default();
    Engine::new(rules, EngineConfig::default())
}

fn ingest_existing(c: &mut Criterion) {
    let mut e = engine();
    let mut at = Timestamp(1_699_920_000_000);
    let _ = e.ingest_text(SERIES, 0.0, at);
    c.bench_function("Engine::ingest_text (existing series)", |b| {
        b.iter(|| {
            at = at.add(DurationMs(10_000));
            e.ingest_text(black_box(SERIES), 1.0, at)
        })
    });
}

struct NoHistory;
impl SeriesObserver for NoHistory {
    fn on_new_series(&mut self, _: SeriesId, _: &Series) -> SeriesNeeds {
        SeriesNeeds::default()
    }
}

fn window_update(c: &mut Criterion) {
    // The default engine's retention: 10 min pre-deploy + 2 blocks + 2 ticks.
    let mut store = Store::new(DurationMs(740_000), DurationMs(0), 10);
    let id = store.intern(SERIES, &mut NoHistory).unwrap_or(SeriesId(0));
    let mut at = Timestamp(1_699_920_000_000);
    for _ in 0..100 {
        at = at.add(DurationMs(10_000));
        store.push(id, at, 1.0);
    }
    c.bench_function("Store::push (full window, trims one point)", |b| {
        b.iter(|| {
            at = at.add(DurationMs(10_000));
            store.push(black_box(id), at, 1.0)
        })
    });
}

/// One deploy on the reference fleet: the scrape rounds and the canary event.
fn fleet_rounds() -> (Vec<(Timestamp, Vec<Sample>)>, DeployEvent, usize) {
    let cfg = FleetConfig::default();
    let canary_at = cfg.start.add(DurationMs::from_secs(900));
    let plan = DeployPlan::new("d1", canary_at, Scenario::Healthy);
    let mut fleet = Fleet::new(cfg.clone(), vec![plan.clone()]);
    let canary = fleet
        .deploy_events()
        .into_iter()
        .find(|e| e.event == DeployEventKind::Canary)
        .unwrap_or(DeployEvent {
            at: canary_at.as_secs_f64(),
            deploy: Some("d1".into()),
            event: DeployEventKind::Canary,
            service: Some("web".into()),
            version: None,
            commits: vec![],
            canary: None,
            by: None,
            reason: None,
        });
    let mut rounds = Vec::new();
    let mut now = cfg.start;
    while now < plan.full_at {
        let mut v = Vec::new();
        fleet.scrape(now, &mut v);
        rounds.push((now, v));
        now = now.add(cfg.scrape_interval);
    }
    let first_canary = rounds.iter().position(|(t, _)| *t > canary_at).unwrap_or(0);
    (rounds, canary, first_canary)
}

fn rule_tick(c: &mut Criterion) {
    let (rounds, canary, first) = fleet_rounds();
    let feed = |e: &mut Engine, (at, samples): &(Timestamp, Vec<Sample>)| {
        for s in samples {
            let _ = e.ingest(&s.name, &s.labels, s.value, *at);
        }
    };
    let fresh = || {
        let mut e = engine();
        for r in &rounds[..first] {
            feed(&mut e, r);
            if r.0 > rounds[0].0 {
                e.tick(r.0);
            }
            if r.0.as_secs_f64() >= canary.at && e.active_deploys() == 0 {
                let _ = e.deploy_event(&canary);
            }
        }
        e
    };
    let mut g = c.benchmark_group("tick");
    g.sample_size(20);
    // One tick over one canary deploy (40 hosts, every shipped rule), after a round of
    // samples: what the engine does every 10 s per deploy in flight.
    g.bench_function("Engine::tick (one deploy in canary, shipped rules)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut e = fresh();
                for r in &rounds[first..] {
                    if done >= iters {
                        break;
                    }
                    feed(&mut e, r);
                    let t = Instant::now();
                    black_box(e.tick(r.0));
                    total += t.elapsed();
                    done += 1;
                }
            }
            total
        })
    });
    g.bench_function(
        "Engine::ingest (one 40-host scrape round, 774 samples)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let mut e = fresh();
                    for r in &rounds[first..] {
                        if done >= iters {
                            break;
                        }
                        let t = Instant::now();
                        feed(&mut e, r);
                        total += t.elapsed();
                        e.tick(r.0);
                        done += 1;
                    }
                }
                total
            })
        },
    );
    g.finish();
}

criterion_group!(benches, parse, ingest_existing, window_update, rule_tick);
criterion_main!(benches);
