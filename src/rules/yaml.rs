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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// How deep mappings and lists may nest, aliases expanded included. Rule files nest
/// four levels; the limit keeps every recursive walk of the tree (deserializer, clone,
/// drop) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// The largest YAML text read, in bytes. The shipped rule files are a few KB each.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// The most aliases (`*name`) one document may use.
pub const MAX_ALIASES: usize = 10_000;

/// The most nodes (scalars, lists, mappings) a document may hold once every alias is
/// expanded: the budget that stops "billion laughs" (nested aliases doubling each level).
pub const MAX_NODES: usize = 250_000;

/// The most scalar bytes a document may hold once every alias is expanded (an anchored
/// long string aliased many times).
pub const MAX_EXPANDED_BYTES: usize = 8 << 20;

/// Whether a parse error is a refused budget (not a syntax error): every budget message
/// names its budget as `(budget NAME)`.
pub(crate) fn is_budget(message: &str) -> bool {
    message.contains("(budget ")
}

/// A node with the cost of holding it: what the budgets count.
#[derive(Clone, Debug)]
pub(crate) struct Built {
    pub(crate) node: Node,
    /// Nodes in it, itself included.
    pub(crate) nodes: usize,
    /// Scalar bytes in it.
    pub(crate) bytes: usize,
    /// Levels of nesting below it (0 for a scalar).
    pub(crate) height: usize,
}

pub(crate) struct TreeBuilder<'a> {
    pub(crate) parser: Parser<'a, StrInput<'a>>,
    pub(crate) anchors: HashMap<usize, Built>,
    pub(crate) problems: Vec<Problem>,
    /// Aliases met so far.
    pub(crate) aliases: usize,
    /// Nodes built so far, aliases expanded.
    pub(crate) nodes: usize,
    /// Scalar bytes built so far, aliases expanded.
    pub(crate) bytes: usize,
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

    /// Adds a node's cost to the document's, refusing it past a budget.
    fn spend(&mut self, pos: Pos, nodes: usize, bytes: usize) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err((
                pos,
                format!(
                    "document too large: more than {MAX_NODES} nodes with aliases expanded \
                     (budget max_nodes; nested aliases?)"
                ),
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err((
                pos,
                format!(
                    "document too large: more than {MAX_EXPANDED_BYTES} bytes of values with \
                     aliases expanded (budget max_expanded_bytes)"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<Built, Problem> {
        let pos = Pos::of(&span);
        if depth > MAX_DEPTH {
            return Err((
                pos,
                format!("nesting too deep: more than {MAX_DEPTH} levels (budget max_depth)"),
            ));
        }
        let (built, anchor) = match ev {
            Event::Scalar(value, style, anchor, _) => {
                let bytes = value.len();
                self.spend(pos, 1, bytes)?;
                let node = Node {
                    pos,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        style,
                    },
                };
                (
                    Built {
                        node,
                        nodes: 1,
                        bytes,
                        height: 0,
                    },
                    anchor,
                )
            }
            Event::SequenceStart(anchor, _) => {
                self.spend(pos, 1, 0)?;
                let (mut nodes, mut bytes, mut height) = (1, 0, 0);
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    let item = self.node(ev, span, depth + 1)?;
                    nodes += item.nodes;
                    bytes += item.bytes;
                    height = height.max(item.height + 1);
                    items.push(item.node);
                }
                let node = Node {
                    pos,
                    kind: Kind::Seq(items),
                };
                (
                    Built {
                        node,
                        nodes,
                        bytes,
                        height,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.spend(pos, 1, 0)?;
                let (mut nodes, mut bytes, mut height) = (1, 0, 0);
                let mut entries: Vec<(Node, Node)> = Vec::new();
                // First line of each key, for duplicates in linear time.
                let mut seen: HashMap<String, usize> = HashMap::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    nodes += key.nodes + value.nodes;
                    bytes += key.bytes + value.bytes;
                    height = height.max(key.height + 1).max(value.height + 1);
                    let Some(k) = key.node.as_str() else {
                        self.problems.push((
                            key.node.pos,
                            "mapping keys must be plain strings".to_string(),
                        ));
                        continue;
                    };
                    if let Some(first) = seen.get(k) {
                        self.problems.push((
                            key.node.pos,
                            format!("duplicate key {k:?} (first at line {first})"),
                        ));
                        continue;
                    }
                    seen.insert(k.to_string(), key.node.pos.line);
                    entries.push((key.node, value.node));
                }
                let node = Node {
                    pos,
                    kind: Kind::Map(entries),
                };
                (
                    Built {
                        node,
                        nodes,
                        bytes,
                        height,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > MAX_ALIASES {
                    return Err((
                        pos,
                        format!("too many aliases: more than {MAX_ALIASES} (budget max_aliases)"),
                    ));
                }
                let Some(target) = self.anchors.get(&id) else {
                    return Err((pos, "alias to an unknown anchor".to_string()));
                };
                let (nodes, bytes, height) = (target.nodes, target.bytes, target.height);
                if depth + height > MAX_DEPTH {
                    return Err((
                        pos,
                        format!(
                            "nesting too deep: the alias expands past {MAX_DEPTH} levels \
                             (budget max_depth)"
                        ),
                    ));
                }
                // Checked before cloning, so an over-budget alias costs nothing.
                self.spend(pos, nodes, bytes)?;
                let built = self.anchors.get(&id).cloned();
                match built {
                    Some(b) => (b, 0),
                    None => return Err((pos, "alias to an unknown anchor".to_string())),
                }
            }
            other => return Err((pos, format!("unexpected YAML event {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, built.clone());
        }
        Ok(built)
    }
}

/// Parses one YAML document into a tree; `None` for an empty stream. The problems are
/// non-fatal (duplicate keys); the error is a syntax error, which stops the file.
pub(crate) fn parse_document(text: &str) -> Result<(Option<Node>, Vec<Problem>), Problem> {
    if text.len() > MAX_TEXT_BYTES {
        return Err((
            Pos { line: 1, col: 1 },
            format!(
                "file too large: {} bytes, over the limit of {MAX_TEXT_BYTES} (budget max_file_bytes)",
                text.len()
            ),
        ));
    }
    let mut b = TreeBuilder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
        aliases: 0,
        nodes: 0,
        bytes: 0,
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
                doc = Some(b.node(ev, span, 0)?.node);
            }
            other => {
                return Err((Pos::of(&span), format!("unexpected YAML event {other:?}")));
            }
        }
    }
    Ok((doc, b.problems))
}
