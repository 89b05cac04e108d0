//! Ingestion limits: what one series and one request may carry, in the style of
//! Prometheus's scrape limits (`label_limit`, `label_name_length_limit`,
//! `label_value_length_limit`) and Mimir's distributor limits.
//!
//! Why: the engine's memory is bounded by `engine.max_series` times the size of a series,
//! and without these a series' size has no bound (5,000-byte label values make a series
//! cost ~20 KB, so the series limit is never reached before memory runs out).
//!
//! What happens to what exceeds them (see README's API section):
//! - push and remote_write: series over a label limit are dropped, the rest of the request
//!   is ingested, and the request is answered **400** naming the limit (a remote_write
//!   sender drops a 4xx batch instead of retrying it for ever: retrying cannot fix it);
//!   a request over `max_samples_per_request` or `max_series_per_request` is refused whole
//!   with **413**;
//! - scrape sources drop the offending series and count them;
//! - every refused sample is counted in `immune_samples_refused_total{reason}`.

use crate::model::Sample;
use prometheus::IntCounterVec;
use serde::Deserialize;

/// `limits:` in immune.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most labels on one series, the metric name (`__name__`) included (Mimir's default: 30).
    #[serde(default = "d_labels")]
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    #[serde(default = "d_name")]
    pub max_label_name_length: usize,
    /// Longest label value (and metric name), in bytes.
    #[serde(default = "d_value")]
    pub max_label_value_length: usize,
    /// Most samples in one push or remote_write request.
    #[serde(default = "d_samples")]
    pub max_samples_per_request: usize,
    /// Most distinct series in one push or remote_write request.
    #[serde(default = "d_series")]
    pub max_series_per_request: usize,
}

fn d_labels() -> usize {
    30
}
fn d_name() -> usize {
    1024
}
fn d_value() -> usize {
    2048
}
fn d_samples() -> usize {
    100_000
}
fn d_series() -> usize {
    20_000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_labels_per_series: d_labels(),
            max_label_name_length: d_name(),
            max_label_value_length: d_value(),
            max_samples_per_request: d_samples(),
            max_series_per_request: d_series(),
        }
    }
}

/// Which limit refused something; `reason` is its label in `immune_samples_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_labels_per_series`.
    LabelCount,
    /// `max_label_name_length`.
    LabelNameLength,
    /// `max_label_value_length`.
    LabelValueLength,
    /// `max_samples_per_request`.
    SamplesPerRequest,
    /// `max_series_per_request`.
    SeriesPerRequest,
}

impl Limit {
    /// The metric label and the config key.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::LabelCount => "max_labels_per_series",
            Limit::LabelNameLength => "max_label_name_length",
            Limit::LabelValueLength => "max_label_value_length",
            Limit::SamplesPerRequest => "max_samples_per_request",
            Limit::SeriesPerRequest => "max_series_per_request",
        }
    }
}

/// Something refused, and why, in words that name the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (limits.{}: {limit_value}); {refused} sample(s) refused", .limit.reason())]
pub struct LimitError {
    /// The limit.
    pub limit: Limit,
    /// Its configured value.
    pub limit_value: usize,
    /// Samples refused.
    pub refused: usize,
    /// What exceeded it (the first offender).
    pub message: String,
}

/// The limits and the counter of what they refused. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Limits {
    cfg: LimitsConfig,
    refused: IntCounterVec,
}

