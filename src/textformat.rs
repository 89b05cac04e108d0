//! Prometheus text format 0.0.4 and OpenMetrics 1.0 parsing, line by line.
//!
//! Used by `immune replay` (files), the scrape source and the push endpoint. The parser
//! borrows from the line: the series text (`name{labels}`) is handed out as written, so the
//! engine's store can intern it with one hash lookup and parse labels only for a series it
//! has not seen before. Timestamps: OpenMetrics writes seconds (`1764201600.5`), text 0.0.4
//! writes milliseconds (`1764201600500`); [`TimestampUnit::Auto`] tells them apart by size
//! (anything above 1e11 is milliseconds: 1e11 seconds is the year 5138).
//!
//! It is replay's hot path (half its instructions before issue 13's first cut), so it
//! works on bytes: a table for name bytes, label sets skipped a word at a time, plain
//! decimals by an exact fast path, and [`Parser`] reuses the last timestamp.

use crate::model::{Labels, Timestamp};

/// What one line held.
#[derive(Clone, Debug, PartialEq)]
pub enum Line<'a> {
    /// A sample.
    Sample(SampleLine<'a>),
    /// `# TYPE name kind`.
    Type {
        /// Family name.
        family: &'a str,
        /// `counter`, `gauge`, `histogram`, ...
        kind: &'a str,
    },
    /// `# EOF` (OpenMetrics end marker).
    Eof,
    /// A comment, `# HELP`, `# UNIT`, or a blank line.
    Other,
}

/// A sample line, borrowed.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleLine<'a> {
    /// `name{labels}` exactly as written (the interning key).
    pub series: &'a str,
    /// The metric name.
    pub name: &'a str,
    /// The value (may be NaN, as the formats allow).
    pub value: f64,
    /// The timestamp, if the line had one.
    pub at: Option<Timestamp>,
}

/// How to read a sample line's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampUnit {
    /// Seconds when below 1e11, milliseconds above.
    #[default]
    Auto,
    /// OpenMetrics: seconds, may be fractional.
    Seconds,
    /// Text format 0.0.4: integer milliseconds.
    Milliseconds,
}

/// A line that could not be parsed; `column` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// Where on the line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn perr(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column: column + 1,
        message: message.into(),
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str, unit: TimestampUnit) -> Result<Line<'_>, ParseError> {
    parse(line, unit, &mut TimestampCache::default())
}

/// A line parser for a stream of lines: as [`parse_line`], but it remembers the last
/// timestamp's text and value, so the lines of one scrape (which all carry the same
/// timestamp) parse it once.
#[derive(Clone, Debug, Default)]
pub struct Parser {
    unit: TimestampUnit,
    cache: TimestampCache,
}

impl Parser {
    /// A parser reading timestamps in `unit`.
    pub fn new(unit: TimestampUnit) -> Parser {
        Parser {
            unit,
            cache: TimestampCache::default(),
        }
    }

    /// Parses one line (without its newline), exactly as [`parse_line`] does.
    pub fn parse<'a>(&mut self, line: &'a str) -> Result<Line<'a>, ParseError> {
        parse(line, self.unit, &mut self.cache)
    }

    /// The value and timestamp of a sample line whose series is already known: `rest` is
    /// the line after its series text (starting with the whitespace that ends the series,
    /// without the newline). The same values [`Parser::parse`] gives for the whole line;
    /// `None` where it would give an error (the caller then parses the whole line, to
    /// report the error with its column).
    ///
    /// Bytes, not text: nearly every line is `value timestamp` in plain decimals, read in
    /// one pass by [`plain_fields`] with no UTF-8 check (a line it cannot read plainly,
    /// such as one with `NaN` or an exemplar, is checked and read by [`fields`]). The
    /// check, the field splitting and the float parsing were two fifths of replay's
    /// instructions before a deploy starts (a third over a whole fleet file).
    pub fn parse_after_series(&mut self, rest: &[u8]) -> Option<(f64, Option<Timestamp>)> {
        if let Some(plain) = plain_fields(rest, self.unit, &mut self.cache) {
            return Some(plain);
        }
        let rest = std::str::from_utf8(rest).ok()?;
        let rest = rest.strip_suffix('\r').unwrap_or(rest);
        if !rest.as_bytes().first()?.is_ascii_whitespace() {
            return None;
        }
        fields(rest, 0, self.unit, &mut self.cache).ok()
    }

    /// A sample line (without its newline) split where its series text likely ends,
    /// with its value and timestamp read: the split is after the line's last `}` when
    /// whitespace follows it, else before the last two fields (value and timestamp).
    ///
    /// The split is a guess the caller confirms: when `line[..len]` is a series text
    /// [`Parser::parse`] gave for some line (as a series cache's texts are), `parse` gives
    /// this line that series, value and timestamp (the line starts with that text and
    /// whitespace, and the rest is read by [`Parser::parse_after_series`]), however the
    /// guess was made. `None` for a line it cannot read so: no timestamp, a field that is
    /// not plain, a wrong guess whose rest does not read as a value and timestamp.
    ///
    /// Replay's reader thread reads every line this way ahead of the engine, so the
    /// engine's thread only compares the text with the one its cache predicts. Not
    /// forwards: the series is most of the line and its label values may hold any byte,
    /// and scanning it was half the reader's instructions; the value and timestamp are a
    /// few bytes after the last `}` (found by `memrchr`) and hold no whitespace.
    pub fn split_sample_from_end(&mut self, line: &[u8]) -> Option<(usize, f64, Timestamp)> {
        let series_end = match memchr::memrchr(b'}', line) {
            Some(i) if line.get(i + 1).is_some_and(|b| SPACE[usize::from(*b)]) => i + 1,
            _ => {
                // Back over trailing whitespace, the timestamp, whitespace, the value and
                // the whitespace before it, one table load a byte. A missing field runs
                // the index to 0, which is then declined.
                let mut i = line.len();
                for skip_space in [true, false, true, false, true] {
                    while i > 0 && SPACE[usize::from(line[i - 1])] == skip_space {
                        i -= 1;
                    }
                }
                i
            }
        };
        if series_end == 0 {
            return None;
        }
        let (value, at) = self.parse_after_series(&line[series_end..])?;
        Some((series_end, value, at?))
    }
}

