//! Diagnostics: one problem in a rule (or config) file with its `file:line:column`, and
//! the typo suggestions shared by every "unknown key / unknown value" message.

use super::Rule;
use std::fmt;

/// One problem in a rule file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given (or as found in a given directory).
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole (unreadable, empty dir).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The rule it concerns, when known.
    pub rule: Option<String>,
    /// What is wrong, quoting the offending value.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        }
        if let Some(rule) = &self.rule {
            write!(f, " (rule {rule:?})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading, in file order and position order within a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The outcome of loading one file: its rules, or what is wrong with it.
#[derive(Clone, Debug)]
pub struct FileOutcome {
    /// The file's name as reported in diagnostics.
    pub file: String,
    /// The rules that compiled (all of them when `diagnostics` is empty).
    pub rules: Vec<Rule>,
    /// Its problems, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// `unknown field "direcion", did you mean "direction"?`, or the list of valid names when
/// none is close.
pub(crate) fn unknown_message(what: &str, got: &str, expected: &[&str]) -> String {
    match suggest(got, expected) {
        Some(s) => format!("unknown {what} {got:?}, did you mean {s:?}?"),
        None => format!(
            "unknown {what} {got:?}, expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// The valid name nearest to `got` by edit distance, when near enough to be a typo.
pub(crate) fn suggest<'e>(got: &str, expected: &[&'e str]) -> Option<&'e str> {
    let limit = (got.chars().count() / 3).max(2);
    let len = got.chars().count();
    expected
        .iter()
        // The distance is at least the difference in length: skip the hopeless.
        .filter(|e| e.chars().count().abs_diff(len) <= limit)
        .map(|e| (edit_distance(got, e), *e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
