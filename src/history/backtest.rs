//! `immune backtest`: recorded deploys judged on history fetched from the TSDB, with the
//! same output as `immune replay`.
//!
//! It plans what the rules read around each deploy (the pre-deploy and calibration windows
//! before the canary event, the deploy itself up to its last event, and the same span a
//! season earlier for seasonal rules), fetches it in bounded chunks through raw
//! range-vector selectors (`/api/v1/query?query=<selector>[<chunk>]&time=<end>`, which
//! return stored samples, not resampled ones), and streams each chunk, ordered by time,
//! into [`crate::replay::run`] as OpenMetrics text. Because it *is* a replay of the same
//! samples, `immune replay` on a file written from the same data gives the same decisions.
//! Memory is one chunk of samples at a time (the chunk length is a flag), not the history.

use super::{Client, HistoryError, Tsdb, selectors};
use crate::engine::Engine;
use crate::engine::judge::CONTROL_CALIBRATION;
use crate::model::{DeployEvent, DeployEventKind, DurationMs, Timestamp};
use crate::replay::{self, ReplayError, ReplaySummary};
use crate::rules::{Baseline, Rule};
use crate::textformat::TimestampUnit;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

/// Why a backtest stopped.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The TSDB could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The replay of the fetched data failed (bad deploy events, output).
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// What to fetch: time spans (merged, in order) and the selectors the rules read.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Disjoint spans (from, to], oldest first.
    pub spans: Vec<(Timestamp, Timestamp)>,
    /// PromQL selectors, each once.
    pub selectors: Vec<String>,
}

/// The spans the rules read around each deploy: from the longest lookback before its canary
/// event to its last event (plus one evaluation), and the same shifted back by each
/// seasonal offset. Overlapping spans are merged.
pub fn plan(rules: &[Rule], events: &[DeployEvent], block: DurationMs, eval: DurationMs) -> Plan {
    let lookback = rules
        .iter()
        .filter_map(|r| match r.baseline {
            Baseline::PreDeploy { window } => Some(window),
            _ => None,
        })
        .chain(std::iter::once(CONTROL_CALIBRATION))
        .max()
        .unwrap_or(CONTROL_CALIBRATION);
    let lookback = DurationMs(lookback.0.saturating_add(block.0.saturating_mul(2)));
    let offsets: Vec<DurationMs> = rules
        .iter()
        .filter_map(|r| match r.baseline {
            Baseline::Seasonal { offset } => Some(offset),
            _ => None,
        })
        .collect();
    // Each deploy's first and last event.
    let mut by_deploy: BTreeMap<&str, (Timestamp, Timestamp)> = BTreeMap::new();
    for ev in events {
        let (Some(id), Some(at)) = (ev.deploy.as_deref(), Timestamp::from_secs_f64(ev.at)) else {
            continue;
        };
        let e = by_deploy.entry(id).or_insert((at, at));
        e.0 = e.0.min(at);
        e.1 = e.1.max(at);
    }
    let mut spans: Vec<(Timestamp, Timestamp)> = Vec::new();
    for (start, last) in by_deploy.values() {
        let from = start.sub(lookback);
        let to = last.add(eval);
        spans.push((from, to));
        for off in &offsets {
            spans.push((from.sub(*off), to.sub(*off)));
        }
    }
    // Deploys that never end are judged to the last event of the file (replay ends them
    // at the end of input): extend open deploys to the overall last event.
    let ended: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.event, DeployEventKind::End | DeployEventKind::Abort))
        .filter_map(|e| e.deploy.as_deref())
        .collect();
    if let Some(end) = by_deploy.values().map(|(_, l)| *l).max() {
        for (id, (start, _)) in &by_deploy {
            if !ended.contains(id) {
                spans.push((start.sub(lookback), end.add(eval)));
            }
        }
    }
    spans.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Plan {
        spans: merged,
        selectors: selectors(rules),
    }
}

/// Reads deploy events leniently for planning (replay itself reports bad lines with their
/// place, so a bad line here is skipped, not fatal).
pub fn planning_events(text: &str) -> Vec<DeployEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<DeployEvent>(l.trim()).ok())
        .collect()
}

/// A query API answer holding a matrix (shared with [`super::prefill`]).
#[derive(Deserialize)]
pub(super) struct Answer {
    pub(super) status: String,
    #[serde(default)]
    pub(super) data: Option<MatrixData>,
    #[serde(default)]
    pub(super) error: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct MatrixData {
    #[serde(rename = "resultType")]
    pub(super) result_type: String,
    #[serde(default)]
    pub(super) result: Vec<MatrixItem>,
}

#[derive(Deserialize)]
pub(super) struct MatrixItem {
    pub(super) metric: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) values: Vec<(f64, String)>,
}

