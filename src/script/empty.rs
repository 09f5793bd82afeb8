//! Refusing rules that cannot ask for anything: an empty file, one with only comments, or one that only defines
//! functions and never runs any code.
//!
//! Such a rule compiles, but every evaluation of it asks for nothing, which the dispatcher rightly reads as "all
//! is well": it resolves every alert of the rule and forgets its pending and cooled-down actions. That is what a
//! file saved in two steps (`: > rule.rhai`, then the content written) used to do when a reload caught it in
//! between: a false *resolved*, then a second relaunch within `run_cooldown` once the content came back. So such
//! a file is an error, reported as `file:line:col` like any other, and a reload that meets it keeps the rules it
//! had.

/// Why a rule's source has nothing to run, with the 1-based line and column to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NoCode {
    /// Line.
    pub line: usize,
    /// Column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// A piece of code: a character outside comments (a string or character literal is one `"`), or `' '` for the
/// white space between two of them.
#[derive(Debug, Clone, Copy)]
struct Code {
    c: char,
    line: usize,
    col: usize,
}

enum Mode {
    /// Code, with its count of open braces (inside a `${…}` of a template string, 0 is where it closes).
    Code(usize),
    /// Inside a back-tick template string.
    Template,
}

struct Cursor {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

impl Cursor {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }
    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            self.i += 1;
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }
    /// Skips a quoted literal that starts here and ends with `quote` (backslash escapes honoured).
    fn skip_quoted(&mut self, quote: char) {
        self.bump();
        while let Some(c) = self.peek(0) {
            self.bump();
            if c == '\\' {
                self.bump();
            } else if c == quote {
                return;
            }
        }
    }
}

