//! The live agent's side of the TSDB: what `serve` runs when a `history` section is
//! configured. Kept here rather than in `serve.rs` so the agent's wiring stays readable
//! and everything that talks to the TSDB lives in one module.
//!
//! - [`prefill`]: at start-up, every rule's recent windows (see [`super::prefill`]).
//! - [`SeasonFetcher`]: the thread that answers the engine's season requests (see
//!   `engine/season.rs`): for each deploy that starts, the season-ago spans of its
//!   seasonal rules, read per minute and handed back to the engine as data.
//! - [`ReloadFill`]: after a reload, the recent windows of the rules it added or changed.
//!
//! Every fetch runs on a blocking thread with the client's timeout and retries; none
//! stops the agent. A failure is logged and counted, and the rules it concerns stay
//! inconclusive with the reason until live data (or the next deploy's fetch) serves them.

use super::prefill::{self as fill, Filled};
use super::{Client, HistoryError, Tsdb};
use crate::api::metrics::AgentMetrics;
use crate::config::HistoryConfig;
use crate::engine::EngineConfig;
use crate::engine::handle::{EngineHandle, SeasonSink};
use crate::engine::season::{SeasonFill, SeasonRequest};
use crate::model::{Sample, Timestamp};
use crate::rules::Rule;
use crate::serve::ServeError;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The history counters on /metrics.
#[derive(Clone)]
pub struct HistoryMetrics {
    prefill_samples: IntCounter,
    prefill_failures: IntCounter,
    fetches: IntCounter,
    fetch_failures: IntCounter,
    fetch_samples: IntCounter,
    reload_samples: IntCounter,
}

impl HistoryMetrics {
    /// Creates and registers the counters.
    pub fn new(metrics: &AgentMetrics) -> Result<HistoryMetrics, ServeError> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, ServeError> {
            let c = IntCounter::new(name, help)?;
            metrics.registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(HistoryMetrics {
            prefill_samples: counter(
                "immune_history_prefill_samples_total",
                "Samples loaded from the history TSDB at start-up.",
            )?,
            prefill_failures: counter(
                "immune_history_prefill_failures_total",
                "Start-up fills from the history TSDB that failed or timed out.",
            )?,
            fetches: counter(
                "immune_history_fetches_total",
                "Seasonal spans asked for by deploys and fetched from the history TSDB (answered, failed or not).",
            )?,
            fetch_failures: counter(
                "immune_history_fetch_failures_total",
                "Seasonal spans the history TSDB could not serve (request failed).",
            )?,
            fetch_samples: counter(
                "immune_history_fetch_samples_total",
                "Per-minute values of seasonal spans loaded from the history TSDB.",
            )?,
            reload_samples: counter(
                "immune_history_reload_samples_total",
                "Samples loaded from the history TSDB for rules a reload added or changed.",
            )?,
        })
    }
}

