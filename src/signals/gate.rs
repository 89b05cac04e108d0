//! `immune gate`: asks a running immune whether a service's line is open, for deploy
//! scripts (`immune gate --service web && ./deploy.sh`).
//!
//! It reads `GET <url>/api/v1/gate/<service>`: 200 means open, 423 means blocked (the
//! answer says by which deploy, rule and decision, or `unknown service` for a service
//! immune has never seen). Anything else is an error, so a script never mistakes an
//! unreachable or misconfigured immune for an open line.

use serde_json::Value;
use std::time::Duration;

/// Why the gate could not be read (exit status 2 at the CLI).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The URL or service does not make a valid URL.
    #[error("bad url {url:?}: {reason}")]
    Url {
        /// The base URL given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// immune did not answer.
    #[error("cannot reach immune at {url}: {reason}")]
    Unreachable {
        /// The URL asked (without credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// immune answered something other than open or blocked.
    #[error("immune answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was not the expected JSON.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// The output could not be written.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

/// The gate URL for `service` under `base` (the service is one escaped path segment).
pub fn gate_url(base: &str, service: &str) -> Result<reqwest::Url, GateError> {
    let bad = |reason: String| GateError::Url {
        url: super::redact_url(base),
        reason,
    };
    let mut u = reqwest::Url::parse(base).map_err(|e| bad(e.to_string()))?;
    u.path_segments_mut()
        .map_err(|_| bad("cannot be a base URL".into()))?
        .pop_if_empty()
        .extend(["api", "v1", "gate", service]);
    Ok(u)
}

/// Asks immune at `url` whether `service`'s line is open; writes one line for people to
/// `out`. `Ok(true)` open (exit 0), `Ok(false)` blocked (exit 1), `Err` otherwise (exit 2).
pub async fn gate(
    url: &str,
    service: &str,
    token: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<bool, GateError> {
    let target = gate_url(url, service)?;
    let shown = super::redact_url(target.as_str());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| GateError::Unreachable {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
    let mut req = client.get(target);
    if let Some(t) = token {
        req = req.bearer_auth(t.trim());
    }
    let resp = req.send().await.map_err(|e| GateError::Unreachable {
        url: shown.clone(),
        reason: super::webhook::without_url(&e),
    })?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| GateError::Body(super::webhook::without_url(&e)))?;
    match status {
        200 | 423 => {
            let v: Value =
                serde_json::from_str(&text).map_err(|e| GateError::Body(e.to_string()))?;
            let open = v
                .get("open")
                .and_then(Value::as_bool)
                .ok_or_else(|| GateError::Body("no boolean \"open\" in the answer".into()))?;
            if open {
                writeln!(out, "line of {service} is open")?;
            } else if v.get("reason").and_then(Value::as_str) == Some(super::gates::UNKNOWN_SERVICE)
            {
                writeln!(
                    out,
                    "line of {service} is blocked: unknown service (immune has seen no deploy of it; a typo?)"
                )?;
            } else {
                let b = v.get("blocked_by").cloned().unwrap_or(Value::Null);
                let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                let at = b
                    .get("at")
                    .and_then(Value::as_f64)
                    .map_or_else(|| "?".into(), super::alertmanager::rfc3339);
                writeln!(
                    out,
                    "line of {service} is blocked by deploy {} ({} by rule {} at {}): {}",
                    s("deploy"),
                    s("decision"),
                    s("rule"),
                    at,
                    s("summary")
                )?;
            }
            Ok(open)
        }
        _ => Err(GateError::Status {
            status,
            body: text.chars().take(300).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_url_escapes_the_service() {
        assert_eq!(
            gate_url("http://127.0.0.1:9977", "web").unwrap().as_str(),
            "http://127.0.0.1:9977/api/v1/gate/web"
        );
        assert_eq!(
            gate_url("http://h/immune/", "a b/c").unwrap().as_str(),
            "http://h/immune/api/v1/gate/a%20b%2Fc"
        );
        assert!(gate_url("not a url", "web").is_err());
    }
}
