//! The live agent's start-up fill from the TSDB: every rule's recent windows loaded
//! before live sources start, so a `pre_deploy` rule judges from the first minute after a
//! (re)start; and the per-minute reads of a seasonal span ([`minutes`]) that each deploy
//! asks for at its start (see `engine/season.rs`), so a `seasonal` rule judges from the
//! first deploy without the agent keeping a week in memory.
//!
//! The engine never does I/O; `serve` runs [`fetch`] on a blocking thread and hands each
//! chunk of samples to the engine thread as an ordinary batch, so the store receives
//! exactly what it would have received live, in time order per series: for every
//! selector, the raw samples as far back as the rules reading it look (the longest
//! pre-deploy window among them, or the control calibration for a rule against the
//! control, plus blocks and ticks of slack; a selector only short windows read is not
//! fetched as far back as the longest window of all) through raw range-vector selectors,
//! as `immune backtest` reads them. The chunks of a fill are laid over the whole span and
//! end at its end, so a span shorter than a chunk costs one request, and each chunk holds
//! every selector's samples of its stretch: a series two selectors match still arrives
//! oldest first. A reload fills the rules it adds or changes the same way ([`plan`] over
//! those rules only).
//!
//! A seasonal span is read one sample per minute: `last_over_time(<selector>[1m])`
//! evaluated by `/api/v1/query_range` at the last millisecond of each minute, i.e. the
//! last value in `[m, m+60s)`, which is what the store keeps per minute. A span thus
//! costs 60 points per series per hour, not every scrape.
//!
//! The TSDB and the agent meet on raw series: the TSDB holds the same counters the agent
//! scrapes or receives by remote_write, with the same names and labels, so a series read
//! from history and the same series read live are one series in the store, and the
//! live samples simply continue it (a live sample not newer than the last history sample
//! is dropped as out of order, as any repeated sample is).

use super::backtest::Answer;
use super::{Client, HistoryError, rule_selectors};
use crate::engine::MAX_BASELINE_WINDOW;
use crate::engine::judge::{CONTINUOUS_CALIBRATION, CONTROL_CALIBRATION};
use crate::model::{DurationMs, Sample, Timestamp};
use crate::rules::{Baseline, Rule};
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks of slack added to the raw span beyond the store's recent retention.
const RAW_SLACK_BLOCKS: i64 = 5;

/// The longest per-minute span asked for in one `query_range` (1,440 points per series,
/// well under Prometheus's 11,000-point limit).
const MINUTE_CHUNK: DurationMs = DurationMs::from_secs(86_400);

const MINUTE: i64 = 60_000;

/// What to fetch at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The whole raw span, (earliest selector's start, now]: the chunks of a fill are laid
    /// over it, so every series reaches the store in time order even when two selectors
    /// match it.
    pub raw: (Timestamp, Timestamp),
    /// Every selector the rules read, each with its own start: a selector only short
    /// windows read is not fetched as far back as the longest window of all.
    pub raw_selectors: Vec<RawSpan>,
}

/// One selector's raw span, `(from, plan end]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSpan {
    /// The selector, as PromQL text.
    pub selector: String,
    /// Start (exclusive; one millisecond before a minute, so a sample at the minute is in).
    pub from: Timestamp,
}

/// How far before a deploy `rule` reads recent raw points: its pre-deploy window, or the
/// control calibration; a seasonal rule reads last season's minutes (fetched per deploy,
/// see [`minutes`]) and only its own deploy's points, which the slack covers.
fn reach(rule: &Rule) -> DurationMs {
    match rule.baseline {
        Baseline::PreDeploy { window } => window.min(MAX_BASELINE_WINDOW),
        Baseline::Control => CONTROL_CALIBRATION,
        Baseline::Seasonal { .. } => DurationMs(0),
    }
}

