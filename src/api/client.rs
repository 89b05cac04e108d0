//! A client for the deploy API, behind `immune deploy start|full|end|abort|status|watch|unblock`
//! and `immune lines`,
//! so a deploy script needs nothing but the `immune` binary. The demo uses it too, so the
//! demo's deploys take the same HTTP path a real deploy tool does.

use super::deploys::{DeployStep, EventAnswer, StartDeploy, Unblock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// immune could not be reached or answered garbage.
    #[error("{0}")]
    Http(String),
    /// immune refused the request.
    #[error("HTTP {status}: {error}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Refused {
        /// The status code.
        status: u16,
        /// immune's message.
        error: String,
        /// The field it concerns.
        field: Option<String>,
    },
}

/// The next step of a deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Live everywhere.
    Full,
    /// Rollout finished.
    End,
    /// Rolled back by the deploy tool.
    Abort,
}

impl Step {
    fn path(self) -> &'static str {
        match self {
            Step::Full => "full",
            Step::End => "end",
            Step::Abort => "abort",
        }
    }
}

/// A deploy API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for immune at `base` (e.g. `http://127.0.0.1:9977`).
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            ClientError::Http(format!("{}: {}", self.base, crate::logging::chain(&e)))
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Http(crate::logging::chain(&e)))?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error: v
                    .get("error")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
                field: v.get("field").and_then(Value::as_str).map(String::from),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Http(format!("bad answer: {e}")))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// Starts a canary.
    pub async fn start(&self, body: &StartDeploy) -> Result<EventAnswer, ClientError> {
        self.post("/api/v1/deploys", body).await
    }

    /// Reports the next step of deploy `id`.
    pub async fn step(
        &self,
        id: &str,
        step: Step,
        body: &DeployStep,
    ) -> Result<EventAnswer, ClientError> {
        self.post(
            &format!("/api/v1/deploys/{}/{}", seg(id), step.path()),
            body,
        )
        .await
    }

    /// A deploy's state and decisions.
    pub async fn status(&self, id: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/deploys/{}", self.base, seg(id))),
        )
        .await
    }

    /// A service's line.
    pub async fn line(&self, service: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}/api/v1/lines/{}", self.base, seg(service))),
        )
        .await
    }

    /// Every line that has ever been blocked (`GET /api/v1/lines`).
    pub async fn lines(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}/api/v1/lines", self.base)))
            .await
    }

    /// Deploys in flight and recent (`GET /api/v1/deploys`): the `deploys` array.
    pub async fn deploys(&self) -> Result<Vec<Value>, ClientError> {
        let v: Value = self
            .send(self.http.get(format!("{}/api/v1/deploys", self.base)))
            .await?;
        Ok(v.get("deploys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Reopens a blocked line.
    pub async fn unblock(&self, service: &str, body: &Unblock) -> Result<EventAnswer, ClientError> {
        self.post(&format!("/api/v1/lines/{}/unblock", seg(service)), body)
            .await
    }
}

/// Percent-encodes a path segment (ids may hold `/` or spaces).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