/// `rest` (see [`Parser::parse_after_series`]) when it is whitespace, a plain decimal
/// value, and optionally whitespace and a plain decimal timestamp, then only whitespace:
/// the value and timestamp [`fields`] reads from the same text, bit for bit, since both go
/// through [`plain_decimal`]. `None` for anything else, which [`fields`] then reads.
///
/// The text after the value is looked up in `cache` first: a file's lines come in rounds
/// sharing one timestamp, so most lines compare it instead of reading it.
fn plain_fields(
    rest: &[u8],
    unit: TimestampUnit,
    cache: &mut TimestampCache,
) -> Option<(f64, Option<Timestamp>)> {
    if !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let (value, end) = plain_decimal(rest, skip_whitespace(rest, 1))?;
    let at = skip_whitespace(rest, end);
    let Some(tail) = rest.get(at..).filter(|t| !t.is_empty()) else {
        return Some((value, None));
    };
    if let Some(known) = cache.get(tail) {
        return Some((value, Some(known)));
    }
    let (secs, end) = plain_decimal(tail, 0)?;
    if skip_whitespace(tail, end) != tail.len() {
        return None;
    }
    let known = timestamp_of(secs, unit)?;
    cache.put(tail, known);
    Some((value, Some(known)))
}

/// The index of the first byte at or after `from` that is not ASCII whitespace.
#[inline]
fn skip_whitespace(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The last timestamp text (up to 32 bytes) and what it parsed to.
#[derive(Clone, Debug, Default)]
struct TimestampCache {
    text: [u8; 32],
    len: usize,
    at: Option<Timestamp>,
}

impl TimestampCache {
    fn parse(&mut self, text: &str, unit: TimestampUnit) -> Option<Timestamp> {
        if let Some(at) = self.get(text.as_bytes()) {
            return Some(at);
        }
        let at = parse_timestamp(text, unit)?;
        self.put(text.as_bytes(), at);
        Some(at)
    }

    /// What `text` parsed to last time, if it is the text kept.
    #[inline]
    fn get(&self, text: &[u8]) -> Option<Timestamp> {
        self.at.filter(|_| self.text.get(..self.len) == Some(text))
    }

    /// Keeps `text` (when it fits) as parsing to `at`.
    fn put(&mut self, text: &[u8], at: Timestamp) {
        if let Some(slot) = self.text.get_mut(..text.len()) {
            slot.copy_from_slice(text);
            self.len = text.len();
            self.at = Some(at);
        }
    }
}

fn parse<'a>(
    line: &'a str,
    unit: TimestampUnit,
    cache: &mut TimestampCache,
) -> Result<Line<'a>, ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Ok(Line::Other);
    }
    if let Some(rest) = line.strip_prefix('#') {
        let rest = rest.trim_start();
        if rest == "EOF" {
            return Ok(Line::Eof);
        }
        if let Some(t) = rest.strip_prefix("TYPE ") {
            let mut parts = t.split_whitespace();
            if let (Some(family), Some(kind)) = (parts.next(), parts.next()) {
                return Ok(Line::Type { family, kind });
            }
            return Err(perr(0, "TYPE line needs a family name and a type"));
        }
        return Ok(Line::Other);
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && NAME_BYTE[usize::from(bytes[i])] {
        i += 1;
    }
    if i == 0 || bytes[0].is_ascii_digit() {
        return Err(perr(0, "expected a metric name"));
    }
    let name = &line[..i];
    if bytes.get(i) == Some(&b'{') {
        i = skip_labels(bytes, i)?;
    }
    let series = &line[..i];
    let (value, at) = fields(line, i, unit, cache)?;
    Ok(Line::Sample(SampleLine {
        series,
        name,
        value,
        at,
    }))
}