/// The spans `rules` read at `now`, with the engine's `block` and evaluation interval:
/// per selector, the longest reach of the rules reading it plus blocks and ticks of slack,
/// counted back from `since` when that is earlier than `now`. `since` is the start of the
/// oldest deploy the agent is about to resume: such a deploy reads its pre-deploy window
/// (or calibrates its control) before its own start, not before the restart, so a fill
/// reaching back from `now` alone would leave a deploy resumed a while after its start
/// without its baseline. No span starts further before `now` than the store keeps points
/// (the longest reach of all the rules, at least the continuous calibration, plus the
/// slack): a deploy that has hung for days costs no more to fill than a fresh start.
pub fn plan(
    rules: &[Rule],
    now: Timestamp,
    since: Timestamp,
    block: DurationMs,
    eval: DurationMs,
) -> Plan {
    let anchor = since.min(now);
    let slack = block
        .0
        .saturating_mul(2 + RAW_SLACK_BLOCKS)
        .saturating_add(eval.0.saturating_mul(2));
    let longest = rules
        .iter()
        .map(reach)
        .max()
        .unwrap_or_default()
        .max(CONTINUOUS_CALIBRATION);
    let earliest = now.sub(DurationMs(longest.0.saturating_add(slack)));
    let mut raw_selectors: Vec<RawSpan> = Vec::new();
    for r in rules {
        let from = anchor.sub(DurationMs(reach(r).0.saturating_add(slack)));
        let from = floor_minute(from.max(earliest));
        // The span includes a sample exactly at the minute it starts.
        let from = Timestamp(from.0.saturating_sub(1));
        for selector in rule_selectors(r) {
            match raw_selectors.iter_mut().find(|s| s.selector == selector) {
                Some(s) => s.from = s.from.min(from),
                None => raw_selectors.push(RawSpan { selector, from }),
            }
        }
    }
    let first = raw_selectors.iter().map(|s| s.from).min().unwrap_or(now);
    Plan {
        raw: (first, now),
        raw_selectors,
    }
}

fn floor_minute(t: Timestamp) -> Timestamp {
    Timestamp(t.0 - t.0.rem_euclid(MINUTE))
}

/// What a fill did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Samples handed to the engine.
    pub samples: u64,
    /// Requests made.
    pub requests: u64,
}

/// Fetches `plan` from the TSDB behind `client`, oldest first, in chunks of at most
/// `chunk` (each selector from its own start), handing each chunk's samples, in time
/// order, to `sink`. Stops with an error when a request fails, `sink` refuses a batch, or
/// `cancel` is set (the caller's overall timeout); what was handed over stays.
pub fn fetch(
    client: &Client,
    plan: &Plan,
    chunk: DurationMs,
    cancel: &AtomicBool,
    filled: &mut Filled,
    sink: &mut dyn FnMut(Vec<Sample>) -> Result<(), String>,
) -> Result<(), HistoryError> {
    let mut hand = |mut samples: Vec<Sample>, filled: &mut Filled| {
        samples.sort_by_key(|s| s.at);
        filled.samples += samples.len() as u64;
        if samples.is_empty() {
            return Ok(());
        }
        sink(samples).map_err(|m| client.error(format!("the engine refused history: {m}")))
    };
    let check = || {
        if cancel.load(Ordering::Relaxed) {
            Err(client.error("start-up fill stopped: prefill_timeout reached".into()))
        } else {
            Ok(())
        }
    };
    let (from, to) = plan.raw;
    let step = chunk.0.max(1000);
    // Chunks end at `to`, `to - step`, ...: a selector whose span is at most a chunk long
    // costs one request, whatever the longest span is.
    let chunks = to.0.saturating_sub(from.0).saturating_add(step - 1) / step;
    let mut a = Timestamp(to.0.saturating_sub(chunks.saturating_mul(step)));
    while a < to {
        let b = Timestamp(a.0.saturating_add(step).min(to.0));
        let mut samples = Vec::new();
        let time = secs(b);
        for span in plan.raw_selectors.iter().filter(|s| s.from < b) {
            check()?;
            let sel = &span.selector;
            let lo = a.max(span.from);
            let range_s = (b.0 - lo.0 + 999) / 1000;
            let query = format!("{sel}[{range_s}s]");
            let body = client.get("/api/v1/query", &[("query", &query), ("time", &time)])?;
            filled.requests += 1;
            let name = sel.split('{').next().unwrap_or(sel);
            parse(&body, name, &mut samples, |t| {
                (t > lo.0 && t <= b.0).then_some(Timestamp(t))
            })
            .map_err(|message| client.error(format!("{query}: {message}")))?;
        }
        hand(samples, filled)?;
        a = b;
    }
    Ok(())
}

