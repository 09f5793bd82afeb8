//! The read-only JSON view rules see: `obs.body` and `http_get(..).body` are not converted into Rhai maps and
//! arrays but handed to rules as views into the parsed document, which every rule of one observation shares.
//!
//! - A JSON object is a [`JsonMap`] and a JSON array a [`JsonArray`]; Rhai's `type_of` calls them `"map"` and
//!   `"array"`, as it does its own maps and arrays, so rules written for plain values keep working.
//! - Reading a field or an element (`j.state`, `j["start-time"]`, `jobs[0]`) gives a string, a number, a bool or
//!   `()` as a plain Rhai value, and a nested object or array as another view: an `Arc` clone and a pointer, never
//!   a copy of the data. A missing field is `()`; an array index out of bounds is an error, as in Rhai.
//! - Views cannot be changed (assigning to one is an error that says so); `to_map()`, `to_array()` and
//!   `to_dynamic()` make a plain, changeable copy when a rule wants one.
//! - [`JsonArray::where_`] and [`JsonArray::group_by`] run a small expression (src/script/query.rs) natively on
//!   every element, so that a rule over thousands of jobs only loops, in Rhai, over the few that matter.
//!
//! The view keeps its document alive with an `Arc` and points into it. The document is never changed while a view
//! exists: the views only ever read it, and they hold a clone of the `Arc`, so nobody can get a `&mut` to it.

use std::ptr::NonNull;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Map, Module, INT};
use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonNumberTrait, ValueRef};

use super::query::Query;
use crate::model::{doc, Doc, DocValue};

type R<T> = Result<T, Box<EvalAltResult>>;

/// A place in a shared JSON document: the document (kept alive) and a pointer to one of its values.
#[derive(Clone)]
struct Node {
    doc: Arc<Doc>,
    /// Points into `*doc` (see [`Node::child`] and [`Node::wrap`], the only ways to make one that is not the root).
    at: NonNull<DocValue>,
}

// SAFETY: a `Node` is an owned `Arc<Doc>` plus what is in effect a `&DocValue` borrowed from it: the document is
// only ever read (see the module docs), and `Doc` is `Send + Sync`.
unsafe impl Send for Node {}
// SAFETY: as for `Send`.
unsafe impl Sync for Node {}

impl Node {
    fn root(doc: Arc<Doc>) -> Self {
        let at = NonNull::from(doc.root());
        Self { doc, at }
    }

    fn value(&self) -> &DocValue {
        // SAFETY: `at` points into `*self.doc`, which lives as long as `self` and is never changed (module docs).
        unsafe { self.at.as_ref() }
    }

    /// The node of a value found inside this one by `pick`. Its signature ties the result to the value it is given
    /// (or to a `'static` one), so the new pointer is always into the same document.
    fn child(&self, pick: impl for<'a> FnOnce(&'a DocValue) -> Option<&'a DocValue>) -> Option<Node> {
        let v = pick(self.value())?;
        Some(Node { doc: self.doc.clone(), at: NonNull::from(v) })
    }

    /// The node of `v`.
    ///
    /// # Safety
    ///
    /// `v` must be a value of this node's document.
    unsafe fn wrap(&self, v: &DocValue) -> Node {
        Node { doc: self.doc.clone(), at: NonNull::from(v) }
    }

    /// This node's value as a rule sees it: scalars as plain Rhai values, objects and arrays as views.
    fn to_rhai(&self) -> Dynamic {
        match self.value().as_ref() {
            ValueRef::Object(_) => Dynamic::from(JsonMap(self.clone())),
            ValueRef::Array(_) => Dynamic::from(JsonArray(Seq::View(self.clone()))),
            r => scalar_of(r),
        }
    }

    /// `v`, a value of this node's document, as a rule sees it.
    ///
    /// # Safety
    ///
    /// As for [`Node::wrap`].
    unsafe fn show(&self, v: &DocValue) -> Dynamic {
        // SAFETY (both arms): the caller's promise.
        match v.as_ref() {
            ValueRef::Object(_) => Dynamic::from(JsonMap(unsafe { self.wrap(v) })),
            ValueRef::Array(_) => Dynamic::from(JsonArray(Seq::View(unsafe { self.wrap(v) }))),
            r => scalar_of(r),
        }
    }

    /// Field `key` of this node's value (an object; `()` for anything else or a missing key), as a rule sees it.
    fn field(&self, key: &str) -> Dynamic {
        // SAFETY: `self.value()` is a value of `self.doc`, and so is what `field_of` finds in it.
        unsafe {
            match self.doc.field_of(self.value(), key) {
                Some(v) => self.show(v),
                None => Dynamic::UNIT,
            }
        }
    }
}

