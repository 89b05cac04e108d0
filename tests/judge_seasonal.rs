//! A seasonal rule judges at the agent's default 10-second evaluation interval.
//!
//! A season ago is read from per-minute history, while ticks come every 10 s: the judge must
//! compare whole minutes now with the same minutes then. (It used to compare each 10-s
//! interval now with whichever minute boundary fell in the same interval a season ago, so
//! five ticks in six read no baseline and their data was lost.)
//!
//! The second half: seasonal baselines read from a TSDB at each deploy's start judge
//! exactly as the week kept in memory does (issue 11).

use immune::engine::season::{SeasonFill, SeasonRequest};
use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DeployEvent, DeployEventKind, Sample, Timestamp};
use std::collections::BTreeMap;

const RULES: &str = r#"
rules:
  - name: signups_vs_last_hour
    metric: {kind: counter_rate, selector: 'signups_total'}
    baseline: seasonal
    seasonal_offset: 1h
    phases: [full, watch]
    direction: decrease
    min_effect: "-20%"
    action: rollback
"#;

/// Minute-aligned start of the data (2025-11-27 00:00 UTC).
const T0: i64 = 1_764_201_600_000;
const STEP: i64 = 10_000;

fn event(kind: DeployEventKind, at_ms: i64) -> DeployEvent {
    DeployEvent {
        at: at_ms as f64 / 1000.0,
        deploy: Some("d1".into()),
        event: kind,
        service: Some("shop".into()),
        version: None,
        commits: Vec::new(),
        canary: (kind == DeployEventKind::Canary).then(|| {
            [(
                "instance".to_string(),
                immune::model::OneOrMany::One("web-01:80".into()),
            )]
            .into()
        }),
        by: None,
        reason: None,
    }
}

/// The canary event at `deploy_at`, the full phase a step later.
fn deploy_steps(e: &mut Engine, t: i64, deploy_at: i64) -> Vec<Decision> {
    let kind = match t - deploy_at {
        0 => DeployEventKind::Canary,
        STEP => DeployEventKind::Full,
        _ => return Vec::new(),
    };
    e.deploy_event(&event(kind, t)).expect("deploy event")
}

/// Feeds 1 h 5 min of signups from two hosts (neither on the canary) at 1.2 per second
/// each, scraped every `scrape_ms` starting `phase_ms` after the minute, deploys (canary,
/// then full 10 s later, off the minute grid), then `after_ms` more at `rate_after` times
/// the rate, ticking every 10 s. Returns every decision.
fn run(scrape_ms: i64, phase_ms: i64, rate_after: f64, after_ms: i64) -> Vec<Decision> {
    let rules = immune::rules::load::load_str("seasonal.yaml", RULES).expect("rules load");
    let mut e = Engine::new(rules, EngineConfig::default());
    let deploy_at = T0 + 65 * 60_000 + 10_000;
    let mut counts = [0.0f64; 2];
    let mut out = Vec::new();
    let mut t = T0;
    while t <= deploy_at + after_ms {
        let per_second = if t > deploy_at + STEP {
            1.2 * rate_after
        } else {
            1.2
        };
        for (h, c) in counts.iter_mut().enumerate() {
            *c += per_second * STEP as f64 / 1000.0;
            if (t - T0 - phase_ms).rem_euclid(scrape_ms) != 0 {
                continue;
            }
            e.ingest_text(
                &format!("signups_total{{instance=\"db-0{h}:9104\"}}"),
                *c,
                Timestamp(t),
            )
            .expect("ingest");
        }
        out.extend(deploy_steps(&mut e, t, deploy_at));
        out.extend(e.tick(Timestamp(t)));
        t += STEP;
    }
    out
}