/// Fills the engine's windows from the TSDB (see [`super::prefill`]) on a blocking
/// thread, within `prefill_timeout`. A failure is logged and counted
/// (`immune_history_prefill_failures_total`) and the agent starts anyway: rules whose
/// windows stay short are inconclusive and say so, they never pass for want of data.
/// Only an unusable `history` section (an unreadable secret file) stops start-up.
/// `since` is the start of the oldest deploy about to be resumed (`now` when none): the
/// windows reach back from there (see [`fill::plan`]).
pub async fn prefill(
    h: &HistoryConfig,
    rules: Vec<Rule>,
    cfg: &EngineConfig,
    now: Timestamp,
    since: Timestamp,
    engine: &EngineHandle,
    metrics: &HistoryMetrics,
) -> Result<(), ServeError> {
    let tsdb = h.tsdb()?;
    let plan = fill::plan(&rules, now, since, cfg.block, cfg.eval_interval);
    tracing::info!(
        url = %tsdb.url, selectors = plan.raw_selectors.len(),
        raw_from = plan.raw.0.as_secs_f64(),
        "Filling rule windows from the history TSDB."
    );
    let samples = metrics.prefill_samples.clone();
    let engine = engine.clone();
    let started = Instant::now();
    let (result, filled) = bounded(h, tsdb, plan, move |batch| {
        samples.inc_by(batch.len() as u64);
        engine
            .send_samples_blocking(batch)
            .map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(()) => tracing::info!(
            samples = filled.samples,
            requests = filled.requests,
            seconds = started.elapsed().as_secs_f64(),
            "Rule windows filled from history."
        ),
        Err(e) => {
            metrics.prefill_failures.inc();
            tracing::error!(
                error = %e, samples = metrics.prefill_samples.get(),
                "Filling rule windows from history failed; rules whose windows are short stay inconclusive until live data fills them."
            );
        }
    }
    Ok(())
}

/// Runs [`fill::fetch`] of `plan` on a blocking thread within `prefill_timeout`.
async fn bounded(
    h: &HistoryConfig,
    tsdb: Tsdb,
    plan: fill::Plan,
    mut sink: impl FnMut(Vec<Sample>) -> Result<(), String> + Send + 'static,
) -> (Result<(), HistoryError>, Filled) {
    let cancel = Arc::new(AtomicBool::new(false));
    let chunk = h.chunk.0;
    let job = {
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            let mut filled = Filled::default();
            let result = Client::new(&tsdb).and_then(|client| {
                fill::fetch(&client, &plan, chunk, &cancel, &mut filled, &mut sink)
            });
            (result, filled)
        })
    };
    let err = |message: String| HistoryError {
        url: h.url.clone(),
        message,
    };
    match tokio::time::timeout(h.prefill_timeout.std(), job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (
            Err(err(format!("the fill task failed: {e}"))),
            Filled::default(),
        ),
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            (
                Err(err(format!(
                    "prefill_timeout of {:?} reached; going on with what was loaded",
                    h.prefill_timeout.std()
                ))),
                Filled::default(),
            )
        }
    }
}

/// Answers the engine's season requests: [`SeasonFetcher::sink`] goes to the engine
/// thread (it only queues), [`SeasonFetcher::start`] starts the thread that fetches each
/// request in turn and hands the answer back. The thread ends when the engine thread
/// does (the queue's sender is dropped with it).
pub struct SeasonFetcher {
    tx: crossbeam_channel::Sender<SeasonRequest>,
    rx: crossbeam_channel::Receiver<SeasonRequest>,
    tsdb: Tsdb,
    metrics: HistoryMetrics,
}

impl SeasonFetcher {
    /// A fetcher reading from `h`.
    pub fn new(h: &HistoryConfig, metrics: &HistoryMetrics) -> Result<SeasonFetcher, ServeError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(SeasonFetcher {
            tx,
            rx,
            tsdb: h.tsdb()?,
            metrics: metrics.clone(),
        })
    }

    /// The engine thread's hook.
    pub fn sink(&self) -> SeasonSink {
        let tx = self.tx.clone();
        Box::new(move |requests| {
            for r in requests {
                let _ = tx.send(r);
            }
        })
    }

    /// Starts fetching for `engine`.
    pub fn start(self, engine: EngineHandle) -> std::io::Result<()> {
        let SeasonFetcher {
            tx,
            rx,
            tsdb,
            metrics,
        } = self;
        drop(tx);
        std::thread::Builder::new()
            .name("immune-seasons".into())
            .spawn(move || {
                let client = Client::new(&tsdb);
                while let Ok(req) = rx.recv() {
                    let started = Instant::now();
                    let fill = match &client {
                        Ok(c) => fetch_season(c, &req),
                        Err(e) => SeasonFill {
                            deploy: req.deploy.clone(),
                            spans: req
                                .spans
                                .iter()
                                .map(|s| (s.clone(), Err(e.to_string())))
                                .collect(),
                        },
                    };
                    for (span, result) in &fill.spans {
                        metrics.fetches.inc();
                        match result {
                            Ok(samples) => {
                                metrics.fetch_samples.inc_by(samples.len() as u64);
                                tracing::info!(
                                    deploy = %req.deploy, rule = %span.rule, minutes = samples.len(),
                                    from = span.from.as_secs_f64(), to = span.to.as_secs_f64(),
                                    seconds = started.elapsed().as_secs_f64(),
                                    "Seasonal baseline read from the history TSDB."
                                );
                            }
                            Err(e) => {
                                metrics.fetch_failures.inc();
                                tracing::error!(
                                    deploy = %req.deploy, rule = %span.rule, error = %e,
                                    "Seasonal baseline could not be read from the history TSDB; the rule stays inconclusive for this deploy."
                                );
                            }
                        }
                    }
                    if engine.send_season_fill_blocking(fill).is_err() {
                        return;
                    }
                }
            })
            .map(|_| ())
    }
}