/// A JSON scalar as a plain Rhai value (objects and arrays become `()`: callers handle them first).
fn scalar(v: &DocValue) -> Dynamic {
    scalar_of(v.as_ref())
}

/// [`scalar`] of a value already looked at.
fn scalar_of(v: ValueRef<'_>) -> Dynamic {
    match v {
        ValueRef::Bool(b) => Dynamic::from_bool(b),
        ValueRef::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        ValueRef::String(s) => Dynamic::from(ImmutableString::from(s)),
        _ => Dynamic::UNIT,
    }
}

/// A JSON value as plain Rhai values all the way down (a copy): objects become maps (a repeated key keeps its first
/// value), arrays arrays, `null` `()`.
pub fn to_dynamic(v: &DocValue) -> Dynamic {
    match v.as_ref() {
        ValueRef::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        ValueRef::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o.iter() {
                if !m.contains_key(k) {
                    m.insert(k.into(), to_dynamic(v));
                }
            }
            Dynamic::from_map(m)
        }
        _ => scalar(v),
    }
}

/// A read-only JSON object (Rhai's `type_of` says `"map"`).
#[derive(Clone)]
pub struct JsonMap(Node);

/// A read-only JSON array, or a selection of elements of one (`where`); Rhai's `type_of` says `"array"`.
#[derive(Clone)]
pub struct JsonArray(Seq);

#[derive(Clone)]
enum Seq {
    /// A JSON array in the document.
    View(Node),
    /// Elements picked from a document.
    List(Arc<[Node]>),
}

impl JsonMap {
    /// The object's pairs, in the document's order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &DocValue)> {
        self.0.value().as_object().into_iter().flat_map(|o| o.iter())
    }

    /// The number of pairs (a repeated key counts each time).
    fn len(&self) -> usize {
        self.0.value().as_object().map_or(0, |o| o.len())
    }

    /// The value of `key`, `()` if there is none.
    pub fn field(&self, key: &str) -> Dynamic {
        self.0.field(key)
    }

    /// Whether the object has `key`.
    fn has(&self, key: &str) -> bool {
        // SAFETY: the node's value is a value of its document.
        unsafe { self.0.doc.field_of(self.0.value(), key) }.is_some()
    }

    /// The values, in the document's order, as a rule sees them.
    fn values(&self) -> Array {
        // SAFETY: the values of the node's value are values of its document.
        self.pairs().map(|(_, v)| unsafe { self.0.show(v) }).collect()
    }
}

impl JsonArray {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.0 {
            Seq::View(n) => n.value().as_array().map_or(0, |a| a.len()),
            Seq::List(l) => l.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a rule sees it, `None` when out of bounds.
    fn element(&self, i: usize) -> Option<Dynamic> {
        match &self.0 {
            Seq::View(n) => n.child(|v| v.as_array()?.get(i)).map(|c| c.to_rhai()),
            Seq::List(l) => l.get(i).map(Node::to_rhai),
        }
    }

    /// Rhai's index rules: negative counts from the end; out of bounds is an error.
    fn index(&self, i: INT) -> R<Dynamic> {
        let len = self.len();
        let at = if i < 0 {
            usize::try_from(i.unsigned_abs()).ok().and_then(|b| len.checked_sub(b))
        } else {
            usize::try_from(i).ok()
        };
        at.and_then(|a| self.element(a))
            .ok_or_else(|| EvalAltResult::ErrorArrayBounds(len, i, rhai::Position::NONE).into())
    }

    /// Calls `f` with each element (its value, its document, and how to make its node), in order, until `f`
    /// returns an error.
    fn each<'s, E>(
        &'s self,
        mut f: impl FnMut(&'s DocValue, &'s Doc, &dyn Fn() -> Option<Node>) -> Result<(), E>,
    ) -> Result<(), E> {
        match &self.0 {
            Seq::View(n) => {
                let Some(items) = n.value().as_array() else { return Ok(()) };
                for (i, v) in items.iter().enumerate() {
                    f(v, &n.doc, &|| n.child(|a| a.as_array()?.get(i)))?;
                }
            }
            Seq::List(l) => {
                for n in l.iter() {
                    f(n.value(), &n.doc, &|| Some(n.clone()))?;
                }
            }
        }
        Ok(())
    }

