//! The agent's experiment task: every second (of the agent's clock's real time) it reads
//! the counters of `source: metrics` experiments from the engine, looks at every experiment
//! whose look is due ([`super::registry::LOOK_EVERY`]), which also starts and ends them on
//! time, and writes the `stop` and `close` decisions owed to the signal sinks into the
//! outbox ([`crate::signals::Signals::record_experiment`]), marking each announced only once
//! written (a failed write is tried again at the next turn; the derived signal id makes a
//! second write after a crash add nothing).
//!
//! Separate from the engine thread on purpose: experiments never hold up deploy judging,
//! and a slow experiment store never delays a deploy decision.

use super::registry::{LOOK_EVERY, Registry};
use crate::engine::catalog::Catalog;
use crate::engine::handle::{EngineHandle, Query};
use crate::model::DurationMs;
use crate::serve::Clock;
use crate::signals::Signals;
use std::sync::Arc;
use tokio::sync::watch;

/// What the task needs.
pub struct ExperimentTask {
    /// The experiments.
    pub registry: Arc<Registry>,
    /// Where counters are read.
    pub engine: EngineHandle,
    /// Where decisions go.
    pub signals: Signals,
    /// The agent's clock.
    pub clock: Arc<dyn Clock>,
    /// immune's base URL, for links in bodies.
    pub public_url: String,
}

impl ExperimentTask {
    /// One turn: read counters, look, announce. Time is the clock's `now`.
    pub async fn turn(&self) {
        for (name, selectors, after) in self.registry.counter_reads() {
            match self
                .engine
                .query(Query::Catalog(Catalog::Points { selectors, after }))
                .await
            {
                Ok(answer) => self.registry.absorb_counters(&name, &answer),
                Err(e) => {
                    tracing::warn!(experiment = %name, error = %e, "Experiment counters could not be read; tried again at the next turn.");
                }
            }
        }
        let now = self.clock.now().as_secs_f64();
        let registry = self.registry.clone();
        let public_url = self.public_url.clone();
        let Ok(owed) = tokio::task::spawn_blocking(move || {
            registry.look(now, LOOK_EVERY);
            registry.announcements(&public_url, now)
        })
        .await
        else {
            return;
        };
        for a in owed {
            let signals = self.signals.clone();
            let (kind, key, at, body) = (a.kind, a.key.clone(), a.at, a.body.clone());
            let written = tokio::task::spawn_blocking(move || {
                signals.record_experiment(kind, &key, at, &body)
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    tracing::info!(experiment = %a.experiment, decision = a.kind.as_str(), "Experiment decision written to the outbox.");
                    let registry = self.registry.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        registry.announced(&a.experiment, a.kind);
                    })
                    .await;
                }
                Ok(Err(e)) => {
                    tracing::error!(experiment = %a.experiment, decision = a.kind.as_str(), error = %e, "Experiment decision could not be written to the outbox; tried again at the next turn.");
                }
                Err(e) => {
                    tracing::error!(experiment = %a.experiment, error = %e, "Experiment decision task failed; tried again at the next turn.");
                }
            }
        }
    }

    /// Turns every second until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.turn().await;
            let pause = self.clock.real(DurationMs::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
