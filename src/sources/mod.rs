//! Sources: tasks that read metrics from the outside world and hand them to the engine.
//!
//! One file per kind: [`mysql`] (`SHOW GLOBAL STATUS`, replica lag, business queries),
//! [`memcached`] (`stats`), [`scrape`] (any exporter's /metrics), [`promql`] (instant
//! queries against a Prometheus-compatible API), [`push`] (HTTP push of text format and
//! Prometheus remote_write, mounted by the API) and [`sim`] (the fleet simulator, for the
//! demo). A polling source implements [`Poller`]; [`run_poller`] gives it its own task,
//! interval and timeout from a [`SourceContext`] (engine handle, metrics, clock, shutdown),
//! so the source never makes its own channel or clock.
//!
//! # Bounded flow
//!
//! The engine reads one bounded channel. Polling sources offer each round's batch with
//! `try_send`: when the channel is full the batch is **refused** and counted
//! (`immune_engine_dropped_batches_total`) and the source carries on with its next round, so
//! a slow engine sheds load visibly instead of stalling every source (the engine's
//! `on_missing` rules see the gap like any other silence). Push and remote_write are
//! acknowledged protocols: they **wait** for room and answer 2xx only once the batch is in
//! the channel, so an acknowledged sample is never lost (the sender retries otherwise).
//! New series beyond `engine.max_series` are refused by the engine and counted
//! (`immune_samples_refused_total`).
//!
//! # Failures
//!
//! Every poll runs under the source's timeout. A poll that errors or times out drops the
//! source's connection, sends the source's `up`-style series as 0, counts the error
//! (`immune_source_errors_total{source}`), and retries after an exponential backoff
//! (interval × 2ⁿ, at most [`MAX_BACKOFF`]); the source's data series simply stop, which is
//! what `on_missing` rules judge. No source can block another or the engine.

pub mod file_sd;
pub mod memcached;
pub mod mysql;
pub mod promql;
pub mod push;
pub mod remote_write;
pub mod scrape;
pub mod sim;

use crate::engine::handle::{EngineHandle, HandleError};
use crate::model::{Labels, Sample, Timestamp};
use crate::serve::Clock;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest wait between retries of a failing source.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why one poll failed. The message is logged; the kind is not branched on beyond "retry".
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connecting or talking to the service failed.
    #[error("{0}")]
    Io(String),
    /// The service answered something unreadable.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// The source's configuration is unusable.
    #[error("{0}")]
    Config(String),
}

/// The telemetry every source reports, one label value per source.
#[derive(Clone)]
pub struct SourceMetrics {
    errors: IntCounterVec,
    last_success: GaugeVec,
    duration: HistogramVec,
    samples: IntCounterVec,
}

impl SourceMetrics {
    /// Creates the families and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<SourceMetrics, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "immune_source_errors_total",
                "Failed or timed-out reads, by source.",
            ),
            &["source"],
        )?;
        let last_success = GaugeVec::new(
            Opts::new(
                "immune_source_last_success_timestamp_seconds",
                "When each source last read successfully (the agent's clock).",
            ),
            &["source"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "immune_source_duration_seconds",
                "How long each read took, failures included.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["source"],
        )?;
        let samples = IntCounterVec::new(
            Opts::new(
                "immune_source_samples_total",
                "Samples read by each source and offered to the engine.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(samples.clone()))?;
        Ok(SourceMetrics {
            errors,
            last_success,
            duration,
            samples,
        })
    }

    /// Makes the source's series exist (at zero) before its first read.
    pub fn touch(&self, source: &str) {
        self.errors.with_label_values(&[source]);
        self.samples.with_label_values(&[source]);
        self.duration.with_label_values(&[source]);
    }

    /// Counts one failed read.
    pub fn error(&self, source: &str) {
        self.errors.with_label_values(&[source]).inc();
    }

    /// Records one successful read of `samples` samples at `now`.
    pub fn success(&self, source: &str, now: Timestamp, samples: usize) {
        self.last_success
            .with_label_values(&[source])
            .set(now.as_secs_f64());
        self.samples
            .with_label_values(&[source])
            .inc_by(samples as u64);
    }

    /// Records how long a read took.
    pub fn observe(&self, source: &str, took: Duration) {
        self.duration
            .with_label_values(&[source])
            .observe(took.as_secs_f64());
    }
}

/// What a source gets from the agent: where its samples go, where it reports, what time
/// it is, and when to stop.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name in metrics and logs.
    pub name: String,
    /// The engine.
    pub engine: EngineHandle,
    /// Shared source telemetry.
    pub metrics: SourceMetrics,
    /// The agent's clock (wall clock, or the demo's simulated one).
    pub clock: Arc<dyn Clock>,
    /// Turns true when the agent stops.
    pub shutdown: watch::Receiver<bool>,
}