    /// The elements for which `query` gives `true`, in order (`where` in rules; `where` is a Rust keyword).
    pub fn where_(&self, query: &Query) -> Result<JsonArray, String> {
        let mut picked = Vec::new();
        let mut t = query.tester();
        self.each(|v, doc, node| {
            // SAFETY: `v` is a value of `doc` (see `each`).
            if unsafe { t.test_in(v, doc) }? {
                picked.extend(node());
            }
            Ok::<_, String>(())
        })?;
        Ok(JsonArray(Seq::List(picked.into())))
    }

    /// The elements grouped by what `query` gives for each: a map from that (as text) to the elements, in order.
    /// Elements for which it gives `()` are left out.
    pub fn group_by(&self, query: &Query) -> Result<Map, String> {
        let mut groups: std::collections::BTreeMap<String, Vec<Node>> = Default::default();
        let mut t = query.tester();
        self.each(|v, doc, node| {
            // SAFETY: `v` is a value of `doc` (see `each`).
            if let Some(key) = unsafe { t.key_in(v, doc) }? {
                let entry = groups.entry(key).or_default();
                entry.extend(node());
            }
            Ok::<_, String>(())
        })?;
        Ok(groups.into_iter().map(|(k, v)| (k.into(), Dynamic::from(JsonArray(Seq::List(v.into()))))).collect())
    }

    /// How many elements give each value of `query` (as text): a map from that to the count. Elements for which it
    /// gives `()` are left out.
    pub fn count_by(&self, query: &Query) -> Result<Map, String> {
        let mut counts = Map::new();
        let mut t = query.tester();
        self.each(|v, doc, _| {
            // SAFETY: `v` is a value of `doc` (see `each`).
            if let Some(key) = unsafe { t.key_in(v, doc) }? {
                match counts.get_mut(key.as_str()) {
                    Some(n) => *n = Dynamic::from_int(n.as_int().unwrap_or(0) + 1),
                    None => {
                        counts.insert(key.into(), Dynamic::from_int(1));
                    }
                }
            }
            Ok::<_, String>(())
        })?;
        Ok(counts)
    }

    /// The elements as a plain Rhai array whose elements are still views (cheap: no data is copied).
    fn shallow(&self) -> Array {
        let mut out = Array::with_capacity(self.len());
        match &self.0 {
            Seq::View(n) => {
                for i in 0..n.value().as_array().map_or(0, |a| a.len()) {
                    out.extend(n.child(|v| v.as_array()?.get(i)).map(|c| c.to_rhai()));
                }
            }
            Seq::List(l) => out.extend(l.iter().map(Node::to_rhai)),
        }
        out
    }

    /// The array as JSON (a copy).
    pub fn to_value(&self) -> Value {
        match &self.0 {
            Seq::View(n) => doc::to_json(n.value()),
            Seq::List(l) => Value::Array(l.iter().map(|n| doc::to_json(n.value())).collect()),
        }
    }

    /// The array as plain Rhai values all the way down (a copy).
    fn to_dynamic(&self) -> Dynamic {
        match &self.0 {
            Seq::View(n) => to_dynamic(n.value()),
            Seq::List(l) => Dynamic::from_array(l.iter().map(|n| to_dynamic(n.value())).collect()),
        }
    }
}

/// Iterates a [`JsonArray`] (`for x in arr`).
pub struct JsonArrayIter {
    arr: JsonArray,
    next: usize,
}

impl Iterator for JsonArrayIter {
    type Item = Dynamic;
    fn next(&mut self) -> Option<Dynamic> {
        let item = self.arr.element(self.next)?;
        self.next += 1;
        Some(item)
    }
}

impl IntoIterator for JsonArray {
    type Item = Dynamic;
    type IntoIter = JsonArrayIter;
    fn into_iter(self) -> JsonArrayIter {
        JsonArrayIter { arr: self, next: 0 }
    }
}

