//! Delivery: carries outbox rows to their sinks, at least once, with the same signal id on
//! every try.
//!
//! One task per sink, so a slow or dead receiver delays only its own signals. Each task
//! takes the rows due now (oldest first; a resolve waits for the alert it resolves), tries
//! each within the sink's `timeout`, and on failure schedules the next try with exponential
//! backoff and full jitter ([`backoff`]: uniform in `[0, min(cap, base·2^(n-1))]`, so a
//! receiver down for an hour is retried at least every `cap` and gets everything soon after
//! it is back). A row still undelivered `max_age` after its decision is marked expired,
//! logged at error and counted (`immune_signals_expired_total`): never silently dropped.
//! `record` wakes the sink's task at once; otherwise it looks every `poll_interval`.
//!
//! The loop reads the wall clock (it is I/O at the edge); the schedule and expiry are pure
//! functions of `now` ([`backoff`], [`is_expired`]).

use super::outbox::DueRow;
use super::{Signals, SignalsError, Sink, SinkKind};
use crate::model::DurationMs;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Rows taken per look.
const BATCH: usize = 64;

/// The delay before retry number `failures` (1 after the first failure): full jitter over
/// `min(cap, base·2^(failures-1))`, with `u` uniform in `[0, 1)`.
pub fn backoff(failures: u32, base: DurationMs, cap: DurationMs, u: f64) -> DurationMs {
    let exp = failures.saturating_sub(1).min(62);
    let ceiling = base
        .0
        .max(1)
        .saturating_mul(1_i64.checked_shl(exp).unwrap_or(i64::MAX))
        .min(cap.0.max(1));
    DurationMs((u.clamp(0.0, 1.0) * ceiling as f64).floor() as i64)
}

/// Whether a signal decided at `created_ms` is past `max_age` at `now_ms`.
pub fn is_expired(created_ms: i64, now_ms: i64, max_age: DurationMs) -> bool {
    now_ms.saturating_sub(created_ms) >= max_age.0
}

/// The signals' own metrics.
pub(crate) struct Metrics {
    pending: IntGaugeVec,
    deliveries: IntCounterVec,
    duration: HistogramVec,
    expired: IntCounterVec,
    oldest: Gauge,
    write_failures: IntCounter,
    unrecorded: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, SignalsError> {
        let m = |e: prometheus::Error| SignalsError::Config(format!("metrics: {e}"));
        Ok(Metrics {
            pending: IntGaugeVec::new(
                Opts::new(
                    "immune_signals_pending",
                    "Signals in the outbox not yet delivered or expired.",
                ),
                &["sink"],
            )
            .map_err(m)?,
            deliveries: IntCounterVec::new(
                Opts::new(
                    "immune_signal_deliveries_total",
                    "Delivery attempts by result (success, failure).",
                ),
                &["sink", "result"],
            )
            .map_err(m)?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "immune_signal_delivery_duration_seconds",
                    "Time one delivery attempt took.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["sink"],
            )
            .map_err(m)?,
            expired: IntCounterVec::new(
                Opts::new(
                    "immune_signals_expired_total",
                    "Signals given up after max_age without a successful delivery.",
                ),
                &["sink"],
            )
            .map_err(m)?,
            oldest: Gauge::new(
                "immune_signals_oldest_pending_age_seconds",
                "Age of the oldest undelivered signal (0 when none).",
            )
            .map_err(m)?,
            write_failures: IntCounter::new(
                "immune_outbox_write_failures_total",
                "Attempts to write a batch of decisions to the outbox that failed (kept in memory and retried).",
            )
            .map_err(m)?,
            unrecorded: IntGauge::new(
                "immune_outbox_unrecorded_batches",
                "Batches of decisions kept in memory because the outbox could not write them.",
            )
            .map_err(m)?,
        })
    }

    /// One failed write of a batch of decisions.
    pub fn write_failed(&self) {
        self.write_failures.inc();
    }

    /// Batches waiting in memory.
    pub fn unrecorded(&self, n: usize) {
        self.unrecorded.set(n as i64);
    }

    pub fn register(&self, r: &Registry) {
        let cs: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(self.pending.clone()),
            Box::new(self.deliveries.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.expired.clone()),
            Box::new(self.oldest.clone()),
            Box::new(self.write_failures.clone()),
            Box::new(self.unrecorded.clone()),
        ];
        for c in cs {
            if let Err(e) = r.register(c) {
                tracing::warn!(error = %e, "Signals metric not registered.");
            }
        }
    }
}

