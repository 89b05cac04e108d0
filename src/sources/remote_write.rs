//! remote_write's `WriteRequest` decoded straight from the protobuf wire format into a
//! [`SampleBatch`] (issue 13).
//!
//! Why not prost's derived decoder: it builds a `String` for every label name and value of
//! every series, and the request is then copied once more into samples; with 10 000
//! series a request that was most of the agent's time (the allocator, on the API's
//! threads and again on the engine's, which freed them). Here labels are borrowed from the
//! decompressed buffer and written once into the batch's buffers.
//!
//! What is read: `WriteRequest.timeseries` (field 1); in each `TimeSeries` its `labels`
//! (1: `Label{name = 1, value = 2}`) and `samples` (2: `Sample{value = 1 (double),
//! timestamp = 2 (int64)}`). Everything else (metadata, exemplars, histograms, unknown
//! fields, groups) is skipped. What is refused is what prost refuses on the same bytes
//! (a unit test compares both on crafted and fuzzed inputs): a truncated field, a varint
//! over ten bytes, tag 0, wire types 6 and 7, an unmatched end group, groups nested over
//! 100 deep, a known field with the wrong wire type, a string that is not UTF-8.

use super::push::PushError;
use crate::engine::batch::SampleBatch;
use crate::model::Timestamp;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Nested groups deeper than this are refused (prost's recursion limit).
const MAX_DEPTH: usize = 100;

/// Why the bytes are not a `WriteRequest`.
#[derive(Debug)]
struct WireError(&'static str);

fn err<T>(what: &'static str) -> Result<T, WireError> {
    Err(WireError(what))
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn more(&self) -> bool {
        self.pos < self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for n in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return err("truncated varint");
            };
            self.pos += 1;
            if n == 9 && b > 1 {
                return err("varint over 64 bits");
            }
            value |= u64::from(b & 0x7f) << (7 * n);
            if b < 0x80 {
                return Ok(value);
            }
        }
        err("varint over ten bytes")
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return err("field key over 32 bits");
        };
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return err("invalid wire type");
        }
        let field = key >> 3;
        if field == 0 {
            return err("field number 0");
        }
        Ok((field, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return err("field runs past the end");
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn len_delimited(&mut self, wire: u8) -> Result<&'a [u8], WireError> {
        if wire != LEN {
            return err("wrong wire type for a message or string field");
        }
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn string(&mut self, wire: u8) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.len_delimited(wire)?).or(err("string is not UTF-8"))
    }

    fn double(&mut self, wire: u8) -> Result<f64, WireError> {
        if wire != FIXED64 {
            return err("wrong wire type for a double field");
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(b))
    }

    fn int64(&mut self, wire: u8) -> Result<i64, WireError> {
        if wire != VARINT {
            return err("wrong wire type for an int64 field");
        }
        Ok(self.varint()? as i64)
    }

    /// Skips a field this decoder does not read, groups included (iteratively, with
    /// prost's depth limit).
    fn skip(&mut self, field: u32, wire: u8) -> Result<(), WireError> {
        let mut open: Vec<u32> = Vec::new();
        let (mut field, mut wire) = (field, wire);
        loop {
            match wire {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                LEN => {
                    self.len_delimited(LEN)?;
                }
                FIXED32 => {
                    self.take(4)?;
                }
                START_GROUP => {
                    if open.len() >= MAX_DEPTH {
                        return err("groups nested too deep");
                    }
                    open.push(field);
                }
                END_GROUP => {
                    // Closes the innermost open group, if it is that field's.
                    if open.pop() != Some(field) {
                        return err("unexpected end group");
                    }
                }
                _ => return err("invalid wire type"),
            }
            if open.is_empty() {
                return Ok(());
            }
            (field, wire) = self.key()?;
        }
    }
}

/// Reusable space for one series while it is read.
#[derive(Default)]
struct Scratch<'a> {
    labels: Vec<(&'a str, &'a str)>,
    points: Vec<(Timestamp, f64)>,
}

