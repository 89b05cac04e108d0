//! `immune replay`: the engine run over files, on the files' clock.
//!
//! Metrics are OpenMetrics or Prometheus text with a timestamp on every sample, in time
//! order; deploys are JSON Lines of [`DeployEvent`]. Both are streamed: memory is the
//! engine's (bounded by its windows and series limit), not the files'. The two streams are
//! merged by time: before the first sample of a new instant, every deploy event and every
//! evaluation tick earlier than it is applied, so an analysis sees exactly the samples
//! that preceded it. Decisions go to the writer as JSON Lines, nothing else does.

use crate::engine::{Engine, EngineError};
use crate::model::{Decision, DeployEvent, Timestamp};
use crate::textformat::{self, Line, TimestampUnit};
use std::io::{BufRead, Write};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Bad input, with the place it was found.
    #[error("{file}:{line}: {message}")]
    Input {
        /// File name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading input or writing decisions failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a replay did, for the log line at its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Samples read.
    pub samples: u64,
    /// Deploy events read.
    pub deploy_events: u64,
    /// Decisions written.
    pub decisions: u64,
    /// Samples refused by the series limit.
    pub refused: u64,
}

struct DeployReader<R> {
    name: String,
    input: R,
    line_no: usize,
    buf: String,
    peeked: Option<(usize, DeployEvent, Timestamp)>,
    last: Option<Timestamp>,
}

impl<R: BufRead> DeployReader<R> {
    fn err(&self, line: usize, message: impl Into<String>) -> ReplayError {
        ReplayError::Input {
            file: self.name.clone(),
            line,
            message: message.into(),
        }
    }

    fn peek(&mut self) -> Result<Option<&(usize, DeployEvent, Timestamp)>, ReplayError> {
        while self.peeked.is_none() {
            self.buf.clear();
            if self.input.read_line(&mut self.buf)? == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            let ev: DeployEvent = serde_json::from_str(text)
                .map_err(|e| self.err(self.line_no, format!("invalid deploy event: {e}")))?;
            let at = Timestamp::from_secs_f64(ev.at)
                .ok_or_else(|| self.err(self.line_no, format!("invalid time {}", ev.at)))?;
            if let Some(last) = self.last
                && at < last
            {
                return Err(self.err(
                    self.line_no,
                    format!(
                        "time goes backwards: {} after {}",
                        ev.at,
                        last.as_secs_f64()
                    ),
                ));
            }
            self.last = Some(at);
            self.peeked = Some((self.line_no, ev, at));
        }
        Ok(self.peeked.as_ref())
    }
}

/// A named input stream (the name goes into error messages).
pub struct Input<R> {
    /// The file name as the user gave it (`-` for standard input).
    pub name: String,
    /// The stream.
    pub reader: R,
}

impl<R> Input<R> {
    /// Names a stream.
    pub fn new(name: impl Into<String>, reader: R) -> Input<R> {
        Input {
            name: name.into(),
            reader,
        }
    }
}

/// How to read the metrics and how often to evaluate.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The metrics' timestamp unit.
    pub unit: TimestampUnit,
    /// Evaluation interval in milliseconds of the data's clock.
    pub eval_interval_ms: i64,
}

