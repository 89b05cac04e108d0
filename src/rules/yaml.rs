//! The positioned YAML tree: `saphyr-parser` events turned into nodes that remember the
//! line and column where they were written.
//!
//! This is the only place input size is paid for, so the limits against hostile files
//! live here: a cap on the text's size, a nesting-depth limit, and a budget on alias
//! expansion (count of aliases and total nodes after expansion, the two budgets
//! serde_yaml and Kubernetes' YAML reader keep), so a 400-byte "billion laughs" file is
//! refused in microseconds instead of exhausting memory. Duplicate keys are found with
//! a hash per mapping, so a 50,000-key mapping costs linear time.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------
// The YAML tree with positions.

/// A 1-based line and column (characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl Pos {
    pub(crate) fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Scalar { value: String, style: ScalarStyle },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) kind: Kind,
}

impl Node {
    /// The value under `key` when this is a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: ScalarStyle::Plain }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The position of the value at `path` below this node, or of the deepest node on the
    /// way that exists (so a missing field points at its parent).
    pub(crate) fn pos_at(&self, path: &[&str]) -> Pos {
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
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing".to_string(),
            Kind::Scalar { value, .. } => format!("{value:?}"),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

pub(crate) type Problem = (Pos, String);

pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) struct TreeBuilder<'a> {
    pub(crate) parser: Parser<'a, StrInput<'a>>,
    pub(crate) anchors: HashMap<usize, Node>,
    pub(crate) problems: Vec<Problem>,
}

pub(crate) fn scan_problem(e: &ScanError) -> Problem {
    (
        Pos {
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        e.info().to_string(),
    )
}

impl<'a> TreeBuilder<'a> {
    pub(crate) fn next(&mut self) -> Result<(Event<'a>, Span), Problem> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(scan_problem(&e)),
            None => Err((Pos::default(), "unexpected end of input".to_string())),
        }
    }

    pub(crate) fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<Node, Problem> {
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
pub(crate) fn parse_document(text: &str) -> Result<(Option<Node>, Vec<Problem>), Problem> {
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
