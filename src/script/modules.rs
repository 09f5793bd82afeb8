//! Rhai modules of packs: `modules/<name>.rhai` in a pack, imported by its rules as `import "<name>" as m;` and by
//! the rules of packs that depend on it as `import "<pack>/<name>" as m;`.
//!
//! Modules are served from memory only (they are read with their pack), and every import is resolved when a rule
//! is compiled: [`ScriptEngine::compile_with_modules`] embeds the evaluated modules in the rule's AST, so an
//! evaluation never resolves anything (and never touches a file). A missing module, an import of a pack that is
//! not a dependency, a circular import, and a module that does not compile are compile-time errors with the
//! `file:line:col` of the import (or of the problem in the module).
//!
//! The engine is built once and shared, so the engine's resolver ([`PackResolver`]) reads the set of modules of
//! the compilation in progress from a thread-local, the way evaluations read their context.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

use super::{hash, pos, strip_pos, CompiledRule, ScriptEngine, ScriptError};

/// A Rhai module file of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    /// Its name: the file stem, as written in `import "<name>"`.
    pub name: String,
    /// Where it is (for messages).
    pub file: PathBuf,
    /// Its source text.
    pub source: String,
}

#[derive(Debug, Default)]
struct PackModules {
    deps: BTreeSet<String>,
    modules: BTreeMap<String, ModuleSource>,
}

/// Where a module problem is, and what it is.
#[derive(Debug, Clone)]
struct Failure {
    file: PathBuf,
    line: usize,
    col: usize,
    message: String,
}

/// The modules rules may import, by pack, with which packs each pack may import from (itself and its
/// dependencies). Built once per load; each module is evaluated at most once and shared by every rule importing
/// it.
#[derive(Debug, Default)]
pub struct ModuleSet {
    packs: BTreeMap<String, PackModules>,
    cache: Mutex<HashMap<String, Result<Shared<Module>, Failure>>>,
}

impl ModuleSet {
    /// Adds a pack's modules; `deps` are the packs whose modules it may import as `<pack>/<module>`.
    pub fn add_pack(
        &mut self,
        pack: &str,
        deps: impl IntoIterator<Item = String>,
        modules: impl IntoIterator<Item = ModuleSource>,
    ) {
        let e = self.packs.entry(pack.to_string()).or_default();
        e.deps.extend(deps);
        e.modules.extend(modules.into_iter().map(|m| (m.name.clone(), m)));
    }

    /// The number of modules of all packs.
    pub fn len(&self) -> usize {
        self.packs.values().map(|p| p.modules.len()).sum()
    }

    /// True when no pack has modules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A hash of every module `pack` can import, so that a changed module changes its importers' source hash.
    fn fingerprint(&self, pack: &str) -> u64 {
        let Some(p) = self.packs.get(pack) else { return 0 };
        let mut parts: Vec<(&str, &str, &str)> = vec![];
        for name in std::iter::once(pack).chain(p.deps.iter().map(String::as_str)) {
            if let Some(q) = self.packs.get(name) {
                parts.extend(q.modules.values().map(|m| (name, m.name.as_str(), m.source.as_str())));
            }
        }
        hash(&format!("{parts:?}"))
    }

    fn cached(&self, key: &str) -> Option<Result<Shared<Module>, Failure>> {
        self.cache.lock().expect("module cache").get(key).cloned()
    }

    fn remember(&self, key: &str, r: Result<Shared<Module>, Failure>) {
        self.cache.lock().expect("module cache").insert(key.to_string(), r);
    }
}

/// One script being resolved: the rule at the bottom, then the modules it is importing.
struct Frame {
    pack: String,
    /// `<pack>/<module>` for modules; the rule's name for the rule.
    key: String,
    file: PathBuf,
}

struct Resolving {
    set: Arc<ModuleSet>,
    stack: Vec<Frame>,
    /// The rule's source, to find the position of its own imports (the compiler resolves those without one).
    rule_source: String,
    /// The first (innermost) problem met.
    failure: Option<Failure>,
}

thread_local! {
    static RESOLVING: RefCell<Option<Resolving>> = const { RefCell::new(None) };
}

/// Clears the thread-local state when a compilation ends, even by panic.
struct ResolvingGuard;

