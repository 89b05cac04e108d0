//! Flagger or Argo Rollouts alone can drive a deploy: their webhooks start, ask about and
//! end deploys, so a cluster that uses one of them needs no deploy script calling immune.
//!
//! **Flagger** (`POST /api/v1/flagger/{check}`, `check` = the webhook's `type`) sends
//! `{"name", "namespace", "phase", "checksum", "metadata"}` (metadata: the webhook's own
//! string map). What each type does:
//!
//! A webhook whose metadata has `canary` (the label values that mark the canary's
//! series) drives the deploy; without it every type only reads, as the gates always did
//! (so a Canary whose deploys a script reports keeps working unchanged). What each type
//! does:
//!
//! | type | immune (with `metadata.canary`) | answer |
//! |---|---|---|
//! | `confirm-rollout`, `pre-rollout` | starts the deploy (once; later calls read it) | 200 healthy, 403 not |
//! | `rollout`, `confirm-traffic-increase` | reads the verdict | 200 healthy, 403 halt |
//! | `confirm-promotion` | reads | 200 once immune promoted or passed the canary, else 403 (Flagger waits) |
//! | `rollback` | reads | 200 when immune decided rollback/block (Flagger rolls back), else 403 |
//! | `post-rollout` | ends the deploy (`phase: Failed`: aborts it, by Flagger) | 200 |
//! | anything else (`event`) | reads | 200 healthy, 403 not |
//!
//! Metadata keys: `canary` (the canary series as `label=value`, comma separated, e.g.
//! `app=web`: Flagger's canary pods carry `app=<name>`, the primary's `app=<name>-primary`),
//! `service` (default: the Canary's name), `deploy` (default
//! `<namespace>/<name>/<checksum>`), `version`, `commits` (comma separated), `by`, and
//! `token`: Flagger sends no headers, so when API tokens are configured a webhook that
//! starts or ends a deploy must carry one of them in `metadata.token` (or an
//! `Authorization: Bearer` header); without it the answer is 401 and nothing changes.
//!
//! **Argo Rollouts** (`POST /api/v1/argo/analysis`, the `web` metric provider with
//! `method: POST` and a JSON `body`): the body names the deploy as `POST /api/v1/deploys`
//! does (`deploy`, `service`, `canary`, optional `version`, `commits`, `by`) plus an
//! optional `event` (`full`, `end`). An unknown deploy is started, a known one read; `full`
//! and `end` are applied once. The answer is the verdict (`healthy`, `decision`, `summary`,
//! ...) with `started`, always 200, so `jsonPath: "{$.healthy}"` with `successCondition:
//! result == true` and `failureCondition: result == false` reads it. It needs the API
//! token as `Authorization: Bearer` when tokens are configured (Argo sends headers).
//!
//! Without a [`Driver`] (a gates-only router) every Flagger type only reads, as before,
//! and the Argo endpoint is absent.

use super::gates::{self, FlaggerRequest, GateState};
use crate::api::ApiState;
use crate::model::{CanarySelector, DeployEvent, DeployEventKind, OneOrMany};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// What the driving webhooks need beyond the gates: the deploy API's state and tokens.
#[derive(Clone)]
pub struct Driver {
    /// The deploy API's state (engine, outbox, clock).
    pub api: ApiState,
    /// The API tokens; empty means none are required.
    pub tokens: Arc<Vec<String>>,
}

fn error(status: StatusCode, msg: impl Into<String>, field: Option<&str>) -> Response {
    (status, Json(json!({"error": msg.into(), "field": field}))).into_response()
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries one of the tokens (as a Bearer header or `given`), or none
/// is configured.
fn authorized(d: &Driver, headers: &HeaderMap, given: Option<&str>) -> bool {
    if d.tokens.is_empty() {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    [bearer, given.map(str::trim)]
        .into_iter()
        .flatten()
        .any(|t| d.tokens.iter().any(|k| same(k.as_bytes(), t.as_bytes())))
}

/// `label=value,label=value` as a canary selector (values of one label accumulate).
pub fn parse_canary(text: &str) -> Result<CanarySelector, String> {
    let mut sel = CanarySelector::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("canary {part:?}: expected label=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(format!("canary {part:?}: expected label=value"));
        }
        match sel
            .entry(k.to_string())
            .or_insert_with(|| OneOrMany::Many(Vec::new()))
        {
            OneOrMany::Many(vs) => vs.push(v.to_string()),
            OneOrMany::One(_) => {}
        }
    }
    if sel.is_empty() {
        return Err("canary names no label=value".into());
    }
    Ok(sel)
}

/// The deploy a Flagger request is about, and its service.
fn flagger_ids(req: &FlaggerRequest) -> (String, String) {
    let service = req
        .metadata
        .get("service")
        .cloned()
        .unwrap_or_else(|| req.name.clone());
    let deploy = req.metadata.get("deploy").cloned().unwrap_or_else(|| {
        let ns = req.namespace.as_deref().unwrap_or("default");
        match req.checksum.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => format!("{ns}/{}/{c}", req.name),
            None => format!("{ns}/{}", req.name),
        }
    });
    (deploy, service)
}

