//! The parsed JSON of an answer (a poll's body, a follow-up's body, an event): [`Doc`].
//!
//! A `Doc` is a `sonic_rs` document: its strings live in one buffer shared by the whole document and its objects
//! are arrays of key/value pairs in the order of the text, so parsing the `/jobs/overview` of 1,000 jobs takes a
//! fraction of what building a `serde_json::Value` (a `String` per key and value, a `BTreeMap` per object) does.
//! The document is never changed once parsed; rules read it through views (src/script/json.rs) that point into it.
//!
//! Object keys keep the order of the text. When a key appears more than once in one object, reading it gives the
//! first value (as `sonic_rs` does; `serde_json` keeps the last); iterating the object lists every pair. Looking a
//! key up scans the object's pairs up to the first of that name, which is fastest for the small objects of REST
//! answers; an object with more than [`INDEXED_KEYS`] keys gets an index on its first lookup through [`Doc`], so
//! that reading many keys of a large object does not cost the square of their number.

use std::collections::HashMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sonic_rs::{JsonContainerTrait, JsonNumberTrait, ValueRef};

/// One value of a document (an object, an array, a string, a number, a bool or `null`).
pub type DocValue = sonic_rs::Value;

/// How deeply arrays and objects may nest in a document: as `serde_json`'s limit, so that no answer makes the
/// recursive functions that read documents (conversion, comparison, serialisation) run out of stack.
pub const MAX_DEPTH: usize = 128;

/// Objects with more keys than this get a key index on their first lookup through a rule's view (src/script/json.rs).
pub const INDEXED_KEYS: usize = 32;

/// A parsed JSON document, read-only (see the module docs).
pub struct Doc {
    root: DocValue,
    /// The key indexes of the large objects of this document looked up so far, by the object's address.
    indexes: Mutex<HashMap<usize, Arc<KeyIndex>>>,
}

/// Why bytes are not a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DocError {
    /// What is wrong, with the line and column (as `expected value at line 1 column 1`).
    pub message: String,
    /// The line (from 1) where the problem was found; 0 when it has no place.
    pub line: usize,
    /// The column (from 1) where the problem was found; 0 when it has no place.
    pub column: usize,
}

impl Doc {
    /// Parses one JSON value (whitespace around it allowed). Errors name the line and column; a document nested
    /// more than [`MAX_DEPTH`] levels is refused.
    pub fn parse(bytes: &[u8]) -> Result<Doc, DocError> {
        if too_deep(bytes) {
            return Err(DocError {
                message: format!("arrays and objects nested more than {MAX_DEPTH} levels deep"),
                line: 0,
                column: 0,
            });
        }
        let root: DocValue = sonic_rs::from_slice(bytes).map_err(|e| DocError {
            // The first line: the parser adds an excerpt of the text on the next ones.
            message: e.to_string().lines().next().unwrap_or_default().trim_end().to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        Ok(Doc::from_value(root))
    }

    /// A document of `value`. Cloning a value of a parsed document is cheap and shares its storage, so
    /// `Doc::from_value(entry.clone())` makes a document of one entry of another (a job of `/jobs/overview`).
    pub fn from_value(value: DocValue) -> Doc {
        Doc { root: value, indexes: Mutex::new(HashMap::new()) }
    }

    /// The document of a value that serializes to JSON (a `serde_json` value, a pushed event; for cold paths:
    /// tests, built answers), written once as JSON text and parsed. Keys come in the order the value writes them.
    pub fn from_json<T: Serialize + ?Sized>(v: &T) -> Doc {
        // serde_json's output is valid JSON: parsing it cannot fail, except for a value nested deeper than
        // MAX_DEPTH (built in code: what came from outside passed serde_json's or this parser's limit), which
        // becomes `null`.
        let text = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
        Doc::parse(&text).unwrap_or_else(|_| Doc::from_value(DocValue::new()))
    }

    /// The document as a `serde_json` value (a copy; for cold paths).
    pub fn to_json(&self) -> serde_json::Value {
        to_json(&self.root)
    }

    /// The top value.
    pub fn root(&self) -> &DocValue {
        &self.root
    }

    /// The top value's field `key` when the top value is an object (the first one of that name), else `None`.
    pub fn get(&self, key: &str) -> Option<&DocValue> {
        field(&self.root, key)
    }

    /// `obj[key]` for an object of this document: as [`field`], with an index for objects of more than
    /// [`INDEXED_KEYS`] keys, built on the first lookup and kept with the document.
    ///
    /// # Safety
    ///
    /// `obj` must be a value of this document (reached from [`Doc::root`]): the index holds pointers into it.
    pub(crate) unsafe fn field_of<'a>(&'a self, obj: &'a DocValue, key: &str) -> Option<&'a DocValue> {
        let o = obj.as_object()?;
        if o.len() <= INDEXED_KEYS {
            return o.get(&key);
        }
        let at = obj as *const DocValue as usize;
        let index = {
            let mut cache = self.indexes.lock();
            cache.entry(at).or_insert_with(|| Arc::new(KeyIndex::new(obj))).clone()
        };
        // SAFETY: the index points into `obj`, a value of this document (the caller's promise), which lives and is
        // unchanged as long as `self`.
        unsafe { index.get(key) }
    }

    /// How many objects of this document have a key index (for tests).
    #[cfg(test)]
    pub(crate) fn indexed_objects(&self) -> usize {
        self.indexes.lock().len()
    }

    /// A compact JSON text of the document.
    pub fn to_text(&self) -> String {
        sonic_rs::to_string(&self.root).unwrap_or_else(|_| "null".into())
    }
}

/// `obj[key]` (the first pair of that name) by a scan of the pairs; `None` when `obj` is not an object or has no
/// such key.
pub fn field<'a>(obj: &'a DocValue, key: &str) -> Option<&'a DocValue> {
    // sonic-rs's own lookup: a scan of the pairs up to the first of that name.
    obj.as_object()?.get(&key)
}