/// Wall-clock milliseconds (the edge).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn std_dur(d: DurationMs) -> Duration {
    Duration::from_millis(d.0.max(0) as u64)
}

/// Runs `f` on the outbox off the runtime's worker threads (SQLite fsyncs).
async fn db<T: Send + 'static>(
    sig: &Signals,
    f: impl FnOnce(&mut super::outbox::Outbox) -> Result<T, SignalsError> + Send + 'static,
) -> Result<T, SignalsError> {
    let sig = sig.clone();
    tokio::task::spawn_blocking(move || sig.with_outbox(f))
        .await
        .map_err(|e| SignalsError::Store(format!("outbox task: {e}")))?
}

pub(crate) fn spawn(sig: Signals, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for sink in &sig.inner.sinks {
            tasks.spawn(sink_loop(sig.clone(), sink.clone(), shutdown.clone()));
        }
        tasks.spawn(gauge_loop(sig.clone(), shutdown.clone()));
        tasks.spawn(retry_loop(sig.clone(), shutdown.clone()));
        while tasks.join_next().await.is_some() {}
    })
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

/// Writes decisions kept in memory (the outbox could not write them) once it can again.
async fn retry_loop(sig: Signals, mut shutdown: watch::Receiver<bool>) {
    loop {
        if wait_or_shutdown(&mut shutdown, std_dur(sig.inner.poll_interval)).await {
            return;
        }
        let s = sig.clone();
        match tokio::task::spawn_blocking(move || s.retry_unrecorded()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Decisions still cannot be written to the outbox; kept in memory, retrying.")
            }
            Err(e) => tracing::error!(error = %e, "Outbox retry task failed."),
        }
    }
}

async fn gauge_loop(sig: Signals, mut shutdown: watch::Receiver<bool>) {
    let mut last_prune = 0_i64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let prune = now - last_prune > 3_600_000;
        let r = db(&sig, move |ob| {
            let pruned = if prune { ob.prune(now)? } else { 0 };
            Ok((ob.pending_by_sink()?, ob.oldest_pending_ms()?, pruned))
        })
        .await;
        match r {
            Ok((pending, oldest, pruned)) => {
                let m = &sig.inner.metrics;
                for s in &sig.inner.sinks {
                    m.pending.with_label_values(&[s.name.as_str()]).set(0);
                }
                for (s, n) in pending {
                    m.pending.with_label_values(&[s.as_str()]).set(n);
                }
                m.oldest
                    .set(oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0));
                if prune {
                    last_prune = now;
                    if pruned > 0 {
                        tracing::debug!(rows = pruned, "Settled signals pruned from the outbox.");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "Outbox gauges could not be read."),
        }
        if wait_or_shutdown(&mut shutdown, std_dur(sig.inner.poll_interval)).await {
            return;
        }
    }
}

