//! `immune replay`: the engine run over files, on the files' clock.
//!
//! Metrics are OpenMetrics or Prometheus text with a timestamp on every sample, in time
//! order; deploys are JSON Lines of [`DeployEvent`]. Both are streamed: memory is the
//! engine's (bounded by its windows and series limit), not the files'. The two streams are
//! merged by time: before the first sample of a new instant, every deploy event and every
//! evaluation tick earlier than it is applied, so an analysis sees exactly the samples
//! that preceded it. Decisions go to the writer as JSON Lines, nothing else does.
//!
//! The metrics are read, cut into lines and read ahead on a thread of their own
//! (`replay/reader.rs`), so the engine's thread only matches each line's series and stores it:
//! promtool, the comparison, uses both cores.

use crate::engine::{Engine, EngineError};
use crate::model::{Decision, DeployEvent, Timestamp};
use crate::textformat::{self, Line, TimestampUnit};
use std::io::{BufRead, Read, Write};

mod reader;

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
    /// Writing decisions failed. The I/O error is part of the message, not a `source`,
    /// so an error chain printed with `{:#}` says it once.
    #[error("cannot write decisions: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ReplayError {
    fn from(e: std::io::Error) -> Self {
        ReplayError::Io(e)
    }
}

/// Reads one line into `buf` (without checking UTF-8 first), then checks it: an invalid
/// byte or a failed read is an error naming the file and line, not a bare I/O message.
fn read_line(
    input: &mut impl BufRead,
    bytes: &mut Vec<u8>,
    buf: &mut String,
    file: &str,
    line: usize,
) -> Result<bool, ReplayError> {
    bytes.clear();
    buf.clear();
    let err = |message: String| ReplayError::Input {
        file: file.to_string(),
        line,
        message,
    };
    let n = input
        .read_until(b'\n', bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if n == 0 {
        return Ok(false);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => buf.push_str(text),
        Err(e) => {
            return Err(err(format!(
                "invalid UTF-8 at byte {} of the line",
                e.valid_up_to() + 1
            )));
        }
    }
    Ok(true)
}

/// How a sample line's series was found: predicted by the series cache (the length of
/// its text at the start of the line), or parsed (its text).
enum Series<'a> {
    Predicted(usize),
    Text(&'a str),
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
    /// Samples at or before their series' newest time, dropped (as Prometheus does).
    pub out_of_order: u64,
    /// Of those, samples repeating their series' newest time exactly.
    pub duplicates: u64,
    /// Things worth saying about the input that did not stop the replay (for stderr).
    pub warnings: Vec<String>,
}

struct DeployReader<R> {
    name: String,
    input: R,
    line_no: usize,
    buf: String,
    bytes: Vec<u8>,
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
            if !read_line(
                &mut self.input,
                &mut self.bytes,
                &mut self.buf,
                &self.name,
                self.line_no + 1,
            )? {
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
///
/// The metrics are read on a thread of their own (joined before this returns) when they
/// are longer than one block, so `metrics` must be `Send`; it needs no buffering of its
/// own (it is read in blocks of a megabyte).
pub fn run(
    engine: &mut Engine,
    metrics: Input<impl Read + Send>,
    deploys: Input<impl BufRead>,
    options: Options,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    run_in_blocks(engine, metrics, deploys, options, out, reader::BLOCK)
}

/// [`run`], reading the metrics in blocks of `block_size` bytes (tests use small ones).
fn run_in_blocks(
    engine: &mut Engine,
    metrics: Input<impl Read + Send>,
    deploys: Input<impl BufRead>,
    options: Options,
    out: &mut dyn Write,
    block_size: usize,
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
        bytes: Vec::new(),
        peeked: None,
        last: None,
    };
    let interval = eval_interval_ms.max(1);
    let mut clock = Clock {
        next_tick: None,
        interval,
        fresh: false,
    };
    let mut last_at: Option<Timestamp> = None;
    let mut line_no = 0usize;
    let mut parser = textformat::Parser::new(unit);
    let mut series_cache = crate::engine::store::SeriesCache::new();
    let (ooo_before, dup_before) = (
        engine.store().out_of_order_samples,
        engine.store().duplicate_samples,
    );
    let mut eof_at: Option<usize> = None;
    let merr = |line: usize, message: String| ReplayError::Input {
        file: metrics_name.to_string(),
        line,
        message,
    };
    let lines = reader::BlockReader::new(metrics.reader, unit, block_size);
    std::thread::scope(|scope| -> Result<(), ReplayError> {
        let (mut next, mut blocks) = reader::Blocks::start(lines, scope);
        loop {
            let block = match next {
                Ok(Some(block)) => block,
                Ok(None) => return Ok(()),
                Err(e) => return Err(merr(line_no + 1, format!("cannot read: {e}"))),
            };
            for (bytes, read) in block.lines() {
                line_no += 1;
                // The fast path: the reader thread read the line's value and timestamp
                // and split off its series text, and the text is the one the cache
                // predicts (the series that followed the previous one last time): one
                // comparison, no lookup; and since the cache's texts are series texts as
                // parsed, a line starting with one and whitespace has that series. Anything
                // else (another series, a line not read ahead, after `# EOF`) takes the
                // full path below, which gives the errors.
                let known = read.series > 0
                    && eof_at.is_none()
                    && series_cache
                        .predicted(engine.store())
                        .is_some_and(|(p, _)| bytes.get(..read.series) == Some(p));
                let (series, value, at) = if known {
                    (Series::Predicted(read.series), read.value, read.at)
                } else {
                    let text = match std::str::from_utf8(bytes) {
                        Ok(text) => text,
                        Err(e) => {
                            return Err(merr(
                                line_no,
                                format!(
                                    "invalid UTF-8 at byte {} of the line",
                                    e.valid_up_to() + 1
                                ),
                            ));
                        }
                    };
                    let text = text.trim_end_matches('\n');
                    if let Some(eof) = eof_at {
                        if text.trim().is_empty() {
                            continue;
                        }
                        return Err(merr(
                            line_no,
                            format!(
                                "content after `# EOF` (line {eof}): OpenMetrics ends at `# EOF`"
                            ),
                        ));
                    }
                    let sample = match parser.parse(text) {
                        Ok(Line::Sample(s)) => s,
                        Ok(Line::Eof) => {
                            eof_at = Some(line_no);
                            continue;
                        }
                        Ok(_) => continue,
                        Err(e) => return Err(merr(line_no, e.to_string())),
                    };
                    let at = sample.at.ok_or_else(|| {
                        merr(
                            line_no,
                            "sample has no timestamp; replay needs one on every sample".into(),
                        )
                    })?;
                    (Series::Text(sample.series), sample.value, at)
                };
                // A sample older than the replay's clock is not a reason to stop: it goes
                // to its series, which drops it if that series already has a newer (or
                // the same) time, as Prometheus does, and the drop is counted.
                if last_at.is_none_or(|last| at > last) {
                    clock
                        .next_tick
                        .get_or_insert(Timestamp(at.0 - at.0.rem_euclid(interval) + interval));
                    advance(
                        engine,
                        &mut deploys,
                        &mut clock,
                        at,
                        true,
                        out,
                        &mut summary,
                    )?;
                    last_at = Some(at);
                }
                let stored = match series {
                    Series::Predicted(len) => {
                        if engine.ingest_predicted(&mut series_cache, value, at) {
                            Ok(())
                        } else {
                            // A series expired while the clock advanced: look the text up.
                            let text = std::str::from_utf8(&bytes[..len])
                                .map_err(|e| merr(line_no, format!("invalid UTF-8: {e}")))?;
                            engine.ingest_text_cached(&mut series_cache, text, value, at)
                        }
                    }
                    Series::Text(text) => {
                        engine.ingest_text_cached(&mut series_cache, text, value, at)
                    }
                };
                match stored {
                    Ok(()) => {
                        summary.samples += 1;
                        clock.fresh = true;
                    }
                    Err(EngineError::Store(crate::engine::store::StoreError::SeriesLimit {
                        ..
                    })) => summary.refused += 1,
                    Err(e) => return Err(merr(line_no, e.to_string())),
                }
            }
            blocks.recycle(block);
            next = blocks.next();
        }
    })?;
    summary.out_of_order = engine.store().out_of_order_samples - ooo_before;
    summary.duplicates = engine.store().duplicate_samples - dup_before;
    if summary.out_of_order > 0 {
        summary.warnings.push(format!(
            "{metrics_name}: dropped {} out-of-order samples ({} of them duplicates: same series, same time)",
            summary.out_of_order, summary.duplicates
        ));
    }
    let openmetrics = unit == TimestampUnit::Seconds
        || metrics_name.ends_with(".om")
        || metrics_name.ends_with(".openmetrics");
    if eof_at.is_none() && openmetrics && line_no > 0 {
        // A warning, not an error: Prometheus text 0.0.4 has no end marker, and a file cut
        // short still replays what it holds; but a truncated export should not go unseen.
        summary.warnings.push(format!(
            "{metrics_name}:{line_no}: no `# EOF` at the end of OpenMetrics input; it may be truncated"
        ));
    }
    // Evaluate up to the last sample, then apply the remaining events without ticking past
    // the data (silence after the end of a file is not a lock-up).
    let end = last_at.unwrap_or_default();
    if clock.next_tick.is_some() {
        advance(
            engine,
            &mut deploys,
            &mut clock,
            end.add(crate::model::DurationMs(1)),
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

/// The replay's evaluation clock: ticks on a grid of `interval`, jumping across stretches
/// in which nothing could change.
struct Clock {
    next_tick: Option<Timestamp>,
    interval: i64,
    /// Samples arrived since the last tick.
    fresh: bool,
}

impl Clock {
    /// The first grid point at or after `t`.
    fn align_up(&self, t: Timestamp) -> Timestamp {
        let r = t.0.rem_euclid(self.interval);
        if r == 0 {
            t
        } else {
            Timestamp(t.0.saturating_add(self.interval - r))
        }
    }
}

/// Applies deploy events and ticks strictly before `until`, in time order (an event before
/// a tick at the same instant). While samples flow, every grid tick runs; after a tick that
/// saw no new sample, the clock jumps to the next instant that could change anything (the
/// engine's [`Engine::next_change`], the next deploy event, or the next sample), so a gap
/// in the data costs a few ticks, not one per interval.
fn advance<R: BufRead>(
    engine: &mut Engine,
    deploys: &mut DeployReader<R>,
    clock: &mut Clock,
    until: Timestamp,
    ticking: bool,
    out: &mut dyn Write,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    loop {
        let Some(next_tick) = clock.next_tick else {
            return Ok(());
        };
        let event_at = deploys.peek()?.map(|p| p.2).filter(|t| *t < until);
        let tick_at = Some(next_tick).filter(|t| ticking && *t < until);
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
                let mut next = Timestamp(t.0.saturating_add(clock.interval));
                if !std::mem::take(&mut clock.fresh) {
                    let event = deploys.peek()?.map(|p| p.2);
                    let target = [engine.next_change(t), event, Some(until)]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(until);
                    next = next.max(clock.align_up(target));
                }
                clock.next_tick = Some(next);
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

#[cfg(test)]
mod tests;