/// The keys of a large object, sorted, with where their values are: pointers into the document.
struct KeyIndex {
    /// `(key, value)` sorted by key; for a repeated key, in document order (the first one wins).
    pairs: Vec<(NonNull<str>, NonNull<DocValue>)>,
}

// SAFETY: the pointers point into a document that is never changed and outlives the index (it is kept in the
// document); `DocValue` is `Send + Sync`.
unsafe impl Send for KeyIndex {}
// SAFETY: as for `Send`.
unsafe impl Sync for KeyIndex {}

impl KeyIndex {
    fn new(obj: &DocValue) -> KeyIndex {
        let mut pairs: Vec<(NonNull<str>, NonNull<DocValue>)> = match obj.as_object() {
            Some(o) => o.iter().map(|(k, v)| (NonNull::from(k), NonNull::from(v))).collect(),
            None => Vec::new(),
        };
        // SAFETY: the pointers were made just above from references into `obj`, which outlives this function.
        pairs.sort_by(|a, b| unsafe { a.0.as_ref().cmp(b.0.as_ref()) });
        KeyIndex { pairs }
    }

    /// # Safety
    ///
    /// The object the index was built from must still be alive and unchanged.
    unsafe fn get<'a>(&self, key: &str) -> Option<&'a DocValue> {
        // SAFETY (both blocks): the caller's promise.
        let at = self.pairs.partition_point(|(k, _)| unsafe { k.as_ref() } < key);
        let (k, v) = self.pairs.get(at)?;
        unsafe { (k.as_ref() == key).then_some(v.as_ref()) }
    }
}