/// The last value of each minute starting in `[from, to)` of every series `selector`
/// matches, as samples at the minute's start (what the store keeps per minute), in at
/// most a day per request (1,440 points per series, well under Prometheus's 11,000).
pub fn minutes(
    client: &Client,
    selector: &str,
    from: Timestamp,
    to: Timestamp,
    requests: &mut u64,
) -> Result<Vec<Sample>, HistoryError> {
    let mut out = Vec::new();
    let query = format!("last_over_time({selector}[1m])");
    let name = selector.split('{').next().unwrap_or(selector);
    let mut a = floor_minute(from);
    while a < to {
        let b = Timestamp(a.0.saturating_add(MINUTE_CHUNK.0).min(to.0));
        let start = secs(Timestamp(a.0 + MINUTE - 1));
        let end = secs(Timestamp(b.0 - 1));
        let body = client.get(
            "/api/v1/query_range",
            &[
                ("query", &query),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ],
        )?;
        *requests += 1;
        parse(&body, name, &mut out, |t| {
            // Evaluated at the minute's last millisecond (or, behind a frontend that
            // aligns steps, at the next minute's start): the minute is the one ending there.
            let m = floor_minute(Timestamp(t - 1));
            (m >= a && m < b).then_some(m)
        })
        .map_err(|message| client.error(format!("{query}: {message}")))?;
        a = b;
    }
    Ok(out)
}

fn secs(t: Timestamp) -> String {
    format!("{}.{:03}", t.0.div_euclid(1000), t.0.rem_euclid(1000))
}

