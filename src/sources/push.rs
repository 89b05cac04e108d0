//! Push sources, served by the API: Prometheus text pushed like to a Pushgateway, and
//! Prometheus remote_write.
//!
//! - `POST /api/v1/push`: a text-format (0.0.4 or OpenMetrics) body; lines without a
//!   timestamp are stamped with the agent's `now`; query parameters (`?job=batch&instance=x`)
//!   become labels on every series, like a Pushgateway's grouping key.
//! - `POST /api/v1/write`: a remote_write `WriteRequest` (protobuf, snappy block format),
//!   decoded by [`super::remote_write`] straight from the wire bytes. The message structs
//!   written out here with prost's derive serve encoding (tests, the benchmark's load
//!   generator) and the decoder's reference test.
//!
//! Both decode into one [`SampleBatch`] per request, which the engine ingests in one
//! message, finding known series by the order they arrived in last time (see
//! [`crate::engine::batch`]).
//!
//! Both are acknowledged protocols, so both **wait** for room in the engine's channel and
//! for the engine to say what it stored ([`deliver`]), and answer 204 only then: an
//! acknowledged sample is not lost, and a sender that gets no answer retries. Samples of
//! new series beyond `engine.max_series` are reported back, so the API can answer 429
//! instead of pretending they were stored; the label and request limits
//! ([`crate::limits`]) are applied by the API before delivery.

use crate::engine::batch::SampleBatch;
use crate::engine::handle::{EngineHandle, HandleError, IngestReport};
use crate::limits::{LimitError, Limits};
use crate::model::{Labels, Sample, Timestamp};
use crate::textformat::{Line, ParseError, Parser, TimestampUnit, parse_series};

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

/// Decodes a remote_write body into samples (the label-pair form of
/// [`decode_write_batch`], for tests and tools).
pub fn decode_write(body: &[u8]) -> Result<Vec<Sample>, PushError> {
    decode_write_batch(body).map(|b| b.to_samples())
}

/// Decodes a remote_write body (snappy block format around a `WriteRequest`) into a
/// batch for the engine, borrowing labels from the decompressed bytes
/// ([`super::remote_write`]).
pub fn decode_write_batch(body: &[u8]) -> Result<SampleBatch, PushError> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| PushError::Snappy(e.to_string()))?;
    super::remote_write::decode(&raw)
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
    decode_text_batch(body, now, labels).map(|b| b.to_samples())
}

/// Decodes a pushed text body into a batch for the engine: what
/// [`parse_exposition`](super::scrape::parse_exposition) reads, lines without a timestamp
/// stamped `now`, `labels` set on every series (clashing ones kept as `exported_<name>`),
/// NaN skipped. Label sets in the plain form (`name{a="b",c="d"}`) are read without
/// allocating; anything else goes through [`parse_series`], which also gives the errors.
pub fn decode_text_batch(
    body: &str,
    now: Timestamp,
    labels: &[(String, String)],
) -> Result<SampleBatch, PushError> {
    let mut target: Labels = labels.to_vec();
    target.sort();
    let mut batch = SampleBatch::new();
    let mut parser = Parser::new(TimestampUnit::Auto);
    let mut spans: Vec<(&str, &str)> = Vec::new();
    let mut unescaped = String::new();
    for (i, raw) in body.lines().enumerate() {
        let err = |e: ParseError| PushError::Text(format!("line {}: {e}", i + 1));
        let s = match parser.parse(raw).map_err(err)? {
            Line::Sample(s) => s,
            Line::Eof => break,
            Line::Type { .. } | Line::Other => continue,
        };
        if s.value.is_nan() {
            continue;
        }
        let point = [(s.at.unwrap_or(now), s.value)];
        let prefix = |k: &str| {
            if target.iter().any(|(t, _)| t == k) {
                "exported_"
            } else {
                ""
            }
        };
        if plain_labels(&s.series[s.name.len()..], &mut spans) {
            batch.start_series(s.name);
            for (k, v) in &spans {
                let v = if v.contains('\\') {
                    unescape(v, &mut unescaped);
                    unescaped.as_str()
                } else {
                    v
                };
                batch.label(prefix(k), k, v);
            }
        } else {
            let (name, own) = parse_series(s.series).map_err(err)?;
            batch.start_series(&name);
            for (k, v) in &own {
                batch.label(prefix(k), k, v);
            }
        }
        for (k, v) in &target {
            batch.label("", k, v);
        }
        batch.finish_series(point);
    }
    Ok(batch)
}

