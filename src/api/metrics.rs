//! immune's own /metrics: one `prometheus::Registry` per agent.
//!
//! Source telemetry is counted as it happens ([`crate::sources::SourceMetrics`]); the
//! engine's counters live on the engine thread and are read with `Query::Stats` /
//! `Query::Lines` at scrape time and copied here, so the engine never touches this crate.
//! Counters copied from the engine only move forward (a delta is added), which keeps them
//! proper Prometheus counters.

use crate::engine::handle::{EngineHandle, Query};
use crate::model::DecisionKind;
use crate::sources::SourceMetrics;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use serde_json::Value;

/// Every metric the agent exports besides the signals' own.
#[derive(Clone)]
pub struct AgentMetrics {
    /// The registry /metrics renders.
    pub registry: Registry,
    /// Source telemetry, handed to every source.
    pub sources: SourceMetrics,
    queue_depth: IntGauge,
    dropped: IntCounter,
    series: IntGauge,
    history_points: IntGauge,
    samples: IntCounter,
    refused: IntCounterVec,
    out_of_order: IntCounter,
    evaluations: IntCounter,
    decisions: IntCounterVec,
    active: IntGauge,
    blocked: IntGaugeVec,
    /// Time from sending a tick to the engine having applied it (queue wait included).
    pub evaluation: Histogram,
    reload_ok: IntGauge,
    reload_at: Gauge,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl AgentMetrics {
    /// Creates and registers every family on a new registry.
    pub fn new() -> Result<AgentMetrics, prometheus::Error> {
        let r = Registry::new();
        let sources = SourceMetrics::new(&r)?;
        let decisions = reg(
            &r,
            IntCounterVec::new(
                Opts::new("immune_decisions_total", "Decisions reached, by kind."),
                &["decision"],
            )?,
        )?;
        for k in [
            DecisionKind::Promote,
            DecisionKind::Pass,
            DecisionKind::Warn,
            DecisionKind::Block,
            DecisionKind::Rollback,
        ] {
            decisions.with_label_values(&[k.as_str()]);
        }
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "immune_build_info",
                    "Always 1; the labels say which build is running.",
                ),
                &["version"],
            )?,
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Ok(AgentMetrics {
            queue_depth: reg(
                &r,
                IntGauge::new(
                    "immune_engine_queue_depth",
                    "Inputs waiting in the engine's channel.",
                )?,
            )?,
            dropped: reg(
                &r,
                IntCounter::new(
                    "immune_engine_dropped_batches_total",
                    "Sample batches refused because the engine's channel was full.",
                )?,
            )?,
            series: reg(
                &r,
                IntGauge::new("immune_series", "Series held by the engine.")?,
            )?,
            history_points: reg(
                &r,
                IntGauge::new(
                    "immune_store_history_points",
                    "Per-minute points of seasonal history held by the engine, all series together.",
                )?,
            )?,
            samples: reg(
                &r,
                IntCounter::new(
                    "immune_samples_ingested_total",
                    "Samples stored by the engine.",
                )?,
            )?,
            refused: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "immune_samples_refused_total",
                        "Samples refused, by the limit that refused them (series_limit: engine.max_series; the others: limits.*).",
                    ),
                    &["reason"],
                )?,
            )?,
            out_of_order: reg(
                &r,
                IntCounter::new(
                    "immune_samples_out_of_order_total",
                    "Samples older than their series' newest, ignored.",
                )?,
            )?,
            evaluations: reg(
                &r,
                IntCounter::new("immune_rule_evaluations_total", "Rule evaluations.")?,
            )?,
            decisions,
            active: reg(
                &r,
                IntGauge::new("immune_active_deploys", "Deploys being judged.")?,
            )?,
            blocked: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "immune_line_blocked",
                        "1 while a service's line is blocked, else 0.",
                    ),
                    &["service"],
                )?,
            )?,
            evaluation: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "immune_evaluation_duration_seconds",
                        "Time from sending a tick to the engine having evaluated it.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )?,
            )?,
            reload_ok: reg(
                &r,
                IntGauge::new(
                    "immune_config_last_reload_successful",
                    "Whether the last rule (re)load succeeded.",
                )?,
            )?,
            reload_at: reg(
                &r,
                Gauge::new(
                    "immune_config_last_reload_success_timestamp_seconds",
                    "When rules were last loaded successfully.",
                )?,
            )?,
            sources,
            registry: r,
        })
    }

    /// Records the outcome of a rule (re)load at `now_secs`.
    pub fn reloaded(&self, ok: bool, now_secs: f64) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_at.set(now_secs);
        }
    }

    /// `immune_samples_refused_total{reason}`, for the ingestion limits to count into.
    pub fn refused(&self) -> IntCounterVec {
        self.refused.clone()
    }

    /// Copies the engine's counters and gauges in; called at scrape time.
    pub async fn refresh(&self, engine: &EngineHandle) {
        self.queue_depth.set(engine.queue_depth() as i64);
        forward(&self.dropped, engine.dropped_batches());
        if let Ok(stats) = engine.query(Query::Stats).await {
            let n = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.series.set(n("series") as i64);
            self.history_points.set(n("history_points") as i64);
            self.active.set(n("active_deploys") as i64);
            forward(&self.samples, n("samples"));
            forward(
                &self.refused.with_label_values(&["series_limit"]),
                n("refused_samples"),
            );
            forward(&self.out_of_order, n("out_of_order_samples"));
            forward(&self.evaluations, n("evaluations"));
            if let Some(ds) = stats.get("decisions").and_then(Value::as_object) {
                for (kind, v) in ds {
                    forward(
                        &self.decisions.with_label_values(&[kind.as_str()]),
                        v.as_u64().unwrap_or(0),
                    );
                }
            }
        }
        // Every service that has deployed has a line (open unless the engine says blocked).
        let mut services = std::collections::BTreeMap::new();
        if let Ok(Value::Array(deploys)) = engine.query(Query::Deploys).await {
            for d in deploys {
                if let Some(s) = d.get("service").and_then(Value::as_str) {
                    services.insert(s.to_string(), false);
                }
            }
        }
        if let Ok(Value::Object(lines)) = engine.query(Query::Lines).await {
            for (service, line) in lines {
                services.insert(service, line.get("blocked").is_some_and(|b| !b.is_null()));
            }
        }
        for (service, blocked) in services {
            self.blocked
                .with_label_values(&[service.as_str()])
                .set(i64::from(blocked));
        }
    }

    /// The text exposition of every registered family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Moves a counter forward to `total` (never back).
fn forward(c: &IntCounter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}
