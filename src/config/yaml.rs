//! The one place that parses YAML.
//!
//! `serde_yaml` turns text into values and values into typed structs; `yaml-rust2`'s event parser supplies the
//! line and column of every key and value, which `serde_yaml::Value` forgets. Errors from typed deserialization
//! carry a path (`probes[2].request.path`, via `serde_path_to_error`) that is mapped back to `file:line:col` here.
//! Swapping the YAML library touches only this file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diag::{closest, Diagnostic};

/// A YAML value: the tree typed configuration is read from.
pub type Value = serde_yaml::Value;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    key: Option<Pos>,
    value: Pos,
}

/// A parsed YAML file that remembers where each node is.
#[derive(Debug, Clone)]
pub struct YamlDoc {
    /// The file it was read from (as given, for messages).
    pub file: PathBuf,
    /// The document's root value (`Null` for an empty file).
    pub value: Value,
    spans: HashMap<String, Span>,
}

/// Joins a map key onto a path: `probes[0]` + `name` → `probes[0].name`.
pub fn join_key(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Joins a sequence index onto a path: `probes` + 2 → `probes[2]`.
pub fn join_index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

impl YamlDoc {
    /// Parses `text` (read from `file`). A syntax error comes back as one diagnostic with its position.
    pub fn parse(file: impl AsRef<Path>, text: &str) -> Result<Self, Diagnostic> {
        let file = file.as_ref().to_path_buf();
        let value: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
                let msg = strip_location(&e.to_string());
                return Err(Diagnostic::new(file, line, col, format!("invalid YAML: {msg}")));
            }
        };
        let mut rec = SpanRecorder::default();
        let mut parser = Parser::new_from_str(text);
        // serde_yaml accepted the text; the event parser only supplies positions, so its errors are not fatal.
        let _ = parser.load(&mut rec, false);
        Ok(Self { file, value, spans: rec.spans })
    }

    /// Where the value at `path` starts, or the nearest ancestor that has a known position.
    pub fn pos(&self, path: &str) -> Pos {
        self.find(path, false)
    }

    /// Where the key of `path` starts (falls back to the value, then to ancestors).
    pub fn key_pos(&self, path: &str) -> Pos {
        self.find(path, true)
    }

    fn find(&self, path: &str, key: bool) -> Pos {
        let mut p = path.to_string();
        loop {
            if let Some(span) = self.spans.get(&p) {
                return if key { span.key.unwrap_or(span.value) } else { span.value };
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None if !p.is_empty() => p.clear(),
                None => return Pos { line: 1, col: 1 },
            }
        }
    }

    /// A diagnostic at the value of `path`.
    pub fn diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let p = self.pos(path);
        Diagnostic::new(&self.file, p.line, p.col, message)
    }

    /// A diagnostic at the key of `path` (for unknown or misplaced keys).
    pub fn key_diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let p = self.key_pos(path);
        Diagnostic::new(&self.file, p.line, p.col, message)
    }

    /// Deserializes `value` (found at `path` in this document) into `T`. On failure, pushes a diagnostic that
    /// points at the offending key or value and returns `None`.
    pub fn typed<T: DeserializeOwned>(&self, value: &Value, path: &str, diags: &mut Vec<Diagnostic>) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner_path = e.path().to_string();
                let full = if inner_path == "." || inner_path.is_empty() {
                    path.to_string()
                } else if path.is_empty() {
                    inner_path
                } else if inner_path.starts_with('[') {
                    format!("{path}{inner_path}")
                } else {
                    format!("{path}.{inner_path}")
                };
                let msg = humanize(&strip_location(&e.into_inner().to_string()));
                let d =
                    if msg.starts_with("unknown field") { self.key_diag(&full, msg) } else { self.diag(&full, msg) };
                diags.push(d);
                None
            }
        }
    }
}