async fn sink_loop(sig: Signals, sink: Arc<Sink>, mut shutdown: watch::Receiver<bool>) {
    let Some(wake) = sig.inner.wake.get(&sink.name).cloned() else {
        return;
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let name = sink.name.clone();
        let rows = match db(&sig, move |ob| ob.due(&name, now, BATCH)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(sink = %sink.name, error = %e, "Outbox read failed; retrying.");
                Vec::new()
            }
        };
        let full = rows.len() == BATCH;
        for row in rows {
            let stop = tokio::select! {
                _ = attempt(&sig, &sink, row) => false,
                r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
            };
            if stop {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std_dur(sig.inner.poll_interval)) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

async fn attempt(sig: &Signals, sink: &Sink, row: DueRow) {
    let m = &sig.inner.metrics;
    let name = sink.name.as_str();
    let now = now_ms();
    if is_expired(row.created_ms, now, sink.retry.max_age) {
        tracing::error!(
            sink = name, signal_id = %row.id, attempts = row.attempts,
            deploy = row.body.get("deploy").and_then(|v| v.as_str()).unwrap_or(""),
            decision = row.body.get("decision").and_then(|v| v.as_str()).unwrap_or(""),
            max_age = %sink.retry.max_age,
            "Signal expired undelivered; the deploy system never got this decision."
        );
        m.expired.with_label_values(&[name]).inc();
        let id = row.id.clone();
        if let Err(e) = db(sig, move |ob| ob.mark_expired(&id, now)).await {
            tracing::error!(sink = name, error = %e, "Outbox write failed.");
        }
        return;
    }
    let timeout = std_dur(sink.retry.timeout);
    let started = std::time::Instant::now();
    let result = match &sink.kind {
        SinkKind::Webhook(w) => {
            super::webhook::deliver(
                &sig.inner.client,
                w,
                name,
                &row,
                &sig.inner.public_url,
                now / 1000,
                timeout,
            )
            .await
        }
        SinkKind::Alertmanager(a) => {
            super::alertmanager::deliver(&sig.inner.client, a, &row, timeout).await
        }
        SinkKind::Exec(e) => super::exec::deliver(e, &row, timeout).await,
    };
    m.duration
        .with_label_values(&[name])
        .observe(started.elapsed().as_secs_f64());
    let id = row.id.clone();
    let done = now_ms();
    let write = match result {
        Ok(()) => {
            m.deliveries.with_label_values(&[name, "success"]).inc();
            tracing::info!(sink = name, signal_id = %row.id, attempts = row.attempts + 1, "Signal delivered.");
            db(sig, move |ob| ob.mark_delivered(&id, done)).await
        }
        Err(reason) => {
            m.deliveries.with_label_values(&[name, "failure"]).inc();
            let failures = row.attempts + 1;
            let delay = backoff(
                failures,
                sink.retry.backoff_base,
                sink.retry.backoff_cap,
                rand::random::<f64>(),
            );
            tracing::warn!(
                sink = name, signal_id = %row.id, attempts = failures, error = %reason,
                retry_in = %delay, "Signal delivery failed; will retry."
            );
            db(sig, move |ob| ob.mark_failed(&id, done + delay.0, &reason)).await
        }
    };
    if let Err(e) = write {
        tracing::error!(sink = name, error = %e, "Outbox write failed; the attempt will be repeated.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let base = DurationMs::from_secs(1);
        let cap = DurationMs::from_secs(300);
        assert_eq!(backoff(1, base, cap, 0.999_999), DurationMs(999));
        assert_eq!(backoff(2, base, cap, 0.999_999), DurationMs(1999));
        assert_eq!(backoff(4, base, cap, 0.5), DurationMs(4000));
        assert_eq!(backoff(9, base, cap, 0.999_999), DurationMs(255_999));
        assert_eq!(backoff(10, base, cap, 0.999_999), DurationMs(299_999));
        assert_eq!(backoff(1000, base, cap, 0.999_999), DurationMs(299_999));
        assert_eq!(backoff(3, base, cap, 0.0), DurationMs(0));
    }

    #[test]
    fn expiry_is_inclusive_of_max_age() {
        let day = DurationMs::from_secs(86_400);
        assert!(!is_expired(0, day.0 - 1, day));
        assert!(is_expired(0, day.0, day));
        assert!(!is_expired(1000, 0, day));
    }
}