/// A parsed JSON document as a rule sees it: objects and arrays as read-only views sharing `doc`, scalars as plain
/// values, `null` as `()`. Cheap: nothing is copied.
pub fn view(doc: Arc<Doc>) -> Dynamic {
    Node::root(doc).to_rhai()
}

/// The JSON a view stands for (a copy), `None` if `d` is not a view.
pub fn view_to_json(d: &Dynamic) -> Option<Value> {
    if let Some(m) = d.read_lock::<JsonMap>() {
        return Some(doc::to_json(m.0.value()));
    }
    d.read_lock::<JsonArray>().map(|a| a.to_value())
}

/// The whole document a view belongs to (shared, not copied), `None` if `d` is not a view.
pub fn view_doc(d: &Dynamic) -> Option<Arc<Doc>> {
    if let Some(m) = d.read_lock::<JsonMap>() {
        return Some(m.0.doc.clone());
    }
    match &d.read_lock::<JsonArray>()?.0 {
        Seq::View(n) => Some(n.doc.clone()),
        _ => None,
    }
}

/// Whether `d` is a view (a [`JsonMap`] or a [`JsonArray`]).
pub fn is_view(d: &Dynamic) -> bool {
    d.is::<JsonMap>() || d.is::<JsonArray>()
}

/// `d` as plain Rhai values all the way down: views (also inside maps and arrays) become maps and arrays.
pub fn plain(d: &Dynamic) -> Dynamic {
    if let Some(m) = d.read_lock::<JsonMap>() {
        return to_dynamic(m.0.value());
    }
    if let Some(a) = d.read_lock::<JsonArray>() {
        return a.to_dynamic();
    }
    if d.is_array() {
        let a = d.read_lock::<Array>().map(|a| a.iter().map(plain).collect()).unwrap_or_default();
        return Dynamic::from_array(a);
    }
    if d.is_map() {
        let m =
            d.read_lock::<Map>().map(|m| m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()).unwrap_or_default();
        return Dynamic::from_map(m);
    }
    d.clone()
}

/// A Rhai value as JSON for comparisons: views as their JSON, plain values converted.
fn json_of(d: &Dynamic) -> Value {
    super::convert::to_json(d)
}

/// A Rhai value as a document: a scalar (`()`, a bool, a number, a string) directly, anything else written as JSON
/// and parsed (`where` on an array of names, `contains`, `$bindings` run this once per element or per call).
pub(crate) fn doc_of(d: &Dynamic) -> Doc {
    let scalar = if d.is_unit() {
        Some(DocValue::new())
    } else if let Ok(b) = d.as_bool() {
        Some(DocValue::from(b))
    } else if let Ok(i) = d.as_int() {
        Some(DocValue::from(i))
    } else if let Ok(f) = d.as_float() {
        // Not finite: `null`, as JSON writes it.
        Some(DocValue::new_f64(f).unwrap_or_default())
    } else {
        d.read_lock::<ImmutableString>().map(|s| DocValue::from(s.as_str()))
    };
    match scalar {
        Some(v) => Doc::from_value(v),
        None => Doc::from_json(&json_of(d)),
    }
}

/// Rhai's `==` on JSON: numbers compare by value (`1 == 1.0`), arrays and objects element by element.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// [`json_eq`] on document values. Objects are equal when they have the same keys with equal values, in any
/// order (a repeated key: its first value).
pub(crate) fn doc_eq(a: &DocValue, b: &DocValue) -> bool {
    match (a.as_ref(), b.as_ref()) {
        (ValueRef::Null, ValueRef::Null) => true,
        (ValueRef::Bool(x), ValueRef::Bool(y)) => x == y,
        (ValueRef::Number(x), ValueRef::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (ValueRef::String(x), ValueRef::String(y)) => x == y,
        (ValueRef::Array(x), ValueRef::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| doc_eq(p, q))
        }
        (ValueRef::Object(x), ValueRef::Object(y)) => {
            let distinct = |o: &sonic_rs::Object| {
                let mut keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
                keys.sort_unstable();
                keys.dedup();
                keys.len()
            };
            distinct(x) == distinct(y)
                && x.iter().all(|(k, _)| match (doc::field(a, k), doc::field(b, k)) {
                    (Some(v), Some(w)) => doc_eq(v, w),
                    _ => false,
                })
        }
        _ => false,
    }
}

const READ_ONLY: &str =
    "JSON from an observation or http_get is read-only: make a copy to change with to_map() or to_array()";

