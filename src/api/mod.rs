//! The HTTP API (axum): deploy events, deploy and line state, push and remote_write, rule
//! reload, and immune's own /metrics.
//!
//! | Method | Path | Auth | What |
//! |---|---|---|---|
//! | POST | `/api/v1/deploys` | yes | start a canary |
//! | POST | `/api/v1/deploys/{id}/full` \| `end` \| `abort` | yes | next step of a deploy |
//! | GET | `/api/v1/deploys`, `/api/v1/deploys/{id}` | no | deploy state and decisions |
//! | GET | `/api/v1/lines`, `/api/v1/lines/{service}` | no | line state |
//! | GET | `/api/v1/rules` | no | each rule's series now, their age, deploys, last verdict ([`rules`]) |
//! | GET | `/api/v1/series`, `/api/v1/label/__name__/values` | no | Prometheus-style lookups, for `immune check --against` |
//! | POST | `/api/v1/lines/{service}/unblock` | yes | reopen a blocked line (`by`, `reason`) |
//! | POST | `/api/v1/push` | yes | Prometheus text, Pushgateway style |
//! | POST | `/api/v1/write` | yes | Prometheus remote_write |
//! | GET | `/-/healthy` | no | 200 while the engine thread answers, 503 otherwise |
//! | GET | `/-/ready` | no | 200 when rules are loaded, the outbox writes and the engine answers |
//! | POST | `/-/reload` | yes | reload rules |
//! | GET | `/metrics`, `/-/healthy` | no | own metrics, liveness |
//! | GET | `/api/v1/experiments`, `/api/v1/experiments/{name}`, `.../{name}/assign` | no | experiments, their state, assignment |
//! | POST | `/api/v1/experiments/{name}/events` | yes | exposures and outcomes |
//! | POST | `/api/v1/experiments/{name}/close` | yes | close an experiment with its result |
//! | GET | `/`, `/deploys/{id}` | no | report pages for people (HTML, [`pages`]) |
//! | GET | `/experiments/{name}` | no | an experiment's page (HTML) |
//! | POST | `/lines/{service}/unblock` | token field | the index page's unblock form |
//!
//! plus the pull gates of [`crate::signals::gates_router`], and the Flagger and Argo
//! Rollouts webhooks that drive deploys ([`crate::signals::drive`]: `POST
//! /api/v1/flagger/{type}`, `POST /api/v1/argo/analysis`). State-changing endpoints need
//! `Authorization: Bearer <token>` when tokens are configured. Bodies are limited
//! (`api.body_limit`, `api.write_body_limit` for push and remote_write) and every request
//! has `api.request_timeout`. Errors are JSON `{"error", "field"}` (see [`error`]).

pub mod client;
pub mod deploys;
pub mod error;
pub mod experiments;
pub mod http;
pub mod metrics;
pub mod pages;
pub mod rules;

use crate::config::ApiConfig;
use crate::engine::handle::EngineHandle;
use crate::limits::{LimitError, Limits};
use crate::model::EventWindow;
use crate::serve::{Clock, Reloader};
use crate::signals::Signals;
use crate::sources::push::{self, PushError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use metrics::AgentMetrics;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: EngineHandle,
    /// The outbox and durable state.
    pub signals: Signals,
    /// The agent's clock.
    pub clock: Arc<dyn Clock>,
    /// Own metrics.
    pub metrics: AgentMetrics,
    /// Rule reloads.
    pub reloader: Arc<Reloader>,
    /// Limits on pushed samples.
    pub limits: Limits,
    /// Accepted event times around the clock.
    pub events: EventWindow,
    /// How long the engine may spend on one input before `/-/healthy` fails.
    pub liveness: Duration,
    /// The experiments loaded from `experiments:` files.
    pub experiments: Arc<Vec<crate::experiment::Experiment>>,
    /// Participants, outcomes and verdicts of those experiments.
    pub registry: Arc<crate::experiment::registry::Registry>,
}