/// Whether arrays and objects nest more than [`MAX_DEPTH`] levels in the JSON text `bytes`. Checked before the
/// parser (which recurses per level) sees the text, so that no answer can make it run out of stack.
///
/// The text is read in blocks of 64 bytes, each turned into bit masks (quotes, backslashes, brackets) the way
/// simdjson does: escaped quotes are found from the runs of backslashes, the bytes inside strings from a prefix XOR
/// of the quotes, and the brackets outside strings then change the depth. For valid JSON this is its exact depth;
/// for text that is not JSON the parser stops at the first error, before any deeper level than this scan saw.
fn too_deep(bytes: &[u8]) -> bool {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let (mut in_string, mut escaped, mut depth) = (0u64, 0u64, 0i64);
    let mut chunks = bytes.chunks_exact(64);
    let mut last = [b' '; 64];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let blocks = chunks.by_ref().map(|c| <&[u8; 64]>::try_from(c).unwrap_or(&[b' '; 64]));
    for block in blocks.chain(std::iter::once(&last)) {
        let Masks { quote, backslash, open, close } = masks(block);
        // The characters escaped by a backslash: those after an odd run of backslashes (simdjson's method).
        let esc = if backslash == 0 && escaped == 0 {
            0
        } else {
            let bs = backslash & !escaped;
            let follows = (bs << 1) | escaped;
            let odd_starts = bs & !EVEN & !follows;
            let (even_ends, overflow) = odd_starts.overflowing_add(bs);
            escaped = u64::from(overflow);
            (EVEN ^ (even_ends << 1)) & follows
        };
        let mut inside = quote & !esc;
        for shift in [1, 2, 4, 8, 16, 32] {
            inside ^= inside << shift;
        }
        inside ^= in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let (open, close) = (open & !inside, close & !inside);
        if open == 0 && close == 0 {
            continue;
        }
        if depth + i64::from(open.count_ones()) <= MAX_DEPTH as i64 {
            depth += i64::from(open.count_ones()) - i64::from(close.count_ones());
            continue;
        }
        let mut bits = open | close;
        while bits != 0 {
            let at = bits.trailing_zeros();
            if open >> at & 1 == 1 {
                depth += 1;
                if depth > MAX_DEPTH as i64 {
                    return true;
                }
            } else {
                depth -= 1;
            }
            bits &= bits - 1;
        }
    }
    false
}

/// Where the quotes, backslashes, opening brackets (`[`, `{`) and closing brackets (`]`, `}`) of a block are: bit `i`
/// for byte `i`.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Masks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
}

/// [`Masks`] of `block`, 16 bytes at a time with SSE2 (part of every x86-64 processor).
#[cfg(target_arch = "x86_64")]
fn masks(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    let mut m = Masks { quote: 0, backslash: 0, open: 0, close: 0 };
    // SAFETY: SSE2 is always there on x86-64; each load reads 16 of the block's 64 bytes (unaligned loads).
    unsafe {
        let (quote, backslash) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
        // `[` and `{` differ only in bit 5, as do `]` and `}`.
        let (bit5, open, close) = (_mm_set1_epi8(0x20), _mm_set1_epi8(b'{' as i8), _mm_set1_epi8(b'}' as i8));
        for i in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * i).cast::<__m128i>());
            let folded = _mm_or_si128(v, bit5);
            let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (16 * i);
            m.quote |= bits(_mm_cmpeq_epi8(v, quote));
            m.backslash |= bits(_mm_cmpeq_epi8(v, backslash));
            m.open |= bits(_mm_cmpeq_epi8(folded, open));
            m.close |= bits(_mm_cmpeq_epi8(folded, close));
        }
    }
    m
}

/// [`Masks`] of `block`, a byte at a time.
#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[u8; 64]) -> Masks {
    masks_bytewise(block)
}

/// [`Masks`] of `block`, a byte at a time: the version for other processors, and the reference the SSE2 one is
/// tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_bytewise(block: &[u8; 64]) -> Masks {
    let mut m = Masks { quote: 0, backslash: 0, open: 0, close: 0 };
    for (i, &c) in block.iter().enumerate() {
        m.quote |= u64::from(c == b'"') << i;
        m.backslash |= u64::from(c == b'\\') << i;
        m.open |= u64::from(c | 0x20 == b'{') << i;
        m.close |= u64::from(c | 0x20 == b'}') << i;
    }
    m
}

/// `v` as a `serde_json` value (a copy). A repeated key keeps its first value.
pub fn to_json(v: &DocValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v.as_ref() {
        ValueRef::Null => J::Null,
        ValueRef::Bool(b) => J::Bool(b),
        ValueRef::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64().and_then(serde_json::Number::from_f64).map_or(J::Null, J::Number)
            }
        }
        ValueRef::String(s) => J::String(s.to_owned()),
        ValueRef::Array(a) => J::Array(a.iter().map(to_json).collect()),
        ValueRef::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, v) in o.iter() {
                if !m.contains_key(k) {
                    m.insert(k.to_owned(), to_json(v));
                }
            }
            J::Object(m)
        }
    }
}

