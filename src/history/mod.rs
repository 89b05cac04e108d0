//! History from a Prometheus-compatible TSDB (Prometheus, Thanos, Mimir, VictoriaMetrics).
//!
//! Sites that deploy fifty times a day already keep their metrics in a TSDB; immune reads
//! it through the HTTP query API they all serve, rather than asking anyone to convert data
//! into files: [`backtest`] judges recorded deploys on it, [`against`] checks that rules'
//! selectors match series that really exist, and [`dump`] reads `promtool tsdb dump`
//! output for replay. The series names and labels are the raw ones the agent also scrapes
//! or receives by remote_write, so a rule reads the same series from either.
//!
//! [`Client`] is the one place that talks to the API: bearer token, basic auth and extra
//! headers (Mimir's `X-Scope-OrgID`), a timeout per request, and retries with a doubling
//! pause on connection errors and 5xx (a 4xx is final: a bad query or refused
//! credentials do not get better by asking again).

pub mod against;
pub mod backtest;
pub mod dump;
pub mod live;
pub mod prefill;

use crate::rules::Rule;

/// Where the history comes from and how to authenticate.
#[derive(Clone, Debug)]
pub struct Tsdb {
    /// Base URL of the query API (`http://prometheus:9090`, Mimir's `.../prometheus`).
    pub url: String,
    /// Extra headers, e.g. Mimir's `X-Scope-OrgID`.
    pub headers: Vec<(String, String)>,
    /// Bearer token.
    pub bearer_token: Option<String>,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
    /// Per-request timeout.
    pub timeout: std::time::Duration,
    /// Attempts per request beyond the first, with a doubling pause from 200 ms.
    pub retries: u32,
}

/// The TSDB could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct HistoryError {
    /// The API's base URL (never with credentials).
    pub url: String,
    /// What went wrong, with its cause chain.
    pub message: String,
}

/// A blocking client for the query API (it runs its own small runtime, so callers on
/// plain threads, like the CLI and replay's reader, need no async context).
pub struct Client {
    tsdb: Tsdb,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client for `tsdb`.
    pub fn new(tsdb: &Tsdb) -> Result<Client, HistoryError> {
        let err = |message: String| HistoryError {
            url: tsdb.url.clone(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(tsdb.timeout)
            .build()
            .map_err(|e| err(crate::logging::chain(&e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(Client {
            tsdb: tsdb.clone(),
            http,
            runtime,
        })
    }

    /// An error about this TSDB.
    pub fn error(&self, message: String) -> HistoryError {
        HistoryError {
            url: self.tsdb.url.clone(),
            message,
        }
    }

    /// GETs `path` (e.g. `/api/v1/query`) with query parameters; the body on 2xx.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Vec<u8>, HistoryError> {
        let url = format!("{}{path}", self.tsdb.url.trim_end_matches('/'));
        let full = reqwest::Url::parse_with_params(&url, params)
            .map_err(|e| self.error(format!("not a URL: {e}")))?;
        let what = params
            .iter()
            .find(|(k, _)| *k == "query" || *k == "match[]")
            .map_or(path.to_string(), |(_, v)| v.to_string());
        self.runtime.block_on(async {
            let mut pause = std::time::Duration::from_millis(200);
            let mut attempt = 0;
            loop {
                let mut req = self.http.get(full.clone());
                for (k, v) in &self.tsdb.headers {
                    req = req.header(k, v);
                }
                if let Some(t) = &self.tsdb.bearer_token {
                    req = req.bearer_auth(t);
                }
                if let Some((u, p)) = &self.tsdb.basic_auth {
                    req = req.basic_auth(u, Some(p));
                }
                let result = match req.send().await {
                    Ok(r) if r.status().is_success() => r
                        .bytes()
                        .await
                        .map(|b| b.to_vec())
                        .map_err(|e| crate::logging::chain(&e)),
                    Ok(r) if r.status().is_client_error() => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        return Err(self.error(format!("{what}: {status}: {}", text.trim())));
                    }
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(crate::logging::chain(&e)),
                };
                match result {
                    Ok(b) => return Ok(b),
                    Err(message) if attempt >= self.tsdb.retries => {
                        return Err(self.error(format!("{what}: {message}")));
                    }
                    Err(message) => {
                        tracing::warn!(url = %self.tsdb.url, query = %what, attempt, error = %message, "History request failed; retrying.");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                        attempt += 1;
                    }
                }
            }
        })
    }
}

/// Every selector a rule reads, as PromQL text (a mean reads `_sum` and `_count`, a
/// histogram quantile `_bucket`, a ratio its denominator too), each once.
pub fn selectors(rules: &[Rule]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        for s in rule_selectors(r) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// The selectors one rule reads.
pub fn rule_selectors(r: &Rule) -> Vec<String> {
    r.selectors().iter().map(|s| s.to_string()).collect()
}
