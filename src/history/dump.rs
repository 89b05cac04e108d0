//! `promtool tsdb dump` output as a replay input.
//!
//! `promtool tsdb dump` prints `{__name__="up", instance="a"} 1 1700000000000` per line,
//! grouped by series with millisecond timestamps; replay reads samples in time order with
//! the metric name outside the braces. This reads a dump, orders its samples by time
//! (stable, so equal times keep the dump's order) and writes the text replay reads.
//! Ordering needs every sample in memory: about 40 bytes a sample plus the series texts,
//! which are stored once. For histories larger than memory, use `immune backtest` against
//! the TSDB itself, which fetches bounded chunks.

use std::collections::HashMap;
use std::io::{BufRead, Write};

/// A line of the dump that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Bad input, with its place.
    #[error("{file}:{line}: {message}")]
    Input {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{file}: {source}")]
    Io {
        /// The file name as given.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Splits `{__name__="x", k="v"} value ts` into (`x{k="v"}`, value, ts ms).
fn parse_line(line: &str) -> Result<(String, &str, i64), String> {
    let line = line.trim();
    let close = line
        .rfind('}')
        .ok_or("expected `{labels} value timestamp`")?;
    if !line.starts_with('{') {
        return Err("expected the line to start with `{`".into());
    }
    let labels = &line[1..close];
    let mut rest = line[close + 1..].split_whitespace();
    let value = rest.next().ok_or("missing value")?;
    let ts: i64 = rest
        .next()
        .ok_or("missing timestamp")?
        .parse()
        .map_err(|_| "timestamp is not a whole number of milliseconds")?;
    if rest.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    // Pull __name__ out of the label list, keeping the rest verbatim.
    let mut name = None;
    let mut others: Vec<&str> = Vec::new();
    for part in split_labels(labels) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.strip_prefix("__name__=") {
            Some(v) => {
                name = Some(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or("__name__ must be quoted")?,
                )
            }
            None => others.push(part),
        }
    }
    let name = name.ok_or("no __name__ label")?;
    let series = if others.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", others.join(","))
    };
    Ok((series, value, ts))
}

/// Splits a label list at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Reads a dump from `input` (named `file` in errors) and writes its samples in time
/// order as `name{labels} value seconds.millis` lines ending with `# EOF`.
pub fn to_time_order(
    file: &str,
    input: impl BufRead,
    out: &mut dyn Write,
) -> Result<u64, DumpError> {
    let io = |source| DumpError::Io {
        file: file.to_string(),
        source,
    };
    let mut series: Vec<String> = Vec::new();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut samples: Vec<(i64, u32, String)> = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| DumpError::Input {
            file: file.to_string(),
            line: n + 1,
            message: e.to_string(),
        })?;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (s, value, ts) = parse_line(&line).map_err(|message| DumpError::Input {
            file: file.to_string(),
            line: n + 1,
            message,
        })?;
        let id = match ids.get(&s) {
            Some(id) => *id,
            None => {
                let id = series.len() as u32;
                ids.insert(s.clone(), id);
                series.push(s);
                id
            }
        };
        samples.push((ts, id, value.to_string()));
    }
    samples.sort_by_key(|s| s.0);
    let mut w = std::io::BufWriter::new(out);
    for (ts, id, value) in &samples {
        writeln!(
            w,
            "{} {value} {}.{:03}",
            series[*id as usize],
            ts.div_euclid(1000),
            ts.rem_euclid(1000)
        )
        .map_err(io)?;
    }
    w.write_all(b"# EOF\n").map_err(io)?;
    w.flush().map_err(io)?;
    Ok(samples.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_becomes_time_ordered_text() {
        let dump = "{__name__=\"up\", instance=\"a\"} 1 2000\n{__name__=\"up\", instance=\"a\"} 2 4000\n{instance=\"b,c\", __name__=\"up\"} 7 3000\n";
        let mut out = Vec::new();
        assert_eq!(
            to_time_order("d.txt", dump.as_bytes(), &mut out).unwrap(),
            3
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "up{instance=\"a\"} 1 2.000\nup{instance=\"b,c\"} 7 3.000\nup{instance=\"a\"} 2 4.000\n# EOF\n"
        );
    }

    #[test]
    fn bad_lines_name_their_place() {
        let mut out = Vec::new();
        let e = to_time_order(
            "d.txt",
            "{__name__=\"up\"} 1 2000\n{instance=\"a\"} 1 2\n".as_bytes(),
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "d.txt:2: no __name__ label");
    }
}
