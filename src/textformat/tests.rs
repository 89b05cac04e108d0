//! Unit tests of `crate::textformat`.

use super::*;

fn sample(line: &str) -> SampleLine<'_> {
    match parse_line(line, TimestampUnit::Auto).unwrap() {
        Line::Sample(s) => s,
        other => panic!("not a sample: {other:?}"),
    }
}

#[test]
fn openmetrics_seconds_and_text_milliseconds() {
    let s = sample(r#"errs_total{instance="web-01:80",job="web"} 17 1764201600.5"#);
    assert_eq!(s.name, "errs_total");
    assert_eq!(s.series, r#"errs_total{instance="web-01:80",job="web"}"#);
    assert_eq!(s.value, 17.0);
    assert_eq!(s.at, Some(Timestamp(1_764_201_600_500)));
    let t = sample("up 1 1764201600500");
    assert_eq!(t.at, Some(Timestamp(1_764_201_600_500)));
    let u = sample("up 0");
    assert_eq!(u.at, None);
}

#[test]
fn labels_with_braces_spaces_and_escapes() {
    let s = sample(r#"m{path="/a b}",q="x\"y"} +Inf 1"#);
    assert_eq!(s.series, r#"m{path="/a b}",q="x\"y"}"#);
    assert!(s.value.is_infinite());
    let (name, labels) = parse_series(s.series).unwrap();
    assert_eq!(name, "m");
    assert_eq!(
        labels,
        vec![
            ("path".to_string(), "/a b}".to_string()),
            ("q".to_string(), "x\"y".to_string())
        ]
    );
    let mut out = String::new();
    format_series(&name, &labels, &mut out);
    assert_eq!(parse_series(&out).unwrap(), (name, labels));
}

#[test]
fn fast_float_path_gives_the_standard_librarys_bits() {
    let mut texts: Vec<String> = [
        "0",
        "-0",
        "1.",
        ".5",
        "-.5",
        "0.1",
        "0.3",
        "1764201600.5",
        "1764201600.123",
        "999999999999999",
        "9999999999999999",
        "0.000000000000001",
        "123456.789012345",
        "1e5",
        "+1",
        "inf",
        "-",
        ".",
        "",
        "1.2.3",
        "00000000000000000001",
        "-1234.5678",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A deterministic spread of decimals of every length and scale.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let digits = (x % 10_u64.pow((x >> 40) as u32 % 16 + 1)).to_string();
        let cut = (x >> 50) as usize % (digits.len() + 1);
        let sign = if x & 1 == 1 { "-" } else { "" };
        texts.push(format!("{sign}{}.{}", &digits[..cut], &digits[cut..]));
        texts.push(format!("{sign}{digits}"));
    }
    for t in &texts {
        let std: Option<f64> = t.parse().ok();
        assert_eq!(
            parse_f64(t).map(f64::to_bits),
            std.map(f64::to_bits),
            "{t:?}"
        );
    }
}

#[test]
fn word_skipping_finds_the_same_end_as_a_byte_loop() {
    fn plain(bytes: &[u8], start: usize) -> Option<usize> {
        let (mut i, mut q) = (start + 1, false);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if q => i += 1,
                b'"' => q = !q,
                b'}' if !q => return Some(i + 1),
                _ => {}
            }
            i += 1;
        }
        None
    }
    let alphabet = b"a=\"\\},{ x";
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 40) as usize;
        let mut text = vec![b'{'];
        let mut y = x;
        for _ in 0..len {
            y = y.rotate_left(5).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            text.push(alphabet[(y >> 60) as usize % alphabet.len()]);
        }
        assert_eq!(skip_labels(&text, 0).ok(), plain(&text, 0), "{text:?}");
    }
}

#[test]
fn a_parser_reusing_timestamps_reads_what_parse_line_reads() {
    let lines = [
        "a 1 1764201600.5",
        "b{x=\"1\"} 2 1764201600.5",
        "c 3 1764201610",
        "d 4 176420161",
        "e 5",
        "f 6 1764201610",
        "g 7 NaN",
    ];
    let mut parser = Parser::new(TimestampUnit::Auto);
    for line in lines {
        assert_eq!(
            parser.parse(line),
            parse_line(line, TimestampUnit::Auto),
            "{line}"
        );
    }
}