/// Builds the whole router.
pub fn router(state: ApiState, cfg: &ApiConfig, tokens: Vec<String>) -> Router {
    let tokens = Arc::new(tokens);
    let (driver_state, driver_tokens) = (state.clone(), tokens.clone());
    let form = Router::new()
        .route("/lines/{service}/unblock", post(pages::unblock))
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .with_state((state.clone(), tokens.clone()));
    let auth = middleware::from_fn_with_state(tokens, require_token);
    let changes = Router::new()
        .route("/api/v1/deploys", post(deploys::start))
        .route("/api/v1/deploys/{id}/full", post(deploys::full))
        .route("/api/v1/deploys/{id}/end", post(deploys::end))
        .route("/api/v1/deploys/{id}/abort", post(deploys::abort))
        .route("/api/v1/lines/{service}/unblock", post(deploys::unblock))
        .route("/-/reload", post(reload))
        .route(
            "/api/v1/experiments/{name}/events",
            post(experiments::events),
        )
        .route("/api/v1/experiments/{name}/close", post(experiments::close))
        .route_layer(auth.clone())
        .layer(DefaultBodyLimit::max(cfg.body_limit));
    let writes = Router::new()
        .route("/api/v1/push", post(push_text))
        .route("/api/v1/write", post(remote_write))
        .route_layer(auth)
        .layer(DefaultBodyLimit::max(cfg.write_body_limit));
    let reads = Router::new()
        .route("/metrics", get(own_metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/api/v1/deploys", get(deploys::list))
        .route("/api/v1/deploys/{id}", get(deploys::get_one))
        .route("/api/v1/lines", get(deploys::lines))
        .route("/api/v1/lines/{service}", get(deploys::line))
        .route("/api/v1/rules", get(rules::rules))
        .route("/api/v1/series", get(rules::series))
        .route("/api/v1/label/__name__/values", get(rules::names))
        .route("/api/v1/experiments", get(experiments::list))
        .route("/api/v1/experiments/{name}", get(experiments::get_one))
        .route(
            "/api/v1/experiments/{name}/assign",
            get(experiments::assign),
        )
        .route("/", get(pages::index))
        .route("/deploys/{id}", get(pages::deploy))
        .route("/experiments/{name}", get(experiments::page))
        .layer(DefaultBodyLimit::max(cfg.body_limit));
    let engine = state.engine.clone();
    let signals = state.signals.clone();
    Router::new()
        .merge(changes)
        .merge(writes)
        .merge(reads)
        .with_state(state)
        .merge(form)
        .merge(crate::signals::gates_router_with(
            engine,
            crate::signals::GateOptions {
                signals: Some(signals),
                unknown_service_open: cfg.unknown_service == crate::config::UnknownService::Open,
                driver: Some(crate::signals::drive::Driver {
                    api: driver_state,
                    tokens: driver_tokens,
                }),
            },
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(
            cfg.request_timeout.std(),
            time_limit,
        ))
}

/// Refuses requests without one of the configured bearer tokens (none configured: open).
async fn require_token(
    State(tokens): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if tokens.iter().any(|k| same(k.as_bytes(), t.as_bytes())) => next.run(req).await,
        _ => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <token>",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bounds every request's time.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    }
}

/// Liveness: the engine thread runs and is not stuck on one input.
async fn healthy(State(state): State<ApiState>) -> Response {
    match state.engine.liveness(state.liveness) {
        Ok(()) => "OK\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not healthy: {why}\n"),
        )
            .into_response(),
    }
}

/// Readiness (as Prometheus's `/-/ready`): rules loaded, the outbox writable with no
/// decision waiting in memory, and the engine answering. Every failing check is named.
async fn ready(State(state): State<ApiState>) -> Response {
    let mut why: Vec<String> = Vec::new();
    if let Err(e) = state.engine.liveness(state.liveness) {
        why.push(format!("engine: {e}"));
    }
    let rules = match tokio::time::timeout(
        state.liveness,
        state.engine.query(crate::engine::handle::Query::Stats),
    )
    .await
    {
        Ok(Ok(stats)) => stats.get("rules").and_then(serde_json::Value::as_u64),
        Ok(Err(e)) => {
            why.push(format!("engine: {e}"));
            None
        }
        Err(_) => {
            why.push("engine: did not answer".into());
            None
        }
    };
    if rules == Some(0) {
        why.push("rules: none loaded".into());
    }
    let signals = state.signals.clone();
    let now = state.clock.now().0;
    match tokio::task::spawn_blocking(move || signals.writable(now)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => why.push(format!("outbox: {e}")),
        Err(e) => why.push(format!("outbox: {e}")),
    }
    if why.is_empty() {
        axum::Json(json!({"ready": true, "rules": rules})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "rules": rules, "reasons": why})),
        )
            .into_response()
    }
}

async fn own_metrics(State(state): State<ApiState>) -> Response {
    state.metrics.refresh(&state.engine).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render() + &experiments::render_metrics(&state),
    )
        .into_response()
}

async fn reload(State(state): State<ApiState>) -> Response {
    match state.reloader.reload().await {
        Ok(n) => axum::Json(json!({"status": "reloaded", "rules": n})).into_response(),
        Err(diags) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": "rules not reloaded; the running rules are kept",
                "field": null,
                "diagnostics": diags.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

fn push_error(source: &str, state: &ApiState, e: PushError) -> ApiError {
    state.metrics.sources.error(source);
    match e {
        PushError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        _ => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn push_text(
    State(state): State<ApiState>,
    Query(labels): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    const SOURCE: &str = "push";
    let now = state.clock.now();
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "body is not UTF-8 text"))?;
    let labels: Vec<(String, String)> = labels.into_iter().collect();
    let batch =
        push::decode_text_batch(text, now, &labels).map_err(|e| push_error(SOURCE, &state, e))?;
    ingest(SOURCE, &state, batch).await
}

async fn remote_write(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    const SOURCE: &str = "remote_write";
    let batch = push::decode_write_batch(&body).map_err(|e| push_error(SOURCE, &state, e))?;
    ingest(SOURCE, &state, batch).await
}

fn limit_error(e: &LimitError, status: StatusCode) -> ApiError {
    ApiError::new(status, e.to_string()).field(format!("limits.{}", e.limit.reason()))
}

/// Applies the limits, hands what passes to the engine, and answers what became of it:
/// 204 all stored; 413 the request is over a per-request limit (nothing stored); 400 some
/// series were over a label limit (the others stored); 429 with `Retry-After` when new
/// series were refused because `engine.max_series` is reached (the others stored).
async fn ingest(
    source: &str,
    state: &ApiState,
    mut batch: crate::engine::batch::SampleBatch,
) -> Result<Response, ApiError> {
    if let Err(e) = state
        .limits
        .check_request_size(batch.samples(), || batch.distinct_series())
    {
        state.metrics.sources.error(source);
        return Err(limit_error(&e, StatusCode::PAYLOAD_TOO_LARGE));
    }
    let over = push::apply_label_limits(&state.limits, &mut batch);
    let report = push::deliver(&state.engine, batch)
        .await
        .map_err(|e| push_error(source, state, e))?;
    state
        .metrics
        .sources
        .success(source, state.clock.now(), report.stored);
    if let Some(e) = over {
        return Err(limit_error(&e, StatusCode::BAD_REQUEST));
    }
    if report.series_limit > 0 {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "series limit (engine.max_series) reached: {} sample(s) of new series refused, {} stored",
                report.series_limit, report.stored
            ),
        )
        .field("engine.max_series")
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Ok(r);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