/// serde_yaml appends " at line L column C"; positions are reported separately.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Rewrites serde's messages into ones that help: a typo gets a suggestion.
fn humanize(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match closest(name, known.iter().copied()) {
            Some(k) => format!("unknown field `{name}`, did you mean `{k}`?"),
            None if known.is_empty() => format!("unknown field `{name}`: no fields are allowed here"),
            None => format!("unknown field `{name}`; known fields: {}", known.join(", ")),
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return match closest(name, known.iter().copied()) {
            Some(k) => format!("unknown variant `{name}`, did you mean `{k}`?"),
            None => format!("unknown variant `{name}`; expected one of: {}", known.join(", ")),
        };
    }
    msg.to_string()
}

#[derive(Debug)]
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct SpanRecorder {
    stack: Vec<Frame>,
    spans: HashMap<String, Span>,
}

fn pos(m: &Marker) -> Pos {
    Pos { line: m.line(), col: m.col() + 1 }
}

impl SpanRecorder {
    /// The path of the node that is about to start, or `None` when the next scalar is a map key.
    fn child_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => Some(join_key(path, k)),
            Some(Frame::Seq { path, index }) => Some(join_index(path, *index)),
        }
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record_value(&mut self, path: &str, at: Pos) {
        self.spans.entry(path.to_string()).and_modify(|s| s.value = at).or_insert(Span { key: None, value: at });
    }
}

impl MarkedEventReceiver for SpanRecorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(&mark);
        match ev {
            Event::Scalar(text, ..) => match self.child_path() {
                None => {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let p = join_key(path, &text);
                        let map_path = path.clone();
                        *key = Some(text);
                        self.spans.insert(p, Span { key: Some(at), value: at });
                        // A block mapping's start event can be marked after its first key; a map starts no later
                        // than its first key.
                        if let Some(span) = self.spans.get_mut(&map_path) {
                            if (at.line, at.col) < (span.value.line, span.value.col) {
                                span.value = at;
                            }
                        }
                    }
                }
                Some(p) => {
                    self.record_value(&p, at);
                    self.value_done();
                }
            },
            Event::Alias(_) => {
                if let Some(p) = self.child_path() {
                    self.record_value(&p, at);
                    self.value_done();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a map key has no useful path; give it a placeholder one.
                let p = self.child_path().unwrap_or_else(|| "<complex key>".to_string());
                self.record_value(&p, at);
                if matches!(ev, Event::MappingStart(..)) {
                    self.stack.push(Frame::Map { path: p, key: None });
                } else {
                    self.stack.push(Frame::Seq { path: p, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        schedule: Option<String>,
    }

    const TEXT: &str = "probes:\n  - name: a\n    schedule: x\n  - name: b\n    shedule: y\n";

    #[test]
    fn positions_of_keys_and_values() {
        let doc = YamlDoc::parse("w.yaml", TEXT).unwrap();
        assert_eq!(doc.pos("probes[1].name"), Pos { line: 4, col: 11 });
        assert_eq!(doc.key_pos("probes[1].shedule"), Pos { line: 5, col: 5 });
        assert_eq!(doc.pos("probes[0]"), Pos { line: 2, col: 5 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(doc.pos("probes[1].nothing.here"), Pos { line: 4, col: 5 });
    }

    #[test]
    fn unknown_field_points_at_the_key_with_a_suggestion() {
        let doc = YamlDoc::parse("w.yaml", TEXT).unwrap();
        let probes = doc.value.get("probes").unwrap().as_sequence().unwrap();
        let mut diags = vec![];
        assert!(doc.typed::<Probe>(&probes[0], "probes[0]", &mut diags).is_some());
        assert!(doc.typed::<Probe>(&probes[1], "probes[1]", &mut diags).is_none());
        assert_eq!(diags[0].to_string(), "w.yaml:5:5: unknown field `shedule`, did you mean `schedule`?");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = YamlDoc::parse("w.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err}");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
    }
}
