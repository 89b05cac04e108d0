//! `immune serve`: the live agent. Wires sources, the engine thread, signals and the HTTP
//! API together, and stops them all on one shutdown signal.
//!
//! Start-up order matters for durability: rules are loaded (a bad rule file stops start-up
//! with every diagnostic), the signals store is opened, the engine thread starts with an
//! `on_decisions` hook that writes each decision to the outbox before anything else
//! happens, deploy events still in flight are re-applied from the store, and only then do
//! sources, the ticker and the listener start. A stored deploy event whose time is absurd
//! (non-finite, ahead of the clock, or older than [`RESUME_MAX_AGE`]) is not resumed: it is
//! logged and marked done, so no stored input can make the engine walk an absurd span.
//!
//! A decision batch the outbox cannot write is kept by [`Signals`] and retried until it is
//! written (see `signals`); the engine thread never waits for the disk to come back.
//!
//! The wall clock is read here, at the edge, through a [`Clock`]: the ticker stamps each
//! `tick(now)`, sources stamp samples, and the API stamps deploy events without an `at`.
//! `immune demo` passes a [`ScaledClock`] running faster than real time instead; the engine
//! cannot tell the difference.
//!
//! Like mini-redis, [`run`] takes a bound listener and a shutdown future, so tests bind
//! port 0 and talk to the real server.

use crate::api::metrics::AgentMetrics;
use crate::api::{self, ApiState};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::engine::handle::{self, EngineHandle, Query};
use crate::model::{Decision, DurationMs, Timestamp};
use crate::rules::RuleSet;
use crate::rules::load::Diagnostics;
use crate::signals::{Signals, SignalsError};
use crate::sources::{self, Schedule, SourceContext};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Where the agent's notion of "now" comes from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// How long `d` of this clock's time lasts in real time.
    fn real(&self, d: DurationMs) -> std::time::Duration;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }
    fn real(&self, d: DurationMs) -> std::time::Duration {
        std::time::Duration::from_millis(d.0.max(0) as u64)
    }
}

/// A simulated clock starting at `start` and running `speed` times faster than real time.
#[derive(Clone, Copy, Debug)]
pub struct ScaledClock {
    start: Timestamp,
    origin: Instant,
    speed: f64,
}