/// Replays `metrics` and `deploys` through `engine`, writing decisions to `out`.
pub fn run(
    engine: &mut Engine,
    metrics: Input<impl BufRead>,
    deploys: Input<impl BufRead>,
    options: Options,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let Options {
        unit,
        eval_interval_ms,
    } = options;
    let metrics_name = metrics.name.as_str();
    let (deploys_name, deploys) = (deploys.name, deploys.reader);
    let mut summary = ReplaySummary::default();
    let mut deploys = DeployReader {
        name: deploys_name.to_string(),
        input: deploys,
        line_no: 0,
        buf: String::new(),
        peeked: None,
        last: None,
    };
    let interval = eval_interval_ms.max(1);
    let mut next_tick: Option<Timestamp> = None;
    let mut last_at: Option<Timestamp> = None;
    let mut line_no = 0usize;
    let mut metrics = metrics.reader;
    let mut buf = String::new();
    let merr = |line: usize, message: String| ReplayError::Input {
        file: metrics_name.to_string(),
        line,
        message,
    };
    loop {
        buf.clear();
        if metrics.read_line(&mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let text = buf.trim_end_matches('\n');
        let sample = match textformat::parse_line(text, unit) {
            Ok(Line::Sample(s)) => s,
            Ok(Line::Eof) => break,
            Ok(_) => continue,
            Err(e) => return Err(merr(line_no, e.to_string())),
        };
        let at = sample.at.ok_or_else(|| {
            merr(
                line_no,
                "sample has no timestamp; replay needs one on every sample".into(),
            )
        })?;
        if let Some(last) = last_at
            && at < last
        {
            return Err(merr(
                line_no,
                format!(
                    "time goes backwards: {} after {}",
                    at.as_secs_f64(),
                    last.as_secs_f64()
                ),
            ));
        }
        if last_at != Some(at) {
            let tick =
                next_tick.get_or_insert(Timestamp(at.0 - at.0.rem_euclid(interval) + interval));
            advance(
                engine,
                &mut deploys,
                tick,
                interval,
                at,
                true,
                out,
                &mut summary,
            )?;
            last_at = Some(at);
        }
        match engine.ingest_text(sample.series, sample.value, at) {
            Ok(()) => summary.samples += 1,
            Err(EngineError::Store(crate::engine::store::StoreError::SeriesLimit { .. })) => {
                summary.refused += 1
            }
            Err(e) => return Err(merr(line_no, e.to_string())),
        }
    }
    // Evaluate up to the last sample, then apply the remaining events without ticking past
    // the data (silence after the end of a file is not a lock-up).
    let end = last_at.unwrap_or_default();
    if let Some(tick) = next_tick.as_mut() {
        advance(
            engine,
            &mut deploys,
            tick,
            interval,
            Timestamp(end.0 + 1),
            true,
            out,
            &mut summary,
        )?;
    }
    let mut last_event = end;
    while let Some((line, ev, at)) = deploys.peek()?.cloned() {
        deploys.peeked = None;
        summary.deploy_events += 1;
        last_event = last_event.max(at);
        let ds = engine
            .deploy_event(&ev)
            .map_err(|e| deploys.err(line, e.to_string()))?;
        emit(out, &ds, &mut summary)?;
    }
    let ds = engine.finish_all(last_event);
    emit(out, &ds, &mut summary)?;
    out.flush()?;
    Ok(summary)
}

/// Applies deploy events and ticks strictly before `until`, in time order (an event before
/// a tick at the same instant).
#[allow(clippy::too_many_arguments)]
fn advance<R: BufRead>(
    engine: &mut Engine,
    deploys: &mut DeployReader<R>,
    next_tick: &mut Timestamp,
    interval: i64,
    until: Timestamp,
    ticking: bool,
    out: &mut dyn Write,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    loop {
        let event_at = deploys.peek()?.map(|p| p.2).filter(|t| *t < until);
        let tick_at = Some(*next_tick).filter(|t| ticking && *t < until);
        match (event_at, tick_at) {
            (Some(e), t) if t.is_none_or(|t| e <= t) => {
                let Some((line, ev, _)) = deploys.peeked.take() else {
                    continue;
                };
                summary.deploy_events += 1;
                let ds = engine
                    .deploy_event(&ev)
                    .map_err(|e| deploys.err(line, e.to_string()))?;
                emit(out, &ds, summary)?;
            }
            (_, Some(t)) => {
                let ds = engine.tick(t);
                emit(out, &ds, summary)?;
                *next_tick = Timestamp(t.0 + interval);
            }
            _ => return Ok(()),
        }
    }
}

fn emit(
    out: &mut dyn Write,
    ds: &[Decision],
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    for d in ds {
        serde_json::to_writer(&mut *out, d).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        summary.decisions += 1;
    }
    Ok(())
}