/// The engine's view of `deploy`, `None` when it does not hold it.
async fn view_of(api: &ApiState, deploy: &str) -> Result<Option<Value>, Response> {
    match api
        .engine
        .query(crate::engine::handle::Query::Deploy(deploy.to_string()))
        .await
    {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("engine unavailable: {e}"),
            None,
        )),
    }
}

/// Applies a deploy event as the deploy API does (durable first).
async fn apply(api: &ApiState, ev: DeployEvent) -> Result<(), Response> {
    crate::api::deploys::apply(api, ev)
        .await
        .map(|_| ())
        .map_err(IntoResponse::into_response)
}

/// Starts `deploy` unless the engine already holds it; `Ok(true)` when started.
async fn start_once(
    api: &ApiState,
    deploy: &str,
    service: &str,
    canary: CanarySelector,
    version: Option<String>,
    commits: Vec<String>,
    by: Option<String>,
) -> Result<bool, Response> {
    if view_of(api, deploy).await?.is_some() {
        return Ok(false);
    }
    apply(
        api,
        DeployEvent {
            at: api.clock.now().as_secs_f64(),
            deploy: Some(deploy.to_string()),
            event: DeployEventKind::Canary,
            service: Some(service.to_string()),
            version,
            commits,
            canary: Some(canary),
            by,
            reason: None,
        },
    )
    .await?;
    Ok(true)
}

/// Applies `kind` (full, end, abort) to `deploy` unless it is unknown or already done
/// (webhooks are retried: the second call must not fail); `Ok(true)` when applied.
async fn step_once(
    api: &ApiState,
    deploy: &str,
    kind: DeployEventKind,
    by: Option<String>,
    reason: Option<String>,
) -> Result<bool, Response> {
    let Some(view) = view_of(api, deploy).await? else {
        return Ok(false);
    };
    let phase = view
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let already = match kind {
        DeployEventKind::Full => phase != "canary",
        _ => phase == "done",
    };
    if already {
        return Ok(false);
    }
    apply(
        api,
        DeployEvent {
            at: api.clock.now().as_secs_f64(),
            deploy: Some(deploy.to_string()),
            event: kind,
            service: None,
            version: None,
            commits: Vec::new(),
            canary: None,
            by,
            reason,
        },
    )
    .await?;
    Ok(true)
}

fn list(meta: Option<&String>) -> Vec<String> {
    meta.map(|c| {
        c.split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// `POST /api/v1/flagger/{check}` (see the module doc).
pub(crate) async fn flagger(
    st: GateState,
    check: String,
    headers: HeaderMap,
    req: FlaggerRequest,
) -> Response {
    let (deploy, service) = flagger_ids(&req);
    let named = req.metadata.get("deploy").cloned();
    let Some(d) = st.opts.driver.clone() else {
        return gates::flagger_answer(&st, &check, &req, &service, named.as_deref(), None).await;
    };
    let Some(canary_text) = req.metadata.get("canary").cloned() else {
        return gates::flagger_answer(&st, &check, &req, &service, named.as_deref(), None).await;
    };
    let mutates = matches!(
        check.as_str(),
        "confirm-rollout" | "pre-rollout" | "post-rollout"
    );
    if mutates && !authorized(&d, &headers, req.metadata.get("token").map(String::as_str)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this webhook starts or ends a deploy: put an API token in metadata.token (or send Authorization: Bearer <token>)",
            Some("metadata.token"),
        );
    }
    let mut started = None;
    match check.as_str() {
        "confirm-rollout" | "pre-rollout" => {
            let canary = match parse_canary(&canary_text) {
                Ok(c) => c,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, e, Some("metadata.canary"));
                }
            };
            match start_once(
                &d.api,
                &deploy,
                &service,
                canary,
                req.metadata.get("version").cloned(),
                list(req.metadata.get("commits")),
                req.metadata.get("by").cloned(),
            )
            .await
            {
                Ok(s) => started = Some(s),
                Err(r) => return r,
            }
        }
        "post-rollout" => {
            let failed = req.phase.as_deref() == Some("Failed");
            let (kind, by, reason) = if failed {
                (
                    DeployEventKind::Abort,
                    Some("flagger".to_string()),
                    Some("Flagger rolled the canary back".to_string()),
                )
            } else {
                (DeployEventKind::End, None, None)
            };
            if let Err(r) = step_once(&d.api, &deploy, kind, by, reason).await {
                return r;
            }
        }
        _ => {}
    }
    // Read the deploy this Canary started; one started otherwise (a script, Argo) is read
    // as the gates always did: named in metadata.deploy, else the service's newest.
    let read = match view_of(&d.api, &deploy).await {
        Ok(Some(_)) => Some(deploy),
        Ok(None) => named,
        Err(r) => return r,
    };
    gates::flagger_answer(&st, &check, &req, &service, read.as_deref(), started).await
}