impl ScaledClock {
    /// Starts now, reading `start`.
    pub fn new(start: Timestamp, speed: f64) -> ScaledClock {
        ScaledClock {
            start,
            origin: Instant::now(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let ms = self.origin.elapsed().as_secs_f64() * 1000.0 * self.speed;
        Timestamp(self.start.0 + ms as i64)
    }
    fn real(&self, d: DurationMs) -> std::time::Duration {
        std::time::Duration::from_secs_f64((d.0.max(0) as f64 / 1000.0) / self.speed)
    }
}

/// Why the agent could not start (or stopped badly).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The rules did not load.
    #[error("rules did not load:\n{0}")]
    Rules(Diagnostics),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signals store failed.
    #[error(transparent)]
    Signals(#[from] SignalsError),
    /// Metrics could not be registered (a duplicate name: a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A socket, thread or directory could not be had.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A source's configuration is unusable.
    #[error("source {name}: {message}")]
    Source {
        /// The source.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The oldest stored deploy event resumed at start-up; older ones are skipped (logged).
pub const RESUME_MAX_AGE: DurationMs = DurationMs(7 * 86_400_000);

/// Loads rules from `paths`, or the embedded rules when `paths` is empty.
pub fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, Diagnostics> {
    crate::defaults::load_rules(paths).map_err(|e| e.0)
}

/// Reloads rules on request (SIGHUP, `POST /-/reload`): a failed load keeps the running
/// rules, logs every diagnostic and sets `immune_config_last_reload_successful` to 0.
pub struct Reloader {
    paths: Vec<PathBuf>,
    engine: EngineHandle,
    metrics: AgentMetrics,
    clock: Arc<dyn Clock>,
    /// With a `history` section: fills the rules a reload adds or changes.
    history: Option<crate::history::live::ReloadFill>,
}

impl Reloader {
    /// Reloads from the same paths the agent started with; returns the number of rules.
    pub async fn reload(&self) -> Result<usize, Diagnostics> {
        let paths = self.paths.clone();
        let loaded = tokio::task::spawn_blocking(move || load_rules(&paths))
            .await
            .unwrap_or_else(|e| {
                Err(Diagnostics(vec![crate::rules::load::Diagnostic {
                    file: "reload".into(),
                    line: 0,
                    column: 0,
                    rule: None,
                    message: e.to_string(),
                }]))
            });
        let now = self.clock.now().as_secs_f64();
        match loaded {
            Ok(rules) => {
                let n = rules.rules.len();
                let filled = self.history.as_ref().map(|h| (h, rules.rules.clone()));
                if self.engine.reload(rules).await.is_err() {
                    self.metrics.reloaded(false, now);
                    return Err(Diagnostics(vec![crate::rules::load::Diagnostic {
                        file: "reload".into(),
                        line: 0,
                        column: 0,
                        rule: None,
                        message: "engine has stopped".into(),
                    }]));
                }
                // After the engine took the rules (and their longer windows' retention).
                if let Some((h, rules)) = filled {
                    h.after_reload(&rules, self.clock.now(), &self.engine).await;
                }
                self.metrics.reloaded(true, now);
                tracing::info!(rules = n, "Rules reloaded.");
                Ok(n)
            }
            Err(diags) => {
                self.metrics.reloaded(false, now);
                for d in &diags.0 {
                    tracing::error!(diagnostic = %d, "Rule reload failed; keeping the running rules.");
                }
                Err(diags)
            }
        }
    }
}

/// Starts one extra source task from its context (the demo's simulator).
pub type StartSource = Box<dyn FnOnce(SourceContext) -> JoinHandle<()> + Send>;

/// Extra ways in and out of the agent, for the demo and tests.
pub struct RunOptions {
    /// The clock (wall clock for `serve`).
    pub clock: Arc<dyn Clock>,
    /// Rules already loaded (skips loading from the configuration's paths; reload still
    /// reads those paths).
    pub rules: Option<RuleSet>,
    /// Every decision is also sent here, after it is recorded.
    pub decisions: Option<mpsc::UnboundedSender<Decision>>,
    /// Extra sources, started with the configured ones.
    pub sources: Vec<StartSource>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            clock: Arc::new(WallClock),
            rules: None,
            decisions: None,
            sources: Vec::new(),
        }
    }
}

/// One readable line per decision.
pub fn describe(d: &Decision) -> String {
    let summary = d
        .evidence
        .get("summary")
        .and_then(|s| s.as_str())
        .unwrap_or("");
    format!(
        "deploy {} ({}): {}{} by rule {} in phase {}{}",
        d.deploy,
        d.service,
        d.decision.as_str(),
        if d.shadow { " (shadow)" } else { "" },
        d.rule,
        d.phase.as_str(),
        if summary.is_empty() {
            String::new()
        } else {
            format!(": {summary}")
        }
    )
}

/// Runs the agent on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let clock = opts.clock.clone();
    let paths = config.rule_paths();
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr,
        rules = %if paths.is_empty() { "embedded".to_string() } else { format!("{paths:?}") },
        data_dir = %config.data_dir.display(),
        "immune is starting."
    );
    let metrics = AgentMetrics::new()?;
    // The push endpoints are always mounted: their series exist from the start.
    metrics.sources.touch("push");
    metrics.sources.touch("remote_write");
    let rules = match opts.rules {
        Some(r) => r,
        None => {
            let p = paths.clone();
            tokio::task::spawn_blocking(move || load_rules(&p))
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
                .map_err(ServeError::Rules)?
        }
    };
    metrics.reloaded(true, clock.now().as_secs_f64());
    tracing::info!(rules = rules.rules.len(), "Rules loaded.");
    let tokens = config.api.all_tokens()?;
    if tokens.is_empty() && !addr.ip().is_loopback() {
        tracing::warn!(listen = %addr, "No API tokens configured on a non-loopback address: anyone who can reach it can change deploy state.");
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let signals = Signals::open(config.signals.clone(), &config.data_dir, public_url.clone())?;
    signals.register_metrics(&metrics.registry);

    let history_rules = config.history.as_ref().map(|_| rules.rules.clone());
    let mut engine = Engine::new(rules, config.engine.engine_config());
    // With a TSDB, seasonal baselines are read from it at each deploy's start.
    let history = match &config.history {
        Some(h) => {
            engine.read_seasons_from_tsdb();
            let m = crate::history::live::HistoryMetrics::new(&metrics)?;
            let fetcher = crate::history::live::SeasonFetcher::new(h, &m)?;
            Some((h, m, fetcher))
        }
        None => None,
    };
    let on_decisions = {
        let signals = signals.clone();
        let observer = opts.decisions.clone();
        Box::new(
            move |ds: &[Decision], views: &mut dyn FnMut() -> Vec<serde_json::Value>| {
                if let Err(e) = signals.record_then_views(ds, views) {
                    tracing::error!(error = %e, decisions = ds.len(), "Decisions could not be written to the outbox; kept in memory and retried until they are. Gates of their services answer blocked meanwhile.");
                }
                for d in ds {
                    let summary = d
                        .evidence
                        .get("summary")
                        .and_then(|s| s.as_str())
                        .unwrap_or("");
                    tracing::info!(
                        deploy = %d.deploy, service = %d.service, decision = d.decision.as_str(),
                        rule = %d.rule, phase = d.phase.as_str(), r#final = d.r#final, shadow = d.shadow,
                        summary = %summary, "Decision."
                    );
                    if let Some(tx) = &observer {
                        let _ = tx.send(d.clone());
                    }
                }
            },
        )
    };
    let (engine_handle, engine_thread) = handle::spawn_with_seasons(
        engine,
        config.engine.queue_capacity,
        on_decisions,
        history.as_ref().map(|(_, _, f)| f.sink()),
    )?;
    let history = match history {
        Some((h, m, fetcher)) => {
            fetcher.start(engine_handle.clone())?;
            Some((h, m))
        }
        None => None,
    };

    // A restart never opens a line that a person has not acknowledged.
    for (service, decision) in signals.blocked_lines()? {
        tracing::info!(service = %service, deploy = %decision.deploy, rule = %decision.rule, "Line still blocked after restart.");
        engine_handle
            .restore_block(service, decision)
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    }
    let resumable = crate::model::EventWindow {
        past: RESUME_MAX_AGE,
        future: config.api.max_event_lead.0,
    };
    let to_resume = signals.resume_events()?;
    // History first: the windows are full before any deploy is resumed or sample arrives,
    // reaching back to before the oldest resumed deploy's start.
    let start_now = clock.now();
    let oldest_resumed = to_resume
        .iter()
        .filter_map(|ev| resumable.check(ev.at, start_now).ok())
        .min()
        .unwrap_or(start_now);
    let mut reload_fill = None;
    if let (Some((h, m)), Some(rules)) = (&history, history_rules) {
        let cfg = config.engine.engine_config();
        reload_fill = Some(crate::history::live::ReloadFill::new(
            h,
            &cfg,
            rules.clone(),
            m,
        ));
        crate::history::live::prefill(h, rules, &cfg, start_now, oldest_resumed, &engine_handle, m)
            .await?;
    }
    let mut resumed = std::collections::BTreeSet::new();
    for ev in to_resume {
        if let Err(why) = resumable.check(ev.at, clock.now()) {
            tracing::error!(
                deploy = ev.deploy.as_deref().unwrap_or(""), reason = %why,
                "Stored deploy event has an unusable time; the deploy is not resumed and is marked done."
            );
            if let Some(id) = ev.deploy.as_deref()
                && let Err(e) = signals.forget_deploy(id, clock.now().as_secs_f64())
            {
                tracing::warn!(deploy = id, error = %e, "Skipped deploy could not be marked done; it will be skipped again at the next start.");
            }
            continue;
        }
        match engine_handle.deploy_event(ev.clone()).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    deploy = ev.deploy.as_deref(),
                    event = crate::api::deploys::event_name(ev.event),
                    "Deploy event resumed."
                );
                resumed.extend(ev.deploy);
            }
            Ok(Err(e)) => {
                tracing::warn!(deploy = ev.deploy.as_deref().map(tracing::field::display), error = %e, "Deploy event not resumed.")
            }
            Err(e) => return Err(ServeError::Io(std::io::Error::other(e))),
        }
    }
    // What each resumed deploy had already decided (a promote, warnings) is told back to
    // it, so a restart does not send those signals again under new ids.
    for deploy in resumed {
        let decisions = signals.decisions_of(&deploy)?;
        if !decisions.is_empty() {
            engine_handle
                .restore_decisions(deploy, decisions)
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    tasks.push(signals.spawn_delivery(stop_rx.clone()));
    tasks.push(tokio::spawn(ticker(
        engine_handle.clone(),
        clock.clone(),
        config.engine.eval_interval.0,
        metrics.clone(),
        stop_rx.clone(),
    )));
    let ctx = SourceContext {
        name: String::new(),
        engine: engine_handle.clone(),
        metrics: metrics.sources.clone(),
        clock: clock.clone(),
        shutdown: stop_rx.clone(),
    };
    let limits = crate::limits::Limits::new(config.limits.clone(), metrics.refused());
    tasks.extend(start_sources(&config, &ctx, &limits)?);
    for start in opts.sources {
        tasks.push(start(ctx.clone()));
    }

    let reloader = Arc::new(Reloader {
        paths,
        engine: engine_handle.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        history: reload_fill,
    });
    tasks.push(tokio::spawn(reload_on_sighup(
        reloader.clone(),
        stop_rx.clone(),
    )));

    let mut experiments = Vec::new();
    for path in &config.experiments {
        experiments.extend(crate::experiment::load_file(path).map_err(ServeError::Rules)?);
    }
    let registry = Arc::new(open_experiments(&experiments, &config.data_dir)?);
    tasks.push(tokio::spawn(
        crate::experiment::agent::ExperimentTask {
            registry: registry.clone(),
            engine: engine_handle.clone(),
            signals: signals.clone(),
            clock: clock.clone(),
            public_url,
        }
        .run(stop_rx.clone()),
    ));
    let state = ApiState {
        registry,
        experiments: Arc::new(experiments),
        engine: engine_handle.clone(),
        signals: signals.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        reloader,
        limits,
        events: config.api.event_window(),
        liveness: config.api.liveness_timeout.std(),
    };
    let app = api::router(state, &config.api, tokens);
    tracing::info!(listen = %addr, "Listening.");
    let mut server_stop = stop_rx.clone();
    let served = api::http::serve(listener, app, &config.http, async move {
        tokio::select! {
            _ = shutdown => {}
            _ = server_stop.wait_for(|s| *s) => {}
        }
    })
    .await;
    tracing::info!("Stopping.");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    let _ = engine_handle.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    served?;
    Ok(())
}

/// The experiments' registry, carrying on from their state in the outbox file.
fn open_experiments(
    experiments: &[crate::experiment::Experiment],
    data_dir: &std::path::Path,
) -> Result<crate::experiment::registry::Registry, ServeError> {
    use crate::experiment::{persist::Store, registry::Registry};
    let path = data_dir.join(crate::signals::OUTBOX_FILE);
    Store::open(&path)
        .and_then(|store| Registry::open(experiments, store))
        .map_err(|e| ServeError::Signals(SignalsError::Store(e.to_string())))
}

/// Starts every configured source as its own task.
fn start_sources(
    config: &Config,
    ctx: &SourceContext,
    limits: &crate::limits::Limits,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let mut tasks = Vec::new();
    let s = &config.sources;
    let bad = |name: &str, e: sources::SourceError| ServeError::Source {
        name: name.to_string(),
        message: e.to_string(),
    };
    for (i, c) in s.mysql.iter().enumerate() {
        let name = c.name.clone().unwrap_or_else(|| numbered("mysql", i));
        let p = sources::mysql::MysqlPoller::new(&name, c, ctx.metrics.clone())
            .map_err(|e| bad(&name, e))?;
        let sched = Schedule {
            interval: c.interval.std(),
            timeout: c.timeout.std(),
        };
        tasks.push(tokio::spawn(sources::run_poller(ctx.named(name), sched, p)));
    }
    for (i, c) in s.memcached.iter().enumerate() {
        let name = c.name.clone().unwrap_or_else(|| numbered("memcached", i));
        let p = sources::memcached::MemcachedPoller::new(c);
        let sched = Schedule {
            interval: c.interval.std(),
            timeout: c.timeout.std(),
        };
        tasks.push(tokio::spawn(sources::run_poller(ctx.named(name), sched, p)));
    }
    for (i, c) in s.scrape.iter().enumerate() {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| numbered(&format!("scrape:{}", c.job), i));
        let sched = Schedule {
            interval: c.interval.std(),
            timeout: c.timeout.std(),
        };
        if c.file_sd_configs.is_empty() {
            let p = sources::scrape::ScrapePoller::new(c)
                .map_err(|e| bad(&name, e))?
                .with_limits(limits.clone());
            tasks.push(tokio::spawn(sources::run_poller(ctx.named(name), sched, p)));
        } else {
            let p = sources::file_sd::FileSdPoller::new(c)
                .map_err(|e| bad(&name, e))?
                .with_limits(limits.clone());
            tasks.push(tokio::spawn(sources::run_poller(ctx.named(name), sched, p)));
        }
    }
    for (i, c) in s.promql.iter().enumerate() {
        let name = c.name.clone().unwrap_or_else(|| numbered("promql", i));
        let p = sources::promql::PromqlPoller::new(c).map_err(|e| bad(&name, e))?;
        let sched = Schedule {
            interval: c.interval.std(),
            timeout: c.timeout.std(),
        };
        tasks.push(tokio::spawn(sources::run_poller(ctx.named(name), sched, p)));
    }
    Ok(tasks)
}

/// `base` for the first source of a kind, `base-<n>` for the others.
fn numbered(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}-{}", i + 1)
    }
}

/// Sends `tick(now)` every eval interval and times each round trip.
async fn ticker(
    engine: EngineHandle,
    clock: Arc<dyn Clock>,
    every: DurationMs,
    metrics: AgentMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval =
        tokio::time::interval(clock.real(every).max(std::time::Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        if engine.tick(clock.now()).await.is_err() {
            return;
        }
        // The engine answers queries in order, so this answer means the tick is done.
        if engine.query(Query::Line(String::new())).await.is_err() {
            return;
        }
        metrics.evaluation.observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP handler could not be installed; reload with POST /-/reload.");
        return;
    };
    loop {
        tokio::select! {
            r = hup.recv() => {
                if r.is_none() { return; }
                tracing::info!("SIGHUP: reloading rules.");
                let _ = reloader.reload().await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_reloader: Arc<Reloader>, _stop: watch::Receiver<bool>) {}

/// Resolves on Ctrl-C or SIGTERM: the shutdown future `immune serve` passes to [`run`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