/// The code of `src` without comments; white space between two pieces of code becomes one `' '`.
fn code(src: &str) -> Vec<Code> {
    let mut cur = Cursor { chars: src.chars().collect(), i: 0, line: 1, col: 1 };
    let mut out: Vec<Code> = vec![];
    let mut modes = vec![Mode::Code(0)];
    let mut space = false;
    if cur.peek(0) == Some('#') && cur.peek(1) == Some('!') {
        while cur.peek(0).is_some_and(|c| c != '\n') {
            cur.bump();
        }
    }
    let emit = |out: &mut Vec<Code>, space: &mut bool, c: char, line: usize, col: usize| {
        if std::mem::take(space) && !out.is_empty() {
            out.push(Code { c: ' ', line, col });
        }
        out.push(Code { c, line, col });
    };
    while let Some(c) = cur.peek(0) {
        let (line, col) = (cur.line, cur.col);
        let nested = modes.len() > 1;
        match modes.last_mut() {
            Some(Mode::Template) => match c {
                '`' => {
                    modes.pop();
                    cur.bump();
                }
                '$' if cur.peek(1) == Some('{') => {
                    modes.push(Mode::Code(0));
                    cur.bump();
                    cur.bump();
                }
                '\\' => {
                    cur.bump();
                    cur.bump();
                }
                _ => cur.bump(),
            },
            Some(Mode::Code(depth)) => match c {
                '/' if cur.peek(1) == Some('/') => {
                    while cur.peek(0).is_some_and(|c| c != '\n') {
                        cur.bump();
                    }
                    space = true;
                }
                '/' if cur.peek(1) == Some('*') => {
                    let mut open = 0usize;
                    while let Some(c) = cur.peek(0) {
                        if c == '/' && cur.peek(1) == Some('*') {
                            open += 1;
                            cur.bump();
                        } else if c == '*' && cur.peek(1) == Some('/') {
                            open -= 1;
                            cur.bump();
                            if open == 0 {
                                cur.bump();
                                break;
                            }
                        }
                        cur.bump();
                    }
                    space = true;
                }
                '"' | '\'' => {
                    emit(&mut out, &mut space, '"', line, col);
                    cur.skip_quoted(c);
                }
                '`' => {
                    emit(&mut out, &mut space, '"', line, col);
                    modes.push(Mode::Template);
                    cur.bump();
                }
                '}' if *depth == 0 && nested => {
                    modes.pop(); // the end of a `${…}`
                    cur.bump();
                }
                c if c.is_whitespace() => {
                    space = true;
                    cur.bump();
                }
                c => {
                    if c == '{' {
                        *depth += 1;
                    } else if c == '}' {
                        *depth = depth.saturating_sub(1);
                    }
                    emit(&mut out, &mut space, c, line, col);
                    cur.bump();
                }
            },
            None => break,
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at `i` (empty if none) and the index after it.
fn word(code: &[Code], i: usize) -> (String, usize) {
    let mut j = i;
    let mut w = String::new();
    while let Some(k) = code.get(j).filter(|k| is_word(k.c)) {
        w.push(k.c);
        j += 1;
    }
    (w, j)
}

/// `Err` when `src` has no code a rule would run: nothing but white space and comments, or only function
/// definitions.
pub(super) fn check(src: &str) -> Result<(), NoCode> {
    let code = code(src);
    if code.is_empty() {
        return Err(NoCode {
            line: 1,
            col: 1,
            message: "the rule file has no code (it is empty or only comments): a rule that asks for nothing would \
                      resolve every alert it raised, so it is refused (a file saved in two steps is loaded once it \
                      is complete)"
                .into(),
        });
    }
    // Top-level items: function definitions are skipped; anything else is a statement that runs.
    let mut first_fn = None;
    let mut i = 0;
    while i < code.len() {
        let k = code[i];
        if k.c == ' ' || k.c == ';' {
            i += 1;
            continue;
        }
        let (w, mut j) = word(&code, i);
        let def = match w.as_str() {
            "fn" => true,
            "private" => {
                j += usize::from(code.get(j).is_some_and(|k| k.c == ' '));
                word(&code, j).0 == "fn"
            }
            _ => false,
        };
        if !def {
            return Ok(());
        }
        first_fn.get_or_insert((k.line, k.col));
        // Skip to the body's opening brace, then past its matching closing brace.
        while code.get(j).is_some_and(|k| k.c != '{') {
            j += 1;
        }
        let mut depth = 0usize;
        while let Some(k) = code.get(j) {
            j += 1;
            match k.c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
        i = j;
    }
    let (line, col) = first_fn.unwrap_or((1, 1));
    Err(NoCode {
        line,
        col,
        message: "the rule file only defines functions and runs no code: a rule that asks for nothing would \
                  resolve every alert it raised, so it is refused (call the functions at the top level)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: &str) -> Option<(usize, usize, bool)> {
        check(src).err().map(|e| (e.line, e.col, e.message.contains("only defines functions")))
    }

    #[test]
    fn empty_and_comment_only_files_are_refused() {
        for src in ["", "\n\n  \t\n", "// flink/job-not-running\n//\n", "/* a /* nested */ comment */\n", "#!/x\n"] {
            assert_eq!(at(src), Some((1, 1, false)), "{src:?}");
        }
    }

    #[test]
    fn function_only_files_are_refused_at_their_first_function() {
        let src = "// helpers\n\nfn a(x) { if x { \"}\" } else { `${ #{a: 1}.a }` } }\nprivate fn b() { a(1) }\n;\n";
        assert_eq!(at(src), Some((3, 1, true)));
    }

    #[test]
    fn files_that_run_anything_are_fine() {
        for src in [
            "1;",
            "loop { }\n",
            "if !obs.ok { return; }\n",
            "fn f() { 1 }\nf();\n",
            "fnord = 1;",
            "// c\nlet s = `fn ${1}`; /* fn */",
            "private_thing();",
            "import \"util\" as u;\n",
        ] {
            assert_eq!(at(src), None, "{src:?}");
        }
        // The shipped rules run code, of course.
        for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "rhai") {
                assert_eq!(at(&std::fs::read_to_string(&p).unwrap()), None, "{}", p.display());
            }
        }
    }
}
