//! Signals: carrying decisions to whatever deploy system is in use, without ever losing one.
//!
//! Two directions:
//!
//! - **Pushed** (sinks): every decision is written to the [`outbox`] (SQLite, one
//!   transaction, on the engine thread) *before* any delivery is tried; the [`deliver`]
//!   loop then carries each row to its sink ([`webhook`], [`alertmanager`], [`exec`]) at
//!   least once, with the same signal id on every try, backing off exponentially with full
//!   jitter, and marks rows that stay undelivered past `max_age` as expired (logged at error
//!   and counted, never silently dropped).
//! - **Pulled** (gates): [`gates::gates_router`] answers Argo Rollouts, Flagger and
//!   `immune gate` ([`gate::gate`]) from the engine's live state; with a [`drive::Driver`]
//!   Flagger's webhooks and Argo's analysis also start and end deploys.
//!
//! The outbox also keeps what must survive a restart: deploys in flight
//! ([`Signals::resume_events`]), blocked lines ([`Signals::blocked_lines`]) and each
//! deploy's history ([`Signals::history`]).
//!
//! **A decision is never lost.** When the outbox cannot write (a full disk), the batch is
//! kept in memory ([`Signals::unrecorded`]), counted
//! (`immune_outbox_write_failures_total`) and retried, in order, before every later batch
//! and every `poll_interval` until it is written; then it is delivered like any other.
//! Meanwhile the gates answer "blocked" for its service (fail closed) and `/-/ready` says
//! why ([`Signals::writable`]).
//!
//! What `serve` calls, in order: [`Signals::open`]; [`Signals::blocked_lines`] (re-apply each
//! block to the engine) then [`Signals::resume_events`] (re-apply each event); hand
//! [`Signals::record`] to the engine thread as `on_decisions`; call
//! [`Signals::record_deploy_event`] for each deploy event the engine accepted (an `unblock`
//! event also resolves the alerts that blocked the line, see [`Signals::record_unblock`]);
//! [`Signals::spawn_delivery`]; [`Signals::register_metrics`]; mount [`gates_router`].

pub mod alertmanager;
mod checkpoint;
pub mod deliver;
pub mod drive;
pub mod exec;
pub mod gate;
pub mod gates;
mod journal;
pub mod outbox;
mod secret;
pub mod webhook;

pub use gate::{GateError, gate};
pub use gates::{GateOptions, gates_router, gates_router_with};
pub use secret::{Secret, redact_url};

use crate::model::{Decision, DecisionKind, DeployEvent, DeployEventKind, DurationMs};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Why signals failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalsError {
    /// The embedded store failed.
    #[error("outbox: {0}")]
    Store(String),
    /// The `signals:` configuration is unusable (duplicate sink names, missing secret...).
    #[error("signals config: {0}")]
    Config(String),
}

impl From<rusqlite::Error> for SignalsError {
    fn from(e: rusqlite::Error) -> Self {
        SignalsError::Store(e.to_string())
    }
}

/// A duration written as a Prometheus duration string (`500ms`, `10s`, `5m`, `24h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub DurationMs);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DurationMs::parse(&s)
            .filter(|d| d.0 > 0)
            .map(ConfigDuration)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} (expected e.g. 500ms, 10s, 5m, 24h)"
                ))
            })
    }
}

/// The `signals:` section of immune.yaml.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// HTTP endpoints that get each decision as a signed JSON POST (deploy bots, CD tools).
    #[serde(default)]
    pub webhooks: Vec<webhook::WebhookConfig>,
    /// Alertmanagers that get rollback/block/warn decisions as alerts, resolved on unblock.
    #[serde(default)]
    pub alertmanagers: Vec<alertmanager::AlertmanagerConfig>,
    /// Commands run once per decision (argv, no shell), for deploy tools driven by scripts.
    #[serde(default)]
    pub exec: Vec<exec::ExecConfig>,
    /// How often delivery looks for due signals when nothing wakes it (default `1s`); also
    /// how often decisions the outbox could not write are retried.
    #[serde(default)]
    pub poll_interval: Option<ConfigDuration>,
    /// How much deploy history (each deploy's record, served by `GET /api/v1/deploys/{id}`
    /// after a restart) is kept.
    #[serde(default)]
    pub history: HistoryConfig,
}

