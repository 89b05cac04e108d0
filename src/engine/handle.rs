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

use super::{Engine, EngineError};
use crate::model::{Decision, DeployEvent, Sample, Timestamp};
use crate::rules::RuleSet;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// What the engine thread takes.
pub enum Input {
    /// A batch of samples from one source.
    Samples(Vec<Sample>),
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

/// Starts the engine on its own thread with a channel of `capacity` inputs. Every batch of
/// decisions goes to `on_decisions` on that thread before the next input is read.
pub fn spawn(
    engine: Engine,
    capacity: usize,
    on_decisions: DecisionSink,
) -> std::io::Result<(EngineHandle, JoinHandle<Engine>)> {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let handle = EngineHandle {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let join = std::thread::Builder::new()
        .name("immune-engine".into())
        .spawn(move || run(engine, rx, on_decisions))?;
    Ok((handle, join))
}

fn run(mut engine: Engine, rx: Receiver<Input>, mut on_decisions: DecisionSink) -> Engine {
    while let Ok(input) = rx.recv() {
        match input {
            Input::Samples(batch) => {
                for s in batch {
                    if let Err(e) = engine.ingest(&s.name, &s.labels, s.value, s.at) {
                        tracing::debug!(error = %e, series = %s.name, "Sample refused.");
                    }
                }
            }
            Input::Deploy(ev, reply) => {
                let result = engine.deploy_event(&ev);
                if let Ok(ds) = &result
                    && !ds.is_empty()
                {
                    on_decisions(ds);
                }
                let _ = reply.send(result);
            }
            Input::Tick(now) => {
                let ds = engine.tick(now);
                if !ds.is_empty() {
                    on_decisions(&ds);
                }
            }
            Input::Query(q, reply) => {
                let _ = reply.send(answer(&engine, q));
            }
            Input::Reload(rules) => engine.set_rules(rules),
            Input::RestoreBlock(service, d) => engine.restore_block(&service, &d),
            Input::Shutdown => break,
        }
    }
    engine
}

fn answer(engine: &Engine, q: Query) -> Value {
    match q {
        Query::Deploy(id) => engine.deploy_view(&id).unwrap_or(Value::Null),
        Query::Deploys => Value::Array(engine.deploys()),
        Query::Line(service) => serde_json::to_value(engine.line(&service)).unwrap_or(Value::Null),
        Query::Lines => serde_json::to_value(engine.lines()).unwrap_or(Value::Null),
        Query::Stats => serde_json::json!({
            "samples": engine.counters().samples,
            "evaluations": engine.counters().evaluations,
            "decisions": engine.counters().decisions,
            "series": engine.store().len(),
            "refused_samples": engine.store().refused_samples,
            "out_of_order_samples": engine.store().out_of_order_samples,
            "active_deploys": engine.active_deploys(),
        }),
    }
}