impl ResolvingGuard {
    fn start(r: Resolving) -> Self {
        RESOLVING.with(|c| *c.borrow_mut() = Some(r));
        Self
    }
    fn failure(&self) -> Option<Failure> {
        RESOLVING.with(|c| c.borrow().as_ref().and_then(|r| r.failure.clone()))
    }
}

impl Drop for ResolvingGuard {
    fn drop(&mut self) {
        RESOLVING.with(|c| *c.borrow_mut() = None);
    }
}

/// The engine's module resolver: serves the modules of the compilation in progress on this thread, and nothing
/// at all during evaluations (their modules are embedded in the rule).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PackResolver;

impl ModuleResolver for PackResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        resolve(engine, path, pos)
    }
}

fn fail(f: Failure, pos: Position) -> Box<EvalAltResult> {
    let msg = f.message.clone();
    RESOLVING.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            r.failure.get_or_insert(f);
        }
    });
    Box::new(EvalAltResult::ErrorRuntime(msg.into(), pos))
}

fn resolve(engine: &Engine, path: &str, at: Position) -> Result<Shared<Module>, Box<EvalAltResult>> {
    // Read what is needed and release the borrow: evaluating a module re-enters this function.
    let state = RESOLVING.with(|c| {
        c.borrow().as_ref().map(|r| {
            let cur = r.stack.last().expect("a frame");
            let (line, col) = match pos(at) {
                (0, _) if r.stack.len() == 1 => import_position(&r.rule_source, path).unwrap_or((0, 0)),
                lc => lc,
            };
            let chain: Vec<String> = r.stack.iter().skip(1).map(|f| f.key.clone()).collect();
            (r.set.clone(), cur.pack.clone(), cur.file.clone(), line, col, chain)
        })
    });
    let Some((set, pack, file, line, col, chain)) = state else {
        return Err(Box::new(EvalAltResult::ErrorModuleNotFound(path.to_string(), at)));
    };
    let here = |message: String| Failure { file: file.clone(), line, col, message };

    let (owner, name) = match path.split_once('/') {
        Some((p, n)) => (p, n),
        None => (pack.as_str(), path),
    };
    let own = set.packs.get(&pack);
    if owner != pack && !own.is_some_and(|p| p.deps.contains(owner)) {
        return Err(fail(
            here(format!(
                "cannot import `{path}`: pack `{pack}` does not list pack `{owner}` under `dependencies` in its pack.yaml"
            )),
            at,
        ));
    }
    let Some(module) = set.packs.get(owner).and_then(|p| p.modules.get(name)) else {
        let known: Vec<&str> =
            set.packs.get(owner).map(|p| p.modules.keys().map(String::as_str).collect()).unwrap_or_default();
        let message = if known.is_empty() {
            format!("cannot import `{path}`: pack `{owner}` has no modules (looked for `modules/{name}.rhai`)")
        } else {
            let hint = match crate::diag::closest(name, known.iter().copied()) {
                Some(c) => format!(", did you mean `{c}`?"),
                None => format!("; its modules: {}", known.join(", ")),
            };
            format!("cannot import `{path}`: pack `{owner}` has no module `{name}` (`modules/{name}.rhai`){hint}")
        };
        return Err(fail(here(message), at));
    };
    let key = format!("{owner}/{name}");
    if let Some(i) = chain.iter().position(|k| k == &key) {
        let cycle: Vec<&str> = chain[i..].iter().map(String::as_str).chain([key.as_str()]).collect();
        return Err(fail(here(format!("circular import: {}", cycle.join(" → "))), at));
    }
    match set.cached(&key) {
        Some(Ok(m)) => return Ok(m),
        Some(Err(f)) => return Err(fail(f, at)),
        None => {}
    }

    let result = eval_module(engine, owner, &key, module);
    set.remember(&key, result.clone());
    result.map_err(|f| fail(f, at))
}

/// Compiles and evaluates one module, with its own imports resolved relative to its pack.
fn eval_module(engine: &Engine, pack: &str, key: &str, m: &ModuleSource) -> Result<Shared<Module>, Failure> {
    let mut ast = engine.compile(&m.source).map_err(|e| {
        let (line, col) = pos(e.1);
        Failure { file: m.file.clone(), line, col, message: format!("module `{key}`: syntax error: {}", e.0) }
    })?;
    ast.set_source(key);
    RESOLVING.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            r.stack.push(Frame { pack: pack.to_string(), key: key.to_string(), file: m.file.clone() });
        }
    });
    let result = Module::eval_ast_as_new(Scope::new(), &ast, engine);
    let inner = RESOLVING.with(|c| {
        let mut c = c.borrow_mut();
        let r = c.as_mut()?;
        r.stack.pop();
        r.failure.clone()
    });
    match result {
        Ok(module) => Ok(Shared::new(module)),
        // A problem further down (an import of this module) was recorded where it is.
        Err(_) if inner.is_some() => Err(inner.expect("checked")),
        Err(e) => {
            let (line, col) = pos(e.position());
            Err(Failure {
                file: m.file.clone(),
                line,
                col,
                message: format!("module `{key}`: {}", strip_pos(&e.to_string())),
            })
        }
    }
}

