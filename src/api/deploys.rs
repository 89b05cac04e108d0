//! The deploy API: deploy tools report canary / full / end / abort, read a deploy's state,
//! and people unblock a service's line.
//!
//! Each request becomes a [`DeployEvent`] (stamped with the agent's `now` unless it carries
//! `at`), is applied by the engine, and, once accepted, is remembered by the signals store
//! so an analysis in flight survives a restart. The answer carries any decisions the event
//! caused at once (a canary on a blocked line, the final decision of `end`).
//!
//! Two promises the answers keep:
//! - **`at` is checked** against the agent's clock (`api.max_event_age` in the past,
//!   `api.max_event_lead` ahead; a missing `at` means now): anything else is a 400 naming
//!   `at`, so a garbled time never reaches the engine.
//! - **"Applied" means durable.** An event is accepted only while the outbox can write
//!   (and no decision waits in memory); otherwise it is answered 503 before it reaches the
//!   engine. If the store fails after the engine applied it, the answer is 503 too, saying
//!   the event will not survive a restart: a client is never told "stored" when it was not.
//!
//! `GET /api/v1/deploys/{id}` falls back to the deploy's stored history when the engine no
//! longer holds it (after a restart, or past `engine.recent_deploys`).

use super::ApiState;
use super::error::ApiError;
use crate::engine::handle::Query;
use crate::model::{CanarySelector, Decision, DeployEvent, DeployEventKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Body of `POST /api/v1/deploys`: the new version is live on the canary hosts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartDeploy {
    /// The deploy's id, unique among deploys in progress.
    pub deploy: String,
    /// The service deployed.
    pub service: String,
    /// The version deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Commits in the deploy, for people reading decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    /// Which series are canary: label name → values (e.g. `{"instance": ["web-03:80"]}`).
    pub canary: CanarySelector,
    /// Who deployed, for people reading decisions, alerts and the report page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When, in seconds since the epoch (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
}

/// Body of `POST /api/v1/deploys/{id}/full|end|abort` (optional, every field optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStep {
    /// When, in seconds since the epoch (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    /// Who acted (abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why (abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/lines/{service}/unblock`: a person acknowledges the block.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unblock {
    /// Who acknowledges.
    pub by: String,
    /// Why the line may open again.
    pub reason: String,
    /// When, in seconds since the epoch (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
}

/// What a deploy event request answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventAnswer {
    /// The deploy (absent for unblock).
    #[serde(default)]
    pub deploy: Option<String>,
    /// The event applied.
    pub event: DeployEventKind,
    /// When it was applied (seconds).
    pub at: f64,
    /// Decisions the event caused at once.
    pub decisions: Vec<Decision>,
}

pub(crate) async fn apply(state: &ApiState, ev: DeployEvent) -> Result<EventAnswer, ApiError> {
    let signals = state.signals.clone();
    let now = state.clock.now().0;
    let writable = tokio::task::spawn_blocking(move || signals.writable(now))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if let Err(why) = writable {
        tracing::error!(deploy = ev.deploy.as_deref().unwrap_or(""), reason = %why, "Deploy event refused: it could not be made durable.");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("event not applied: it could not be made durable ({why})"),
        ));
    }
    let decisions = state.engine.deploy_event(ev.clone()).await??;
    let signals = state.signals.clone();
    let stored_ev = ev.clone();
    let stored = tokio::task::spawn_blocking(move || signals.record_deploy_event(&stored_ev))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = stored {
        tracing::error!(deploy = ev.deploy.as_deref().unwrap_or(""), error = %e, "Deploy event applied but not stored; it will not survive a restart.");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("event applied in memory but not stored ({e}); it will not survive a restart"),
        ));
    }
    tracing::info!(
        deploy = ev.deploy.as_deref().map(tracing::field::display),
        service = ev.service.as_deref().map(tracing::field::display),
        event = %event_name(ev.event),
        "Deploy event."
    );
    Ok(EventAnswer {
        deploy: ev.deploy,
        event: ev.event,
        at: ev.at,
        decisions,
    })
}

/// The event kind as the API spells it, for logs.
pub(crate) fn event_name(kind: DeployEventKind) -> &'static str {
    match kind {
        DeployEventKind::Canary => "canary",
        DeployEventKind::Full => "full",
        DeployEventKind::End => "end",
        DeployEventKind::Abort => "abort",
        DeployEventKind::Unblock => "unblock",
    }
}