/// The fields of a sample line after its series (which ends at byte `i` of `line`): the
/// value, the timestamp if any, and nothing else but an exemplar.
fn fields(
    line: &str,
    i: usize,
    unit: TimestampUnit,
    cache: &mut TimestampCache,
) -> Result<(f64, Option<Timestamp>), ParseError> {
    let bytes = line.as_bytes();
    // Fields after the series, split on ASCII whitespace by hand (the offsets are the
    // error columns; `split_ascii_whitespace` was a tenth of replay's time).
    let (value_at, value_end) =
        next_field(bytes, i).ok_or_else(|| perr(i, "expected a value after the series"))?;
    let value_text = &line[value_at..value_end];
    let value = parse_value(value_text)
        .ok_or_else(|| perr(value_at, format!("invalid value {value_text:?}")))?;
    let (at, end) = match next_field(bytes, value_end) {
        None => (None, bytes.len()),
        Some((ts_at, ts_end)) => {
            let ts = &line[ts_at..ts_end];
            let at = cache
                .parse(ts, unit)
                .ok_or_else(|| perr(ts_at, format!("invalid timestamp {ts:?}")))?;
            (Some(at), ts_end)
        }
    };
    // OpenMetrics exemplars (`# {...} v`) may follow; anything else is an error.
    if let Some((extra_at, extra_end)) = next_field(bytes, end) {
        let extra = &line[extra_at..extra_end];
        if extra != "#" {
            return Err(perr(
                extra_at,
                format!("unexpected text {extra:?} after the timestamp"),
            ));
        }
    }
    Ok((value, at))
}

/// Returns the index just past the closing `}` of a label set starting at `start`.
/// Runs of eight bytes holding none of `"`, `\\`, `}` are skipped a word at a time.
fn skip_labels(bytes: &[u8], start: usize) -> Result<usize, ParseError> {
    let mut i = start + 1;
    let mut in_quotes = false;
    while i < bytes.len() {
        while let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let special = label_specials(u64::from_le_bytes(w));
            if special != 0 {
                // Straight to the first special byte (the lowest flag is exact).
                i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        match b {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => return Ok(i + 1),
            _ => {}
        }
        i += 1;
    }
    Err(perr(start, "unterminated label set"))
}

/// The high bit of each byte of `w` that is `"`, `\\` or `}`, from the classic "has a
/// zero byte" test `(x - 0x01..) & !x & 0x80..` on `w` xor each byte repeated. A borrow
/// can flag a byte above a real match, never below one, so the lowest flag is exact.
#[inline]
fn label_specials(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | zero(w ^ (ONES * u64::from(b'}')))
}

/// Which bytes are ASCII whitespace (`u8::is_ascii_whitespace`): one load per byte.
static SPACE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_whitespace();
        b += 1;
    }
    table
};

/// Which bytes may appear in a metric name (`[a-zA-Z0-9_:]`): one load per byte.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        b += 1;
    }
    table
};

/// The next run of non-whitespace bytes at or after `from`, as `(start, end)`; the same
/// split as `str::split_ascii_whitespace`.
#[inline]
fn next_field(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if i == bytes.len() {
        return None;
    }
    let start = i;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    Some((start, i))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => parse_f64(text),
    }
}

/// Exact powers of ten as `f64` (every one up to 1e22 is representable).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `text.parse::<f64>()`, with a fast path for the plain decimals that make up nearly
/// every sample (`-?digits[.digits]`, at most 15 digits): the digits as an integer `m`
/// (exact in an `f64`, below 2^53) divided by 10^k (exact up to 1e22) is one correctly
/// rounded IEEE operation, so the result is the correctly rounded value, the same bits
/// the standard library returns (Clinger's fast path, W. D. Clinger, "How to read
/// floating point numbers accurately", PLDI 1990, which the standard library's own
/// parser also takes first). Anything else (exponents, more digits, `inf`) goes to the
/// standard library.
fn parse_f64(text: &str) -> Option<f64> {
    match plain_decimal(text.as_bytes(), 0) {
        Some((value, end)) if end == text.len() => Some(value),
        _ => text.parse().ok(),
    }
}