fn read_only<T>() -> R<T> {
    Err(READ_ONLY.into())
}

fn query_error(what: &str, e: String) -> Box<EvalAltResult> {
    format!("{what}: {e}").into()
}

fn compile(expr: &str, bindings: Option<&Map>) -> R<Query> {
    Query::compile(expr, bindings).map_err(|e| query_error(&format!("bad expression `{expr}`"), e))
}

fn where_(arr: &mut JsonArray, expr: &str, bindings: Option<&Map>) -> R<JsonArray> {
    let q = compile(expr, bindings)?;
    arr.where_(&q).map_err(|e| query_error(&format!("where(`{expr}`)"), e))
}

/// `where` on a plain Rhai array: its elements as JSON (views as they are).
fn where_plain(arr: &mut Array, expr: &str, bindings: Option<&Map>) -> R<Array> {
    let q = compile(expr, bindings)?;
    let mut out = Array::new();
    for x in arr.iter() {
        let picked = if let Some(m) = x.read_lock::<JsonMap>() {
            // SAFETY: a view's value is a value of its document.
            unsafe { q.tester().test_in(m.0.value(), &m.0.doc) }
        } else {
            let copy = doc_of(x);
            q.test(copy.root())
        };
        if picked.map_err(|e| query_error(&format!("where(`{expr}`)"), e))? {
            out.push(x.clone());
        }
    }
    Ok(out)
}

fn count_by(arr: &mut JsonArray, expr: &str, bindings: Option<&Map>) -> R<Map> {
    let q = compile(expr, bindings)?;
    arr.count_by(&q).map_err(|e| query_error(&format!("count_by(`{expr}`)"), e))
}

fn group_by(arr: &mut JsonArray, expr: &str, bindings: Option<&Map>) -> R<Map> {
    let q = compile(expr, bindings)?;
    arr.group_by(&q).map_err(|e| query_error(&format!("group_by(`{expr}`)"), e))
}

/// Rhai array functions that do not change the array: on a JSON array they run on a shallow copy (its elements
/// stay views), with their usual meaning.
const ARRAY_FORWARDS: &[(&str, usize)] = &[
    ("filter", 1),
    ("map", 1),
    ("reduce", 1),
    ("reduce", 2),
    ("reduce_rev", 1),
    ("reduce_rev", 2),
    ("some", 1),
    ("all", 1),
    ("find", 1),
    ("find", 2),
    ("find_map", 1),
    ("find_map", 2),
    ("index_of", 1),
    ("index_of", 2),
    ("extract", 1),
    ("extract", 2),
    ("zip", 2),
    ("for_each", 1),
    ("order", 0),
    ("order", 1),
    ("order_desc", 0),
    ("order_by", 1),
];

/// Rhai array functions that change their value: on JSON they are an error that says what to do instead.
const MUTATORS: &[(&str, usize)] = &[
    ("push", 1),
    ("append", 1),
    ("insert", 2),
    ("pop", 0),
    ("shift", 0),
    ("remove", 1),
    ("clear", 0),
    ("truncate", 1),
    ("chop", 1),
    ("pad", 2),
    ("reverse", 0),
    ("sort", 0),
    ("sort", 1),
    ("sort_desc", 0),
    ("sort_by", 1),
    ("dedup", 0),
    ("dedup", 1),
    ("retain", 1),
    ("drain", 1),
    ("splice", 3),
    ("set", 2),
];

/// The same for Rhai's map functions.
const MAP_MUTATORS: &[(&str, usize)] =
    &[("clear", 0), ("remove", 1), ("mixin", 1), ("fill_with", 1), ("retain", 1), ("drain", 1), ("set", 2)];

