//! Prometheus-style series selectors: `name{label="v", other!="w", re=~"a|b", nre!~"c.*"}`.
//!
//! Same syntax and semantics as PromQL's instant vector selectors (regexes are fully
//! anchored; a matcher on an absent label sees the empty string), so ops can paste the
//! selectors they already use in dashboards.

use regex::Regex;
use std::fmt;

/// How a matcher compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

/// One `label op "value"` term.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label name.
    pub label: String,
    /// The comparison.
    pub op: MatchOp,
    /// The literal value or regex source as written.
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Whether a label value (empty when the label is absent) satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => value == self.value,
            (MatchOp::Ne, _) => value != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(value),
            (MatchOp::NotRe, Some(re)) => !re.is_match(value),
            (MatchOp::Re | MatchOp::NotRe, None) => false,
        }
    }
}

/// A parsed selector.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// The metric name (required: immune selects series of one metric).
    pub name: String,
    /// The label matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
}

/// Why a selector did not parse; `offset` is the byte offset in the selector text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", offset + 1)]
pub struct SelectorError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> SelectorError {
    SelectorError {
        offset,
        message: message.into(),
    }
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

impl Selector {
    /// Parses selector text.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        let start = i;
        if i >= bytes.len() || !is_name_start(bytes[i]) {
            return Err(err(i, "expected a metric name"));
        }
        while i < bytes.len() && is_name_char(bytes[i]) {
            i += 1;
        }
        let name = text[start..i].to_string();
        let mut matchers = Vec::new();
        skip_ws(&mut i);
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                skip_ws(&mut i);
                if i < bytes.len() && bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let lstart = i;
                if i >= bytes.len() || !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                    return Err(err(i, "expected a label name or '}'"));
                }
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let label = text[lstart..i].to_string();
                skip_ws(&mut i);
                let op = match bytes.get(i..i + 2) {
                    Some(b"!=") => MatchOp::Ne,
                    Some(b"=~") => MatchOp::Re,
                    Some(b"!~") => MatchOp::NotRe,
                    _ if bytes.get(i) == Some(&b'=') => MatchOp::Eq,
                    _ => return Err(err(i, "expected one of =, !=, =~, !~")),
                };
                i += if op == MatchOp::Eq { 1 } else { 2 };
                skip_ws(&mut i);
                let vstart = i;
                let value = parse_quoted(text, &mut i)?;
                let regex = match op {
                    MatchOp::Re | MatchOp::NotRe => Some(
                        Regex::new(&format!("^(?:{value})$"))
                            .map_err(|e| err(vstart, format!("invalid regex {value:?}: {e}")))?,
                    ),
                    _ => None,
                };
                matchers.push(Matcher {
                    label,
                    op,
                    value,
                    regex,
                });
                skip_ws(&mut i);
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(err(i, "expected ',' or '}'")),
                }
            }
        }
        skip_ws(&mut i);
        if i != bytes.len() {
            return Err(err(i, "unexpected text after the selector"));
        }
        Ok(Selector { name, matchers })
    }

    /// Whether the series `name{labels}` is selected. `labels` need not be sorted.
    pub fn matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        self.matches_any(name, labels)
    }

    /// [`Selector::matches`] on labels of any string type (the store's shared ones).
    pub fn matches_any<K: AsRef<str>, V: AsRef<str>>(&self, name: &str, labels: &[(K, V)]) -> bool {
        name == self.name
            && self.matchers.iter().all(|m| {
                let v = labels
                    .iter()
                    .find(|(k, _)| k.as_ref() == m.label)
                    .map_or("", |(_, v)| v.as_ref());
                m.matches(v)
            })
    }

    /// The same matchers on another metric name (`http_request_duration_seconds_bucket`
    /// from a histogram rule's `http_request_duration_seconds`).
    pub fn with_name(&self, name: &str) -> Selector {
        Selector {
            name: name.to_string(),
            matchers: self.matchers.clone(),
        }
    }
}

fn parse_quoted(text: &str, i: &mut usize) -> Result<String, SelectorError> {
    let bytes = text.as_bytes();
    let quote = match bytes.get(*i) {
        Some(q @ (b'"' | b'\'')) => *q,
        _ => return Err(err(*i, "expected a quoted value")),
    };
    let open = *i;
    *i += 1;
    let mut out = String::new();
    let mut chars = text[*i..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c if c as u32 == quote as u32 => {
                *i += off + 1;
                return Ok(out);
            }
            c => out.push(c),
        }
    }
    Err(err(open, "unterminated quoted value"))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.matchers.is_empty() {
            write!(f, "{{")?;
            for (n, m) in self.matchers.iter().enumerate() {
                let op = match m.op {
                    MatchOp::Eq => "=",
                    MatchOp::Ne => "!=",
                    MatchOp::Re => "=~",
                    MatchOp::NotRe => "!~",
                };
                if n > 0 {
                    write!(f, ",")?;
                }
                write!(f, "{}{}{:?}", m.label, op, m.value)?;
            }
            write!(f, "}}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let s =
            Selector::parse(r#"errs_total{job="web", env!="dev", code=~"5..", path!~"/health.*"}"#)
                .unwrap();
        assert_eq!(s.name, "errs_total");
        assert_eq!(s.matchers.len(), 4);
        let good = l(&[
            ("job", "web"),
            ("env", "prod"),
            ("code", "503"),
            ("path", "/a"),
        ]);
        assert!(s.matches("errs_total", &good));
        assert!(!s.matches("other", &good));
        let bad_code = l(&[
            ("job", "web"),
            ("env", "prod"),
            ("code", "5030"),
            ("path", "/a"),
        ]);
        assert!(
            !s.matches("errs_total", &bad_code),
            "regex must be anchored"
        );
        let health = l(&[("job", "web"), ("code", "500"), ("path", "/healthz")]);
        assert!(!s.matches("errs_total", &health));
    }

    #[test]
    fn bare_name_and_display_round_trip() {
        let s = Selector::parse("up").unwrap();
        assert!(s.matches("up", &[]));
        let t = Selector::parse(r#"a{b="c\"d"}"#).unwrap();
        assert_eq!(t.matchers[0].value, "c\"d");
        assert_eq!(Selector::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(Selector::parse("").unwrap_err().offset, 0);
        assert_eq!(Selector::parse("a{b=c}").unwrap_err().offset, 4);
        assert_eq!(Selector::parse(r#"a{b="c"#).unwrap_err().offset, 4);
        assert!(Selector::parse(r#"a{b=~"("}"#).is_err());
        assert!(Selector::parse(r#"a{b="c"} x"#).is_err());
    }
}
