//! Seasonal baselines read from a TSDB at the deploy's start (issue 11) judge exactly as
//! the week kept in memory does.
//!
//! Two engines see the same deploy: one has run for a day and a half and keeps its
//! per-minute history as always; the other reads its seasons from a TSDB
//! (`read_seasons_from_tsdb`), has seen only the last 15 minutes (an agent just started
//! with its recent windows filled), and gets the spans its deploy asks for answered from
//! the same data, per minute, as `serve`'s fetcher would from Prometheus (the live fetch
//! against a real Prometheus is tested in `history_agent.rs`). The deploy runs long enough
//! that a second chunk is asked for. Their decisions must be identical, and the second
//! engine must hold a small fraction of the first's history. A fetch that fails makes the
//! rule inconclusive with the reason, and the deploy ends `no_evidence`, never `pass`.

use immune::engine::season::{SeasonFill, SeasonRequest};
use immune::engine::{Engine, EngineConfig};
use immune::model::{Decision, DeployEvent, DeployEventKind, Sample, Timestamp};
use std::collections::BTreeMap;

const RULES: &str = r#"
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

/// Minute-aligned start of the data (2025-11-27 00:00 UTC).
const T0: i64 = 1_764_201_600_000;
const STEP: i64 = 10_000;
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

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
fn run(tsdb: bool, after: f64, fail: bool) -> Run {
    run_delayed(tsdb, after, fail, 0)
}

/// [`run`], the fetcher answering each request `delay` ticks late.
fn run_delayed(tsdb: bool, after: f64, fail: bool, delay: i64) -> Run {
    let rules = immune::rules::load::load_str("seasonal.yaml", RULES).expect("rules load");
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
        if t == deploy_at {
            out.extend(
                e.deploy_event(&event(DeployEventKind::Canary, t))
                    .expect("canary"),
            );
        }
        if t == deploy_at + STEP {
            out.extend(
                e.deploy_event(&event(DeployEventKind::Full, t))
                    .expect("full"),
            );
        }
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
        let memory = run(false, after, false);
        let tsdb = run(true, after, false);
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
    let stopped = run(true, 0.5, false);
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
    let r = run(true, 0.5, true);
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
