//! The engine on its own thread, and the handle the async world talks to it through.
//!
//! Sources, the HTTP API and timers send [`Input`]s over one bounded crossbeam channel; the
//! engine thread applies them in arrival order, so the engine stays a plain synchronous
//! state machine. Every batch of decisions is handed to `on_decisions` on the engine thread
//! before anything else happens (the outbox writes them durably there, before delivery).
//!
//! Backpressure: samples use `try_send`; when the channel is full the batch is refused and
//! counted ([`EngineHandle::dropped_batches`]) so a slow engine sheds load visibly instead of
//! stalling every source. Deploy events, queries and ticks wait for room: they are rare and
//! must not be lost.
//!
//! Liveness: the engine thread stamps when it starts and finishes each input, so
//! [`EngineHandle::liveness`] can tell an engine stuck on one input (a loop, a blocked
//! outbox write) from one that is merely idle, without sending it anything.

use super::batch::SampleBatch;
use super::season::{SeasonFill, SeasonRequest};
use super::{Engine, EngineError};
use crate::model::{Decision, DeployEvent, Sample, Timestamp};
use crate::rules::RuleSet;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the engine thread takes.
pub enum Input {
    /// A batch of samples from one source.
    Samples(Vec<Sample>),
    /// A batch of samples whose sender waits to learn what was stored (push, remote_write).
    SamplesAcked(Vec<Sample>, oneshot::Sender<IngestReport>),
    /// A request's samples in one flat batch (push, remote_write), acknowledged like
    /// [`Input::SamplesAcked`]; see [`super::batch`].
    BatchAcked(SampleBatch, oneshot::Sender<IngestReport>),
    /// A deploy event; the reply carries the decisions it caused or why it was refused.
    Deploy(
        DeployEvent,
        oneshot::Sender<Result<Vec<Decision>, EngineError>>,
    ),
    /// Evaluate everything up to `now`.
    Tick(Timestamp),
    /// Read state.
    Query(Query, oneshot::Sender<Value>),
    /// Replace the rules.
    Reload(RuleSet),
    /// Block a service's line again after a restart (service, the decision that blocked it).
    RestoreBlock(String, Decision),
    /// Tell a resumed deploy what it already decided (deploy, its stored decisions).
    RestoreDecisions(String, Vec<Decision>),
    /// A deploy's season fetched from the TSDB (see `season.rs`).
    SeasonFill(SeasonFill),
    /// Samples from the TSDB older than what the store holds (a reload's fill); the
    /// reply is how many were stored.
    Backfill(Vec<Sample>, oneshot::Sender<u64>),
    /// Stop the thread.
    Shutdown,
}

/// What can be read from the engine.
#[derive(Clone, Debug)]
pub enum Query {
    /// One deploy (`null` when unknown).
    Deploy(String),
    /// All active and recent deploys.
    Deploys,
    /// One service's line.
    Line(String),
    /// Every line that has been blocked.
    Lines,
    /// Counters and gauges for /metrics: samples, evaluations, decisions, series,
    /// active deploys, refused samples.
    Stats,
    /// Rules against the stored series, and Prometheus-style series and name lookups
    /// (`GET /api/v1/rules`, `/api/v1/series`, `/api/v1/label/__name__/values`).
    Catalog(super::catalog::Catalog),
}

/// What became of an acknowledged batch of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Samples taken: stored, or dropped as at or before their series' newest point
    /// (counted in `immune_samples_out_of_order_total`, not in
    /// `immune_samples_ingested_total`).
    pub stored: usize,
    /// Samples of new series refused because the series limit (`engine.max_series`) is reached.
    pub series_limit: usize,
    /// Samples refused for another reason (a series text that does not parse).
    pub other: usize,
}

/// Why an input did not reach the engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The channel is full (samples only).
    #[error("engine is behind; batch refused")]
    Full,
    /// The engine thread has stopped.
    #[error("engine has stopped")]
    Stopped,
}

/// A cheap, cloneable way to talk to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Input>,
    dropped: Arc<AtomicU64>,
    beat: Arc<Heartbeat>,
}

/// What the engine thread is doing, for liveness: when it started its current input
/// (milliseconds since `origin`, plus one; 0 when idle) and whether it has stopped.
#[derive(Debug)]
struct Heartbeat {
    origin: Instant,
    busy_since: AtomicU64,
    stopped: AtomicBool,
}

impl Heartbeat {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }
    fn busy(&self) {
        self.busy_since.store(self.now(), Ordering::Release);
    }
    fn idle(&self) {
        self.busy_since.store(0, Ordering::Release);
    }
}

