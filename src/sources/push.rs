//! Push sources, served by the API: Prometheus text pushed like to a Pushgateway, and
//! Prometheus remote_write.
//!
//! - `POST /api/v1/push`: a text-format (0.0.4 or OpenMetrics) body; lines without a
//!   timestamp are stamped with the agent's `now`; query parameters (`?job=batch&instance=x`)
//!   become labels on every series, like a Pushgateway's grouping key.
//! - `POST /api/v1/write`: a remote_write `WriteRequest` (protobuf, snappy block format).
//!   The message structs are written out here with prost's derive: three small messages do
//!   not justify a protoc build step.
//!
//! Both are acknowledged protocols, so both **wait** for room in the engine's channel and
//! for the engine to say what it stored ([`deliver`]), and answer 204 only then: an
//! acknowledged sample is not lost, and a sender that gets no answer retries. Samples of
//! new series beyond `engine.max_series` are reported back, so the API can answer 429
//! instead of pretending they were stored; the label and request limits
//! ([`crate::limits`]) are applied by the API before delivery.

use super::scrape::parse_exposition;
use crate::engine::handle::{EngineHandle, HandleError, IngestReport};
use crate::model::{Labels, Sample, Timestamp};
use crate::textformat::TimestampUnit;

/// remote_write's `prometheus.WriteRequest` (metadata, field 3, is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// remote_write's `prometheus.TimeSeries` (exemplars and histograms are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WriteSample>,
}

/// remote_write's `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// remote_write's `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a pushed body was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The body is not valid snappy.
    #[error("body is not snappy-compressed (block format): {0}")]
    Snappy(String),
    /// The body is not a WriteRequest.
    #[error("body is not a remote_write WriteRequest: {0}")]
    Protobuf(String),
    /// A series without `__name__`.
    #[error("series {0} has no __name__ label")]
    NoName(usize),
    /// A text line that could not be read.
    #[error("{0}")]
    Text(String),
    /// The engine stopped.
    #[error("engine has stopped")]
    Stopped,
}

/// Decodes a remote_write body into samples.
pub fn decode_write(body: &[u8]) -> Result<Vec<Sample>, PushError> {
    use prost::Message;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| PushError::Snappy(e.to_string()))?;
    let req =
        WriteRequest::decode(raw.as_slice()).map_err(|e| PushError::Protobuf(e.to_string()))?;
    let mut out = Vec::new();
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        let mut name = None;
        let mut labels: Labels = Vec::with_capacity(ts.labels.len());
        for l in ts.labels {
            if l.name == "__name__" {
                name = Some(l.value);
            } else {
                labels.push((l.name, l.value));
            }
        }
        let mut name = name.ok_or(PushError::NoName(i))?;
        labels.sort();
        // The series' name and labels are moved into its last sample and copied only for
        // the ones before (a sender usually writes one sample per series per request).
        let mut left = ts.samples.iter().filter(|s| !s.value.is_nan()).count();
        out.reserve(left);
        for s in ts.samples {
            if s.value.is_nan() {
                continue;
            }
            left -= 1;
            let (name, labels) = if left == 0 {
                (std::mem::take(&mut name), std::mem::take(&mut labels))
            } else {
                (name.clone(), labels.clone())
            };
            out.push(Sample {
                name,
                labels,
                value: s.value,
                at: Timestamp(s.timestamp),
            });
        }
    }
    Ok(out)
}

/// Encodes samples as a remote_write body (for tests and for clients in this crate).
pub fn encode_write(samples: &[Sample]) -> Vec<u8> {
    use prost::Message;
    let req = WriteRequest {
        timeseries: samples
            .iter()
            .map(|s| TimeSeries {
                labels: std::iter::once(Label {
                    name: "__name__".into(),
                    value: s.name.clone(),
                })
                .chain(s.labels.iter().map(|(k, v)| Label {
                    name: k.clone(),
                    value: v.clone(),
                }))
                .collect(),
                samples: vec![WriteSample {
                    value: s.value,
                    timestamp: s.at.0,
                }],
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

/// Decodes a pushed text body; `labels` are set on every series.
pub fn decode_text(
    body: &str,
    now: Timestamp,
    labels: &[(String, String)],
) -> Result<Vec<Sample>, PushError> {
    let mut target: Labels = labels.to_vec();
    target.sort();
    parse_exposition(body, TimestampUnit::Auto, now, &target)
        .map_err(|e| PushError::Text(e.to_string()))
}

/// Hands a batch to the engine, waiting for room and for its report of what was stored.
pub async fn deliver(engine: &EngineHandle, batch: Vec<Sample>) -> Result<IngestReport, PushError> {
    if batch.is_empty() {
        return Ok(IngestReport::default());
    }
    match engine.send_samples_acked(batch).await {
        Ok(r) => Ok(r),
        Err(HandleError::Stopped | HandleError::Full) => Err(PushError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_round_trip() {
        let s = vec![Sample {
            name: "http_requests_total".into(),
            labels: vec![
                ("instance".into(), "a".into()),
                ("job".into(), "web".into()),
            ],
            value: 7.0,
            at: Timestamp(1_700_000_000_123),
        }];
        assert_eq!(decode_write(&encode_write(&s)).unwrap(), s);
    }

    #[test]
    fn every_sample_of_a_series_gets_its_labels_and_nan_is_skipped() {
        use prost::Message;
        let label = |name: &str, value: &str| Label {
            name: name.into(),
            value: value.into(),
        };
        let sample = |value: f64, timestamp: i64| WriteSample { value, timestamp };
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("job", "w"), label("__name__", "m"), label("a", "1")],
                samples: vec![sample(1.0, 10), sample(2.0, 20), sample(f64::NAN, 30)],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let got = decode_write(&body).unwrap();
        let labels: Labels = vec![("a".into(), "1".into()), ("job".into(), "w".into())];
        assert_eq!(got.len(), 2);
        for (s, (v, t)) in got.iter().zip([(1.0, 10), (2.0, 20)]) {
            assert_eq!((s.name.as_str(), &s.labels), ("m", &labels));
            assert_eq!((s.value, s.at), (v, Timestamp(t)));
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(decode_write(b"nope"), Err(PushError::Snappy(_))));
    }

    #[test]
    fn text_push_stamps_now_and_adds_labels() {
        let s = decode_text(
            "a 1\nb{x=\"y\"} 2 1700000000000\n",
            Timestamp(9),
            &[("job".into(), "batch".into())],
        )
        .unwrap();
        assert_eq!(s[0].at, Timestamp(9));
        assert_eq!(s[0].labels, vec![("job".to_string(), "batch".to_string())]);
        assert_eq!(s[1].at, Timestamp(1_700_000_000_000));
    }
}