/// Registers the view types: the functions a rule calls by name (`where`, `group_by`, `to_map`, `to_array`,
/// `to_dynamic`) on `engine` (listed by [`super::ScriptEngine::registered_functions`] and documented in
/// `docs/rules.md`), and what makes views behave like Rhai's maps and arrays (indexing, iteration, comparisons,
/// `len`, `contains`, `keys`, ...) as a global module.
pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<JsonMap>("map");
    engine.register_type_with_name::<JsonArray>("array");

    engine.register_fn("where", |a: &mut JsonArray, expr: &str| where_(a, expr, None));
    engine.register_fn("where", |a: &mut JsonArray, expr: &str, b: Map| where_(a, expr, Some(&b)));
    engine.register_fn("where", |a: &mut Array, expr: &str| where_plain(a, expr, None));
    engine.register_fn("where", |a: &mut Array, expr: &str, b: Map| where_plain(a, expr, Some(&b)));
    engine.register_fn("group_by", |a: &mut JsonArray, expr: &str| group_by(a, expr, None));
    engine.register_fn("group_by", |a: &mut JsonArray, expr: &str, b: Map| group_by(a, expr, Some(&b)));
    engine.register_fn("count_by", |a: &mut JsonArray, expr: &str| count_by(a, expr, None));
    engine.register_fn("count_by", |a: &mut JsonArray, expr: &str, b: Map| count_by(a, expr, Some(&b)));
    engine.register_fn("to_map", |m: &mut JsonMap| to_dynamic(m.0.value()));
    engine.register_fn("to_array", |a: &mut JsonArray| a.to_dynamic());
    engine.register_fn("to_dynamic", |d: Dynamic| plain(&d));

    engine.register_global_module(module().into());
}

/// Field names with a getter of their own on JSON objects: the names in Flink's REST answers (as in
/// `tests/fixtures/flink-2.3.0`) and a few common ones. `j.state` finds Rhai's getter at once; any other name works
/// too, through the indexer, after Rhai has looked for a getter and built an error to say there is none (slower).
const GETTERS: &[&str] = &[
    "CANCELED",
    "CANCELING",
    "CANCELLING",
    "CREATED",
    "DEPLOYING",
    "FAILED",
    "FAILING",
    "FINISHED",
    "INITIALIZING",
    "RECONCILING",
    "RESTARTING",
    "RUNNING",
    "SCHEDULED",
    "SUSPENDED",
    "address",
    "aligned_checkpoint_timeout",
    "alignment_buffered",
    "assignedTasks",
    "attempt",
    "avg",
    "canceled",
    "canceling",
    "changelog_periodic_materialization_interval",
    "changelog_storage",
    "checkpoint",
    "checkpoint_storage",
    "checkpoint_type",
    "checkpointed_size",
    "checkpoints_after_tasks_finish",
    "className",
    "code",
    "completed",
    "concurrentExceptions",
    "count",
    "counts",
    "cpuCores",
    "created",
    "data",
    "dataPort",
    "delete_on_cancellation",
    "deploying",
    "description",
    "discarded",
    "duration",
    "enabled",
    "end_time",
    "end_to_end_duration",
    "endpoint",
    "entries",
    "entry",
    "errors",
    "exception",
    "exceptionHistory",
    "exceptionName",
    "exchange",
    "extendedResources",
    "external_path",
    "externalization",
    "failed",
    "failureLabels",
    "failure_message",
    "failure_timestamp",
    "features",
    "files",
    "finished",
    "frameworkHeap",
    "frameworkOffHeap",
    "freeMemory",
    "freeResource",
    "freeSlots",
    "hardware",
    "healthy",
    "history",
    "host",
    "id",
    "in_progress",
    "initializing",
    "inputs",
    "interval",
    "isStoppable",
    "is_savepoint",
    "items",
    "jid",
    "jmxPort",
    "job",
    "jobType",
    "jobmanager",
    "jobs",
    "jvmMetaspace",
    "jvmOverhead",
    "key",
    "kind",
    "labels",
    "latency",
    "latest",
    "latest_ack_timestamp",
    "location",
    "managedMemory",
    "max",
    "maxParallelism",
    "max_concurrent",
    "memoryConfiguration",
    "message",
    "metrics",
    "min",
    "min_pause",
    "mode",
    "name",
    "networkMemory",
    "nodes",
    "now",
    "num",
    "num_acknowledged_subtasks",
    "num_subtasks",
    "operator",
    "operator_id",
    "operator_strategy",
    "optimizer_properties",
    "p50",
    "p90",
    "p95",
    "p99",
    "p999",
    "parallelism",
    "path",
    "persisted_data",
    "physicalMemory",
    "plan",
    "port",
    "processed_data",
    "reconciling",
    "restore_timestamp",
    "restored",
    "result",
    "root_exception",
    "running",
    "savepoint",
    "savepointFormat",
    "scheduled",
    "schedulerType",
    "ship_strategy",
    "slotSharingGroupId",
    "slotsNumber",
    "stacktrace",
    "start_time",
    "state",
    "state_backend",
    "state_changelog_enabled",
    "state_size",
    "status",
    "status_counts",
    "subtasks",
    "summary",
    "taskHeap",
    "taskHeapMemory",
    "taskManagerId",
    "taskName",
    "taskOffHeap",
    "taskOffHeapMemory",
    "taskmanager",
    "taskmanagers",
    "tasks",
    "timeSinceLastHeartbeat",
    "timeout",
    "timestamp",
    "timestamps",
    "tolerable_failed_checkpoints",
    "total",
    "totalFlinkMemory",
    "totalProcessMemory",
    "totalResource",
    "trigger_timestamp",
    "truncated",
    "type",
    "unaligned_checkpoints",
    "uploaded",
    "url",
    "value",
    "version",
    "vertices",
];