/// Marks the engine stopped when the thread ends, however it ends (a panic included).
struct StopOnDrop(Arc<Heartbeat>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
    }
}

impl EngineHandle {
    /// Offers a batch of samples; refused (and counted) when the engine is behind.
    pub fn send_samples(&self, samples: Vec<Sample>) -> Result<(), HandleError> {
        match self.tx.try_send(Input::Samples(samples)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(HandleError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(HandleError::Stopped),
        }
    }

    /// Sends a batch of samples, waiting for room (for sources that acknowledge receipt,
    /// like remote_write, where refusing means the sender retries).
    pub fn send_samples_blocking(&self, samples: Vec<Sample>) -> Result<(), HandleError> {
        self.tx
            .send(Input::Samples(samples))
            .map_err(|_| HandleError::Stopped)
    }

    /// Sends a batch of samples, waiting for room and then for the engine to say what it
    /// stored: acknowledged protocols answer the sender from this.
    pub async fn send_samples_acked(
        &self,
        samples: Vec<Sample>,
    ) -> Result<IngestReport, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send_blocking(Input::SamplesAcked(samples, reply))
            .await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// [`EngineHandle::send_samples_acked`] for a [`SampleBatch`].
    pub async fn send_batch_acked(&self, batch: SampleBatch) -> Result<IngestReport, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send_blocking(Input::BatchAcked(batch, reply)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// `Ok` while the engine thread runs and has spent less than `bound` on its current
    /// input (an idle engine is alive); otherwise why not.
    pub fn liveness(&self, bound: Duration) -> Result<(), String> {
        if self.beat.stopped.load(Ordering::Acquire) {
            return Err("the engine thread has stopped".into());
        }
        let since = self.beat.busy_since.load(Ordering::Acquire);
        if since == 0 {
            return Ok(());
        }
        let busy = Duration::from_millis(self.beat.now().saturating_sub(since));
        if busy > bound {
            return Err(format!(
                "the engine has been busy with one input for {:.1}s (bound {:.1}s)",
                busy.as_secs_f64(),
                bound.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Batches refused because the engine was behind.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Inputs waiting in the channel.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// The channel's capacity.
    pub fn queue_capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(0)
    }

    /// Applies a deploy event and returns the decisions it caused.
    pub async fn deploy_event(
        &self,
        ev: DeployEvent,
    ) -> Result<Result<Vec<Decision>, EngineError>, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send_blocking(Input::Deploy(ev, reply)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// Reads state.
    pub async fn query(&self, q: Query) -> Result<Value, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send_blocking(Input::Query(q, reply)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// Asks for an evaluation up to `now`.
    pub async fn tick(&self, now: Timestamp) -> Result<(), HandleError> {
        self.send_blocking(Input::Tick(now)).await
    }

    /// Replaces the rules.
    pub async fn reload(&self, rules: RuleSet) -> Result<(), HandleError> {
        self.send_blocking(Input::Reload(rules)).await
    }

    /// Blocks a service's line again with a decision recorded before a restart.
    pub async fn restore_block(
        &self,
        service: String,
        decision: Decision,
    ) -> Result<(), HandleError> {
        self.send_blocking(Input::RestoreBlock(service, decision))
            .await
    }

    /// Tells a resumed deploy the decisions it reached before a restart, so it does not
    /// repeat them (see `Engine::restore_decisions`).
    pub async fn restore_decisions(
        &self,
        deploy: String,
        decisions: Vec<Decision>,
    ) -> Result<(), HandleError> {
        self.send_blocking(Input::RestoreDecisions(deploy, decisions))
            .await
    }

    /// Hands a fetched season to the engine, waiting for room (from a plain thread).
    pub fn send_season_fill_blocking(&self, fill: SeasonFill) -> Result<(), HandleError> {
        self.tx
            .send(Input::SeasonFill(fill))
            .map_err(|_| HandleError::Stopped)
    }

    /// Adds samples older than the store holds (see [`Engine::backfill`]); returns how
    /// many were stored.
    pub async fn backfill(&self, samples: Vec<Sample>) -> Result<u64, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.send_blocking(Input::Backfill(samples, reply)).await?;
        rx.await.map_err(|_| HandleError::Stopped)
    }

    /// Stops the engine thread after the inputs already queued.
    pub async fn shutdown(&self) -> Result<(), HandleError> {
        self.send_blocking(Input::Shutdown).await
    }

    async fn send_blocking(&self, input: Input) -> Result<(), HandleError> {
        let tx = self.tx.clone();
        // A full channel must not block a runtime worker thread.
        match tx.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(HandleError::Stopped),
            Err(TrySendError::Full(input)) => {
                tokio::task::spawn_blocking(move || tx.send(input).map_err(|_| ()))
                    .await
                    .map_err(|_| HandleError::Stopped)?
                    .map_err(|_| HandleError::Stopped)
            }
        }
    }
}

/// Where the engine thread hands each batch of decisions (the outbox, a log).
pub type DecisionSink = Box<dyn FnMut(&[Decision]) + Send>;

/// Like [`DecisionSink`], with a way to take the deploy view (`deploy_view`) of every deploy
/// the batch decided, as of just after the decisions: the outbox keeps them as deploy
/// history. Taking the views costs more than deciding (BENCHMARKS.md, "The decision
/// journal"), so the sink asks for them once the decisions are durable.
pub type DecisionViewSink = Box<dyn FnMut(&[Decision], &mut dyn FnMut() -> Vec<Value>) + Send>;

/// Starts the engine on its own thread with a channel of `capacity` inputs. Every batch of
/// decisions goes to `on_decisions` on that thread before the next input is read.
pub fn spawn(
    engine: Engine,
    capacity: usize,
    mut on_decisions: DecisionSink,
) -> std::io::Result<(EngineHandle, JoinHandle<Engine>)> {
    spawn_with_views(engine, capacity, Box::new(move |ds, _| on_decisions(ds)))
}

/// Where the engine thread hands the season spans deploys ask for (see `season.rs`).
pub type SeasonSink = Box<dyn FnMut(Vec<SeasonRequest>) + Send>;

/// [`spawn`], handing `on_decisions` the deciding deploys' views too.
pub fn spawn_with_views(
    engine: Engine,
    capacity: usize,
    on_decisions: DecisionViewSink,
) -> std::io::Result<(EngineHandle, JoinHandle<Engine>)> {
    spawn_with_seasons(engine, capacity, on_decisions, None)
}

/// [`spawn_with_views`], handing every season request to `on_seasons` after the input
/// that caused it (requests are dropped without one).
pub fn spawn_with_seasons(
    engine: Engine,
    capacity: usize,
    on_decisions: DecisionViewSink,
    on_seasons: Option<SeasonSink>,
) -> std::io::Result<(EngineHandle, JoinHandle<Engine>)> {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let beat = Arc::new(Heartbeat {
        origin: Instant::now(),
        busy_since: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });
    let handle = EngineHandle {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        beat: beat.clone(),
    };
    let join = std::thread::Builder::new()
        .name("immune-engine".into())
        .spawn(move || run(engine, rx, on_decisions, on_seasons, beat))?;
    Ok((handle, join))
}

/// Hands decisions and the views of the deploys they belong to to the sink.
fn decided(engine: &Engine, ds: &[Decision], sink: &mut DecisionViewSink) {
    sink(ds, &mut || views_of(engine, ds));
}

/// The views of the deploys `ds` decided, one per deploy.
pub fn views_of(engine: &Engine, ds: &[Decision]) -> Vec<Value> {
    let mut ids: Vec<&str> = ds.iter().map(|d| d.deploy.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().filter_map(|id| engine.deploy_view(id)).collect()
}

fn ingest(engine: &mut Engine, batch: Vec<Sample>) -> IngestReport {
    let mut report = IngestReport::default();
    for s in batch {
        match engine.ingest(&s.name, &s.labels, s.value, s.at) {
            Ok(()) => report.stored += 1,
            Err(EngineError::Store(crate::engine::store::StoreError::SeriesLimit { .. })) => {
                report.series_limit += 1
            }
            Err(e) => {
                report.other += 1;
                tracing::debug!(error = %e, series = %s.name, "Sample refused.");
            }
        }
    }
    report
}

fn run(
    mut engine: Engine,
    rx: Receiver<Input>,
    mut on_decisions: DecisionViewSink,
    mut on_seasons: Option<SeasonSink>,
    beat: Arc<Heartbeat>,
) -> Engine {
    let _stop = StopOnDrop(beat.clone());
    // The order pushed series arrive in, shared by every pushing sender: a sender that
    // repeats its order pays one hash lookup per request, not per series.
    let mut pushed = super::store::SeriesCache::new();
    while let Ok(input) = rx.recv() {
        beat.busy();
        match input {
            Input::Samples(batch) => {
                ingest(&mut engine, batch);
            }
            Input::SamplesAcked(batch, reply) => {
                let _ = reply.send(ingest(&mut engine, batch));
            }
            Input::BatchAcked(batch, reply) => {
                let _ = reply.send(engine.ingest_batch(&mut pushed, &batch));
            }
            Input::Deploy(ev, reply) => {
                let result = engine.deploy_event(&ev);
                if let Ok(ds) = &result
                    && !ds.is_empty()
                {
                    decided(&engine, ds, &mut on_decisions);
                }
                let _ = reply.send(result);
            }
            Input::Tick(now) => {
                let ds = engine.tick(now);
                if !ds.is_empty() {
                    decided(&engine, &ds, &mut on_decisions);
                }
            }
            Input::Query(q, reply) => {
                let _ = reply.send(answer(&engine, q));
            }
            Input::Reload(rules) => engine.set_rules(rules),
            Input::RestoreBlock(service, d) => engine.restore_block(&service, &d),
            Input::RestoreDecisions(deploy, ds) => {
                engine.restore_decisions(&deploy, &ds);
            }
            Input::SeasonFill(fill) => engine.season_fill(fill),
            Input::Backfill(samples, reply) => {
                let _ = reply.send(engine.backfill(samples));
            }
            Input::Shutdown => break,
        }
        let asked = engine.take_season_requests();
        if !asked.is_empty()
            && let Some(sink) = on_seasons.as_mut()
        {
            sink(asked);
        }
        beat.idle();
    }
    engine
}

fn answer(engine: &Engine, q: Query) -> Value {
    match q {
        Query::Deploy(id) => engine.deploy_view(&id).unwrap_or(Value::Null),
        Query::Deploys => Value::Array(engine.deploys()),
        Query::Catalog(q) => super::catalog::answer(engine, q),
        Query::Line(service) => serde_json::to_value(engine.line(&service)).unwrap_or(Value::Null),
        Query::Lines => serde_json::to_value(engine.lines()).unwrap_or(Value::Null),
        Query::Stats => serde_json::json!({
            "samples": engine.counters().samples,
            "evaluations": engine.counters().evaluations,
            "decisions": engine.counters().decisions,
            "series": engine.store().len(),
            "history_points": engine.history_points(),
            "refused_samples": engine.store().refused_samples,
            "out_of_order_samples": engine.store().out_of_order_samples,
            "active_deploys": engine.active_deploys(),
            "rules": engine.rules().len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::{DecisionKind, DeployEventKind, Phase};

    fn blocking_decision() -> Decision {
        Decision {
            at: 1_700_000_000.0,
            deploy: "d0".into(),
            service: "web".into(),
            version: None,
            decision: DecisionKind::Rollback,
            phase: Phase::Canary,
            rule: "r".into(),
            r#final: true,
            shadow: false,
            evidence: serde_json::json!({}),
        }
    }

    /// An engine stuck in `on_decisions` (an outbox write that hangs) is reported as not
    /// alive once past the bound, and alive again when it returns.
    #[test]
    fn liveness_sees_an_engine_stuck_on_one_input() {
        let rules = crate::serve::load_rules(&[]).unwrap();
        let engine = Engine::new(rules, EngineConfig::default());
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let (entered_tx, entered_rx) = crossbeam_channel::bounded::<()>(1);
        let (h, join) = spawn(
            engine,
            8,
            Box::new(move |_| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
            }),
        )
        .unwrap();
        let bound = Duration::from_millis(50);
        assert_eq!(h.liveness(bound), Ok(()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(h.restore_block("web".into(), blocking_decision()))
            .unwrap();
        // A canary on a blocked line is decided at once: on_decisions runs and hangs.
        let ev = DeployEvent {
            at: 1_700_000_001.0,
            deploy: Some("d1".into()),
            event: DeployEventKind::Canary,
            service: Some("web".into()),
            version: None,
            commits: Vec::new(),
            canary: Some(
                [(
                    "instance".to_string(),
                    crate::model::OneOrMany::One("a".into()),
                )]
                .into_iter()
                .collect(),
            ),
            by: None,
            reason: None,
        };
        let h2 = h.clone();
        let pending = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(h2.deploy_event(ev))
        });
        entered_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let err = h.liveness(bound).unwrap_err();
        assert!(err.contains("busy"), "{err}");
        release_tx.send(()).unwrap();
        assert!(pending.join().unwrap().unwrap().is_ok());
        // Idle again.
        rt.block_on(h.query(Query::Lines)).unwrap();
        assert_eq!(h.liveness(bound), Ok(()));
        rt.block_on(h.shutdown()).unwrap();
        join.join().unwrap();
        assert!(h.liveness(bound).unwrap_err().contains("stopped"));
    }
}