fn assert_caught(ds: &[Decision]) {
    let stop = ds
        .iter()
        .find(|d| d.rule == "signups_vs_last_hour")
        .unwrap_or_else(|| {
            panic!("no decision on a 50% drop against the same minutes an hour ago: {ds:#?}")
        });
    assert_eq!(stop.decision.as_str(), "rollback", "{stop:#?}");
    let ratio = stop.evidence["effect"]["ratio"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(
        (ratio - 0.5).abs() < 0.1,
        "whole minutes on both sides: the ratio is the true one, 0.5, not {ratio}: {stop:#?}"
    );
    let now = stop.evidence["treatment"]["events"].as_f64().unwrap_or(0.0);
    let then = stop.evidence["baseline"]["events"].as_f64().unwrap_or(0.0);
    assert!(
        now >= 72.0 && (then - 2.0 * now).abs() < 1e-6,
        "every whole minute is read on both sides (72 signups a minute now, 144 then): {now} vs {then}"
    );
}

#[test]
fn half_the_signups_of_an_hour_ago_is_caught_with_10_second_scrapes() {
    assert_caught(&run(10_000, 0, 0.5, 15 * 60_000));
}

#[test]
fn half_the_signups_of_an_hour_ago_is_caught_with_minute_scrapes_off_the_minute_grid() {
    // SQL-backed business counters are typically read once a minute, at any second.
    assert_caught(&run(60_000, 20_000, 0.5, 15 * 60_000));
}

#[test]
fn the_same_signups_as_an_hour_ago_is_not_stopped() {
    for (scrape, phase) in [(10_000, 0), (60_000, 20_000)] {
        let ds = run(scrape, phase, 1.0, 15 * 60_000);
        let stops: Vec<&Decision> = ds.iter().filter(|d| d.decision.blocks_line()).collect();
        assert!(stops.is_empty(), "scrapes every {scrape} ms: {stops:#?}");
    }
}

// Seasonal baselines read from a TSDB at the deploy's start (issue 11) judge exactly as
// the week kept in memory does.
//
// Two engines see the same deploy: one has run for a day and a half and keeps its
// per-minute history as always; the other reads its seasons from a TSDB
// (`read_seasons_from_tsdb`), has seen only the last 15 minutes (an agent just started
// with its recent windows filled), and gets the spans its deploy asks for answered from
// the same data, per minute, as `serve`'s fetcher would from Prometheus (the live fetch
// against a real Prometheus is tested in `history_agent.rs`). The deploy runs long enough
// that a second chunk is asked for. Their decisions must be identical, and the second
// engine must hold a small fraction of the first's history. A fetch that fails makes the
// rule inconclusive with the reason, and the deploy ends `no_evidence`, never `pass`.

const TSDB_RULES: &str = r#"
rules:
  - name: signups_vs_yesterday
    metric: {kind: counter_rate, selector: 'signups_total{job="shop"}'}
    baseline: seasonal
    seasonal_offset: 1d
    phases: [full, watch]
    direction: decrease
    min_effect: "-20%"
    action: rollback
"#;

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn labels(h: usize) -> Vec<(String, String)> {
    vec![
        ("instance".to_string(), format!("db-0{h}:9104")),
        ("job".to_string(), "shop".to_string()),
    ]
}

/// The TSDB: every sample, answering spans per minute (the last value of each minute
/// starting in [from, to), at the minute's start) with what it holds at `now`.
#[derive(Default)]
struct Tsdb(BTreeMap<usize, Vec<(i64, f64)>>);

impl Tsdb {
    fn answer(&self, req: &SeasonRequest, now: i64, fail: bool) -> SeasonFill {
        let spans = req
            .spans
            .iter()
            .map(|span| {
                if fail {
                    return (span.clone(), Err("connection refused".to_string()));
                }
                let mut out = Vec::new();
                for (h, points) in &self.0 {
                    let mut minutes: BTreeMap<i64, f64> = BTreeMap::new();
                    for &(t, v) in points
                        .iter()
                        .filter(|(t, _)| *t <= now && *t >= span.from.0 && *t < span.to.0)
                    {
                        minutes.insert(t - t.rem_euclid(MIN), v);
                    }
                    out.extend(minutes.into_iter().map(|(m, v)| Sample {
                        name: "signups_total".into(),
                        labels: labels(*h),
                        value: v,
                        at: Timestamp(m),
                    }));
                }
                (span.clone(), Ok(out))
            })
            .collect();
        SeasonFill {
            deploy: req.deploy.clone(),
            spans,
        }
    }
}

struct Run {
    decisions: Vec<Decision>,
    requests: Vec<SeasonRequest>,
    history_points: usize,
    history_after_end: usize,
    /// The deploy's view just before a late answer arrived.
    waited: Option<serde_json::Value>,
}

/// Signups from two hosts at 1.2/s each (with a daily shape), a deploy at `T0 + 1d 5h`
/// running 2 h 30 min, the rate times `after` from its full phase on. `tsdb`: the engine
/// reads seasons from the TSDB and sees only the last 15 minutes before the deploy.
fn run_tsdb(tsdb: bool, after: f64, fail: bool) -> Run {
    run_delayed(tsdb, after, fail, 0)
}

/// [`run_tsdb`], the fetcher answering each request `delay` ticks late.
fn run_delayed(tsdb: bool, after: f64, fail: bool, delay: i64) -> Run {
    let rules = immune::rules::load::load_str("seasonal.yaml", TSDB_RULES).expect("rules load");
    let mut e = Engine::new(rules, EngineConfig::default());
    if tsdb {
        e.read_seasons_from_tsdb();
    }
    let deploy_at = T0 + DAY + 5 * 3_600_000 + 10_000;
    let end_at = deploy_at + 150 * MIN;
    let live_from = if tsdb { deploy_at - 15 * MIN } else { T0 };
    let mut store = Tsdb::default();
    let mut counts = [0.0f64; 2];
    let mut out = Vec::new();
    let mut requests = Vec::new();
    let mut pending: Vec<(i64, SeasonRequest)> = Vec::new();
    let mut waited = None;
    let mut history_points = 0;
    let mut t = T0;
    while t <= end_at {
        let day = (t as f64 / DAY as f64) * std::f64::consts::TAU;
        let mut per_second = 1.2 * (1.0 + 0.3 * day.sin());
        if t > deploy_at + STEP {
            per_second *= after;
        }
        for (h, c) in counts.iter_mut().enumerate() {
            *c += (per_second * STEP as f64 / 1000.0).round();
            store.0.entry(h).or_default().push((t, *c));
            if t >= live_from {
                e.ingest("signups_total", &labels(h), *c, Timestamp(t))
                    .expect("ingest");
            }
        }
        out.extend(deploy_steps(&mut e, t, deploy_at));
        if t >= live_from {
            out.extend(e.tick(Timestamp(t)));
        }
        // The fetcher answers before the next input (or `delay` ticks later).
        pending.extend(e.take_season_requests().into_iter().map(|r| (t, r)));
        while pending
            .first()
            .is_some_and(|(at, _)| t >= at + delay * STEP)
        {
            let (at, req) = pending.remove(0);
            if waited.is_none() && delay > 0 {
                waited = e.deploy_view("d1");
            }
            let fill = store.answer(&req, at, fail);
            requests.push(req);
            e.season_fill(fill);
        }
        if t == end_at - STEP {
            history_points = e.history_points();
        }
        if t == end_at {
            out.extend(
                e.deploy_event(&event(DeployEventKind::End, t))
                    .expect("end"),
            );
        }
        t += STEP;
    }
    let history_after_end = e.history_points();
    Run {
        decisions: out,
        requests,
        history_points,
        history_after_end,
        waited,
    }
}

fn json(ds: &[Decision]) -> Vec<serde_json::Value> {
    ds.iter()
        .map(|d| serde_json::to_value(d).expect("decision"))
        .collect()
}

#[test]
fn a_season_read_from_the_tsdb_judges_as_the_week_in_memory() {
    for after in [1.0, 0.5] {
        let memory = run_tsdb(false, after, false);
        let tsdb = run_tsdb(true, after, false);
        assert!(
            memory.requests.is_empty(),
            "without a TSDB nothing is asked"
        );
        assert_eq!(
            json(&tsdb.decisions),
            json(&memory.decisions),
            "rate x{after}: the same decisions, evidence and all"
        );
        // A first span around a day before the deploy, then the next chunk once the
        // deploy's reading came within 30 minutes of its end.
        let spans: Vec<(i64, i64, bool)> = tsdb
            .requests
            .iter()
            .flat_map(|r| r.spans.iter().map(|s| (s.from.0, s.to.0, s.first)))
            .collect();
        let deploy_at = T0 + DAY + 5 * 3_600_000 + 10_000;
        if after == 1.0 {
            assert_eq!(spans.len(), 2, "{spans:?}");
            assert_eq!(spans[0].0, deploy_at - 10_000 - DAY - 10 * MIN);
            assert_eq!(spans[0].1, deploy_at - DAY + 2 * 3_600_000);
            assert!(spans[0].2 && !spans[1].2);
            assert_eq!(spans[1].0, spans[0].1 - 10_000 - MIN);
        }
        // Two series: the spans asked for (10 min + 4 h) and the deploy's own minutes,
        // against a day and 6 h of minutes kept in memory.
        assert!(
            tsdb.history_points <= 2 * (10 + 240 + 150 + 2)
                && memory.history_points >= 2 * (24 + 6) * 60,
            "the TSDB engine holds the deploy's spans ({}), not the whole history ({})",
            tsdb.history_points,
            memory.history_points
        );
        assert_eq!(tsdb.history_after_end, 0, "released when the deploy ended");
    }
    let stopped = run_tsdb(true, 0.5, false);
    assert!(
        stopped
            .decisions
            .iter()
            .any(|d| d.rule == "signups_vs_yesterday" && d.decision.as_str() == "rollback"),
        "half the signups of yesterday is caught: {:#?}",
        stopped.decisions
    );
}

#[test]
fn a_season_the_tsdb_cannot_serve_is_inconclusive_with_the_reason() {
    let r = run_tsdb(true, 0.5, true);
    assert_eq!(r.decisions.len(), 1, "{:#?}", r.decisions);
    let d = &r.decisions[0];
    assert_eq!(d.decision.as_str(), "block", "{d:#?}");
    assert_eq!(d.rule, "no_evidence");
    assert_eq!(
        d.evidence["no_evidence"][0]["reason"],
        "seasonal baseline not available from the TSDB"
    );
    assert_eq!(d.evidence["rules"]["signups_vs_yesterday"], "inconclusive");
}

#[test]
fn a_season_answered_late_waits_then_reads_the_minutes_it_missed() {
    // Answered 5 minutes into the full phase.
    let r = run_delayed(true, 0.5, false, 31);
    let waited = r.waited.expect("a view before the answer");
    let rule = &waited["rules"][0];
    assert_eq!(rule["state"], "inconclusive", "{rule:#}");
    assert_eq!(
        rule["evidence"]["waiting_for"], "the seasonal baseline from the TSDB (being fetched)",
        "{rule:#}"
    );
    let stop = r
        .decisions
        .iter()
        .find(|d| d.rule == "signups_vs_yesterday")
        .unwrap_or_else(|| panic!("caught once the season arrived: {:#?}", r.decisions));
    assert_eq!(stop.decision.as_str(), "rollback");
    // Two hosts at about 0.6 a second each for at least the 5 minutes waited.
    let now = stop.evidence["treatment"]["events"].as_f64().unwrap_or(0.0);
    assert!(
        now >= 5.0 * 60.0 * 1.2 * 0.7,
        "the missed minutes were read: {stop:#?}"
    );
}
