//! Scrape source: HTTP GET of any exporter's /metrics, like a Prometheus scrape job.
//!
//! Accepts text format 0.0.4 and OpenMetrics (timestamps read by the Content-Type: seconds
//! for OpenMetrics, milliseconds for text). Every series gets the configured `job` and
//! `instance` labels; labels of the same name the exporter set are kept as `exported_job`
//! / `exported_instance`, as Prometheus does without `honor_labels`. Each round adds
//! `up{job, instance}`: 1 after a good scrape, 0 after a failed one. `NaN` samples (stale
//! markers) are skipped: silence is how the engine sees staleness. Series over the label
//! limits ([`crate::limits`], set with [`ScrapePoller::with_limits`]) are dropped and
//! counted, the rest of the scrape is kept, as Prometheus's `label_limit` would not (it
//! fails the whole scrape; one bad series should not blind every rule on that target).

use super::{Poller, SourceError, host_port, sorted};
use crate::config::ScrapeConfig;
use crate::model::{Labels, Sample, Timestamp};
use crate::textformat::{Line, TimestampUnit, parse_line, parse_series};

/// The Accept header Prometheus sends: OpenMetrics first, text as a fallback.
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A line of an exposition that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole exposition into samples: lines without a timestamp get `now`, and
/// `target` labels are set on every series (clashing ones are kept as `exported_<name>`).
pub fn parse_exposition(
    text: &str,
    unit: TimestampUnit,
    now: Timestamp,
    target: &[(String, String)],
) -> Result<Vec<Sample>, ExpositionError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| ExpositionError {
            line: i + 1,
            message,
        };
        match parse_line(raw, unit).map_err(|e| err(e.to_string()))? {
            Line::Sample(s) => {
                if s.value.is_nan() {
                    continue;
                }
                let (name, labels) = parse_series(s.series).map_err(|e| err(e.to_string()))?;
                out.push(Sample {
                    name,
                    labels: with_target(labels, target),
                    value: s.value,
                    at: s.at.unwrap_or(now),
                });
            }
            Line::Eof => break,
            Line::Type { .. } | Line::Other => {}
        }
    }
    Ok(out)
}

/// Sets `target` labels, renaming clashing ones to `exported_<name>`; sorted.
pub fn with_target(labels: Labels, target: &[(String, String)]) -> Labels {
    if target.is_empty() {
        return labels;
    }
    let mut out: Labels = labels
        .into_iter()
        .map(|(k, v)| {
            if target.iter().any(|(t, _)| *t == k) {
                (format!("exported_{k}"), v)
            } else {
                (k, v)
            }
        })
        .collect();
    out.extend(target.iter().cloned());
    sorted(out)
}

/// Scrapes one target.
pub struct ScrapePoller {
    client: reqwest::Client,
    url: String,
    target: Labels,
    limits: Option<crate::limits::Limits>,
}

impl ScrapePoller {
    /// Prepares a poller with its own HTTP client (timeout included).
    pub fn new(cfg: &ScrapeConfig) -> Result<ScrapePoller, SourceError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.std())
            .build()
            .map_err(|e| SourceError::Io(e.to_string()))?;
        let url = cfg
            .url
            .clone()
            .ok_or_else(|| SourceError::Config("needs `url` or `file_sd_configs`".into()))?;
        let instance = cfg.instance.clone().unwrap_or_else(|| host_port(&url));
        Ok(ScrapePoller {
            client,
            url,
            target: sorted(vec![
                ("instance".into(), instance),
                ("job".into(), cfg.job.clone()),
            ]),
            limits: None,
        })
    }

    /// Applies the label limits to every scrape (series over them are dropped and counted).
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> ScrapePoller {
        self.limits = Some(limits);
        self
    }

    fn up(&self, value: f64, now: Timestamp) -> Sample {
        Sample {
            name: "up".into(),
            labels: self.target.clone(),
            value,
            at: now,
        }
    }
}

/// Scrapes `url` once: the exposition's samples with the `target` labels set, minus series
/// over the label limits (dropped, logged). Shared by [`ScrapePoller`] and the targets of
/// [`super::file_sd`].
pub async fn scrape_target(
    client: &reqwest::Client,
    url: &str,
    target: &[(String, String)],
    limits: Option<&crate::limits::Limits>,
    now: Timestamp,
) -> Result<Vec<Sample>, SourceError> {
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .send()
        .await
        .map_err(|e| SourceError::Io(crate::logging::chain(&e)))?;
    if !resp.status().is_success() {
        return Err(SourceError::Protocol(format!("HTTP {}", resp.status())));
    }
    let openmetrics = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text"));
    let unit = if openmetrics {
        TimestampUnit::Seconds
    } else {
        TimestampUnit::Milliseconds
    };
    let text = resp
        .text()
        .await
        .map_err(|e| SourceError::Io(e.to_string()))?;
    let mut out = parse_exposition(&text, unit, now, target)
        .map_err(|e| SourceError::Protocol(e.to_string()))?;
    if let Some(limits) = limits {
        let (kept, over) = limits.filter(out);
        if let Some(e) = over {
            tracing::warn!(url = %crate::signals::redact_url(url), error = %e, "Scraped series over the label limits dropped.");
        }
        out = kept;
    }
    Ok(out)
}

impl Poller for ScrapePoller {
    async fn poll(&mut self, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        let mut out = scrape_target(
            &self.client,
            &self.url,
            &self.target,
            self.limits.as_ref(),
            now,
        )
        .await?;
        out.push(self.up(1.0, now));
        Ok(out)
    }

    fn reset(&mut self) {}

    fn down(&self, now: Timestamp) -> Vec<Sample> {
        vec![self.up(0.0, now)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_text_and_sets_target_labels() {
        let text = "# HELP x help\n# TYPE x counter\nx{a=\"1\",job=\"inner\"} 3\ny 4 1700000000000\nz NaN\n";
        let now = Timestamp(1_800_000_000_000);
        let target = l(&[("instance", "h:1"), ("job", "web")]);
        let s = parse_exposition(text, TimestampUnit::Milliseconds, now, &target).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].labels,
            l(&[
                ("a", "1"),
                ("exported_job", "inner"),
                ("instance", "h:1"),
                ("job", "web")
            ])
        );
        assert_eq!(s[0].at, now);
        assert_eq!(s[1].at, Timestamp(1_700_000_000_000));
    }

    #[test]
    fn openmetrics_seconds_and_eof() {
        let text = "a_total 1 1700000000.5\n# EOF\nignored 2\n";
        let s = parse_exposition(text, TimestampUnit::Seconds, Timestamp(0), &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].at, Timestamp(1_700_000_000_500));
    }

    #[test]
    fn bad_line_is_reported_with_its_number() {
        let e =
            parse_exposition("ok 1\n{bad 2\n", TimestampUnit::Auto, Timestamp(0), &[]).unwrap_err();
        assert_eq!(e.line, 2);
    }
}