impl Clone for Doc {
    /// Shares the document's storage; the key indexes are not copied (they are built again when needed).
    fn clone(&self) -> Self {
        Doc::from_value(self.root.clone())
    }
}

impl PartialEq for Doc {
    /// The same JSON, keys in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Display for Doc {
    /// The compact JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl From<serde_json::Value> for Doc {
    fn from(v: serde_json::Value) -> Self {
        Doc::from_json(&v)
    }
}

impl Serialize for Doc {
    /// As the JSON it was parsed from (keys in the document's order).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.root.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Doc {
    /// From any JSON value of any self-describing format: its text is rebuilt and parsed, so keys keep their
    /// order (recordings replay the document the daemon saw).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut text = Vec::new();
        serde::de::DeserializeSeed::deserialize(Transcode { out: &mut text, depth: 0 }, d)?;
        Doc::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Writes the JSON text of what a deserializer gives.
struct Transcode<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
}

impl Transcode<'_> {
    fn json<T: Serialize + ?Sized, E: serde::de::Error>(self, v: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, v).map_err(E::custom)
    }

    fn nested(&mut self) -> Transcode<'_> {
        Transcode { out: self.out, depth: self.depth + 1 }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(serde::de::Error::custom(format!("JSON nested more than {MAX_DEPTH} levels deep")));
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.json(&v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.json(&v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.json(&v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.json(&v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.json(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(self.nested())?.is_none() {
                if !first {
                    self.out.pop();
                }
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            if !first {
                self.out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.out, &key).map_err(serde::de::Error::custom)?;
            self.out.push(b':');
            map.next_value_seed(self.nested())?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sonic_rs::JsonValueTrait;

    #[test]
    fn parses_and_converts_back() {
        let text = br#" {"b": 1, "a": [true, null, -2, 1.5, "x\u00e9"], "c": {"d": 18446744073709551615}} "#;
        let doc = Doc::parse(text).unwrap();
        assert_eq!(
            doc.to_json(),
            json!({"a": [true, null, -2, 1.5, "xé"], "b": 1, "c": {"d": 18446744073709551615u64}})
        );
        // The document's order, not serde_json's.
        assert_eq!(doc.to_text(), r#"{"b":1,"a":[true,null,-2,1.5,"xé"],"c":{"d":18446744073709551615}}"#);
        assert_eq!(doc.get("b").and_then(|v| v.as_i64()), Some(1));
        assert!(doc.get("zz").is_none());
        assert_eq!(Doc::from_json(&doc.to_json()).to_json(), doc.to_json());
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = Doc::parse(b"{\n  \"a\": }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert!(e.to_string().contains("line 2 column 8"), "{e}");
        // One line (the parser's excerpt of the text is left out): it goes into a poll's error message.
        let e = Doc::parse(b"<html><body>Login</body></html>").unwrap_err();
        assert!(e.to_string().ends_with("at line 1 column 1") && !e.to_string().contains('\n'), "{e}");
        for bad in [&b""[..], b"<html>", b"{\"a\": 1} x", b"[1,", b"\"\xff\""] {
            assert!(Doc::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn block_masks_match_the_bytewise_reference() {
        // Every byte value at every lane edge, and blocks dense with the bytes that matter.
        let mut blocks = Vec::new();
        for b in 0..=255u8 {
            for at in [0, 15, 16, 31, 32, 47, 48, 63] {
                let mut block = [b'a'; 64];
                block[at] = b;
                blocks.push(block);
            }
        }
        let special = b"\"\\[]{}x ";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut block = [0u8; 64];
            for c in block.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *c = special[(seed % special.len() as u64) as usize];
            }
            blocks.push(block);
        }
        for block in &blocks {
            assert_eq!(masks(block), masks_bytewise(block), "{:?}", String::from_utf8_lossy(block));
        }
    }

    #[test]
    fn refuses_documents_nested_too_deeply_without_overflowing() {
        // The parser's frames are large in unoptimised builds: 128 levels take more than a test thread's 2 MB there
        // (a few tens of KB in a release build). The daemon's threads have 8 MB (src/main.rs): so does this one.
        std::thread::Builder::new().stack_size(8 << 20).spawn(nesting).unwrap().join().unwrap();
    }

    fn nesting() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Doc::parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(Doc::parse(deep.as_bytes()).unwrap_err().to_string().contains("nested more than 128"));
        let very = format!("{}{}", "[{\"a\":".repeat(200_000), "1}]".repeat(200_000));
        assert!(Doc::parse(very.as_bytes()).is_err());
        assert!(Doc::parse("[".repeat(1 << 20).as_bytes()).is_err());
        // Brackets inside strings (also after escaped quotes and backslashes) do not count, whatever 64-byte block
        // they fall in.
        let strings = r#"["[[[[[[", "\"[[[[", "\\", "{{{{{{", {"a\\\"[[[": "]]]]"}, "\\\\\"[["]"#;
        for pad in 0..64 {
            let text =
                format!("{}{}{strings}{}", " ".repeat(pad), "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
            assert!(Doc::parse(text.as_bytes()).is_ok(), "{pad}");
            let text = format!("{}{}{strings}{}", " ".repeat(pad), "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
            assert!(Doc::parse(text.as_bytes()).is_err(), "{pad}");
        }
        // A long document whose depth goes up and down across blocks.
        let mut text = String::from("[");
        for i in 0..1000 {
            let d = i % (MAX_DEPTH - 1) + 1;
            text.push_str(&format!("{}\"x{i}\"{},", "[".repeat(d), "]".repeat(d)));
        }
        text.push_str("0]");
        assert!(Doc::parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn a_repeated_key_reads_as_its_first_value() {
        let doc = Doc::parse(br#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(doc.get("a").and_then(|v| v.as_i64()), Some(1));
        assert_eq!(doc.to_json(), json!({"a": 1, "b": 2}));
        let keys: Vec<&str> = doc.root().as_object().unwrap().iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "a"]);
    }

    #[test]
    fn large_objects_are_looked_up_through_an_index() {
        let n = 5_000;
        let mut text = String::from("{");
        for i in 0..n {
            text.push_str(&format!("\"k{i}\": {i},"));
        }
        text.push_str("\"k7\": -7}");
        let doc = Doc::parse(text.as_bytes()).unwrap();
        let root = doc.root();
        for i in (0..n).rev() {
            // SAFETY: `root` is this document's.
            let v = unsafe { doc.field_of(root, &format!("k{i}")) };
            // `k7` twice: the first one.
            assert_eq!(v.and_then(|v| v.as_i64()), Some(i));
        }
        // SAFETY: as above.
        assert!(unsafe { doc.field_of(root, "k5000") }.is_none());
        assert!(unsafe { doc.field_of(root, "") }.is_none());
        assert_eq!(doc.indexes.lock().len(), 1);
    }

    #[test]
    fn serializes_as_json_and_reads_back_in_the_same_order() {
        let doc = Doc::parse(br#"{"z": [1, {"y": null}], "a": "s"}"#).unwrap();
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(text, r#"{"z":[1,{"y":null}],"a":"s"}"#);
        let back: Doc = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.to_text(), text);
        // Through a flattened struct, as recordings are read.
        #[derive(Deserialize)]
        struct Outer {
            #[serde(flatten)]
            inner: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            body: Option<Doc>,
        }
        let o: Outer = serde_json::from_str(r#"{"body": {"z": 1, "a": [2.5, -1, "x"]}}"#).unwrap();
        assert_eq!(o.inner.body.unwrap().to_text(), r#"{"z":1,"a":[2.5,-1,"x"]}"#);
    }

    #[test]
    fn a_part_shares_the_document() {
        let doc = Doc::parse(br#"{"jobs": [{"jid": "a"}, {"jid": "b"}]}"#).unwrap();
        let second = doc.get("jobs").and_then(|j| j.as_array()).map(|a| Doc::from_value(a[1].clone())).unwrap();
        drop(doc);
        assert_eq!(second.get("jid").and_then(|v| v.as_str()), Some("b"));
        assert_eq!(second.to_json(), json!({"jid": "b"}));
    }
}