/// Parses a matrix answer into samples; `keep` maps a point's time (ms) to the time it is
/// stored at, or drops it. A result without `__name__` (functions drop it) gets `name`.
fn parse(
    body: &[u8],
    name: &str,
    out: &mut Vec<Sample>,
    keep: impl Fn(i64) -> Option<Timestamp>,
) -> Result<(), String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    if answer.status != "success" {
        return Err(answer.error.unwrap_or_else(|| "query failed".into()));
    }
    let data = answer.data.ok_or("answer without data")?;
    if data.result_type != "matrix" {
        return Err(format!("expected a matrix, got {}", data.result_type));
    }
    for item in data.result {
        let metric_name = item
            .metric
            .get("__name__")
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let labels: Vec<(String, String)> = item
            .metric
            .into_iter()
            .filter(|(k, _)| k != "__name__")
            .collect();
        for (t, v) in item.values {
            let Some(at) = keep((t * 1000.0).round() as i64) else {
                continue;
            };
            let value: f64 = v
                .parse()
                .map_err(|_| format!("not a sample value: {v:?}"))?;
            out.push(Sample {
                name: metric_name.clone(),
                labels: labels.clone(),
                value,
                at,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Tsdb;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// Rules counting `<selector>{job="web"}` increases, one per `(name, selector,
    /// baseline settings)`.
    fn rules(specs: &[(&str, &str, &str)]) -> Vec<Rule> {
        let mut yaml = String::from("rules:\n");
        for (name, selector, baseline) in specs {
            yaml.push_str(&format!(
                "  - name: {name}\n    metric: {{kind: counter_rate, selector: '{selector}{{job=\"web\"}}'}}\n    \
                 {baseline}\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n"
            ));
        }
        crate::rules::load::load_str("t.yaml", &yaml)
            .map(|r| r.rules)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The engine settings of every plan here: 60 s blocks, 10 s evaluations.
    const BLOCK: DurationMs = DurationMs::from_secs(60);
    const EVAL: DurationMs = DurationMs::from_secs(10);

    /// The plan at `now` with no deploy to resume.
    fn plan_now(rules: &[Rule], now: Timestamp) -> Plan {
        plan(rules, now, now, BLOCK, EVAL)
    }

    #[test]
    fn the_plan_reads_the_recent_windows_raw_and_no_season() {
        let r = rules(&[
            (
                "pre",
                "a_total",
                "baseline: pre_deploy\n    baseline_window: 2h",
            ),
            (
                "week",
                "b_total",
                "baseline: seasonal\n    seasonal_offset: 7d",
            ),
            ("control", "c_total", "baseline: control"),
            (
                "short",
                "c_total",
                "baseline: pre_deploy\n    baseline_window: 10m",
            ),
            (
                "shorter",
                "d_total",
                "baseline: pre_deploy\n    baseline_window: 10m",
            ),
        ]);
        let now = Timestamp(10 * 86_400_000 + 30_500);
        let p = plan_now(&r, now);
        // Each selector's longest reach + 7 blocks + 2 ticks (7m20s) before 10d+30.5s,
        // floored to the minute: 2 h, the season's none, the control's 1 h (over a 10 m
        // window on the same selector), 10 m.
        let from = |minutes: i64| Timestamp(10 * 86_400_000 - minutes * 60_000 - 1);
        let span = |sel: &str, minutes: i64| RawSpan {
            selector: sel.to_string(),
            from: from(minutes),
        };
        assert_eq!(p.raw, (from(127), now));
        assert_eq!(
            p.raw_selectors,
            vec![
                span("a_total{job=\"web\"}", 127),
                span("b_total{job=\"web\"}", 7),
                span("c_total{job=\"web\"}", 67),
                span("d_total{job=\"web\"}", 17),
            ]
        );
        let none = plan_now(&[], now);
        assert_eq!(none.raw, (now, now));
        assert!(none.raw_selectors.is_empty());
        // A deploy resumed 20 minutes after it started reads its windows before its start:
        // every span reaches back from there, but none further than the store keeps (the
        // 2 h window and the slack before now). A start after `now` changes nothing.
        let resumed = plan(
            &r,
            now,
            now.sub(DurationMs::from_secs(20 * 60)),
            BLOCK,
            EVAL,
        );
        assert_eq!(resumed.raw, (from(127), now));
        assert_eq!(
            resumed.raw_selectors,
            vec![
                span("a_total{job=\"web\"}", 127),
                span("b_total{job=\"web\"}", 27),
                span("c_total{job=\"web\"}", 87),
                span("d_total{job=\"web\"}", 37),
            ]
        );
        let ahead = plan(&r, now, now.add(DurationMs::from_secs(60)), BLOCK, EVAL);
        assert_eq!(ahead, p);
        // A deploy resumed six days after its start: no span reaches past the longest
        // (2 h and the slack before now), which is all the store would keep.
        let hung = plan(
            &r,
            now,
            now.sub(DurationMs::from_secs(6 * 86_400)),
            BLOCK,
            EVAL,
        );
        assert_eq!(hung.raw, (from(127), now));
        assert!(hung.raw_selectors.iter().all(|s| s.from == from(127)));
    }

    /// The queries a fake TSDB answered: (selector, range start, time), in ms.
    type Queries = Arc<Mutex<Vec<(String, i64, i64)>>>;

    /// A query API on a port of its own answering every instant query `sel[Ns]` at
    /// `time` with one series per selector, a point every 15 s of the range; it records
    /// each query as (selector, range start, time), both in ms.
    fn fake_tsdb() -> (Tsdb, Queries) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or("/");
                let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
                let param = |k: &str| {
                    url.query_pairs()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default()
                };
                let query = param("query");
                let time = (param("time").parse::<f64>().unwrap() * 1000.0).round() as i64;
                let (sel, range) = query.trim_end_matches("s]").rsplit_once('[').unwrap();
                let start = time - range.parse::<i64>().unwrap() * 1000;
                log.lock().unwrap().push((sel.to_string(), start, time));
                let mut values = Vec::new();
                let mut t = start - start.rem_euclid(15_000) + 15_000;
                while t <= time {
                    values.push(serde_json::json!([
                        t as f64 / 1000.0,
                        format!("{}", t / 15_000)
                    ]));
                    t += 15_000;
                }
                let name = sel.split('{').next().unwrap_or(sel);
                let body = serde_json::json!({"status": "success", "data": {"resultType": "matrix",
                    "result": [{"metric": {"__name__": name, "selector": sel}, "values": values}]}})
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let tsdb = Tsdb {
            url,
            headers: Vec::new(),
            bearer_token: None,
            basic_auth: None,
            timeout: std::time::Duration::from_secs(10),
            retries: 0,
        };
        (tsdb, seen)
    }

    /// Fills `plan` from `tsdb` in chunks of an hour; the samples in the order handed over.
    fn fill(tsdb: &Tsdb, plan: &Plan) -> (Filled, Vec<Sample>) {
        let client = Client::new(tsdb).unwrap();
        let mut filled = Filled::default();
        let mut got = Vec::new();
        fetch(
            &client,
            plan,
            DurationMs::from_secs(3600),
            &AtomicBool::new(false),
            &mut filled,
            &mut |batch| {
                got.extend(batch);
                Ok(())
            },
        )
        .unwrap();
        (filled, got)
    }

    #[test]
    fn a_selector_only_short_windows_read_is_fetched_only_as_far_back_as_they_read() {
        let r = rules(&[
            ("control", "long_total", "baseline: control"),
            (
                "short",
                "short_total",
                "baseline: pre_deploy\n    baseline_window: 10m",
            ),
        ]);
        let now = Timestamp(10 * 86_400_000 + 30_500);
        let p = plan_now(&r, now);
        let (tsdb, seen) = fake_tsdb();
        let (filled, got) = fill(&tsdb, &p);
        let seen = seen.lock().unwrap().clone();
        let reach = |sel: &str| {
            seen.iter()
                .filter(|q| q.0 == sel)
                .map(|q| now.0 - q.1)
                .max()
                .unwrap_or(0)
        };
        // 10 m + 7m20s of slack before now, floored to the minute: 17m30.5s (in whole
        // seconds); the control's 1 h + 7m20s, 67m30.5s.
        let short = reach("short_total{job=\"web\"}");
        assert_eq!(short, 17 * 60_000 + 31_000, "{short}");
        let long = reach("long_total{job=\"web\"}");
        assert_eq!(long, 67 * 60_000 + 31_000, "{long}");
        // Each series reaches the sink in time order, every point of its span once.
        for sel in ["short_total{job=\"web\"}", "long_total{job=\"web\"}"] {
            let times: Vec<i64> = got
                .iter()
                .filter(|s| s.labels[0].1 == sel)
                .map(|s| s.at.0)
                .collect();
            assert!(
                times.windows(2).all(|w| w[1] - w[0] == 15_000),
                "{sel}: {times:?}"
            );
            assert!(now.0 - times[0] <= reach(sel) && times[times.len() - 1] <= now.0);
        }
        assert_eq!(filled.samples, got.len() as u64);
        // Chunks end at now: the short span is one request, the long one two.
        assert_eq!(filled.requests, 3);
    }

    /// The shipped rules' fill, per selector and with every selector read as far back
    /// as the longest (what the fill did before), printed for the record.
    #[test]
    fn the_shipped_rules_fill_reads_less_than_the_longest_span_for_all() {
        let r = crate::defaults::load_rules(&[]).unwrap().rules;
        let now = Timestamp(10 * 86_400_000 + 30_500);
        let per_selector = plan_now(&r, now);
        let mut longest = per_selector.clone();
        for s in &mut longest.raw_selectors {
            s.from = longest.raw.0;
        }
        let (tsdb, _) = fake_tsdb();
        let (after, _) = fill(&tsdb, &per_selector);
        let (before, _) = fill(&tsdb, &longest);
        eprintln!(
            "shipped rules, {} selectors, one series each at 15 s, 1 h chunks: per selector {} requests {} samples; longest span for all {} requests {} samples",
            per_selector.raw_selectors.len(),
            after.requests,
            after.samples,
            before.requests,
            before.samples
        );
        assert!(after.samples < before.samples && after.requests <= before.requests);
    }

    #[test]
    fn answers_without_a_name_get_the_selectors() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"instance":"a"},"values":[[59.999,"1"],[119.999,"NaN"]]}]}}"#;
        let mut out = Vec::new();
        parse(body, "m_total", &mut out, |t| Some(Timestamp(t))).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "m_total");
        assert_eq!(
            out[0].labels,
            vec![("instance".to_string(), "a".to_string())]
        );
        assert_eq!(out[0].at, Timestamp(59_999));
        assert!(out[1].value.is_nan());
        let bad = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse(bad, "m", &mut out, |t| Some(Timestamp(t))).is_err());
    }
}