/// The signatures of the functions in the module that makes views behave like Rhai's maps and arrays (as
/// [`Engine::gen_fn_signatures`] writes them).
pub(super) fn compat_signatures() -> Vec<String> {
    let mut e = Engine::new_raw();
    e.register_global_module(module().into());
    e.gen_fn_signatures(false)
}

/// The names of those functions (operators, indexers and Rhai's own map and array functions): `docs/rules.md`
/// lists them in its section on JSON values.
pub fn compat_names() -> Vec<String> {
    let mut names: Vec<String> = compat_signatures()
        .iter()
        .filter_map(|s| s.split('(').next())
        .filter(|n| !n.starts_with("index$") && !n.starts_with("get$"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn module() -> Module {
    let mut module = Module::new();
    let m = &mut module;
    m.set_custom_type::<JsonMap>("map");
    m.set_custom_type::<JsonArray>("array");
    m.set_iterable::<JsonArray>();

    // Indexing and property access (`j.state` falls back to the indexer).
    m.set_indexer_get_fn(|o: &mut JsonMap, key: ImmutableString| Ok(o.field(&key)));
    m.set_indexer_get_fn(|_: &mut JsonMap, i: INT| -> R<Dynamic> {
        Err(format!("a JSON object is indexed by a key (a string), not by the number {i}").into())
    });
    m.set_indexer_get_fn(|a: &mut JsonArray, i: INT| a.index(i));
    m.set_indexer_get_fn(|_: &mut JsonArray, key: ImmutableString| -> R<Dynamic> {
        Err(format!("a JSON array is indexed by a number, not by the key \"{key}\"").into())
    });
    // Assigning is an error. It is of the kind Rhai ignores when it writes a value back after a method call
    // (`obs.body.jobs.len()`), and reports when a rule assigns (`b["x"] = 1`).
    m.set_indexer_set_fn(|_: &mut JsonMap, _: ImmutableString, _: Dynamic| -> R<()> {
        Err(EvalAltResult::ErrorIndexingType(READ_ONLY.into(), rhai::Position::NONE).into())
    });
    m.set_indexer_set_fn(|_: &mut JsonArray, _: INT, _: Dynamic| -> R<()> {
        Err(EvalAltResult::ErrorIndexingType(READ_ONLY.into(), rhai::Position::NONE).into())
    });

    // The read-only functions of Rhai's maps and arrays.
    macro_rules! reg {
        ($m:expr, $name:expr, $f:expr $(,)?) => {{
            FuncRegistration::new($name).in_global_namespace().set_into_module($m, $f);
        }};
    }
    for &key in GETTERS {
        reg!(m, format!("get${key}"), move |o: &mut JsonMap| o.field(key));
    }
    reg!(m, "len", |o: &mut JsonMap| o.len() as INT);
    reg!(m, "len", |a: &mut JsonArray| a.len() as INT);
    reg!(m, "is_empty", |o: &mut JsonMap| o.len() == 0);
    reg!(m, "is_empty", |a: &mut JsonArray| a.is_empty());
    reg!(m, "contains", |o: &mut JsonMap, key: ImmutableString| o.has(&key));
    reg!(m, "contains", |a: &mut JsonArray, x: Dynamic| {
        let x = doc_of(&x);
        let mut found = false;
        let _ = a.each(|v, _, _| {
            found = doc_eq(v, x.root());
            if found {
                Err(())
            } else {
                Ok(())
            }
        });
        found
    });
    reg!(m, "get", |o: &mut JsonMap, key: ImmutableString| o.field(&key));
    reg!(m, "get", |a: &mut JsonArray, i: INT| a.index(i).unwrap_or(Dynamic::UNIT));
    reg!(m, "keys", |o: &mut JsonMap| -> Array {
        o.pairs().map(|(k, _)| Dynamic::from(ImmutableString::from(k))).collect()
    });
    reg!(m, "values", |o: &mut JsonMap| -> Array { o.values() });
    reg!(m, "to_string", |o: &mut JsonMap| plain(&Dynamic::from(o.clone())).to_string());
    reg!(m, "to_string", |a: &mut JsonArray| plain(&Dynamic::from(a.clone())).to_string());
    reg!(m, "to_debug", |o: &mut JsonMap| format!("{:?}", plain(&Dynamic::from(o.clone()))));
    reg!(m, "to_debug", |a: &mut JsonArray| format!("{:?}", plain(&Dynamic::from(a.clone()))));

    // Comparisons, with views and with plain maps and arrays (Rhai's own rules: `1 == 1.0`).
    macro_rules! eq_ops {
        ($a:ty, $b:ty) => {
            reg!(m, "==", |x: &mut $a, y: $b| json_eq(
                &json_of(&Dynamic::from(x.clone())),
                &json_of(&Dynamic::from(y))
            ));
            reg!(m, "!=", |x: &mut $a, y: $b| {
                !json_eq(&json_of(&Dynamic::from(x.clone())), &json_of(&Dynamic::from(y)))
            });
        };
    }
    eq_ops!(JsonMap, JsonMap);
    eq_ops!(JsonArray, JsonArray);
    eq_ops!(JsonMap, Map);
    eq_ops!(Map, JsonMap);
    eq_ops!(JsonArray, Array);
    eq_ops!(Array, JsonArray);

    // `+` of arrays: a plain array.
    reg!(m, "+", |a: &mut JsonArray, b: JsonArray| -> Array {
        let mut out = a.shallow();
        out.extend(b.shallow());
        out
    });
    reg!(m, "+", |a: &mut JsonArray, b: Array| -> Array {
        let mut out = a.shallow();
        out.extend(b);
        out
    });
    reg!(m, "+", |a: &mut Array, b: JsonArray| -> Array {
        let mut out = a.clone();
        out.extend(b.shallow());
        out
    });

    // Rhai's read-only array functions, on a shallow copy.
    for &(name, extra) in ARRAY_FORWARDS {
        let n: &'static str = name;
        match extra {
            0 => reg!(m, n, move |ctx: rhai::NativeCallContext, a: &mut JsonArray| -> R<Dynamic> {
                ctx.call_native_fn(n, (a.shallow(),))
            }),
            1 => reg!(m, n, move |ctx: rhai::NativeCallContext, a: &mut JsonArray, x: Dynamic| -> R<Dynamic> {
                ctx.call_native_fn(n, (a.shallow(), x))
            }),
            _ => reg!(m, n, move |ctx: rhai::NativeCallContext,
                                  a: &mut JsonArray,
                                  x: Dynamic,
                                  y: Dynamic|
                  -> R<Dynamic> { ctx.call_native_fn(n, (a.shallow(), x, y)) },),
        }
    }
    // Changing functions: a clear error.
    for &(name, extra) in MUTATORS {
        match extra {
            0 => {
                reg!(m, name, |_: &mut JsonArray| read_only::<()>());
            }
            1 => {
                reg!(m, name, |_: &mut JsonArray, _: Dynamic| read_only::<()>());
            }
            2 => {
                reg!(m, name, |_: &mut JsonArray, _: Dynamic, _: Dynamic| read_only::<()>());
            }
            _ => {
                reg!(m, name, |_: &mut JsonArray, _: Dynamic, _: Dynamic, _: Dynamic| read_only::<()>());
            }
        }
    }
    for &(name, extra) in MAP_MUTATORS {
        match extra {
            0 => {
                reg!(m, name, |_: &mut JsonMap| read_only::<()>());
            }
            1 => {
                reg!(m, name, |_: &mut JsonMap, _: Dynamic| read_only::<()>());
            }
            _ => {
                reg!(m, name, |_: &mut JsonMap, _: Dynamic, _: Dynamic| read_only::<()>());
            }
        }
    }
    module
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
