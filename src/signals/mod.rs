//! Signals: carrying decisions to deploy systems, durably (INTERFACE STUB: the signals
//! work fills this in; the signatures below are what `serve` calls).

use crate::engine::handle::EngineHandle;
use crate::model::{Decision, DeployEvent};
use std::path::Path;

/// Why signals failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalsError {
    /// The embedded store failed.
    #[error("outbox: {0}")]
    Store(String),
}

/// The `signals:` section of immune.yaml.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {}

/// The outbox and the state that survives restarts. Cheap to clone; usable from the engine
/// thread and from async tasks.
#[derive(Clone)]
pub struct Signals {}

impl Signals {
    /// Opens (or creates) the store under `data_dir`. `public_url` is immune's own base
    /// URL, for links in signal bodies.
    pub fn open(
        _cfg: SignalsConfig,
        _data_dir: &Path,
        _public_url: String,
    ) -> Result<Signals, SignalsError> {
        Ok(Signals {})
    }

    /// Writes decisions durably (called on the engine thread before anything else).
    pub fn record(&self, _decisions: &[Decision]) -> Result<(), SignalsError> {
        Ok(())
    }

    /// Remembers a deploy event so analyses can be resumed after a restart.
    pub fn record_deploy_event(&self, _ev: &DeployEvent) -> Result<(), SignalsError> {
        Ok(())
    }

    /// The deploy events to re-apply at start-up (deploys in flight, line blocks), oldest first.
    pub fn resume_events(&self) -> Result<Vec<DeployEvent>, SignalsError> {
        Ok(Vec::new())
    }

    /// Starts delivery; returns when `shutdown` turns true.
    pub fn spawn_delivery(
        &self,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }

    /// Registers the signals' own metrics.
    pub fn register_metrics(&self, _registry: &prometheus::Registry) {}
}

/// The pull gates (Argo Rollouts verdict, Flagger webhook, gate endpoint), mounted by the API.
pub fn gates_router(_engine: EngineHandle) -> axum::Router {
    axum::Router::new()
}
