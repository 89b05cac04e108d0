//! The live agent's start-up fill from the TSDB: every rule's recent windows loaded
//! before live sources start, so a `pre_deploy` rule judges from the first minute after a
//! (re)start; and the per-minute reads of a seasonal span ([`minutes`]) that each deploy
//! asks for at its start (see `engine/season.rs`), so a `seasonal` rule judges from the
//! first deploy without the agent keeping a week in memory.
//!
//! The engine never does I/O; `serve` runs [`fetch`] on a blocking thread and hands each
//! chunk of samples to the engine thread as an ordinary batch, so the store receives
//! exactly what it would have received live, in time order per series: for every
//! selector, the raw samples of the recent retention (the longest pre-deploy window or
//! the control calibration, plus blocks and ticks of slack) through raw range-vector
//! selectors, as `immune backtest` reads them. A reload fills the rules it adds or
//! changes the same way ([`plan`] over those rules only).
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
use crate::engine::judge::CONTROL_CALIBRATION;
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
    /// Raw samples in (from, to], every selector.
    pub raw: (Timestamp, Timestamp),
    /// Every selector the rules read.
    pub raw_selectors: Vec<String>,
}

/// The spans `rules` read at `now`, with the engine's `block` and evaluation interval.
pub fn plan(rules: &[Rule], now: Timestamp, block: DurationMs, eval: DurationMs) -> Plan {
    let longest_pre = rules
        .iter()
        .filter_map(|r| match r.baseline {
            Baseline::PreDeploy { window } => Some(window.min(MAX_BASELINE_WINDOW)),
            _ => None,
        })
        .max()
        .unwrap_or_default()
        .max(CONTROL_CALIBRATION);
    let lookback = longest_pre
        .0
        .saturating_add(block.0.saturating_mul(2 + RAW_SLACK_BLOCKS))
        .saturating_add(eval.0.saturating_mul(2));
    let raw_from = floor_minute(now.sub(DurationMs(lookback)));
    let mut raw_selectors = Vec::new();
    for r in rules {
        for s in rule_selectors(r) {
            if !raw_selectors.contains(&s) {
                raw_selectors.push(s);
            }
        }
    }
    Plan {
        // The raw span includes a sample exactly at `raw_from`.
        raw: (Timestamp(raw_from.0 - 1), now),
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
/// `chunk`, handing each chunk's samples, in time order, to `sink`. Stops with an error when a request fails, `sink` refuses a batch, or
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
    let mut a = from;
    while a < to {
        let b = Timestamp(a.0.saturating_add(step).min(to.0));
        let mut samples = Vec::new();
        let range_s = (b.0 - a.0 + 999) / 1000;
        let time = secs(b);
        for sel in &plan.raw_selectors {
            check()?;
            let query = format!("{sel}[{range_s}s]");
            let body = client.get("/api/v1/query", &[("query", &query), ("time", &time)])?;
            filled.requests += 1;
            let name = sel.split('{').next().unwrap_or(sel);
            parse(&body, name, &mut samples, |t| {
                (t > a.0 && t <= b.0).then_some(Timestamp(t))
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

    fn rules(yaml: &str) -> Vec<Rule> {
        crate::rules::load::load_str("t.yaml", yaml)
            .map(|r| r.rules)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn the_plan_reads_the_recent_windows_raw_and_no_season() {
        let r = rules(concat!(
            "rules:\n",
            "  - name: pre\n    metric: {kind: counter_rate, selector: 'a_total{job=\"web\"}'}\n",
            "    baseline: pre_deploy\n    baseline_window: 1h\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n",
            "  - name: week\n    metric: {kind: counter_rate, selector: 'b_total{job=\"web\"}'}\n",
            "    baseline: seasonal\n    seasonal_offset: 7d\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n",
        ));
        let now = Timestamp(10 * 86_400_000 + 30_500);
        let p = plan(
            &r,
            now,
            DurationMs::from_secs(60),
            DurationMs::from_secs(10),
        );
        // 1 h + 7 blocks + 2 ticks = 67m20s before 10d+30.5s, floored to the minute.
        let raw_from = 10 * 86_400_000 - 67 * 60_000;
        assert_eq!(p.raw, (Timestamp(raw_from - 1), now));
        assert_eq!(
            p.raw_selectors,
            vec!["a_total{job=\"web\"}", "b_total{job=\"web\"}"]
        );
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
