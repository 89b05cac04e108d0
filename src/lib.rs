//! immune: a cluster immune system for continuous deployment.
//!
//! Module map:
//! - [`model`]: time, labels, samples, deploy events, decisions (the shared vocabulary).
//! - [`stats`]: the statistical tests, pure functions with cited methods.
//! - [`rules`]: rule files (YAML), their checking and the compiled form.
//! - [`engine`]: the deterministic judge: series store, per-deploy analyses, decisions.
//! - [`textformat`]: Prometheus text / OpenMetrics parsing.
//! - [`replay`]: runs the engine over files with the files' clock.
//! - [`report`]: HTML report pages (deploy, index) with inline SVG charts, for the agent and `replay --report`.
//! - [`sim`]: a fleet simulator for tests, demos and benchmarks.
//! - [`sources`]: tasks reading MySQL, memcached, exporters, PromQL, pushes into the engine.
//! - [`api`]: the HTTP API (deploy events, state, push, reload, own metrics) and its client.
//! - [`history`]: a Prometheus-compatible TSDB's history: backtests, `check --against`, `promtool tsdb dump` input.
//! - [`experiment`]: experiments (hypothesis builder): schema, loading, deterministic assignment.
//! - [`logging`]: the log subscriber (RUST_LOG / IMMUNE_LOG, colour only on a terminal) and error cause chains.
//! - [`config`]: the configuration file, `immune.yaml`.
//! - [`bench`]: `immune bench`: detection against other methods, and performance.
//! - [`serve`]: the live agent wiring sources, engine, signals and API; [`demo`] runs it on the simulator.
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod config;
pub mod defaults;
pub mod demo;
pub mod engine;
pub mod experiment;
pub mod history;
pub mod limits;
pub mod logging;
pub mod model;
pub mod replay;
pub mod report;
pub mod rules;
pub mod serve;
pub mod signals;
pub mod sim;
pub mod sources;
pub mod stats;
pub mod textformat;