/// `signals.history`: retention of deploy records in the outbox.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Most deploys kept (default 1000); the deploys blocking a line are always kept.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Deploys whose latest decision is older than this are dropped (default `30d`).
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
}

impl HistoryConfig {
    fn retention(&self) -> outbox::HistoryRetention {
        let d = outbox::HistoryRetention::default();
        outbox::HistoryRetention {
            keep: self.keep.unwrap_or(d.keep),
            max_age_ms: self.max_age.map_or(d.max_age_ms, |a| a.0.0),
        }
    }
}

/// Which decisions a sink gets; the same keys on every sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Decision kinds sent.
    pub decisions: Vec<DecisionKind>,
    /// Services sent; empty means every service.
    pub services: Vec<String>,
    /// Whether decisions of shadow rules are sent.
    pub include_shadow: bool,
}

impl Filter {
    /// Whether `d` goes to this sink.
    pub fn matches(&self, d: &Decision) -> bool {
        self.decisions.contains(&d.decision)
            && (self.services.is_empty() || self.services.contains(&d.service))
            && (!d.shadow || self.include_shadow)
    }
}

/// How a sink retries; the same keys on every sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// One attempt's time limit.
    pub timeout: DurationMs,
    /// Undelivered signals older than this are expired (logged at error, counted).
    pub max_age: DurationMs,
    /// First retry delay ceiling; doubles per failure.
    pub backoff_base: DurationMs,
    /// Largest retry delay ceiling: bounds how long a recovered receiver waits.
    pub backoff_cap: DurationMs,
}

impl RetryPolicy {
    fn from_opts(
        timeout: Option<ConfigDuration>,
        max_age: Option<ConfigDuration>,
        base: Option<ConfigDuration>,
        cap: Option<ConfigDuration>,
    ) -> RetryPolicy {
        RetryPolicy {
            timeout: timeout.map_or(DurationMs::from_secs(10), |d| d.0),
            max_age: max_age.map_or(DurationMs::from_secs(86_400), |d| d.0),
            backoff_base: base.map_or(DurationMs::from_secs(1), |d| d.0),
            backoff_cap: cap.map_or(DurationMs::from_secs(300), |d| d.0),
        }
    }
}

/// What a sink does with a row.
#[derive(Debug)]
pub(crate) enum SinkKind {
    Webhook(webhook::Webhook),
    Alertmanager(alertmanager::Alertmanager),
    Exec(exec::Exec),
}

/// One configured sink, ready to deliver.
#[derive(Debug)]
pub(crate) struct Sink {
    pub name: String,
    pub filter: Filter,
    pub retry: RetryPolicy,
    pub kind: SinkKind,
}

/// The settings every sink config declares with the same names (name, filter, retry).
/// The three config structs repeat those fields because serde's `flatten` cannot be
/// combined with `deny_unknown_fields`; this macro keeps the code that reads them in one
/// place instead.
macro_rules! sink_from_common {
    ($($config:ty),+) => {$(
        impl $config {
            /// A sink of `kind` with this config's name, filter and retry policy;
            /// `default_decisions` applies when the config names none.
            pub(crate) fn sink(
                &self,
                default_decisions: &[crate::model::DecisionKind],
                kind: SinkKind,
            ) -> Sink {
                Sink {
                    name: self.name.clone(),
                    filter: Filter {
                        decisions: self
                            .decisions
                            .clone()
                            .unwrap_or_else(|| default_decisions.to_vec()),
                        services: self.services.clone(),
                        include_shadow: self.include_shadow,
                    },
                    retry: RetryPolicy::from_opts(
                        self.timeout,
                        self.max_age,
                        self.backoff_base,
                        self.backoff_cap,
                    ),
                    kind,
                }
            }
        }
    )+};
}

sink_from_common!(
    webhook::WebhookConfig,
    alertmanager::AlertmanagerConfig,
    exec::ExecConfig
);

