//! Loading rule files: the one place in the crate that touches YAML.
//!
//! Rule files are parsed with `saphyr-parser`, whose events carry spans, into a small
//! tree that remembers where every key and value was written. A serde deserializer over
//! that tree fills the structs of [`super::file`], and the compiler below checks every
//! value and builds the [`RuleSet`] the engine runs. Why not straight into serde from a
//! YAML library: promtool-quality messages need the `file:line:column` of the offending
//! value for semantic errors too (a bad selector, a sign that contradicts the direction),
//! and every error in every file reported at once, not just the first. So:
//!
//! - unknown keys are collected at every level (with the nearest valid key suggested)
//!   and do not stop the rest of the rule from being checked;
//! - each rule is deserialized on its own, so a type error in one rule does not hide the
//!   problems of the others;
//! - semantic checks run on every rule that deserialized and report each problem.
//!
//! `immune check` and the engine both call [`load_paths`], so what `check` accepts is
//! exactly what runs.

use super::file::{MetricSpec, MinDataSpec, OnMissingSpec, RuleSpec};
use super::{
    Action, Baseline, Direction, Effect, MetricKind, MinData, MissingAction, OnMissing, Origin,
    Rule, RuleSet, Selector, TestKind,
};
use crate::model::{DurationMs, Phase};
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

/// Loads rule files and directories file by file, keeping each file's outcome: what
/// `immune check` reports. Rule names must be unique across all of them; a duplicate is
/// reported in the file of its second definition.
pub fn load_report(paths: &[PathBuf]) -> Vec<FileOutcome> {
    let mut outcomes = Vec::new();
    let mut names = HashMap::new();
    for path in paths {
        match expand(path) {
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    match std::fs::read_to_string(&file) {
                        Ok(text) => outcomes.push(load_text(&name, &text, &mut names)),
                        Err(e) => {
                            outcomes.push(whole_file_error(name, format!("cannot read: {e}")))
                        }
                    }
                }
            }
            Err(outcome) => outcomes.push(outcome),
        }
    }
    outcomes
}

/// Loads rule files; a path may be a directory, whose `*.yaml` and `*.yml` files are
/// loaded in name order. Either every rule of every file, or every problem found.
pub fn load_paths(paths: &[PathBuf]) -> Result<RuleSet, Diagnostics> {
    into_result(load_report(paths))
}

/// Loads one rule file's text; `file_name` is used in diagnostics and origins.
pub fn load_str(file_name: &str, text: &str) -> Result<RuleSet, Diagnostics> {
    into_result(vec![load_text(file_name, text, &mut HashMap::new())])
}

/// Loads rule files given as (name, text) pairs, as the embedded defaults are; rule names
/// must be unique across them.
pub fn load_sources(sources: &[(&str, &str)]) -> Result<RuleSet, Diagnostics> {
    let mut names = HashMap::new();
    into_result(
        sources
            .iter()
            .map(|(name, text)| load_text(name, text, &mut names))
            .collect(),
    )
}

/// Deserializes any YAML document (immune.yaml) with the same positioned diagnostics as
/// rule files: unknown keys with suggestions, type errors at their `line:column`. This
/// keeps every YAML file immune reads behind one parser.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(
    file_name: &str,
    text: &str,
) -> Result<T, Diagnostics> {
    let diag = |(pos, message): Problem| Diagnostic {
        file: file_name.to_string(),
        line: pos.line,
        column: pos.col,
        rule: None,
        message,
    };
    let (doc, problems) = parse_document(text).map_err(|p| Diagnostics(vec![diag(p)]))?;
    let empty = Node {
        pos: Pos { line: 1, col: 1 },
        kind: Kind::Map(Vec::new()),
    };
    let node = doc.unwrap_or(empty);
    let sink = Sink::default();
    let result = T::deserialize(De {
        node: &node,
        key: None,
        sink: &sink,
    });
    let mut all: Vec<Diagnostic> = problems.into_iter().map(diag).collect();
    all.extend(sink.into_inner().into_iter().map(diag));
    match result {
        Ok(v) if all.is_empty() => Ok(v),
        Ok(_) => Err(Diagnostics(all)),
        Err(e) => {
            all.push(diag((e.pos.unwrap_or(node.pos), e.message)));
            Err(Diagnostics(all))
        }
    }
}

fn into_result(outcomes: Vec<FileOutcome>) -> Result<RuleSet, Diagnostics> {
    let mut rules = Vec::new();
    let mut diags = Vec::new();
    for o in outcomes {
        rules.extend(o.rules);
        diags.extend(o.diagnostics);
    }
    if diags.is_empty() {
        Ok(RuleSet { rules })
    } else {
        Err(Diagnostics(diags))
    }
}

fn whole_file_error(file: String, message: String) -> FileOutcome {
    FileOutcome {
        diagnostics: vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            rule: None,
            message,
        }],
        file,
        rules: Vec::new(),
    }
}