/// Reads every span of `req`, per minute.
pub fn fetch_season(client: &Client, req: &SeasonRequest) -> SeasonFill {
    let spans = req
        .spans
        .iter()
        .map(|span| {
            let mut requests = 0;
            let mut out = Vec::new();
            for sel in &span.selectors {
                match fill::minutes(client, sel, span.from, span.to, &mut requests) {
                    Ok(s) => out.extend(s),
                    Err(e) => return (span.clone(), Err(e.to_string())),
                }
            }
            (span.clone(), Ok(out))
        })
        .collect();
    SeasonFill {
        deploy: req.deploy.clone(),
        spans,
    }
}

/// After a reload: fills the recent windows of the rules it added or changed (their
/// selectors or baseline differ from the rules in force before), as at start-up.
pub struct ReloadFill {
    h: HistoryConfig,
    cfg: EngineConfig,
    rules: Mutex<Vec<Rule>>,
    metrics: HistoryMetrics,
}

impl ReloadFill {
    /// For an agent that started with `rules`.
    pub fn new(
        h: &HistoryConfig,
        cfg: &EngineConfig,
        rules: Vec<Rule>,
        metrics: &HistoryMetrics,
    ) -> ReloadFill {
        ReloadFill {
            h: h.clone(),
            cfg: cfg.clone(),
            rules: Mutex::new(rules),
            metrics: metrics.clone(),
        }
    }

    /// Fills what `rules` (just handed to the engine) read that the previous rules did
    /// not; returns how many samples were stored.
    pub async fn after_reload(&self, rules: &[Rule], now: Timestamp, engine: &EngineHandle) -> u64 {
        let fresh = {
            let Ok(mut old) = self.rules.lock() else {
                return 0;
            };
            let fresh = changed(&old, rules);
            *old = rules.to_vec();
            fresh
        };
        if fresh.is_empty() {
            return 0;
        }
        let tsdb = match self.h.tsdb() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "History section unusable; rules added by the reload are not filled.");
                return 0;
            }
        };
        let plan = fill::plan(&fresh, now, now, self.cfg.block, self.cfg.eval_interval);
        let collected = Arc::new(Mutex::new(Vec::new()));
        let (result, filled) = {
            let collected = collected.clone();
            bounded(&self.h, tsdb, plan, move |batch| {
                if let Ok(mut c) = collected.lock() {
                    c.extend(batch);
                }
                Ok(())
            })
            .await
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "Filling the rules a reload added from history failed; their windows fill live.");
            return 0;
        }
        let samples = collected
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        // Oldest-first chunks go in as one batch: the store adds what is older than its
        // oldest point per series, which it can only tell with the whole span at hand.
        let stored = engine.backfill(samples).await.unwrap_or(0);
        self.metrics.reload_samples.inc_by(stored);
        tracing::info!(
            rules = fresh.len(),
            samples = filled.samples,
            stored,
            requests = filled.requests,
            "Rules added by the reload filled from history."
        );
        stored
    }
}

/// The rules of `new` that `old` does not have with the same selectors and baseline.
pub fn changed(old: &[Rule], new: &[Rule]) -> Vec<Rule> {
    new.iter()
        .filter(|r| {
            !old.iter().any(|o| {
                o.name == r.name
                    && o.baseline == r.baseline
                    && super::rule_selectors(o) == super::rule_selectors(r)
            })
        })
        .cloned()
        .collect()
}