impl Sink {
    /// Whether this sink gets `resolve` rows when a line is unblocked (alert-shaped sinks).
    pub fn takes_resolves(&self) -> bool {
        match &self.kind {
            SinkKind::Alertmanager(_) => true,
            SinkKind::Webhook(w) => w.format == webhook::WebhookFormat::AlertmanagerWebhook,
            SinkKind::Exec(_) => false,
        }
    }

    fn label(&self) -> &'static str {
        match self.kind {
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Alertmanager(_) => "alertmanager",
            SinkKind::Exec(_) => "exec",
        }
    }
}

/// A batch of decisions the outbox could not write yet, with the deciding deploys' views.
#[derive(Clone, Debug)]
struct Unrecorded {
    decisions: Vec<Decision>,
    views: Vec<serde_json::Value>,
    /// Set once the batch is in the decision journal: then only applying it is retried
    /// (journaling it again would log its decisions twice).
    journaled: Option<outbox::Journaled>,
}

pub(crate) struct Inner {
    pub outbox: Mutex<outbox::Outbox>,
    unrecorded: Mutex<Vec<Unrecorded>>,
    last_write_error: Mutex<Option<String>>,
    fail_writes: std::sync::atomic::AtomicBool,
    retention: outbox::HistoryRetention,
    pub sinks: Vec<Arc<Sink>>,
    pub wake: HashMap<String, Arc<Notify>>,
    pub public_url: String,
    pub poll_interval: DurationMs,
    pub metrics: deliver::Metrics,
    pub client: reqwest::Client,
}

/// The outbox and the state that survives restarts. Cheap to clone; usable from the engine
/// thread and from async tasks.
#[derive(Clone)]
pub struct Signals {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals")
            .field("sinks", &self.inner.sinks)
            .field("public_url", &self.inner.public_url)
            .finish()
    }
}

/// The file name of the outbox under the data directory.
pub const OUTBOX_FILE: &str = "signals.sqlite";