/// A path as the files it stands for: itself, or a directory's rule files by name.
fn expand(path: &Path) -> Result<Vec<PathBuf>, FileOutcome> {
    let name = path.display().to_string();
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| whole_file_error(name.clone(), format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| whole_file_error(name.clone(), format!("cannot read directory: {e}")))?;
        let p = entry.path();
        let is_rule_file = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if is_rule_file && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(whole_file_error(
            name,
            "no rule files (*.yaml, *.yml) in directory".to_string(),
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Where a rule name was first defined, for duplicate detection across files.
type Names = HashMap<String, (String, usize)>;

fn load_text(file: &str, text: &str, names: &mut Names) -> FileOutcome {
    let mut cx = FileCx {
        file,
        lines: text.lines().collect(),
        diags: Vec::new(),
    };
    let mut rules = Vec::new();
    match parse_document(text) {
        Err((pos, message)) => cx.push(pos, None, format!("YAML syntax error: {message}")),
        Ok((doc, problems)) => {
            for (pos, message) in problems {
                cx.push(pos, None, message);
            }
            rules = compile_file(&mut cx, doc.as_ref(), names);
        }
    }
    cx.diags.sort_by_key(|d| (d.line, d.column));
    FileOutcome {
        file: file.to_string(),
        rules,
        diagnostics: cx.diags,
    }
}

// ---------------------------------------------------------------------------------------
// The YAML tree with positions.

/// A 1-based line and column (characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pos {
    line: usize,
    col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Scalar { value: String, style: ScalarStyle },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
struct Node {
    pos: Pos,
    kind: Kind,
}

impl Node {
    /// The value under `key` when this is a mapping.
    fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: ScalarStyle::Plain }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The position of the value at `path` below this node, or of the deepest node on the
    /// way that exists (so a missing field points at its parent).
    fn pos_at(&self, path: &[&str]) -> Pos {
        let mut node = self;
        for key in path {
            match node.get(key) {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    /// How the node reads in a message.
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing".to_string(),
            Kind::Scalar { value, .. } => format!("{value:?}"),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

type Problem = (Pos, String);

const MAX_DEPTH: usize = 64;

struct TreeBuilder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    problems: Vec<Problem>,
}

fn scan_problem(e: &ScanError) -> Problem {
    (
        Pos {
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        e.info().to_string(),
    )
}

impl<'a> TreeBuilder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Problem> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(scan_problem(&e)),
            None => Err((Pos::default(), "unexpected end of input".to_string())),
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, Problem> {
        let pos = Pos::of(&span);
        if depth > MAX_DEPTH {
            return Err((pos, "nesting too deep".to_string()));
        }
        let (node, anchor) = match ev {
            Event::Scalar(value, style, anchor, _) => (
                Node {
                    pos,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        style,
                    },
                },
                anchor,
            ),
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (
                    Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    let Some(k) = key.as_str() else {
                        self.problems
                            .push((key.pos, "mapping keys must be plain strings".to_string()));
                        continue;
                    };
                    if let Some((first, _)) = entries.iter().find(|(e, _)| e.as_str() == Some(k)) {
                        self.problems.push((
                            key.pos,
                            format!("duplicate key {k:?} (first at line {})", first.pos.line),
                        ));
                        continue;
                    }
                    entries.push((key, value));
                }
                (
                    Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => (n.clone(), 0),
                None => return Err((pos, "alias to an unknown anchor".to_string())),
            },
            other => return Err((pos, format!("unexpected YAML event {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// Parses one YAML document into a tree; `None` for an empty stream. The problems are
/// non-fatal (duplicate keys); the error is a syntax error, which stops the file.
fn parse_document(text: &str) -> Result<(Option<Node>, Vec<Problem>), Problem> {
    let mut b = TreeBuilder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
    };
    let mut doc = None;
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                let (ev, span) = b.next()?;
                if doc.is_some() {
                    return Err((
                        Pos::of(&span),
                        "a rule file holds one YAML document".to_string(),
                    ));
                }
                doc = Some(b.node(ev, span, 0)?);
            }
            other => {
                return Err((Pos::of(&span), format!("unexpected YAML event {other:?}")));
            }
        }
    }
    Ok((doc, b.problems))
}

// ---------------------------------------------------------------------------------------
// A serde deserializer over the tree: errors carry the position of the node they concern,
// and unknown struct fields are collected (with a suggestion) instead of stopping.

#[derive(Debug)]
struct DeError {
    pos: Option<Pos>,
    message: String,
    /// The keys from the deserialized root down to the value that failed.
    path: Vec<String>,
    /// The field, when the error is a missing field.
    missing: Option<&'static str>,
}

impl DeError {
    fn at(mut self, pos: Pos) -> DeError {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
            path: Vec::new(),
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..<DeError as de::Error>::custom(format!("missing field {field:?}"))
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::custom(format!("duplicate field {field:?}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(unknown_message("field", field, expected))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(unknown_message("value", variant, expected))
    }
}

/// `unknown field "direcion", did you mean "direction"?`, or the list of valid names when
/// none is close.
fn unknown_message(what: &str, got: &str, expected: &[&str]) -> String {
    match suggest(got, expected) {
        Some(s) => format!("unknown {what} {got:?}, did you mean {s:?}?"),
        None => format!(
            "unknown {what} {got:?}, expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// The valid name nearest to `got` by edit distance, when near enough to be a typo.
fn suggest<'e>(got: &str, expected: &[&'e str]) -> Option<&'e str> {
    let limit = (got.chars().count() / 3).max(2);
    expected
        .iter()
        .map(|e| (edit_distance(got, e), *e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Problems found while deserializing that do not stop it (unknown keys).
type Sink = RefCell<Vec<Problem>>;

#[derive(Clone, Copy)]
struct De<'a> {
    node: &'a Node,
    /// The key this node is the value of, for messages.
    key: Option<&'a str>,
    sink: &'a Sink,
}

impl<'a> De<'a> {
    fn child(&self, node: &'a Node, key: Option<&'a str>) -> De<'a> {
        De {
            node,
            key,
            sink: self.sink,
        }
    }

    fn expected(&self, what: &str) -> DeError {
        let found = self.node.describe();
        let message = match self.key {
            Some(k) => format!("{k}: expected {what}, found {found}"),
            None => format!("expected {what}, found {found}"),
        };
        DeError {
            pos: Some(self.node.pos),
            ..<DeError as de::Error>::custom(message)
        }
    }

    /// The text of a plain (unquoted) scalar, the only kind that can be a number or bool.
    fn plain(&self) -> Option<&'a str> {
        match &self.node.kind {
            Kind::Scalar {
                value,
                style: ScalarStyle::Plain,
            } => Some(value),
            _ => None,
        }
    }
}

fn parse_yaml_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let numeric = !s.is_empty()
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if numeric { s.parse().ok() } else { None }
}

impl<'de, 'a> de::Deserializer<'de> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        let r = match &self.node.kind {
            Kind::Seq(_) => return self.deserialize_seq(visitor),
            Kind::Map(_) => return self.deserialize_map(visitor),
            Kind::Scalar { value, .. } => match self.plain() {
                Some(_) if self.node.is_null() => visitor.visit_unit(),
                Some("true" | "True" | "TRUE") => visitor.visit_bool(true),
                Some("false" | "False" | "FALSE") => visitor.visit_bool(false),
                Some(s) => {
                    if let Ok(u) = s.parse::<u64>() {
                        visitor.visit_u64(u)
                    } else if let Ok(i) = s.parse::<i64>() {
                        visitor.visit_i64(i)
                    } else if let Some(f) = parse_yaml_float(s) {
                        visitor.visit_f64(f)
                    } else {
                        visitor.visit_str(s)
                    }
                }
                None => visitor.visit_str(value),
            },
        };
        r.map_err(|e: DeError| e.at(pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain() {
            Some("true" | "True" | "TRUE") => visitor.visit_bool(true),
            Some("false" | "False" | "FALSE") => visitor.visit_bool(false),
            _ => Err(self.expected("true or false")),
        }
        .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(|s| s.parse::<i64>().ok()) {
            Some(i) => visitor
                .visit_i64(i)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("an integer")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(|s| s.parse::<u64>().ok()) {
            Some(u) => visitor
                .visit_u64(u)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("a whole number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(parse_yaml_float) {
            Some(f) => visitor
                .visit_f64(f)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { value, .. } => visitor
                .visit_str(value)
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
        .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor
                .visit_unit()
                .map_err(|e: DeError| e.at(self.node.pos))
        } else {
            Err(self.expected("nothing"))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqAcc {
                    de: self,
                    items: items.iter(),
                })
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Map(entries) => visitor
                .visit_map(MapAcc {
                    de: self,
                    entries: entries.iter().collect::<Vec<_>>().into_iter(),
                    value: None,
                })
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Kind::Map(entries) = &self.node.kind else {
            return Err(self.expected("a mapping"));
        };
        let mut known = Vec::new();
        for entry in entries {
            let key = entry.0.as_str().unwrap_or_default();
            if fields.contains(&key) {
                known.push(entry);
            } else {
                self.sink
                    .borrow_mut()
                    .push((entry.0.pos, unknown_message("field", key, fields)));
            }
        }
        visitor
            .visit_map(MapAcc {
                de: self,
                entries: known.into_iter(),
                value: None,
            })
            .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.node.as_str() {
            Some(v) if variants.contains(&v) => visitor
                .visit_enum(v.into_deserializer())
                .map_err(|e: DeError| e.at(self.node.pos)),
            Some(v) => Err(DeError {
                pos: Some(self.node.pos),
                ..<DeError as de::Error>::custom(unknown_message(
                    self.key.unwrap_or("value"),
                    v,
                    variants,
                ))
            }),
            None => Err(self.expected("a name")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit_struct tuple
        tuple_struct
    }
}

struct SeqAcc<'a> {
    de: De<'a>,
    items: std::slice::Iter<'a, Node>,
}

impl<'de, 'a> SeqAccess<'de> for SeqAcc<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(item) => seed.deserialize(self.de.child(item, self.de.key)).map(Some),
            None => Ok(None),
        }
    }
}

struct MapAcc<'a> {
    de: De<'a>,
    entries: std::vec::IntoIter<&'a (Node, Node)>,
    value: Option<(&'a Node, Option<&'a str>)>,
}

impl<'de, 'a> MapAccess<'de> for MapAcc<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some((v, k.as_str()));
                seed.deserialize(self.de.child(k, None)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((v, key)) => seed.deserialize(self.de.child(v, key)).map_err(|mut e| {
                if let Some(k) = key {
                    e.path.insert(0, k.to_string());
                }
                e
            }),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Compiling: checking every value and building the rules.

struct FileCx<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    diags: Vec<Diagnostic>,
}

impl FileCx<'_> {
    fn push(&mut self, pos: Pos, rule: Option<&str>, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            rule: rule.map(str::to_string),
            message,
        });
    }

    /// The position of character `offset` of a scalar's value, when the value is written
    /// on one line exactly as it reads (no escapes); otherwise `None`.
    fn pos_in_scalar(&self, node: &Node, offset: usize) -> Option<Pos> {
        let Kind::Scalar { value, style } = &node.kind else {
            return None;
        };
        let skip = match style {
            ScalarStyle::Plain => 0,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
            _ => return None,
        };
        let line = self.lines.get(node.pos.line.checked_sub(1)?)?;
        let written: String = line.chars().skip(node.pos.col - 1 + skip).collect();
        if !written.starts_with(value.as_str()) {
            return None;
        }
        Some(Pos {
            line: node.pos.line,
            col: node.pos.col + skip + offset,
        })
    }
}

const TOP_FIELDS: &[&str] = &["rules"];

fn compile_file(cx: &mut FileCx<'_>, doc: Option<&Node>, names: &mut Names) -> Vec<Rule> {
    let no_rules = "empty rule list: a rule file needs at least one rule under \"rules:\"";
    let Some(doc) = doc.filter(|d| !d.is_null()) else {
        cx.push(Pos { line: 1, col: 1 }, None, no_rules.to_string());
        return Vec::new();
    };
    let Kind::Map(entries) = &doc.kind else {
        cx.push(
            doc.pos,
            None,
            format!(
                "a rule file is a mapping with a \"rules\" list, found {}",
                doc.describe()
            ),
        );
        return Vec::new();
    };
    for (k, _) in entries {
        let key = k.as_str().unwrap_or_default();
        if !TOP_FIELDS.contains(&key) {
            cx.push(k.pos, None, unknown_message("field", key, TOP_FIELDS));
        }
    }
    let Some(list) = doc.get("rules") else {
        cx.push(doc.pos, None, "missing field \"rules\"".to_string());
        return Vec::new();
    };
    let items = match &list.kind {
        Kind::Seq(items) if !items.is_empty() => items,
        _ if list.is_null() || matches!(&list.kind, Kind::Seq(_)) => {
            cx.push(list.pos, None, no_rules.to_string());
            return Vec::new();
        }
        _ => {
            cx.push(
                list.pos,
                None,
                format!("rules: expected a list, found {}", list.describe()),
            );
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for item in items {
        let (spec, problems) = deserialize_rule(item);
        let name = match &spec {
            Ok(s) => Some(s.name.clone()),
            Err(()) => item.get("name").and_then(Node::as_str).map(str::to_string),
        };
        let damaged = !problems.is_empty();
        for (pos, message) in problems {
            cx.push(pos, name.as_deref(), message);
        }
        if let Some(name) = &name {
            let pos = item.pos_at(&["name"]);
            match names.get(name) {
                Some((file, line)) => cx.push(
                    pos,
                    Some(name),
                    format!("duplicate rule name {name:?} (first defined at {file}:{line})"),
                ),
                None => {
                    names.insert(name.clone(), (cx.file.to_string(), pos.line));
                }
            }
        }
        if let Ok(spec) = spec
            && let Some(rule) = compile_rule(cx, &spec, item)
            && !damaged
        {
            rules.push(rule);
        }
    }
    rules
}

/// Deserializes one rule, reporting every structural problem: after a type error in a
/// field, the field is dropped and the rule deserialized again, so the remaining fields
/// are still checked (a later "missing field" for a dropped field is not reported).
/// `Ok` may come with problems: the spec then lacks the dropped fields.
fn deserialize_rule(item: &Node) -> (Result<RuleSpec, ()>, Vec<Problem>) {
    let mut node = item.clone();
    let mut removed: Vec<Vec<String>> = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    let add = |problems: &mut Vec<Problem>, p: Problem| {
        if !problems.contains(&p) {
            problems.push(p);
        }
    };
    loop {
        let sink = Sink::default();
        let result = RuleSpec::deserialize(De {
            node: &node,
            key: None,
            sink: &sink,
        });
        for p in sink.into_inner() {
            add(&mut problems, p);
        }
        let e = match result {
            Ok(spec) => return (Ok(spec), problems),
            Err(e) => e,
        };
        if let Some(field) = e.missing {
            let mut full = e.path.clone();
            full.push(field.to_string());
            if removed.contains(&full) {
                return (Err(()), problems);
            }
        }
        add(&mut problems, (e.pos.unwrap_or(item.pos), e.message));
        if e.path.is_empty() || removed.len() >= MAX_DEPTH || !remove_at(&mut node, &e.path) {
            return (Err(()), problems);
        }
        removed.push(e.path);
    }
}

/// Removes the entry at `path` from nested mappings; false when there is none.
fn remove_at(node: &mut Node, path: &[String]) -> bool {
    let Kind::Map(entries) = &mut node.kind else {
        return false;
    };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let Some(i) = entries.iter().position(|(k, _)| k.as_str() == Some(first)) else {
        return false;
    };
    if rest.is_empty() {
        entries.remove(i);
        true
    } else {
        remove_at(&mut entries[i].1, rest)
    }
}

/// Checks one deserialized rule, reporting every problem; the rule when there is none.
struct RuleCx<'c, 'f> {
    cx: &'c mut FileCx<'f>,
    node: &'c Node,
    name: String,
    failed: bool,
}

impl RuleCx<'_, '_> {
    fn fail_at(&mut self, pos: Pos, message: String) {
        self.failed = true;
        self.cx.push(pos, Some(&self.name), message);
    }

    fn fail(&mut self, path: &[&str], message: String) {
        let pos = self.node.pos_at(path);
        self.fail_at(pos, message);
    }

    /// One of a fixed set of names, or a diagnostic suggesting the nearest.
    fn choice<T: Copy>(
        &mut self,
        path: &[&str],
        what: &str,
        value: &str,
        table: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = table.iter().find(|(n, _)| *n == value) {
            return Some(*v);
        }
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        self.fail(path, unknown_message(what, value, &names));
        None
    }

    fn duration(
        &mut self,
        path: &[&str],
        field: &str,
        text: &str,
        positive: bool,
    ) -> Option<DurationMs> {
        match DurationMs::parse(text) {
            Some(d) if d.0 > 0 || !positive => Some(d),
            Some(_) => {
                self.fail(path, format!("{field} {text:?} must be longer than zero"));
                None
            }
            None => {
                self.fail(
                    path,
                    format!(
                        "invalid duration {text:?} for {field}: expected e.g. 30s, 5m, 1h30m, 7d"
                    ),
                );
                None
            }
        }
    }

    fn selector(&mut self, path: &[&str], field: &str, text: &str) -> Option<Selector> {
        match Selector::parse(text) {
            Ok(s) => Some(s),
            Err(e) => {
                let value_node = path.iter().try_fold(self.node, |n, k| n.get(k));
                let chars = text.get(..e.offset).map_or(0, |t| t.chars().count());
                let at = value_node.and_then(|n| self.cx.pos_in_scalar(n, chars));
                let message = match at {
                    Some(_) => format!("invalid {field} {text:?}: {}", e.message),
                    None => format!("invalid {field} {text:?}: {e}"),
                };
                let pos = at.unwrap_or_else(|| self.node.pos_at(path));
                self.fail_at(pos, message);
                None
            }
        }
    }
}

fn valid_rule_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A parsed `min_effect`: its explicit sign, if any, its magnitude and whether it is
/// relative (a percentage).
struct EffectText {
    sign: Option<char>,
    magnitude: f64,
    relative: bool,
}

fn parse_effect(text: &str) -> Option<EffectText> {
    let t = text.trim();
    let (sign, rest) = match t.chars().next() {
        Some(c @ ('+' | '-')) => (Some(c), &t[1..]),
        _ => (None, t),
    };
    let (number, relative) = match rest.strip_suffix('%') {
        Some(n) => (n.trim_end(), true),
        None => (rest, false),
    };
    if number.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = parse_yaml_float(number).filter(|m| m.is_finite() && *m >= 0.0)?;
    Some(EffectText {
        sign,
        magnitude: if relative {
            magnitude / 100.0
        } else {
            magnitude
        },
        relative,
    })
}

const KINDS: &[(&str, u8)] = &[
    ("counter_rate", 0),
    ("ratio", 1),
    ("gauge", 2),
    ("mean", 3),
    ("histogram_quantile", 4),
];
const BASELINES: &[(&str, u8)] = &[("control", 0), ("pre_deploy", 1), ("seasonal", 2)];
const DIRECTIONS: &[(&str, Direction)] = &[
    ("increase", Direction::Increase),
    ("decrease", Direction::Decrease),
    ("either", Direction::Either),
];
const ACTIONS: &[(&str, Action)] = &[
    ("rollback", Action::Rollback),
    ("block", Action::Block),
    ("warn", Action::Warn),
];
const MISSING_ACTIONS: &[(&str, MissingAction)] = &[
    ("rollback", MissingAction::Rollback),
    ("block", MissingAction::Block),
    ("warn", MissingAction::Warn),
    ("ignore", MissingAction::Ignore),
];
const PHASES: &[(&str, Phase)] = &[
    ("canary", Phase::Canary),
    ("full", Phase::Full),
    ("watch", Phase::Watch),
];
const TESTS: &[(&str, TestKind)] = &[("auto", TestKind::Auto), ("drift", TestKind::Drift)];

const DEFAULT_ALPHA: f64 = 0.01;
const DEFAULT_HOST_LABEL: &str = "instance";
const DEFAULT_BASELINE_WINDOW: DurationMs = DurationMs::from_secs(600);
const DEFAULT_SEASONAL_OFFSET: DurationMs = DurationMs::from_secs(7 * 86_400);

fn compile_rule(cx: &mut FileCx<'_>, spec: &RuleSpec, node: &Node) -> Option<Rule> {
    let mut r = RuleCx {
        cx,
        node,
        name: spec.name.clone(),
        failed: false,
    };
    if !valid_rule_name(&spec.name) {
        r.fail(
            &["name"],
            format!(
                "invalid rule name {:?}: use letters, digits, '_', '.', '-', starting with a letter or '_'",
                spec.name
            ),
        );
    }
    if let Some(Kind::Seq(items)) = node.get("services").map(|n| &n.kind) {
        for (s, item) in spec.services.iter().zip(items) {
            if s.trim().is_empty() {
                r.fail_at(item.pos, "empty service name".to_string());
            }
        }
    }
    let kind = compile_metric(&mut r, &spec.metric);
    let selector = r.selector(&["metric", "selector"], "selector", &spec.metric.selector);
    if let (Some(sel), Some(k)) = (&selector, &kind) {
        let suffix = match k {
            MetricKind::Mean => ["_sum", "_count"].iter().find(|s| sel.name.ends_with(*s)),
            MetricKind::HistogramQuantile { .. } => {
                ["_bucket"].iter().find(|s| sel.name.ends_with(*s))
            }
            _ => None,
        };
        if let Some(suffix) = suffix {
            r.fail(
                &["metric", "selector"],
                format!(
                    "selector {:?}: kind {} names the base name; drop {suffix:?}",
                    spec.metric.selector,
                    if matches!(k, MetricKind::Mean) {
                        "mean"
                    } else {
                        "histogram_quantile"
                    }
                ),
            );
        }
    }
    let host_label = spec
        .metric
        .host_label
        .clone()
        .unwrap_or_else(|| DEFAULT_HOST_LABEL.to_string());
    if !valid_label_name(&host_label) {
        r.fail(
            &["metric", "host_label"],
            format!("invalid host_label {host_label:?}: not a label name"),
        );
    }

    let amounts = match spec.metric.unit.as_deref() {
        None | Some("events") => false,
        Some("amount") => {
            if !matches!(
                kind,
                Some(MetricKind::CounterRate | MetricKind::Ratio { .. }) | None
            ) {
                r.fail(
                    &["metric", "unit"],
                    "unit applies to counter_rate and ratio only".to_string(),
                );
            }
            true
        }
        Some(other) => {
            r.fail(
                &["metric", "unit"],
                format!("unknown unit {other:?}: expected events or amount"),
            );
            false
        }
    };
    let baseline = compile_baseline(&mut r, spec);
    let direction = r.choice(&["direction"], "direction", &spec.direction, DIRECTIONS);
    let min_effect = compile_effect(&mut r, &spec.min_effect, direction);
    let alpha = spec.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        r.fail(&["alpha"], format!("alpha {alpha} is outside (0, 1)"));
    }
    let action = r.choice(&["action"], "action", &spec.action, ACTIONS);
    let phases = compile_phases(&mut r, spec, baseline.as_ref());
    let min_data = compile_min_data(&mut r, spec.min_data.as_ref());
    let on_missing = spec
        .on_missing
        .as_ref()
        .and_then(|m| compile_on_missing(&mut r, m));
    let test = match &spec.test {
        Some(t) => r.choice(&["test"], "test", t, TESTS),
        None => Some(TestKind::Auto),
    };

    let line = node.pos_at(&["name"]).line;
    let origin = Origin {
        file: r.cx.file.to_string(),
        line,
    };
    if r.failed {
        return None;
    }
    Some(Rule {
        name: spec.name.clone(),
        description: spec.description.clone(),
        origin,
        services: spec.services.clone(),
        selector: selector?,
        kind: kind?,
        host_label,
        amounts,
        baseline: baseline?,
        direction: direction?,
        min_effect: min_effect?,
        alpha,
        action: action?,
        shadow: spec.shadow,
        phases: phases?,
        min_data: min_data?,
        on_missing,
        test: test?,
    })
}

fn compile_metric(r: &mut RuleCx<'_, '_>, m: &MetricSpec) -> Option<MetricKind> {
    let code = r.choice(&["metric", "kind"], "metric kind", &m.kind, KINDS)?;
    let kind_name = m.kind.as_str();
    let denominator = match (&m.denominator, code) {
        (Some(d), 1) => r.selector(&["metric", "denominator"], "denominator", d),
        (None, 1) => {
            r.fail(
                &["metric"],
                "kind ratio needs a denominator (the counter whose increments are the exposure)"
                    .to_string(),
            );
            None
        }
        (Some(_), _) => {
            r.fail(
                &["metric", "denominator"],
                format!("denominator is only for kind ratio, not {kind_name}"),
            );
            None
        }
        (None, _) => None,
    };
    let quantile = match (m.quantile, code) {
        (Some(q), 4) if q > 0.0 && q < 1.0 => Some(q),
        (Some(q), 4) => {
            r.fail(
                &["metric", "quantile"],
                format!("quantile {q} is outside (0, 1)"),
            );
            None
        }
        (None, 4) => {
            r.fail(
                &["metric"],
                "kind histogram_quantile needs a quantile, e.g. 0.99".to_string(),
            );
            None
        }
        (Some(_), _) => {
            r.fail(
                &["metric", "quantile"],
                format!("quantile is only for kind histogram_quantile, not {kind_name}"),
            );
            None
        }
        (None, _) => None,
    };
    match code {
        0 => Some(MetricKind::CounterRate),
        1 => Some(MetricKind::Ratio {
            denominator: denominator?,
        }),
        2 => Some(MetricKind::Gauge),
        3 => Some(MetricKind::Mean),
        _ => Some(MetricKind::HistogramQuantile {
            quantile: quantile?,
        }),
    }
}

fn compile_baseline(r: &mut RuleCx<'_, '_>, spec: &RuleSpec) -> Option<Baseline> {
    let code = r.choice(&["baseline"], "baseline", &spec.baseline, BASELINES);
    let name = spec.baseline.as_str();
    let window = match (&spec.baseline_window, code) {
        (Some(w), Some(1)) => r.duration(&["baseline_window"], "baseline_window", w, true),
        (Some(_), Some(_)) => {
            r.fail(
                &["baseline_window"],
                format!("baseline_window is only for baseline pre_deploy, not {name}"),
            );
            None
        }
        _ => Some(DEFAULT_BASELINE_WINDOW),
    };
    let offset = match (&spec.seasonal_offset, code) {
        (Some(o), Some(2)) => r.duration(&["seasonal_offset"], "seasonal_offset", o, true),
        (Some(_), Some(_)) => {
            r.fail(
                &["seasonal_offset"],
                format!("seasonal_offset is only for baseline seasonal, not {name}"),
            );
            None
        }
        _ => Some(DEFAULT_SEASONAL_OFFSET),
    };
    match code? {
        0 => Some(Baseline::Control),
        1 => Some(Baseline::PreDeploy { window: window? }),
        _ => Some(Baseline::Seasonal { offset: offset? }),
    }
}

fn compile_effect(
    r: &mut RuleCx<'_, '_>,
    text: &str,
    direction: Option<Direction>,
) -> Option<Effect> {
    let Some(e) = parse_effect(text) else {
        r.fail(
            &["min_effect"],
            format!(
                "invalid min_effect {text:?}: expected a relative change like \"+50%\" or an absolute one like \"0.05\""
            ),
        );
        return None;
    };
    let direction = direction?;
    let signed = match (direction, e.sign) {
        (Direction::Increase, Some('-')) | (Direction::Decrease, Some('+')) => {
            let dir = if direction == Direction::Increase {
                "increase"
            } else {
                "decrease"
            };
            r.fail(
                &["min_effect"],
                format!("min_effect {text:?} contradicts direction {dir}"),
            );
            return None;
        }
        (Direction::Either, Some(_)) => {
            r.fail(
                &["min_effect"],
                format!(
                    "min_effect {text:?} has a sign but direction is either: write it unsigned"
                ),
            );
            return None;
        }
        (Direction::Decrease, _) => -e.magnitude,
        _ => e.magnitude,
    };
    if e.relative && signed < -1.0 {
        r.fail(
            &["min_effect"],
            format!("min_effect {text:?}: a decrease cannot exceed 100%"),
        );
        return None;
    }
    Some(if e.relative {
        Effect::Relative(signed)
    } else {
        Effect::Absolute(signed)
    })
}

fn compile_phases(
    r: &mut RuleCx<'_, '_>,
    spec: &RuleSpec,
    baseline: Option<&Baseline>,
) -> Option<Vec<Phase>> {
    let Some(names) = &spec.phases else {
        return Some(match baseline {
            Some(Baseline::Control) => vec![Phase::Canary],
            _ => vec![Phase::Canary, Phase::Full, Phase::Watch],
        });
    };
    let node = r.node.get("phases");
    let item_pos = |i: usize| match node.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items.get(i).map(|n| n.pos),
        _ => None,
    };
    if names.is_empty() {
        r.fail(
            &["phases"],
            "phases is empty: list at least one of canary, full, watch".to_string(),
        );
        return None;
    }
    let mut phases = Vec::new();
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let pos = item_pos(i).unwrap_or_else(|| r.node.pos_at(&["phases"]));
        let Some((_, phase)) = PHASES.iter().find(|(n, _)| n == name) else {
            let all: Vec<&str> = PHASES.iter().map(|(n, _)| *n).collect();
            r.fail_at(pos, unknown_message("phase", name, &all));
            ok = false;
            continue;
        };
        if phases.contains(phase) {
            r.fail_at(pos, format!("phase {name:?} is listed twice"));
            ok = false;
        } else if *phase != Phase::Canary && baseline == Some(&Baseline::Control) {
            r.fail_at(
                pos,
                format!(
                    "phase {name:?} with baseline control: the control hosts exist only during canary; use pre_deploy or seasonal for {name}"
                ),
            );
            ok = false;
        } else {
            phases.push(*phase);
        }
    }
    phases.sort();
    ok.then_some(phases)
}

fn compile_min_data(r: &mut RuleCx<'_, '_>, m: Option<&MinDataSpec>) -> Option<MinData> {
    let mut out = MinData::default();
    let Some(m) = m else {
        return Some(out);
    };
    let mut ok = true;
    if let Some(e) = m.events {
        out.events = e;
    }
    if let Some(s) = m.samples {
        if s < 2 {
            r.fail(
                &["min_data", "samples"],
                format!("min_data samples {s} is too few: a comparison needs at least 2"),
            );
            ok = false;
        }
        out.samples = s;
    }
    if let Some(d) = &m.duration {
        match r.duration(&["min_data", "duration"], "min_data duration", d, false) {
            Some(d) => out.duration = d,
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn compile_on_missing(r: &mut RuleCx<'_, '_>, m: &OnMissingSpec) -> Option<OnMissing> {
    let stale_after = r.duration(
        &["on_missing", "stale_after"],
        "on_missing stale_after",
        &m.stale_after,
        true,
    );
    let action = r.choice(
        &["on_missing", "action"],
        "on_missing action",
        &m.action,
        MISSING_ACTIONS,
    );
    Some(OnMissing {
        stale_after: stale_after?,
        action: action?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str("t.yaml", text) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"rules:
  - name: php_error_ratio
    services: [web]
    metric:
      kind: ratio
      selector: 'php_errors_total{job="web"}'
      denominator: 'http_requests_total{job="web"}'
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: rollback
"#;

    #[test]
    fn good_rule_compiles_with_defaults() {
        let set = load_str("t.yaml", GOOD).unwrap();
        assert_eq!(set.rules.len(), 1);
        let r = &set.rules[0];
        assert_eq!(
            r.origin,
            Origin {
                file: "t.yaml".into(),
                line: 2
            }
        );
        assert_eq!(r.selector.name, "php_errors_total");
        assert!(
            matches!(&r.kind, MetricKind::Ratio { denominator } if denominator.name == "http_requests_total")
        );
        assert_eq!(r.baseline, Baseline::Control);
        assert_eq!(r.min_effect, Effect::Relative(0.5));
        assert_eq!(r.alpha, 0.01);
        assert_eq!(r.phases, vec![Phase::Canary]);
        assert_eq!(r.min_data, MinData::default());
        assert_eq!(r.host_label, "instance");
        assert_eq!(r.on_missing, None);
        assert_eq!(r.test, TestKind::Auto);
        assert!(!r.shadow);
    }

    #[test]
    fn effects_parse() {
        let e = |t: &str| parse_effect(t).map(|e| (e.sign, e.magnitude, e.relative));
        assert_eq!(e("+50%"), Some((Some('+'), 0.5, true)));
        assert_eq!(e("-20%"), Some((Some('-'), 0.2, true)));
        assert_eq!(e("0.05"), Some((None, 0.05, false)));
        assert_eq!(e("+30"), Some((Some('+'), 30.0, false)));
        assert_eq!(e("abc"), None);
        assert_eq!(e("+-5"), None);
        assert_eq!(e("inf"), None);
        assert_eq!(e(".inf"), None);
    }

    #[test]
    fn unsigned_effect_takes_direction_sign() {
        let text = GOOD
            .replace("direction: increase", "direction: decrease")
            .replace("\"+50%\"", "20%");
        let set = load_str("t.yaml", &text).unwrap();
        assert_eq!(set.rules[0].min_effect, Effect::Relative(-0.2));
        let text = GOOD.replace("\"+50%\"", "0.05");
        let set = load_str("t.yaml", &text).unwrap();
        assert_eq!(set.rules[0].min_effect, Effect::Absolute(0.05));
    }

    #[test]
    fn suggestion_by_edit_distance() {
        assert_eq!(edit_distance("direcion", "direction"), 1);
        assert_eq!(
            suggest("direcion", &["name", "direction"]),
            Some("direction")
        );
        assert_eq!(suggest("zzzzzz", &["name", "direction"]), None);
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = errors("rules:\n  - name: x\n   bad: [\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.yaml:3:"), "{errs:?}");
        assert!(errs[0].contains("YAML syntax error"), "{errs:?}");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let text = GOOD.replace(
            "    action: rollback\n",
            "    action: rollback\n    action: warn\n",
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            vec!["t.yaml:12:5: duplicate key \"action\" (first at line 11)"]
        );
    }

    #[test]
    fn selector_error_column_points_inside_value() {
        let text = GOOD.replace(
            "'php_errors_total{job=\"web\"}'",
            "'php_errors_total{job=web}'",
        );
        let errs = errors(&text);
        // The quote is at column 17, the value starts at 18, and `web` is its 22nd character.
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.yaml:6:39: invalid selector"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("(rule \"php_error_ratio\")"), "{errs:?}");
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let text = "rules:\n  - name: a\n    metric: &m {kind: gauge, selector: node_load1}\n    baseline: pre_deploy\n    direction: increase\n    min_effect: 1\n    action: warn\n  - name: b\n    metric: *m\n    baseline: pre_deploy\n    direction: increase\n    min_effect: 2\n    action: warn\n";
        let set = load_str("t.yaml", text).unwrap();
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[1].selector.name, "node_load1");
        assert_eq!(set.rules[1].min_effect, Effect::Absolute(2.0));
    }

    fn one_rule(body: &str) -> String {
        format!(
            "rules:\n  - name: r\n    metric: {{kind: gauge, selector: node_load1}}\n    baseline: pre_deploy\n    direction: increase\n    min_effect: \"+50%\"\n    action: warn\n{body}"
        )
    }

    #[test]
    fn base_names_for_mean_and_histogram() {
        let text = GOOD
            .replace("kind: ratio", "kind: mean")
            .replace(
                "      denominator: 'http_requests_total{job=\"web\"}'\n",
                "",
            )
            .replace("php_errors_total{", "latency_seconds_count{");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("kind mean names the base name; drop \"_count\""),
            "{errs:?}"
        );
        let text = GOOD
            .replace(
                "kind: ratio",
                "kind: histogram_quantile\n      quantile: 0.9",
            )
            .replace(
                "      denominator: 'http_requests_total{job=\"web\"}'\n",
                "",
            )
            .replace("php_errors_total{", "latency_seconds_bucket{");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("drop \"_bucket\""), "{errs:?}");
    }

    #[test]
    fn optional_fields_compile() {
        let text = one_rule(
            "    phases: [watch, full]\n    min_data: {events: 5, samples: 3, duration: 2m}\n    on_missing: {stale_after: 45s, action: ignore}\n    test: drift\n    shadow: true\n    alpha: 0.05\n    baseline_window: 30m\n",
        );
        let r = &load_str("t.yaml", &text).unwrap().rules[0];
        assert_eq!(r.phases, vec![Phase::Full, Phase::Watch]);
        assert_eq!(
            r.min_data,
            MinData {
                events: 5,
                samples: 3,
                duration: DurationMs::from_secs(120)
            }
        );
        assert_eq!(
            r.on_missing,
            Some(OnMissing {
                stale_after: DurationMs::from_secs(45),
                action: MissingAction::Ignore
            })
        );
        assert_eq!(r.test, TestKind::Drift);
        assert!(r.shadow);
        assert_eq!(r.alpha, 0.05);
        assert_eq!(
            r.baseline,
            Baseline::PreDeploy {
                window: DurationMs::from_secs(1800)
            }
        );
    }

    #[test]
    fn misplaced_and_repeated_options() {
        let errs = errors(&one_rule(
            "    seasonal_offset: 7d\n    phases: [full, full]\n    min_data: {samples: 1}\n",
        ));
        assert_eq!(
            errs,
            vec![
                "t.yaml:8:22: seasonal_offset is only for baseline seasonal, not pre_deploy (rule \"r\")",
                "t.yaml:9:20: phase \"full\" is listed twice (rule \"r\")",
                "t.yaml:10:25: min_data samples 1 is too few: a comparison needs at least 2 (rule \"r\")",
            ]
        );
    }

    #[test]
    fn either_takes_unsigned_effects() {
        let text = one_rule("").replace("direction: increase", "direction: either");
        assert!(errors(&text)[0].contains("has a sign but direction is either"));
        let text = text.replace("\"+50%\"", "50%");
        assert_eq!(
            load_str("t.yaml", &text).unwrap().rules[0].min_effect,
            Effect::Relative(0.5)
        );
    }

    #[test]
    fn file_shape_errors() {
        assert_eq!(
            errors("- a\n- b\n"),
            vec!["t.yaml:1:1: a rule file is a mapping with a \"rules\" list, found a list"]
        );
        assert_eq!(
            errors("rule: []\n")[0],
            "t.yaml:1:1: unknown field \"rule\", did you mean \"rules\"?"
        );
        let two_docs = format!("{GOOD}---\n{GOOD}");
        let errs = errors(&two_docs);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("one YAML document"), "{errs:?}");
    }
}