/// Appends `name{labels}` in the text format, label values escaped.
fn series_text(out: &mut String, metric: &BTreeMap<String, String>) {
    out.push_str(metric.get("__name__").map_or("", String::as_str));
    let mut first = true;
    for (k, v) in metric {
        if k == "__name__" {
            continue;
        }
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Parses one query API answer into (time ms, series text, value text) for samples in
/// (from, to].
fn parse_answer(
    body: &[u8],
    from: Timestamp,
    to: Timestamp,
    out: &mut Vec<(i64, String, String)>,
) -> Result<(), String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    if answer.status != "success" {
        return Err(answer.error.unwrap_or_else(|| "query failed".into()));
    }
    let data = answer.data.ok_or("answer without data")?;
    if data.result_type != "matrix" {
        return Err(format!(
            "expected a matrix for a range selector, got {}",
            data.result_type
        ));
    }
    for item in data.result {
        let mut series = String::new();
        series_text(&mut series, &item.metric);
        for (t, v) in item.values {
            let ms = (t * 1000.0).round() as i64;
            if ms > from.0 && ms <= to.0 {
                out.push((ms, series.clone(), v));
            }
        }
    }
    Ok(())
}

/// Fetches chunks of history lazily and hands them to replay as one time-ordered
/// OpenMetrics stream.
struct TsdbStream {
    client: Client,
    selectors: Vec<String>,
    chunks: std::vec::IntoIter<(Timestamp, Timestamp)>,
    total: usize,
    done: usize,
    buf: Vec<u8>,
    pos: usize,
    finished: bool,
    progress: bool,
    /// The first fetch error; the stream then ends and `run` reports it.
    error: Option<HistoryError>,
}

impl TsdbStream {
    fn fetch(&self, from: Timestamp, to: Timestamp) -> Result<Vec<u8>, HistoryError> {
        let mut samples: Vec<(i64, String, String)> = Vec::new();
        let range_s = (to.0 - from.0 + 999) / 1000;
        let time = format!("{:.3}", to.0 as f64 / 1000.0);
        for sel in &self.selectors {
            let query = format!("{sel}[{range_s}s]");
            let body = self
                .client
                .get("/api/v1/query", &[("query", &query), ("time", &time)])?;
            parse_answer(&body, from, to, &mut samples)
                .map_err(|message| self.client.error(format!("{query}: {message}")))?;
        }
        samples.sort_by_key(|s| s.0);
        let mut text = Vec::with_capacity(samples.len() * 64);
        for (ms, series, value) in samples {
            let _ = writeln!(
                text,
                "{series} {value} {}.{:03}",
                ms.div_euclid(1000),
                ms.rem_euclid(1000)
            );
        }
        Ok(text)
    }

    fn refill(&mut self) {
        while self.pos >= self.buf.len() && !self.finished {
            self.buf.clear();
            self.pos = 0;
            match self.chunks.next() {
                Some((from, to)) => {
                    match self.fetch(from, to) {
                        Ok(text) => self.buf = text,
                        Err(e) => {
                            self.error = Some(e);
                            self.finished = true;
                            self.buf = b"# EOF\n".to_vec();
                        }
                    }
                    self.done += 1;
                    if self.progress {
                        let pct = 100 * self.done / self.total.max(1);
                        eprint!("\rbacktest: {}/{} chunks ({pct}%)", self.done, self.total);
                        if self.done == self.total {
                            eprintln!();
                        }
                    }
                }
                None => {
                    self.finished = true;
                    self.buf = b"# EOF\n".to_vec();
                }
            }
        }
    }
}

impl Read for TsdbStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for TsdbStream {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.refill();
        Ok(&self.buf[self.pos.min(self.buf.len())..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// Splits spans into chunks of at most `chunk`.
fn chunked(spans: &[(Timestamp, Timestamp)], chunk: DurationMs) -> Vec<(Timestamp, Timestamp)> {
    let step = chunk.0.max(1000);
    let mut out = Vec::new();
    for &(from, to) in spans {
        let mut a = from;
        while a < to {
            let b = Timestamp(a.0.saturating_add(step).min(to.0));
            out.push((a, b));
            a = b;
        }
    }
    out
}

/// Options of one backtest.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Evaluation interval.
    pub eval_interval: DurationMs,
    /// The engine's block (for the lookback).
    pub block: DurationMs,
    /// Longest span fetched in one request per selector.
    pub chunk: DurationMs,
    /// Draw a progress line on standard error.
    pub progress: bool,
}

/// Judges the deploys in `deploys_text` (JSON Lines, named `deploys_name` in errors) on
/// history from `tsdb`, writing decisions as JSON Lines to `out`.
pub fn run(
    engine: &mut Engine,
    tsdb: &Tsdb,
    deploys_name: &str,
    deploys_text: &str,
    options: Options,
    out: &mut dyn Write,
) -> Result<ReplaySummary, BacktestError> {
    let events = planning_events(deploys_text);
    let plan = plan(
        engine.rules(),
        &events,
        options.block,
        options.eval_interval,
    );
    let chunks = chunked(&plan.spans, options.chunk);
    let mut stream = TsdbStream {
        client: Client::new(tsdb)?,
        selectors: plan.selectors,
        total: chunks.len(),
        chunks: chunks.into_iter(),
        done: 0,
        buf: Vec::new(),
        pos: 0,
        finished: false,
        progress: options.progress,
        error: None,
    };
    let summary = replay::run(
        engine,
        replay::Input::new(tsdb.url.clone(), &mut stream),
        replay::Input::new(deploys_name, deploys_text.as_bytes()),
        replay::Options {
            unit: TimestampUnit::Seconds,
            eval_interval_ms: options.eval_interval.0,
        },
        out,
    )?;
    match stream.error.take() {
        Some(e) => Err(e.into()),
        None => Ok(summary),
    }
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
    fn chunks_cover_spans_without_overlap() {
        let c = chunked(
            &[(Timestamp(0), Timestamp(2_500_000))],
            DurationMs(1_000_000),
        );
        assert_eq!(
            c,
            vec![
                (Timestamp(0), Timestamp(1_000_000)),
                (Timestamp(1_000_000), Timestamp(2_000_000)),
                (Timestamp(2_000_000), Timestamp(2_500_000))
            ]
        );
    }

    #[test]
    fn answers_keep_only_the_chunk_and_escape_labels() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","instance":"a\"b"},"values":[[99.5,"1"],[100,"2"],[100.5,"3"]]}]}}"#;
        let mut out = Vec::new();
        parse_answer(body, Timestamp(99_500), Timestamp(100_500), &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                (
                    100_000,
                    "up{instance=\"a\\\"b\"}".to_string(),
                    "2".to_string()
                ),
                (
                    100_500,
                    "up{instance=\"a\\\"b\"}".to_string(),
                    "3".to_string()
                )
            ]
        );
        let err = parse_answer(
            br#"{"status":"error","error":"bad"}"#,
            Timestamp(0),
            Timestamp(1),
            &mut out,
        );
        assert_eq!(err, Err("bad".to_string()));
    }

    #[test]
    fn selectors_cover_every_series_a_rule_reads() {
        let r = rules(concat!(
            "rules:\n",
            "  - name: errors\n    metric: {kind: ratio, selector: 'php_errors_total{job=\"web\"}', denominator: 'http_requests_total{job=\"web\"}'}\n",
            "    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n",
            "  - name: p99\n    metric: {kind: histogram_quantile, selector: 'lat_seconds{job=\"web\"}', quantile: 0.99}\n",
            "    baseline: control\n    direction: increase\n    min_effect: \"+30%\"\n    action: rollback\n",
            "  - name: mean\n    metric: {kind: mean, selector: 'lat_seconds{job=\"web\"}'}\n",
            "    baseline: control\n    direction: increase\n    min_effect: \"+30%\"\n    action: rollback\n",
        ));
        assert_eq!(
            selectors(&r),
            vec![
                "php_errors_total{job=\"web\"}",
                "http_requests_total{job=\"web\"}",
                "lat_seconds_bucket{job=\"web\"}",
                "lat_seconds_sum{job=\"web\"}",
                "lat_seconds_count{job=\"web\"}",
            ]
        );
    }

    #[test]
    fn the_plan_reads_lookback_the_deploy_and_last_week() {
        let ev = |at: f64, kind: DeployEventKind| DeployEvent {
            at,
            deploy: Some("d1".into()),
            event: kind,
            service: None,
            version: None,
            commits: Vec::new(),
            canary: None,
            by: None,
            reason: None,
        };
        let events = vec![
            ev(100_000.0, DeployEventKind::Canary),
            ev(101_000.0, DeployEventKind::End),
        ];
        let p = plan(
            &[],
            &events,
            DurationMs::from_secs(60),
            DurationMs::from_secs(10),
        );
        assert_eq!(
            p.spans,
            vec![(
                Timestamp(100_000_000 - CONTROL_CALIBRATION.0 - 120_000),
                Timestamp(101_010_000)
            )]
        );
    }
}