/// Decodes a decompressed `WriteRequest` into a batch (NaN samples skipped, as they carry
/// no value: silence is how the engine sees staleness).
pub fn decode(raw: &[u8]) -> Result<SampleBatch, PushError> {
    let mut batch = SampleBatch::new();
    let mut scratch = Scratch::default();
    let mut no_name: Option<usize> = None;
    let mut r = Reader::new(raw);
    let mut index = 0usize;
    let wire = |e: WireError| PushError::Protobuf(e.0.to_string());
    while r.more() {
        let (field, w) = r.key().map_err(wire)?;
        if field != 1 {
            r.skip(field, w).map_err(wire)?;
            continue;
        }
        let ts = r.len_delimited(w).map_err(wire)?;
        let name = time_series(ts, &mut scratch).map_err(wire)?;
        match name {
            Some(name) => {
                batch.start_series(name);
                for (k, v) in &scratch.labels {
                    batch.label("", k, v);
                }
                batch.finish_series(scratch.points.drain(..));
            }
            None => {
                no_name.get_or_insert(index);
            }
        }
        index += 1;
    }
    match no_name {
        Some(i) => Err(PushError::NoName(i)),
        None => Ok(batch),
    }
}

/// Reads one `TimeSeries` into `scratch` (labels other than `__name__`, non-NaN points);
/// returns its `__name__` (the last one, if several).
fn time_series<'a>(buf: &'a [u8], scratch: &mut Scratch<'a>) -> Result<Option<&'a str>, WireError> {
    scratch.labels.clear();
    scratch.points.clear();
    let mut name = None;
    let mut r = Reader::new(buf);
    while r.more() {
        let (field, w) = r.key()?;
        match field {
            1 => {
                let (k, v) = label(r.len_delimited(w)?)?;
                if k == "__name__" {
                    name = Some(v);
                } else {
                    scratch.labels.push((k, v));
                }
            }
            2 => {
                let (at, value) = sample(r.len_delimited(w)?)?;
                if !value.is_nan() {
                    scratch.points.push((at, value));
                }
            }
            _ => r.skip(field, w)?,
        }
    }
    Ok(name)
}

fn label(buf: &[u8]) -> Result<(&str, &str), WireError> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader::new(buf);
    while r.more() {
        match r.key()? {
            (1, w) => name = r.string(w)?,
            (2, w) => value = r.string(w)?,
            (field, w) => r.skip(field, w)?,
        }
    }
    Ok((name, value))
}