/// Splits a label set in the plain form (`{a="b",c="d"}`, or empty: names of
/// `[A-Za-z_][A-Za-z0-9_]*`, values with only the `\\`, `\"` and `\n` escapes, at most
/// one trailing comma, no spaces, no name twice) into names and raw values; false for
/// anything else, which [`parse_series`] then reads (the same labels where both read it).
fn plain_labels<'a>(set: &'a str, out: &mut Vec<(&'a str, &'a str)>) -> bool {
    out.clear();
    let b = set.as_bytes();
    if b.is_empty() {
        return true;
    }
    if b[0] != b'{' {
        return false;
    }
    let mut i = 1;
    loop {
        if b.get(i) == Some(&b'}') {
            break;
        }
        let k = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == k || b[k].is_ascii_digit() || b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"')
        {
            return false;
        }
        let key = &set[k..i];
        i += 2;
        let v = i;
        loop {
            match b.get(i) {
                None => return false,
                Some(b'"') => break,
                Some(b'\\') => match b.get(i + 1) {
                    Some(b'\\' | b'"' | b'n') => i += 2,
                    _ => return false,
                },
                Some(_) => i += 1,
            }
        }
        if out.len() >= 32 || out.iter().any(|(o, _)| *o == key) {
            return false;
        }
        out.push((key, &set[v..i]));
        i += 1;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return false,
        }
    }
    i + 1 == b.len()
}

/// A label value with its escapes (`\\`, `\"`, `\n`, checked by [`plain_labels`]) undone.
fn unescape(raw: &str, out: &mut String) {
    out.clear();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c) => out.push(c),
            None => {}
        }
    }
}

/// Drops the series of `batch` over a label limit, counting their samples; returns the
/// first offence with the number of samples dropped (as [`Limits::filter`] does for
/// samples).
pub fn apply_label_limits(limits: &Limits, batch: &mut SampleBatch) -> Option<LimitError> {
    let mut first: Option<LimitError> = None;
    let mut dropped = 0usize;
    for i in 0..batch.series_count() {
        let Some((name, labels)) = batch.name_and_labels(i) else {
            continue;
        };
        if let Err(e) = limits.check_labels(name, labels) {
            let n = batch.drop_series(i);
            limits.count(e.limit, n);
            dropped += n;
            first.get_or_insert(e);
        }
    }
    first.map(|mut e| {
        e.refused = dropped;
        e
    })
}

/// Hands a batch to the engine, waiting for room and for its report of what was stored.
pub async fn deliver(engine: &EngineHandle, batch: SampleBatch) -> Result<IngestReport, PushError> {
    if batch.samples() == 0 {
        return Ok(IngestReport::default());
    }
    match engine.send_batch_acked(batch).await {
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

    /// The batch reader gives what `parse_exposition` gives (the path before it), errors
    /// included, on plain and unusual label sets, with and without grouping labels.
    #[test]
    fn text_batches_read_what_parse_exposition_reads() {
        use crate::sources::scrape::parse_exposition;
        let bodies = [
            "a 1\nb{x=\"y\"} 2 1700000000000\n",
            "# TYPE m counter\nm{z=\"1\",a=\"2\",job=\"j\"} 3 1700000000\nm{} 4\n# EOF\nx 1\n",
            "m{a=\"q\\\"u\\\\o\\nte\"} 1\n",
            "m{a=\"1\",} 1\nm{ a = \"1\" , b=\"2\"} 2\nm{instance=\"i\",b=\"é\"} 3\n",
            "m{a=\"1\",a=\"2\"} 1\n",
            "m{a=\"x\\t\"} 1\n",
            "m{0a=\"1\"} 1\nm{a=\"1\"b=\"2\"} 1\n",
            "m NaN\nm{a=\"1\",a=\"1\"} NaN\nm 2 3\n",
            "m{a=\"1\"} 1 2 3\n",
            "{a=\"1\"} 1\n",
            "m{a=\"1\" 1\n",
        ];
        for body in bodies {
            for target in [
                vec![],
                vec![
                    ("job".to_string(), "batch".to_string()),
                    ("instance".to_string(), "x".to_string()),
                ],
            ] {
                let mut sorted_target = target.clone();
                sorted_target.sort();
                let want =
                    parse_exposition(body, TimestampUnit::Auto, Timestamp(9), &sorted_target)
                        .map_err(|e| e.to_string());
                let got = decode_text(body, Timestamp(9), &target).map_err(|e| e.to_string());
                assert_eq!(got, want, "{body:?} {target:?}");
            }
        }
    }
}