#[test]
fn parsing_after_a_known_series_reads_what_parse_reads() {
    let series = r#"m{a="x y",b="}"}"#;
    let rests = [
        " 1 1700000000",
        " 1.5 1700000000.25",
        "\t-2 1700000000\r",
        " NaN 1700000001",
        " +Inf",
        " 3 1700000002 # {t=\"1\"} 1",
        " 3 1700000002 x",
        " 3 17x",
        " x 1",
        " ",
        "",
        "x 1 2",
        "{c=\"1\"} 1 2",
        "_total 1 2",
        " 1. 2.",
        " .5 -0",
        " -0 1700000000 ",
        " 1\t\t2\r",
        " 1234567890123456 1",
        " 1 1234567890123456",
        " 1e3 5",
        " 1 2 3",
        " - 1",
        " 1..2 3",
        " 1 1700000000\u{e9}",
        " 4 1700000000 ",
        " 4 1700000000",
    ];
    for unit in [TimestampUnit::Seconds, TimestampUnit::Auto] {
        let mut fast = Parser::new(unit);
        let mut full = Parser::new(unit);
        for rest in rests {
            let line = format!("{series}{rest}");
            let want = match full.parse(&line) {
                Ok(Line::Sample(s)) if s.series == series => Some((s.value, s.at)),
                _ => None,
            };
            let got = fast.parse_after_series(rest.as_bytes());
            assert_eq!(
                got.map(|(v, at)| (v.to_bits(), at)),
                want.map(|(v, at)| (v.to_bits(), at)),
                "{line:?}"
            );
        }
    }
}

#[test]
fn the_plain_fast_path_reads_what_the_field_splitter_reads() {
    // Random short texts over the bytes that matter (digits, point, sign, whitespace,
    // letters, non-ASCII): wherever the one-pass reader answers, it must answer as
    // `fields` does, bit for bit; it may decline anything. One cache per unit across
    // them all, as in a replay.
    let alphabet: &[&str] = &[
        "0", "1", "9", ".", "-", " ", "\t", "\r", "e", "N", "#", "\u{e9}",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut answered = 0;
    let mut caches: [TimestampCache; 3] = Default::default();
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut rest = String::from(" ");
        let mut y = x;
        for _ in 0..(x % 24) {
            y = y.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            rest.push_str(alphabet[(y >> 59) as usize % alphabet.len()]);
        }
        let units = [
            TimestampUnit::Seconds,
            TimestampUnit::Milliseconds,
            TimestampUnit::Auto,
        ];
        for (unit, cache) in units.into_iter().zip(caches.iter_mut()) {
            if let Some((v, at)) = plain_fields(rest.as_bytes(), unit, cache) {
                answered += 1;
                let want = fields(
                    rest.trim_end_matches('\r'),
                    0,
                    unit,
                    &mut TimestampCache::default(),
                );
                assert_eq!(
                    Ok((v.to_bits(), at)),
                    want.map(|(v, at)| (v.to_bits(), at)),
                    "{rest:?}"
                );
            }
        }
    }
    assert!(
        answered > 1000,
        "the fast path answered only {answered} times"
    );
}

#[test]
fn comments_and_eof() {
    assert_eq!(
        parse_line("# TYPE errs counter", TimestampUnit::Auto).unwrap(),
        Line::Type {
            family: "errs",
            kind: "counter"
        }
    );
    assert_eq!(parse_line("# EOF", TimestampUnit::Auto).unwrap(), Line::Eof);
    assert_eq!(
        parse_line("# HELP x y", TimestampUnit::Auto).unwrap(),
        Line::Other
    );
    assert_eq!(parse_line("", TimestampUnit::Auto).unwrap(), Line::Other);
}