/// The plain decimal (`-?digits[.digits]`, 1 to 15 digits) starting at byte `from` of
/// `bytes` and ending at the first ASCII whitespace or the end, with that end; `None` when
/// the field is anything else. See [`parse_f64`] for why the result is correctly rounded.
#[inline]
fn plain_decimal(bytes: &[u8], from: usize) -> Option<(f64, usize)> {
    let negative = bytes.get(from) == Some(&b'-');
    let start = from + usize::from(negative);
    // Wrapping: past 15 digits the mantissa is thrown away below, so it may overflow.
    let mut mantissa: u64 = 0;
    let digits = |mut i: usize, mantissa: &mut u64| {
        while let Some(d) = bytes
            .get(i)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        i
    };
    let mut end = digits(start, &mut mantissa);
    let mut count = end - start;
    // Digits after the point.
    let mut scale = 0;
    if bytes.get(end) == Some(&b'.') {
        let after = end + 1;
        end = digits(after, &mut mantissa);
        scale = end - after;
        count += scale;
    }
    if count == 0 || count > 15 || bytes.get(end).is_some_and(|b| !b.is_ascii_whitespace()) {
        return None;
    }
    // `scale` <= `count` <= 15, inside the table.
    let value = mantissa as f64 / POW10[scale];
    Some((if negative { -value } else { value }, end))
}

fn parse_timestamp(text: &str, unit: TimestampUnit) -> Option<Timestamp> {
    timestamp_of(parse_f64(text)?, unit)
}

/// A timestamp field's number read in `unit`.
fn timestamp_of(v: f64, unit: TimestampUnit) -> Option<Timestamp> {
    let secs = match unit {
        TimestampUnit::Seconds => v,
        TimestampUnit::Milliseconds => v / 1000.0,
        TimestampUnit::Auto if v.abs() > 1e11 => v / 1000.0,
        TimestampUnit::Auto => v,
    };
    Timestamp::from_secs_f64(secs)
}

/// Splits series text (`name{a="b",c="d"}`) into its name and sorted labels, unescaping
/// values. Used once per new series, so it allocates freely.
pub fn parse_series(series: &str) -> Result<(String, Labels), ParseError> {
    let (name, rest) = match series.find('{') {
        Some(i) => (&series[..i], &series[i + 1..]),
        None => (series, ""),
    };
    if name.is_empty() {
        return Err(perr(0, "expected a metric name"));
    }
    let mut labels: Labels = Vec::new();
    let bytes = rest.as_bytes();
    let base = name.len() + 1;
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'}' {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            i += 1;
        }
        let key = rest[key_start..i].trim();
        if key.is_empty() || i >= bytes.len() {
            return Err(perr(base + key_start, "expected label=\"value\""));
        }
        i += 1;
        if bytes.get(i) != Some(&b'"') {
            return Err(perr(base + i, "expected a quoted label value"));
        }
        i += 1;
        let mut value = String::new();
        let mut closed = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    match bytes.get(i + 1) {
                        Some(b'n') => value.push('\n'),
                        Some(b'"') => value.push('"'),
                        Some(b'\\') => value.push('\\'),
                        _ => return Err(perr(base + i, "invalid escape in label value")),
                    }
                    i += 2;
                }
                b'"' => {
                    closed = true;
                    i += 1;
                    break;
                }
                _ => {
                    // Copy a run of plain bytes (keeps multi-byte UTF-8 intact).
                    let run_start = i;
                    while i < bytes.len() && bytes[i] != b'\\' && bytes[i] != b'"' {
                        i += 1;
                    }
                    value.push_str(&rest[run_start..i]);
                }
            }
        }
        if !closed {
            return Err(perr(base + key_start, "unterminated label value"));
        }
        labels.push((key.to_string(), value));
    }
    labels.sort();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(perr(base, "duplicate label name"));
    }
    Ok((name.to_string(), labels))
}

/// Writes `name{labels}` in canonical form (sorted labels, escaped values). Labels may be
/// owned strings or the store's shared ones.
pub fn format_series<K: AsRef<str>, V: AsRef<str>>(
    name: &str,
    labels: &[(K, V)],
    out: &mut String,
) {
    format_series_pairs(
        name,
        labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        out,
    );
}

/// [`format_series`] over borrowed pairs, given in the order to write (sorted for the
/// canonical form): remote_write and push build series texts from borrowed labels.
/// Values are escaped a run at a time (`\\`, `\"` and newline are the only escapes).
pub fn format_series_pairs<'a>(
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    out: &mut String,
) {
    out.push_str(name);
    let mut any = false;
    for (k, v) in labels {
        out.push(if any { ',' } else { '{' });
        any = true;
        out.push_str(k);
        out.push_str("=\"");
        let mut rest = v;
        while let Some(i) = memchr::memchr3(b'\\', b'"', b'\n', rest.as_bytes()) {
            out.push_str(&rest[..i]);
            out.push_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            });
            rest = &rest[i + 1..];
        }
        out.push_str(rest);
        out.push('"');
    }
    if any {
        out.push('}');
    }
}

#[cfg(test)]
mod tests;
