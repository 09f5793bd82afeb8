//! Diagnostics: problems in user input, each tied to a place (`file:line:col`).
//!
//! Loading collects every problem it finds instead of stopping at the first one, so an operator fixes a whole
//! configuration in one pass. A [`Diagnostic`] prints as `path:line:col: message`, the form editors and CI
//! annotations understand.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a user's file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub col: usize,
    /// What is wrong, in lowercase words, naming the user's input.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `file:line:col`.
    pub fn new(file: impl Into<PathBuf>, line: usize, col: usize, message: impl Into<String>) -> Self {
        Self { file: file.into(), line, col, message: message.into() }
    }

    /// The diagnostic followed by the offending source line and a caret under the column, when the file can be
    /// read:
    ///
    /// ```text
    /// rules/x.rhai:3:9: rule `p/x`: syntax error: …
    ///    3 | let a = (1 + ;
    ///      |         ^
    /// ```
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if self.line == 0 {
            return out;
        }
        if let Ok(text) = std::fs::read_to_string(&self.file) {
            let lines: Vec<&str> = text.lines().collect();
            // An error at the very end (an unfinished script) points past the last line: show that line instead.
            let (line, col) = match lines.get(self.line - 1) {
                Some(l) if !l.trim().is_empty() || self.line == lines.len() => (self.line, self.col.max(1)),
                _ => match lines.iter().rposition(|l| !l.trim().is_empty()) {
                    Some(i) => (i + 1, lines[i].chars().count() + 1),
                    None => return out,
                },
            };
            if let Some(src) = lines.get(line - 1) {
                let n = line.to_string();
                let pad = " ".repeat(n.len());
                let lead: String = src.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
                out.push_str(&format!("\n {n} | {src}\n {pad} | {lead}^"));
            }
        }
        out
    }

    /// A problem with a whole file (unreadable, missing).
    pub fn file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::new(file.as_ref(), 0, 0, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col.max(1), self.message)
        }
    }
}

/// Every problem found while loading, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Sorts by file, line, column and drops exact repeats.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| (&a.file, a.line, a.col, &a.message).cmp(&(&b.file, b.line, b.col, &b.message)));
        self.0.dedup();
    }
}

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

/// Suggests the known name closest to `given`, if one is close enough to be a likely typo.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_path_line_col() {
        let d = Diagnostic::new("warden.yaml", 3, 7, "unknown field `shedule`");
        assert_eq!(d.to_string(), "warden.yaml:3:7: unknown field `shedule`");
        assert_eq!(Diagnostic::file("x.yaml", "cannot read").to_string(), "x.yaml: cannot read");
    }

    #[test]
    fn render_shows_the_line_and_a_caret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.rhai");
        std::fs::write(&f, "let a = 1;\nlet b = (2 + ;\n").unwrap();
        let d = Diagnostic::new(&f, 2, 14, "syntax error");
        let r = d.render();
        assert!(r.ends_with("\n 2 | let b = (2 + ;\n   |              ^"), "{r}");
        // Past the end: the last line, caret after it.
        std::fs::write(&f, "let a = 1;\nlet b = (2 +\n").unwrap();
        let r = Diagnostic::new(&f, 3, 1, "syntax error: Script is incomplete").render();
        assert!(r.ends_with("\n 2 | let b = (2 +\n   |             ^"), "{r}");
    }

    #[test]
    fn suggests_typos_only() {
        assert_eq!(closest("shedule", ["schedule", "name", "targets"]), Some("schedule"));
        assert_eq!(closest("zzzz", ["schedule", "name"]), None);
    }
}