#[test]
fn malformed_lines_are_errors_with_columns() {
    assert_eq!(
        parse_line("m{a=\"b\" 1", TimestampUnit::Auto)
            .unwrap_err()
            .column,
        2
    );
    assert_eq!(
        parse_line("m 1x", TimestampUnit::Auto).unwrap_err().column,
        3
    );
    assert!(parse_line("m 1 2 3", TimestampUnit::Auto).is_err());
    assert!(parse_line("m", TimestampUnit::Auto).is_err());
    assert!(parse_line("9m 1", TimestampUnit::Auto).is_err());
    assert!(parse_line("m 1 NaN", TimestampUnit::Auto).is_err());
    assert!(parse_series(r#"m{a="1",a="2"}"#).is_err());
    assert!(parse_series(r#"m{a=1}"#).is_err());
}

#[test]
fn a_sample_line_split_from_its_end_reads_what_parse_reads() {
    // Fixed lines, then random ones over the bytes that matter (name bytes, braces,
    // quotes, escapes, digits, whitespace, `#`, non-ASCII). Wherever the split's series
    // part is a series text (one `parse` gives for some line), `parse` must give the
    // line that series, its value (bit for bit) and timestamp. It may decline anything,
    // but not the plain lines a file is made of.
    let fixed = [
        "m 1 1700000000",
        r#"m{a="x y",b="}"} 1.5 1700000000.25"#,
        "m\t-2 1700000000\r",
        "m{a=\"1\"} NaN 1700000001",
        "m +Inf",
        "m 3 1700000002 # {t=\"1\"} 1",
        "m 3 1700000002 x",
        "m{a=\"1\"",
        "m{a=\"\\\"} 1\"} 4 5",
        "m{a=\" 1 2\"} 4 5",
        "m{a=\" 1 2",
        "1m 1 2",
        "# TYPE m gauge",
        "# EOF",
        "",
        " m 1 2",
        "m\r",
        "m{} 1 2",
        "m_total{a=\"\u{e9}\"} 7 8",
    ];
    let alphabet: &[&str] = &[
        "m", "_", ":", "1", ".", " ", "\t", "\r", "{", "}", "\"", "\\", "=", ",", "#", "\u{e9}",
    ];
    let tails = [" 1 2", " 1.5 17", "\t3", " 1 2 x", "", " -0 1700000000\r"];
    let mut lines: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut line = String::new();
        let mut y = x;
        for _ in 0..(x % 14) {
            y = y.rotate_left(5).wrapping_mul(0x2545_F491_4F6C_DD1D);
            line.push_str(alphabet[(y >> 59) as usize % alphabet.len()]);
        }
        line.push_str(tails[(x >> 40) as usize % tails.len()]);
        lines.push(line);
    }
    let mut confirmed = 0;
    for unit in [TimestampUnit::Seconds, TimestampUnit::Auto] {
        let mut splitter = Parser::new(unit);
        let mut full = Parser::new(unit);
        for line in &lines {
            let Some((len, value, at)) = splitter.split_sample_from_end(line.as_bytes()) else {
                continue;
            };
            // Is the guessed series a series text? (Then a cache could hold it.)
            let Some(series) = line.get(..len) else {
                continue;
            };
            let probe = format!("{series} 0 0");
            if !matches!(full.parse(&probe), Ok(Line::Sample(s)) if s.series == series) {
                continue;
            }
            confirmed += 1;
            match full.parse(line) {
                Ok(Line::Sample(s)) => {
                    assert_eq!(s.series, series, "{line:?}");
                    assert_eq!(s.value.to_bits(), value.to_bits(), "{line:?}");
                    assert_eq!(s.at, Some(at), "{line:?}");
                }
                other => panic!("{line:?}: split as a sample, parse gives {other:?}"),
            }
        }
        for plain in [fixed[0], fixed[1], fixed[2], fixed[8], fixed[9], fixed[18]] {
            assert!(
                splitter.split_sample_from_end(plain.as_bytes()).is_some(),
                "{plain:?} declined"
            );
        }
    }
    assert!(confirmed > 1000, "confirmed only {confirmed} times");
}