fn sample(buf: &[u8]) -> Result<(Timestamp, f64), WireError> {
    let (mut value, mut at) = (0.0, 0);
    let mut r = Reader::new(buf);
    while r.more() {
        match r.key()? {
            (1, w) => value = r.double(w)?,
            (2, w) => at = r.int64(w)?,
            (field, w) => r.skip(field, w)?,
        }
    }
    Ok((Timestamp(at), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Sample};
    use crate::sources::push::{Label, TimeSeries, WriteRequest, WriteSample};
    use prost::Message;

    /// What the prost-derived decoder made of the same bytes (the decoder before this one).
    fn reference(raw: &[u8]) -> Result<Vec<Sample>, String> {
        let req = WriteRequest::decode(raw).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (i, ts) in req.timeseries.into_iter().enumerate() {
            let mut name = None;
            let mut labels: Labels = Vec::new();
            for l in ts.labels {
                if l.name == "__name__" {
                    name = Some(l.value);
                } else {
                    labels.push((l.name, l.value));
                }
            }
            let name = name.ok_or(format!("no name {i}"))?;
            labels.sort();
            for s in ts.samples.iter().filter(|s| !s.value.is_nan()) {
                out.push(Sample {
                    name: name.clone(),
                    labels: labels.clone(),
                    value: s.value,
                    at: Timestamp(s.timestamp),
                });
            }
        }
        Ok(out)
    }

    fn same_as_reference(raw: &[u8]) {
        let got = decode(raw).map(|b| b.to_samples());
        match (reference(raw), got) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "{raw:?}"),
            (Err(want), Err(PushError::NoName(i))) => assert_eq!(want, format!("no name {i}")),
            (Err(_), Err(PushError::Protobuf(_))) => {}
            (want, got) => panic!("{raw:?}: prost {want:?}, this decoder {got:?}"),
        }
    }

    fn key(field: u32, wire: u8) -> u8 {
        (field << 3) as u8 | wire
    }

    fn request() -> Vec<u8> {
        let label = |name: &str, value: &str| Label {
            name: name.into(),
            value: value.into(),
        };
        WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![label("job", "w"), label("__name__", "m"), label("a", "é\"")],
                    samples: vec![
                        WriteSample {
                            value: 1.5,
                            timestamp: -3,
                        },
                        WriteSample {
                            value: f64::NAN,
                            timestamp: 4,
                        },
                        WriteSample {
                            value: 2.0,
                            timestamp: i64::MAX,
                        },
                    ],
                },
                TimeSeries {
                    labels: vec![label("__name__", "n")],
                    samples: vec![WriteSample {
                        value: 0.0,
                        timestamp: 0,
                    }],
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_request_decodes_as_prost_decodes_it() {
        same_as_reference(&request());
        same_as_reference(&[]);
        let got = decode(&request()).unwrap().to_samples();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].labels[0], ("a".to_string(), "é\"".to_string()));
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_as_prost_skips_them() {
        let mut raw = request();
        // Unknown top-level fields of every wire type, a nested group, then the request again.
        raw.extend([key(3, VARINT), 0xff, 0x01]);
        raw.extend([key(9, FIXED64), 1, 2, 3, 4, 5, 6, 7, 8]);
        raw.extend([key(9, FIXED32), 1, 2, 3, 4]);
        raw.extend([key(5, START_GROUP), key(6, START_GROUP), key(7, VARINT), 1]);
        raw.extend([key(6, END_GROUP), key(5, END_GROUP)]);
        raw.extend(request());
        same_as_reference(&raw);
        assert_eq!(decode(&raw).unwrap().to_samples().len(), 6);
    }

    #[test]
    fn malformed_bytes_are_refused_as_prost_refuses_them() {
        let good = request();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![key(5, END_GROUP)],
            vec![key(5, START_GROUP), key(6, END_GROUP)],
            vec![key(5, START_GROUP)],
            vec![0x07],
            vec![0x06],
            vec![0x00],
            vec![key(1, VARINT), 1],
            vec![key(1, LEN), 5, 1],
            vec![0xff; 11],
            vec![
                key(3, VARINT),
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0x02,
            ],
            // A label whose name is not UTF-8.
            vec![key(1, LEN), 4, key(1, LEN), 2, key(1, LEN), 0xff],
            // A sample whose value has the wrong wire type.
            vec![key(1, LEN), 4, key(2, LEN), 2, key(1, VARINT), 1],
            // A series without a name.
            vec![key(1, LEN), 0],
        ];
        let mut deep = Vec::new();
        for _ in 0..101 {
            deep.push(key(5, START_GROUP));
        }
        for _ in 0..101 {
            deep.push(key(5, END_GROUP));
        }
        cases.push(deep);
        // Every prefix of a good request.
        for n in 0..good.len() {
            cases.push(good[..n].to_vec());
        }
        for c in &cases {
            same_as_reference(c);
        }
    }

    /// Every byte of a good request changed to a few values: both decoders agree.
    #[test]
    fn mutated_requests_agree_with_prost() {
        let good = request();
        for i in 0..good.len() {
            for b in [0x00, 0x01, 0x02, 0x07, 0x0a, 0x12, 0x7f, 0x80, 0xff] {
                let mut m = good.clone();
                m[i] = b;
                same_as_reference(&m);
            }
        }
    }
}