fn short(s: &str) -> String {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

impl Limits {
    /// Limits counting into `refused` (labelled `reason`).
    pub fn new(cfg: LimitsConfig, refused: IntCounterVec) -> Limits {
        Limits { cfg, refused }
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// Counts `n` samples refused by `limit` in `immune_samples_refused_total`.
    pub fn count(&self, limit: Limit, n: usize) {
        if n > 0 {
            self.refused
                .with_label_values(&[limit.reason()])
                .inc_by(n as u64);
        }
    }

    /// Whether one series is within the label limits.
    pub fn check_series(&self, name: &str, labels: &[(String, String)]) -> Result<(), LimitError> {
        self.check_labels(name, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// [`Limits::check_series`] over borrowed labels (push and remote_write batches).
    pub fn check_labels<'a>(
        &self,
        name: &str,
        labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), LimitError> {
        let c = &self.cfg;
        let err = |limit, limit_value, message| LimitError {
            limit,
            limit_value,
            refused: 1,
            message,
        };
        if labels.len() + 1 > c.max_labels_per_series {
            return Err(err(
                Limit::LabelCount,
                c.max_labels_per_series,
                format!(
                    "series {} has {} labels, its name included",
                    short(name),
                    labels.len() + 1
                ),
            ));
        }
        if name.len() > c.max_label_value_length {
            return Err(err(
                Limit::LabelValueLength,
                c.max_label_value_length,
                format!("metric name {} is {} bytes", short(name), name.len()),
            ));
        }
        for (k, v) in labels {
            if k.len() > c.max_label_name_length {
                return Err(err(
                    Limit::LabelNameLength,
                    c.max_label_name_length,
                    format!(
                        "series {} has a label name of {} bytes ({})",
                        short(name),
                        k.len(),
                        short(k)
                    ),
                ));
            }
            if v.len() > c.max_label_value_length {
                return Err(err(
                    Limit::LabelValueLength,
                    c.max_label_value_length,
                    format!(
                        "series {} has a value of {} bytes for label {}",
                        short(name),
                        v.len(),
                        short(k)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keeps the samples whose series are within the label limits; the dropped ones are
    /// counted, and the first offence is returned with the total dropped.
    pub fn filter(&self, samples: Vec<Sample>) -> (Vec<Sample>, Option<LimitError>) {
        let mut first: Option<LimitError> = None;
        let mut dropped = 0usize;
        let kept: Vec<Sample> = samples
            .into_iter()
            .filter(|s| match self.check_series(&s.name, &s.labels) {
                Ok(()) => true,
                Err(e) => {
                    self.count(e.limit, 1);
                    dropped += 1;
                    if first.is_none() {
                        first = Some(e);
                    }
                    false
                }
            })
            .collect();
        (
            kept,
            first.map(|mut e| {
                e.refused = dropped;
                e
            }),
        )
    }

    /// Whether one request is within the per-request limits; a refused request is counted
    /// whole.
    pub fn check_request(&self, samples: &[Sample]) -> Result<(), LimitError> {
        self.check_request_size(samples.len(), || {
            let mut series: Vec<(&str, &[(String, String)])> = samples
                .iter()
                .map(|s| (s.name.as_str(), s.labels.as_slice()))
                .collect();
            series.sort_unstable();
            series.dedup();
            series.len()
        })
    }

    /// [`Limits::check_request`] for a request of `samples` samples whose distinct series
    /// `series` counts (called only when the count could exceed the limit).
    pub fn check_request_size(
        &self,
        samples: usize,
        series: impl FnOnce() -> usize,
    ) -> Result<(), LimitError> {
        let c = &self.cfg;
        let refuse = |limit, limit_value, message| {
            self.count(limit, samples);
            Err(LimitError {
                limit,
                limit_value,
                refused: samples,
                message,
            })
        };
        if samples > c.max_samples_per_request {
            return refuse(
                Limit::SamplesPerRequest,
                c.max_samples_per_request,
                format!("the request has {samples} samples"),
            );
        }
        if samples > c.max_series_per_request {
            let series = series();
            if series > c.max_series_per_request {
                return refuse(
                    Limit::SeriesPerRequest,
                    c.max_series_per_request,
                    format!("the request has {series} series"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use prometheus::Opts;

    fn limits(cfg: LimitsConfig) -> Limits {
        let c = IntCounterVec::new(Opts::new("t_refused", "t"), &["reason"]).unwrap();
        Limits::new(cfg, c)
    }

    fn sample(name: &str, labels: &[(&str, &str)]) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: 1.0,
            at: Timestamp(0),
        }
    }

    #[test]
    fn each_label_limit_refuses_and_names_itself() {
        let l = limits(LimitsConfig {
            max_labels_per_series: 3,
            max_label_name_length: 4,
            max_label_value_length: 5,
            ..LimitsConfig::default()
        });
        assert!(l.check_series("up", &[("a".into(), "1".into())]).is_ok());
        let many = [("a", "1"), ("b", "2"), ("c", "3")];
        let e = l
            .check_series("up", &sample("up", &many).labels)
            .unwrap_err();
        assert_eq!(e.limit, Limit::LabelCount);
        let e = l
            .check_series("up", &[("abcde".into(), "1".into())])
            .unwrap_err();
        assert_eq!(e.limit, Limit::LabelNameLength);
        let e = l
            .check_series("up", &[("a".into(), "123456".into())])
            .unwrap_err();
        assert_eq!(e.limit, Limit::LabelValueLength);
        assert!(
            e.to_string().contains("limits.max_label_value_length: 5"),
            "{e}"
        );
        let (kept, err) = l.filter(vec![
            sample("up", &[("a", "1")]),
            sample("up", &[("a", "123456")]),
            sample("up", &[("a", "1234567")]),
        ]);
        assert_eq!(kept.len(), 1);
        assert_eq!(err.unwrap().refused, 2);
        assert_eq!(
            l.refused
                .with_label_values(&["max_label_value_length"])
                .get(),
            2,
            "check_series only checks; filter counts what it drops"
        );
    }

    #[test]
    fn request_limits_count_samples_and_distinct_series() {
        let l = limits(LimitsConfig {
            max_samples_per_request: 4,
            max_series_per_request: 2,
            ..LimitsConfig::default()
        });
        let same = vec![sample("up", &[("a", "1")]); 4];
        assert!(l.check_request(&same).is_ok());
        let five = vec![sample("up", &[("a", "1")]); 5];
        assert_eq!(
            l.check_request(&five).unwrap_err().limit,
            Limit::SamplesPerRequest
        );
        let three = vec![
            sample("up", &[("a", "1")]),
            sample("up", &[("a", "2")]),
            sample("up", &[("a", "3")]),
        ];
        assert_eq!(
            l.check_request(&three).unwrap_err().limit,
            Limit::SeriesPerRequest
        );
    }
}