impl SourceContext {
    /// The same context under another source name.
    pub fn named(&self, name: impl Into<String>) -> SourceContext {
        SourceContext {
            name: name.into(),
            ..self.clone()
        }
    }

    /// Offers a batch to the engine (refused, and counted by the handle, when it is behind).
    /// Returns false when the engine has stopped.
    pub fn offer(&self, batch: Vec<Sample>) -> bool {
        if batch.is_empty() {
            return true;
        }
        match self.engine.send_samples(batch) {
            Ok(()) => true,
            Err(HandleError::Full) => {
                tracing::warn!(source = %self.name, "Engine is behind; batch dropped.");
                true
            }
            Err(HandleError::Stopped) => false,
        }
    }
}

/// A source read at an interval. `poll` may hold a connection across calls; after a
/// failure or a timeout `reset` is called, and the next `poll` reconnects.
pub trait Poller: Send + 'static {
    /// Reads once; `now` stamps samples that carry no time of their own.
    fn poll(
        &mut self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Sample>, SourceError>> + Send;

    /// Drops any connection after a failure.
    fn reset(&mut self);

    /// Samples that report the failure (an `up`-style series at 0).
    fn down(&self, now: Timestamp) -> Vec<Sample>;
}

/// Timing of a polling source.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Between the starts of two successful reads.
    pub interval: Duration,
    /// Longest one read may take.
    pub timeout: Duration,
}

/// The wait before retry number `failures` (1-based): interval × 2^(failures−1), capped.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

/// Runs `poller` until shutdown: one read per interval under the timeout, batches offered
/// to the engine, failures counted and retried with backoff.
pub async fn run_poller<P: Poller>(mut ctx: SourceContext, schedule: Schedule, mut poller: P) {
    ctx.metrics.touch(&ctx.name);
    let mut failures: u32 = 0;
    loop {
        if *ctx.shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let now = ctx.clock.now();
        let result = tokio::select! {
            r = tokio::time::timeout(schedule.timeout, poller.poll(now)) => r,
            _ = ctx.shutdown.changed() => return,
        };
        ctx.metrics.observe(&ctx.name, started.elapsed());
        let outcome = match result {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {:?}", schedule.timeout)),
        };
        let wait = match outcome {
            Ok(batch) => {
                if failures > 0 {
                    tracing::info!(source = %ctx.name, failures, "Source recovered.");
                }
                failures = 0;
                ctx.metrics.success(&ctx.name, ctx.clock.now(), batch.len());
                if !ctx.offer(batch) {
                    return;
                }
                schedule.interval.saturating_sub(started.elapsed())
            }
            Err(message) => {
                failures = failures.saturating_add(1);
                ctx.metrics.error(&ctx.name);
                poller.reset();
                let wait = backoff(schedule.interval, failures);
                tracing::warn!(source = %ctx.name, error = %message, failures, retry_in = %humantime::format_duration(wait), "Source read failed.");
                if !ctx.offer(poller.down(now)) {
                    return;
                }
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.shutdown.changed() => return,
        }
    }
}

/// Sorts labels by name, as the engine expects.
pub fn sorted(mut labels: Labels) -> Labels {
    labels.sort();
    labels
}

/// `host:port` of a URL, for default `instance` labels.
pub fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(i, 1), Duration::from_secs(1));
        assert_eq!(backoff(i, 2), Duration::from_secs(2));
        assert_eq!(backoff(i, 4), Duration::from_secs(8));
        assert_eq!(backoff(i, 40), MAX_BACKOFF);
        // An interval longer than the cap is never shortened.
        assert_eq!(backoff(Duration::from_secs(60), 3), Duration::from_secs(60));
    }

    #[test]
    fn host_port_strips_scheme_credentials_and_path() {
        assert_eq!(host_port("mysql://u:p@10.0.0.1:3306/shop"), "10.0.0.1:3306");
        assert_eq!(host_port("http://web-01:9100/metrics"), "web-01:9100");
        assert_eq!(host_port("127.0.0.1:11211"), "127.0.0.1:11211");
    }
}
