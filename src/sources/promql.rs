//! PromQL source: an instant query against a Prometheus-compatible API, every interval.
//!
//! `GET <url>/api/v1/query?query=...&time=<now>`: the query is evaluated at the agent's
//! own `now`, and every result is stamped with it, so samples line up with the engine's
//! ticks even when the two clocks differ. Each series of a vector result (or the one value
//! of a scalar) becomes a sample with its labels; the metric name is the configured
//! `metric`, else the result's `__name__`, else `promql_result`.

use super::{Poller, SourceError, sorted};
use crate::config::PromqlConfig;
use crate::model::{Labels, Sample, Timestamp};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Queries one API.
pub struct PromqlPoller {
    client: reqwest::Client,
    url: String,
    query: String,
    metric: Option<String>,
}

impl PromqlPoller {
    /// Prepares a poller with its own HTTP client (timeout included).
    pub fn new(cfg: &PromqlConfig) -> Result<PromqlPoller, SourceError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.std())
            .build()
            .map_err(|e| SourceError::Io(e.to_string()))?;
        Ok(PromqlPoller {
            client,
            url: format!("{}/api/v1/query", cfg.url.trim_end_matches('/')),
            query: cfg.query.clone(),
            metric: cfg.metric.clone(),
        })
    }
}

/// Turns a query API answer into samples stamped `now`.
fn samples(body: &[u8], metric: Option<&str>, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| SourceError::Protocol(e.to_string()))?;
    if answer.status != "success" {
        return Err(SourceError::Protocol(
            answer.error.unwrap_or_else(|| "query failed".into()),
        ));
    }
    let number = |v: &str| match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => None,
        _ => v.parse::<f64>().ok(),
    };
    let mut out = Vec::new();
    match answer.data {
        Some(Data::Vector(items)) => {
            for item in items {
                let Some(value) = number(&item.value.1) else {
                    continue;
                };
                let mut labels = item.metric;
                let own = labels.remove("__name__");
                let name = metric
                    .map(String::from)
                    .or(own)
                    .unwrap_or_else(|| "promql_result".into());
                out.push(Sample {
                    name,
                    labels: sorted(labels.into_iter().collect::<Labels>()),
                    value,
                    at: now,
                });
            }
        }
        Some(Data::Scalar((_, v))) => {
            if let Some(value) = number(&v) {
                out.push(Sample {
                    name: metric.unwrap_or("promql_result").to_string(),
                    labels: Vec::new(),
                    value,
                    at: now,
                });
            }
        }
        Some(Data::Matrix(_)) | Some(Data::String(_)) => {
            return Err(SourceError::Protocol(
                "query must give an instant vector or a scalar".into(),
            ));
        }
        None => return Err(SourceError::Protocol("answer without data".into())),
    }
    Ok(out)
}

impl Poller for PromqlPoller {
    async fn poll(&mut self, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        let time = format!("{:.3}", now.as_secs_f64());
        let url = reqwest::Url::parse_with_params(
            &self.url,
            &[("query", self.query.as_str()), ("time", time.as_str())],
        )
        .map_err(|e| SourceError::Protocol(format!("bad URL {}: {e}", self.url)))?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| SourceError::Io(crate::logging::chain(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| SourceError::Io(e.to_string()))?;
        if !status.is_success() && !status.is_client_error() {
            return Err(SourceError::Protocol(format!("HTTP {status}")));
        }
        samples(&body, self.metric.as_deref(), now)
    }

    fn reset(&mut self) {}

    fn down(&self, _now: Timestamp) -> Vec<Sample> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_results_become_samples() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"immune","instance":"a:1"},"value":[1700000000.1,"1"]},
            {"metric":{"job":"x"},"value":[1700000000.1,"NaN"]}]}}"#;
        let s = samples(body, None, Timestamp(5)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "up");
        assert_eq!(s[0].labels[0], ("instance".into(), "a:1".into()));
        assert_eq!(s[0].at, Timestamp(5));
        let s = samples(body, Some("renamed"), Timestamp(5)).unwrap();
        assert_eq!(s[0].name, "renamed");
    }

    #[test]
    fn errors_and_scalars() {
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(samples(err, None, Timestamp(0)).is_err());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
        let s = samples(scalar, Some("two"), Timestamp(0)).unwrap();
        assert_eq!(s[0].value, 2.5);
    }
}