impl Signals {
    /// Opens (or creates) the store under `data_dir`. `public_url` is immune's own base
    /// URL, for links in signal bodies. Secrets are read here, so a missing secret file
    /// fails start-up rather than the first delivery.
    pub fn open(
        cfg: SignalsConfig,
        data_dir: &Path,
        public_url: String,
    ) -> Result<Signals, SignalsError> {
        let sinks = build_sinks(&cfg)?;
        std::fs::create_dir_all(data_dir).map_err(|e| {
            SignalsError::Store(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let outbox = outbox::Outbox::open(&data_dir.join(OUTBOX_FILE))?;
        let known: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        for (sink, n) in outbox.pending_by_sink()? {
            if !known.contains(&sink.as_str()) {
                tracing::warn!(
                    sink = %sink, pending = n,
                    "Signals are pending for a sink that is no longer configured; they stay in the outbox until it is configured again."
                );
            }
        }
        let wake = sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::new(Notify::new())))
            .collect();
        let client = reqwest::Client::builder()
            .user_agent(concat!("immune/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SignalsError::Config(format!("http client: {e}")))?;
        Ok(Signals {
            inner: Arc::new(Inner {
                outbox: Mutex::new(outbox),
                unrecorded: Mutex::new(Vec::new()),
                last_write_error: Mutex::new(None),
                fail_writes: std::sync::atomic::AtomicBool::new(false),
                retention: cfg.history.retention(),
                sinks: sinks.into_iter().map(Arc::new).collect(),
                wake,
                public_url: public_url.trim_end_matches('/').to_string(),
                poll_interval: cfg.poll_interval.map_or(DurationMs::from_secs(1), |d| d.0),
                metrics: deliver::Metrics::new()?,
                client,
            }),
        })
    }

    pub(crate) fn with_outbox<T>(
        &self,
        f: impl FnOnce(&mut outbox::Outbox) -> Result<T, SignalsError>,
    ) -> Result<T, SignalsError> {
        let mut ob = self
            .inner
            .outbox
            .lock()
            .map_err(|_| SignalsError::Store("outbox lock poisoned".into()))?;
        f(&mut ob)
    }

    fn wake(&self, sinks: &[String]) {
        for s in sinks {
            if let Some(n) = self.inner.wake.get(s) {
                n.notify_one();
            }
        }
    }

    /// Writes decisions durably (called on the engine thread before anything else): one
    /// append to the decision journal, then in one transaction the decision log, one signal
    /// row per (decision, matching sink), the line state and the deploy's end. Wakes
    /// delivery once committed.
    ///
    /// When the write fails the batch is kept in memory and retried (see the module doc);
    /// the error is still returned so the caller can log it.
    pub fn record(&self, decisions: &[Decision]) -> Result<(), SignalsError> {
        self.record_with_views(decisions, &[])
    }

    /// [`Signals::record`] with the deciding deploys' views (`Engine::deploy_view`), kept as
    /// deploy history in the same transaction.
    pub fn record_with_views(
        &self,
        decisions: &[Decision],
        views: &[serde_json::Value],
    ) -> Result<(), SignalsError> {
        self.record_then_views(decisions, &mut || views.to_vec())
    }

    /// [`Signals::record_with_views`], the views taken only once the decisions are durable:
    /// the journal append carries the decisions alone (a page or two, where the views are
    /// tens of KiB to build and write), and the views go into the same SQLite transaction as
    /// the decisions' rows. A crash between the two loses that deploy's newest view, never
    /// a decision. When the decisions cannot be journaled, the batch waits with its views.
    pub fn record_then_views(
        &self,
        decisions: &[Decision],
        views: &mut dyn FnMut() -> Vec<serde_json::Value>,
    ) -> Result<(), SignalsError> {
        let mut queue = self
            .inner
            .unrecorded
            .lock()
            .map_err(|_| SignalsError::Store("unrecorded decisions lock poisoned".into()))?;
        let mut batch = Unrecorded {
            decisions: decisions.to_vec(),
            views: Vec::new(),
            journaled: None,
        };
        // Behind a batch that is still waiting, this one waits too (order is kept).
        if queue.is_empty() && !self.failing_writes() {
            let journaled = self.with_outbox(|ob| {
                ob.journal(
                    decisions,
                    &[],
                    &self.inner.sinks,
                    &self.inner.public_url,
                    self.inner.retention,
                )
            });
            batch.journaled = journaled.ok();
        }
        batch.views = views();
        queue.push(batch);
        self.flush(&mut queue)
    }

    /// Whether writes fail on purpose (the failure seam of the full-disk tests).
    fn failing_writes(&self) -> bool {
        self.inner
            .fail_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the kept batches, oldest first, stopping at the first failure.
    fn flush(&self, queue: &mut Vec<Unrecorded>) -> Result<(), SignalsError> {
        while let Some(batch) = queue.first_mut() {
            let written = if self.failing_writes() {
                Err(SignalsError::Store(
                    "database or disk is full (injected failure)".into(),
                ))
            } else {
                self.with_outbox(|ob| {
                    let (url, retention) = (&self.inner.public_url, self.inner.retention);
                    let j = match &batch.journaled {
                        Some(j) => j.clone(),
                        None => {
                            let j = ob.journal(
                                &batch.decisions,
                                &batch.views,
                                &self.inner.sinks,
                                url,
                                retention,
                            )?;
                            batch.journaled = Some(j.clone());
                            j
                        }
                    };
                    ob.apply(&j, &batch.decisions, &batch.views, url, retention)
                })
            };
            match written {
                Ok(touched) => {
                    queue.remove(0);
                    self.wake(&touched);
                    if let Ok(mut e) = self.inner.last_write_error.lock() {
                        *e = None;
                    }
                }
                Err(e) => {
                    self.inner.metrics.write_failed();
                    if let Ok(mut last) = self.inner.last_write_error.lock() {
                        *last = Some(e.to_string());
                    }
                    self.inner.metrics.unrecorded(queue.len());
                    return Err(e);
                }
            }
        }
        self.inner.metrics.unrecorded(0);
        Ok(())
    }

    /// Writes an experiment's `stop` or `close` to the outbox for the sinks that list that
    /// kind (see [`outbox::Outbox::record_experiment`]) and wakes their delivery. Unlike a
    /// deploy decision, a failed write is not kept here: the caller keeps the decision and
    /// records it again (the id makes that safe).
    pub fn record_experiment(
        &self,
        kind: DecisionKind,
        key: &str,
        at: f64,
        body: &serde_json::Value,
    ) -> Result<(), SignalsError> {
        self.injected_failure()?;
        let touched =
            self.with_outbox(|ob| ob.record_experiment(kind, key, at, body, &self.inner.sinks))?;
        self.wake(&touched);
        Ok(())
    }

    /// Retries the decisions the outbox could not write; `Ok` once none is left.
    pub fn retry_unrecorded(&self) -> Result<(), SignalsError> {
        let mut queue = self
            .inner
            .unrecorded
            .lock()
            .map_err(|_| SignalsError::Store("unrecorded decisions lock poisoned".into()))?;
        if queue.is_empty() {
            return Ok(());
        }
        let n: usize = queue.iter().map(|b| b.decisions.len()).sum();
        let r = self.flush(&mut queue);
        if r.is_ok() {
            tracing::info!(
                decisions = n,
                "Decisions kept in memory are now written to the outbox."
            );
        }
        r
    }

    /// Decisions kept in memory because the outbox could not write them, oldest first.
    pub fn unrecorded(&self) -> Vec<Decision> {
        self.inner
            .unrecorded
            .lock()
            .map(|q| q.iter().flat_map(|b| b.decisions.iter().cloned()).collect())
            .unwrap_or_default()
    }

    /// The first unwritten decision of `service` that is not shadow, if any: the gates fail
    /// closed on it.
    pub fn unrecorded_for(&self, service: &str) -> Option<Decision> {
        self.unrecorded()
            .into_iter()
            .find(|d| d.service == service && !d.shadow)
    }

    /// `Ok` when the outbox can write now (a probe write succeeds) and no decision waits in
    /// memory; otherwise why not, for `/-/ready` and the deploy API.
    pub fn writable(&self, now_ms: i64) -> Result<(), String> {
        let waiting = self.unrecorded().len();
        if waiting > 0 {
            let why = self
                .inner
                .last_write_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            return Err(format!(
                "{waiting} decision(s) could not be written to the outbox and are kept in memory until it can ({why})"
            ));
        }
        if self
            .inner
            .fail_writes
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err("outbox: database or disk is full (injected failure)".into());
        }
        self.with_outbox(|ob| ob.probe(now_ms))
            .map_err(|e| format!("the outbox cannot write: {e}"))
    }

    /// The failure [`Signals::inject_write_failure`] injects, while on.
    fn injected_failure(&self) -> Result<(), SignalsError> {
        if self
            .inner
            .fail_writes
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(SignalsError::Store(
                "database or disk is full (injected failure)".into(),
            ));
        }
        Ok(())
    }

    /// Test seam: while `on`, every outbox write of decisions fails as on a full disk (the
    /// real full-disk test needs a small tmpfs, which not every test machine allows).
    #[doc(hidden)]
    pub fn inject_write_failure(&self, on: bool) {
        self.inner
            .fail_writes
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The stored record of `deploy` (its view as of its latest decision), when kept.
    pub fn history(&self, deploy: &str) -> Result<Option<serde_json::Value>, SignalsError> {
        self.with_outbox(|ob| ob.history(deploy))
    }

    /// Whether the outbox has any deploy of `service` (in flight or in history).
    pub fn knows_service(&self, service: &str) -> Result<bool, SignalsError> {
        self.with_outbox(|ob| ob.knows_service(service))
    }

    /// Marks a stored deploy done without resuming it (its events are unusable).
    pub fn forget_deploy(&self, deploy: &str, at: f64) -> Result<(), SignalsError> {
        self.with_outbox(|ob| ob.forget_deploy(deploy, at))
    }

    /// Remembers a deploy event so analyses can be resumed after a restart. Call it for each
    /// event the engine accepted. An `unblock` event also does [`Signals::record_unblock`].
    pub fn record_deploy_event(&self, ev: &DeployEvent) -> Result<(), SignalsError> {
        self.injected_failure()?;
        if ev.event == DeployEventKind::Unblock {
            let Some(service) = ev.service.as_deref() else {
                return Ok(());
            };
            return self.record_unblock(
                service,
                ev.by.as_deref().unwrap_or(""),
                ev.reason.as_deref().unwrap_or(""),
                ev.at,
            );
        }
        self.with_outbox(|ob| ob.record_deploy_event(ev))
    }

    /// The line of `service` was opened again: forgets the block and enqueues a `resolve`
    /// signal, for each alert-shaped sink, for every firing alert that blocked the line.
    /// Idempotent.
    pub fn record_unblock(
        &self,
        service: &str,
        by: &str,
        reason: &str,
        at: f64,
    ) -> Result<(), SignalsError> {
        let touched =
            self.with_outbox(|ob| ob.record_unblock(service, by, reason, at, &self.inner.sinks))?;
        self.wake(&touched);
        Ok(())
    }

    /// The deploy events to re-apply at start-up, oldest first: the `canary` (and `full`)
    /// events of deploys with no `end`/`abort` and no final decision. Apply
    /// [`Signals::blocked_lines`] first.
    ///
    /// A resumed analysis has lost its in-memory pre-deploy window: its evidence restarts
    /// from the restart, and each resumed deploy is logged saying so.
    pub fn resume_events(&self) -> Result<Vec<DeployEvent>, SignalsError> {
        let evs = self.with_outbox(|ob| ob.resume_events())?;
        for ev in evs.iter().filter(|e| e.event == DeployEventKind::Canary) {
            tracing::warn!(
                deploy = ev.deploy.as_deref().unwrap_or(""),
                service = ev.service.as_deref().unwrap_or(""),
                "Deploy resumed after restart; its pre-deploy window was lost, so its evidence restarts from now."
            );
        }
        Ok(evs)
    }

    /// The decisions already recorded for `deploy`, oldest first (see
    /// [`outbox::Outbox::decisions_of`]).
    pub fn decisions_of(&self, deploy: &str) -> Result<Vec<Decision>, SignalsError> {
        self.with_outbox(|ob| ob.decisions_of(deploy))
    }

    /// Each blocked line and the decision that blocked it, to re-apply at start-up (the
    /// engine blocks lines only through decisions, so `serve` restores them explicitly).
    pub fn blocked_lines(&self) -> Result<Vec<(String, Decision)>, SignalsError> {
        self.with_outbox(|ob| ob.blocked_lines())
    }

    /// Every signal row, newest first (at most `limit`), for the API and for tests.
    pub fn signals(&self, limit: usize) -> Result<Vec<outbox::SignalRow>, SignalsError> {
        self.with_outbox(|ob| ob.rows(limit))
    }

    /// Starts delivery (one task per sink plus a gauge task); returns when `shutdown`
    /// turns true. An attempt in flight at shutdown is abandoned and retried after restart.
    pub fn spawn_delivery(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        deliver::spawn(self.clone(), shutdown)
    }

    /// Registers the signals' own metrics.
    pub fn register_metrics(&self, registry: &prometheus::Registry) {
        self.inner.metrics.register(registry);
    }
}

fn build_sinks(cfg: &SignalsConfig) -> Result<Vec<Sink>, SignalsError> {
    let mut sinks = Vec::new();
    for w in &cfg.webhooks {
        sinks.push(w.build()?);
    }
    for a in &cfg.alertmanagers {
        sinks.push(a.build()?);
    }
    for e in &cfg.exec {
        sinks.push(e.build()?);
    }
    let mut seen: Vec<&str> = Vec::new();
    for s in &sinks {
        if s.name.is_empty() {
            return Err(SignalsError::Config(format!(
                "a {} sink has an empty name",
                s.label()
            )));
        }
        if seen.contains(&s.name.as_str()) {
            return Err(SignalsError::Config(format!(
                "two sinks are named {:?}; names identify signals in the outbox and must be unique",
                s.name
            )));
        }
        seen.push(&s.name);
    }
    Ok(sinks)
}

/// Every decision kind, the default filter of webhook and exec sinks.
pub(crate) const ALL_DECISIONS: [DecisionKind; 5] = [
    DecisionKind::Promote,
    DecisionKind::Pass,
    DecisionKind::Warn,
    DecisionKind::Block,
    DecisionKind::Rollback,
];

/// A sink config's optional path as a `Path` (for [`Secret::load`]).
pub(crate) fn opt_path(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref()
}

#[cfg(test)]
mod tests;