/// The event's time: `at` when given and within the accepted window, else now.
fn now_or(state: &ApiState, at: Option<f64>) -> Result<f64, ApiError> {
    let now = state.clock.now();
    match at {
        None => Ok(now.as_secs_f64()),
        Some(at) => state
            .events
            .check(at, now)
            .map(|_| at)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e).field("at")),
    }
}

/// `POST /api/v1/deploys`.
pub async fn start(
    State(state): State<ApiState>,
    body: Result<Json<StartDeploy>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    if b.deploy.trim().is_empty() {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "deploy must not be empty").field("deploy"),
        );
    }
    if b.canary.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "canary must name at least one label and its values",
        )
        .field("canary"));
    }
    let ev = DeployEvent {
        at: now_or(&state, b.at)?,
        deploy: Some(b.deploy),
        event: DeployEventKind::Canary,
        service: Some(b.service),
        version: b.version,
        commits: b.commits,
        canary: Some(b.canary),
        by: b.by,
        reason: None,
    };
    let answer = apply(&state, ev).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

fn step_body(body: &Bytes) -> Result<DeployStep, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeployStep::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_json(e.to_string()))
}

async fn step(
    state: ApiState,
    id: String,
    kind: DeployEventKind,
    body: Bytes,
) -> Result<Json<EventAnswer>, ApiError> {
    let b = step_body(&body)?;
    let ev = DeployEvent {
        at: now_or(&state, b.at)?,
        deploy: Some(id),
        event: kind,
        service: None,
        version: None,
        commits: Vec::new(),
        canary: None,
        by: b.by,
        reason: b.reason,
    };
    Ok(Json(apply(&state, ev).await?))
}

/// `POST /api/v1/deploys/{id}/full`.
pub async fn full(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EventAnswer>, ApiError> {
    step(state, id, DeployEventKind::Full, body).await
}

/// `POST /api/v1/deploys/{id}/end`.
pub async fn end(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EventAnswer>, ApiError> {
    step(state, id, DeployEventKind::End, body).await
}

/// `POST /api/v1/deploys/{id}/abort`.
pub async fn abort(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EventAnswer>, ApiError> {
    step(state, id, DeployEventKind::Abort, body).await
}

/// `GET /api/v1/deploys/{id}`.
pub async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.engine.query(Query::Deploy(id.clone())).await? {
        Value::Null => {
            let signals = state.signals.clone();
            let key = id.clone();
            let stored = tokio::task::spawn_blocking(move || signals.history(&key))
                .await
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            match stored {
                Some(mut v) => {
                    if let Value::Object(m) = &mut v {
                        m.insert("from_history".into(), Value::Bool(true));
                    }
                    Ok(Json(v))
                }
                None => Err(
                    ApiError::new(StatusCode::NOT_FOUND, format!("unknown deploy {id:?}"))
                        .field("deploy"),
                ),
            }
        }
        v => Ok(Json(v)),
    }
}

/// `GET /api/v1/deploys`.
pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"deploys": state.engine.query(Query::Deploys).await?}),
    ))
}

/// `GET /api/v1/lines/{service}`.
pub async fn line(
    State(state): State<ApiState>,
    Path(service): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut v = state.engine.query(Query::Line(service.clone())).await?;
    if let Value::Object(m) = &mut v {
        m.insert("service".into(), Value::String(service));
    }
    Ok(Json(v))
}

/// `GET /api/v1/lines`.
pub async fn lines(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.engine.query(Query::Lines).await?))
}

/// `POST /api/v1/lines/{service}/unblock`.
pub async fn unblock(
    State(state): State<ApiState>,
    Path(service): Path<String>,
    body: Result<Json<Unblock>, JsonRejection>,
) -> Result<Json<EventAnswer>, ApiError> {
    let Json(b) = body?;
    for (field, v) in [("by", &b.by), ("reason", &b.reason)] {
        if v.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{field} must not be empty"),
            )
            .field(field));
        }
    }
    let ev = DeployEvent {
        at: now_or(&state, b.at)?,
        deploy: None,
        event: DeployEventKind::Unblock,
        service: Some(service),
        version: None,
        commits: Vec::new(),
        canary: None,
        by: Some(b.by),
        reason: Some(b.reason),
    };
    Ok(Json(apply(&state, ev).await?))
}