/// Where `import "<path>"` is in `source`: the 1-based line and column of the string, skipping comments and
/// other string literals.
pub(crate) fn import_position(source: &str, path: &str) -> Option<(usize, usize)> {
    find_imports(source).into_iter().find(|(p, ..)| p == path).map(|(_, l, c)| (l, c))
}

/// Every `import "<literal>"` in `source`, with the position of the literal.
pub(crate) fn find_imports(source: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut out = vec![];
    // Advances over chars[i], keeping line and column.
    let step = |i: &mut usize, line: &mut usize, col: &mut usize| {
        if chars[*i] == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
        *i += 1;
    };
    let mut prev_ident = false;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                step(&mut i, &mut line, &mut col);
            }
            prev_ident = false;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    step(&mut i, &mut line, &mut col);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    step(&mut i, &mut line, &mut col);
                    step(&mut i, &mut line, &mut col);
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                step(&mut i, &mut line, &mut col);
            }
            prev_ident = false;
        } else if c == '"' || c == '`' || c == '\'' {
            skip_string(&chars, &mut i, &mut line, &mut col, step);
            prev_ident = false;
        } else if c.is_alphanumeric() || c == '_' {
            let word_start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                step(&mut i, &mut line, &mut col);
            }
            let word: String = chars[word_start..i].iter().collect();
            if word == "import" && !prev_ident {
                while i < chars.len() && chars[i].is_whitespace() {
                    step(&mut i, &mut line, &mut col);
                }
                if chars.get(i) == Some(&'"') {
                    let (l, c0, start) = (line, col, i + 1);
                    skip_string(&chars, &mut i, &mut line, &mut col, step);
                    let end = i.saturating_sub(1).max(start);
                    out.push((chars[start..end].iter().collect(), l, c0));
                }
            }
            prev_ident = false;
        } else {
            prev_ident = c == '.';
            step(&mut i, &mut line, &mut col);
        }
    }
    out
}

/// Skips a string, back-tick or character literal starting at `chars[*i]`.
fn skip_string(
    chars: &[char],
    i: &mut usize,
    line: &mut usize,
    col: &mut usize,
    step: impl Fn(&mut usize, &mut usize, &mut usize),
) {
    let quote = chars[*i];
    step(i, line, col);
    while *i < chars.len() && chars[*i] != quote {
        if chars[*i] == '\\' && *i + 1 < chars.len() {
            step(i, line, col);
        }
        step(i, line, col);
    }
    if *i < chars.len() {
        step(i, line, col);
    }
}

impl ScriptEngine {
    /// Compiles a rule of `pack` whose `import`s are served by `modules`: the pack's own modules by name, its
    /// dependencies' as `<pack>/<module>`. Every import is resolved now and embedded in the compiled rule, so a
    /// missing module or a circular import is an error here, with the import's `file:line:col`.
    pub fn compile_with_modules(
        &self,
        name: &str,
        pack: &str,
        file: PathBuf,
        source: &str,
        modules: &Arc<ModuleSet>,
    ) -> Result<CompiledRule, ScriptError> {
        let scope = Self::declared_scope();
        let guard = ResolvingGuard::start(Resolving {
            set: modules.clone(),
            stack: vec![Frame { pack: pack.to_string(), key: name.to_string(), file: file.clone() }],
            rule_source: source.to_string(),
            failure: None,
        });
        let result = self.engine.compile_into_self_contained(&scope, source);
        let failure = guard.failure();
        drop(guard);
        match result {
            Ok(ast) => match super::empty::check(source) {
                Err(e) => Err(ScriptError { file, rule: name.into(), line: e.line, col: e.col, message: e.message }),
                Ok(()) => Ok(CompiledRule {
                    name: name.to_string(),
                    pack: pack.to_string(),
                    file,
                    source_hash: hash(source) ^ modules.fingerprint(pack).rotate_left(1),
                    ast: Arc::new(ast),
                }),
            },
            Err(e) => Err(match (failure, *e) {
                (Some(f), _) => {
                    ScriptError { file: f.file, rule: name.into(), line: f.line, col: f.col, message: f.message }
                }
                (None, EvalAltResult::ErrorParsing(p, at)) => {
                    let (line, col) = pos(at);
                    ScriptError { file, rule: name.into(), line, col, message: format!("syntax error: {p}") }
                }
                (None, other) => {
                    let (line, col) = pos(other.position());
                    ScriptError { file, rule: name.into(), line, col, message: strip_pos(&other.to_string()) }
                }
            }),
        }
    }