/// Body of `POST /api/v1/argo/analysis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoRequest {
    /// The deploy's id (e.g. the Rollout's name and its new pod template hash).
    pub deploy: String,
    /// The service deployed.
    pub service: String,
    /// Which series are canary: label name → value(s).
    pub canary: CanarySelector,
    /// The version deployed.
    #[serde(default)]
    pub version: Option<String>,
    /// Commits in the deploy.
    #[serde(default)]
    pub commits: Vec<String>,
    /// Who deployed.
    #[serde(default)]
    pub by: Option<String>,
    /// `full` or `end` to report that step (once); absent: start or read.
    #[serde(default)]
    pub event: Option<String>,
}

/// `POST /api/v1/argo/analysis` (see the module doc).
pub(crate) async fn argo(
    State(st): State<GateState>,
    headers: HeaderMap,
    body: Result<Json<ArgoRequest>, JsonRejection>,
) -> Response {
    let Some(d) = st.opts.driver.clone() else {
        return error(StatusCode::NOT_FOUND, "no such endpoint", None);
    };
    if !authorized(&d, &headers, None) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs Authorization: Bearer <token>",
            None,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return crate::api::error::ApiError::from(e).into_response(),
    };
    if req.deploy.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "deploy must not be empty",
            Some("deploy"),
        );
    }
    if req.canary.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "canary must name at least one label and its values",
            Some("canary"),
        );
    }
    let started = match start_once(
        &d.api,
        &req.deploy,
        &req.service,
        req.canary.clone(),
        req.version.clone(),
        req.commits.clone(),
        req.by.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let step = match req.event.as_deref() {
        None => None,
        Some("full") => Some(DeployEventKind::Full),
        Some("end") => Some(DeployEventKind::End),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("event {other:?}: expected full or end (or none to start or read)"),
                Some("event"),
            );
        }
    };
    if let Some(kind) = step
        && let Err(r) = step_once(&d.api, &req.deploy, kind, None, None).await
    {
        return r;
    }
    match gates::compute(&st, &req.service, Some(&req.deploy)).await {
        Ok(mut v) => {
            if let Some(b) = gates::unrecorded_block(st.opts.signals.as_ref(), &req.service) {
                v = gates::fail_closed(v, b);
            }
            v["started"] = json!(started);
            Json(v).into_response()
        }
        Err(r) => r,
    }
}

/// `POST /api/v1/flagger/{check}` behind the gates router.
pub(crate) async fn flagger_route(
    State(st): State<GateState>,
    Path(check): Path<String>,
    headers: HeaderMap,
    body: Result<Json<FlaggerRequest>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(req)) => flagger(st, check, headers, req).await,
        Err(e) => crate::api::error::ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_metadata_parses() {
        let s = parse_canary("instance=web-03:80, instance=web-04:80,az=b").unwrap();
        assert_eq!(
            s.get("instance"),
            Some(&OneOrMany::Many(vec![
                "web-03:80".into(),
                "web-04:80".into()
            ]))
        );
        assert!(parse_canary("web-03").is_err());
        assert!(parse_canary("").is_err());
    }

    #[test]
    fn flagger_ids_default_to_the_canary() {
        let req: FlaggerRequest = serde_json::from_value(json!({
            "name": "podinfo", "namespace": "test", "phase": "Progressing",
            "checksum": "85d557f47b", "metadata": {}
        }))
        .unwrap();
        assert_eq!(
            flagger_ids(&req),
            ("test/podinfo/85d557f47b".to_string(), "podinfo".to_string())
        );
    }
}
