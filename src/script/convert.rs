//! JSON ↔ Rhai values.

use rhai::{Array, Dynamic, Map};
use serde_json::Value;

/// Converts JSON into plain Rhai values (a deep copy): objects become maps, arrays arrays, integers `i64`, other
/// numbers `f64`, `null` becomes `()`. Used for rule state and parameters; observation bodies are not copied but
/// viewed ([`super::json::view`]).
pub fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(a) => {
            let arr: Array = a.iter().map(to_dynamic).collect();
            Dynamic::from_array(arr)
        }
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.as_str().into(), to_dynamic(v));
            }
            Dynamic::from_map(m)
        }
    }
}

/// Converts a Rhai value into JSON. JSON views ([`super::json`]) become the JSON they show; values with no JSON form
/// (functions, other custom types) become their text.
pub fn to_json(d: &Dynamic) -> Value {
    if d.is_unit() {
        return Value::Null;
    }
    if let Some(v) = super::json::view_to_json(d) {
        return v;
    }
    if let Ok(b) = d.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = d.as_int() {
        return Value::from(i);
    }
    if let Ok(f) = d.as_float() {
        return serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null);
    }
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return Value::String(s.as_str().to_owned());
    }
    if d.is_array() {
        let a = d.read_lock::<Array>().map(|a| a.iter().map(to_json).collect()).unwrap_or_default();
        return Value::Array(a);
    }
    if d.is_map() {
        let mut o = serde_json::Map::new();
        if let Some(m) = d.read_lock::<Map>() {
            for (k, v) in m.iter() {
                o.insert(k.as_str().to_owned(), to_json(v));
            }
        }
        return Value::Object(o);
    }
    if d.is_char() {
        return Value::String(d.to_string());
    }
    Value::String(d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        assert_eq!(to_json(&to_dynamic(&v)), v);
    }
}