    /// Compiles and evaluates every module of `modules` that no rule imported, so that a broken module is
    /// reported even before a rule uses it. Each error's `rule` is the module's `<pack>/<module>` name and its
    /// message names the module.
    pub fn check_modules(&self, modules: &Arc<ModuleSet>) -> Vec<ScriptError> {
        let mut out = vec![];
        for (pack, p) in &modules.packs {
            for m in p.modules.values() {
                let key = format!("{pack}/{}", m.name);
                if modules.cached(&key).is_some() {
                    continue;
                }
                let guard = ResolvingGuard::start(Resolving {
                    set: modules.clone(),
                    stack: vec![Frame { pack: pack.clone(), key: String::new(), file: m.file.clone() }],
                    rule_source: String::new(),
                    failure: None,
                });
                let result = resolve(&self.engine, &m.name, Position::NONE);
                let failure = guard.failure();
                drop(guard);
                if let (Err(_), Some(f)) = (result, failure) {
                    out.push(ScriptError { file: f.file, rule: key, line: f.line, col: f.col, message: f.message });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScriptLimits;
    use crate::script::{obs_to_dynamic, params_to_dynamic, target_to_dynamic, EvalInput, TargetInfo, Verdict};

    fn m(name: &str, source: &str) -> ModuleSource {
        ModuleSource { name: name.into(), file: PathBuf::from(format!("p/modules/{name}.rhai")), source: source.into() }
    }

    fn set(packs: &[(&str, &[&str], Vec<ModuleSource>)]) -> Arc<ModuleSet> {
        let mut s = ModuleSet::default();
        for (name, deps, modules) in packs {
            s.add_pack(name, deps.iter().map(|d| d.to_string()), modules.clone());
        }
        Arc::new(s)
    }

    fn compile(e: &ScriptEngine, set: &Arc<ModuleSet>, src: &str) -> Result<CompiledRule, ScriptError> {
        e.compile_with_modules("p/r", "p", PathBuf::from("p/r.rhai"), src, set)
    }

    fn run(e: &ScriptEngine, rule: &CompiledRule) -> Result<Verdict, ScriptError> {
        let o = crate::model::Observation {
            probe: "x".into(),
            target: "jm".into(),
            job: None,
            time: chrono::Utc::now(),
            status: Some(200),
            latency: std::time::Duration::from_millis(1),
            body: Some(Arc::new(crate::model::Doc::from_json(&serde_json::json!({"n": 2})))),
            error: None,
        };
        let obs = obs_to_dynamic(&o);
        let target = target_to_dynamic(&TargetInfo { name: "jm".into(), ..Default::default() });
        let params = params_to_dynamic(&Default::default());
        let state = serde_json::Value::Null;
        let input = EvalInput {
            obs: &obs,
            target: &target,
            params: &params,
            state: &state,
            now: chrono::Utc::now(),
            follow_up: None,
        };
        e.evaluate(rule, input).map(|ev| ev.verdict)
    }

    fn summaries(v: Verdict) -> Vec<String> {
        match v {
            Verdict::Requests(r) => r.into_iter().map(|r| r.summary).collect(),
            Verdict::Skipped(s) => panic!("skipped: {s}"),
        }
    }

    #[test]
    fn finds_imports_but_not_in_comments_or_strings() {
        let src = "// import \"no\"\nlet s = \"import \\\"nope\\\"\";\n/* import \"x\" /* nested */ */\n  import \"util\" as u;\nimport  \"dep/m\" as d;\nx.import \"not\";";
        let found = find_imports(src);
        assert_eq!(found, vec![("util".to_string(), 4, 10), ("dep/m".to_string(), 5, 9)]);
    }

    #[test]
    fn a_rule_imports_its_packs_module_and_a_dependencys() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        // `util` imports `fmt` itself; its function uses it when the rule runs, long after compilation.
        let s = set(&[
            (
                "p",
                &["base"],
                vec![
                    m(
                        "util",
                        "import \"fmt\" as f;\nfn twice(n) { n * 2 }\nfn say(n) { alert(#{summary: f::label(n)}) }",
                    ),
                    m("fmt", "fn label(n) { `n is ${n}` }"),
                ],
            ),
            ("base", &[], vec![m("consts", "fn limit() { 3 }")]),
        ]);
        let src = "import \"util\" as u;\nimport \"base/consts\" as c;\nif u::twice(obs.body.n) > c::limit() { u::say(obs.body.n); }";
        let rule = compile(&e, &s, src).unwrap_or_else(|e| panic!("{e}"));
        let v = run(&e, &rule).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summaries(v), vec!["n is 2".to_string()]);
        // The same modules serve a second rule (evaluated once, cached).
        let again = compile(&e, &s, "import \"util\" as u;\nalert(#{summary: `${u::twice(4)}`});").unwrap();
        assert_eq!(summaries(run(&e, &again).unwrap()), vec!["8".to_string()]);
    }

    #[test]
    fn a_missing_module_is_a_compile_error_at_the_import() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let s = set(&[("p", &[], vec![m("util", "fn f() { 1 }")])]);
        let err = compile(&e, &s, "let x = 1;\n\n   import \"utill\" as u;\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p/r.rhai:3:11: rule `p/r`: cannot import `utill`: pack `p` has no module `utill` (`modules/utill.rhai`), \
             did you mean `util`?"
        );
    }

    #[test]
    fn importing_from_a_pack_that_is_not_a_dependency_is_refused() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let s = set(&[("p", &[], vec![]), ("other", &[], vec![m("x", "fn f() { 1 }")])]);
        let err = compile(&e, &s, "import \"other/x\" as x;").unwrap_err();
        assert!(err.message.contains("pack `p` does not list pack `other` under `dependencies`"), "{err}");
        assert_eq!((err.line, err.col), (1, 8));
    }

