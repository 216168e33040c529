//! Finds where a field lives in a TOML file, so validation errors found after
//! deserialisation can still name a line and column.

use std::ops::Range;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A table key.
    Key(String),
    /// An array (or array-of-tables) index.
    Index(usize),
}

/// A dotted field path such as `senders[1].networks[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Step>);

impl FieldPath {
    /// The root path.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Key(key.to_string()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Step::Index(i));
        p
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !first {
                        write!(f, ".")?;
                    }
                    write!(f, "{k}")?;
                }
                Step::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// A parsed document that keeps spans.
pub struct Locator {
    text: String,
    doc: Option<toml_edit::Document<String>>,
}

impl Locator {
    /// Parses `text`; when it is not valid TOML, every lookup returns `None`.
    pub fn new(text: &str) -> Self {
        Locator {
            text: text.to_string(),
            doc: toml_edit::Document::parse(text.to_string()).ok(),
        }
    }

    /// Line and column (1-based) of the deepest existing item on `path`.
    pub fn position(&self, path: &FieldPath) -> Option<(usize, usize)> {
        let span = self.span(path)?;
        Some(self.line_col(span.start))
    }

    /// Converts a byte offset into a 1-based line and column.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        (line, col)
    }

    fn span(&self, path: &FieldPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for step in &path.0 {
            let next = match (step, node) {
                (Step::Key(k), Node::Table(t)) => t.get(k).map(Node::from_item),
                (Step::Key(k), Node::Value(toml_edit::Value::InlineTable(t))) => {
                    t.get(k).map(Node::Value)
                }
                (Step::Index(i), Node::Tables(a)) => a.get(*i).map(Node::Table),
                (Step::Index(i), Node::Value(toml_edit::Value::Array(a))) => {
                    a.get(*i).map(Node::Value)
                }
                _ => None,
            };
            let Some(next) = next else { break };
            if let Some(s) = next.span() {
                best = Some(s);
            }
            node = next;
        }
        best
    }
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a toml_edit::Table),
    Tables(&'a toml_edit::ArrayOfTables),
    Value(&'a toml_edit::Value),
    None,
}

impl<'a> Node<'a> {
    fn from_item(item: &'a toml_edit::Item) -> Node<'a> {
        match item {
            toml_edit::Item::Table(t) => Node::Table(t),
            toml_edit::Item::ArrayOfTables(a) => Node::Tables(a),
            toml_edit::Item::Value(v) => Node::Value(v),
            toml_edit::Item::None => Node::None,
        }
    }

    fn span(&self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
            Node::Value(v) => v.span(),
            Node::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields() {
        let text = "[mllp]\nlisten = \"x\"\n\n[[senders]]\nname = \"a\"\n\n[[senders]]\nname = \"b\"\nnetworks = [\"1\", \"bad\"]\n";
        let loc = Locator::new(text);
        let p = FieldPath::root()
            .key("senders")
            .index(1)
            .key("networks")
            .index(1);
        assert_eq!(p.to_string(), "senders[1].networks[1]");
        assert_eq!(loc.position(&p), Some((9, 18)));
        let p = FieldPath::root().key("mllp").key("listen");
        assert_eq!(loc.position(&p), Some((2, 10)));
        // A missing key falls back to its table.
        let p = FieldPath::root().key("senders").index(0).key("timezone");
        assert_eq!(loc.position(&p).map(|p| p.0), Some(4));
    }
}