    #[test]
    fn a_circular_import_is_reported_where_it_closes() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let s = set(&[(
            "p",
            &[],
            vec![m("a", "import \"b\" as b;\nfn f() { 1 }"), m("b", "fn g() { 2 }\nimport \"a\" as a;")],
        )]);
        let err = compile(&e, &s, "import \"a\" as a;").unwrap_err();
        assert_eq!(err.to_string(), "p/modules/b.rhai:2:8: rule `p/r`: circular import: p/a → p/b → p/a");
        // A module importing itself.
        let s = set(&[("p", &[], vec![m("self", "import \"self\" as s;")])]);
        let errs = e.check_modules(&s);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].message, "circular import: p/self → p/self");
    }

    #[test]
    fn a_broken_module_is_reported_in_its_own_file() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let s = set(&[("p", &[], vec![m("bad", "fn f( { 1 }"), m("throws", "throw \"no\";")])]);
        let err = compile(&e, &s, "import \"bad\" as b;").unwrap_err();
        assert!(err.to_string().starts_with("p/modules/bad.rhai:1:"), "{err}");
        assert!(err.message.starts_with("module `p/bad`: syntax error:"), "{err}");
        // check_modules reports the module no rule imported.
        let errs = e.check_modules(&s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.starts_with("module `p/throws`:") && errs[0].message.contains("no"), "{errs:?}");
    }

    #[test]
    fn without_modules_an_import_fails_at_compile_time_and_nothing_resolves_at_run_time() {
        let e = ScriptEngine::new(&ScriptLimits::default());
        let err = e.compile("p/r", "p", PathBuf::from("p/r.rhai"), "import \"x\" as x;").unwrap_err();
        assert!(err.message.contains("cannot import `x`: pack `p` has no modules"), "{err}");
        // A computed path is not resolved at compile time; at run time nothing is served (no file access).
        let rule =
            e.compile("p/r", "p", PathBuf::from("p/r.rhai"), "let n = \"/etc/passwd\";\nimport n as x;").unwrap();
        let err = run(&e, &rule).unwrap_err();
        assert!(err.message.contains("not found"), "{err}");
    }
}
