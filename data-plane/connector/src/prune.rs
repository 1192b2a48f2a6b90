//! Parsing a list answer without the fields no table reads. Some APIs embed large objects in every item
//! (GitHub's organisation issue list carries each issue's whole repository, over half the bytes):
//! skipping them while parsing saves the time and memory of building values only to drop them.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `body` as JSON; when it is a list, its objects without the fields named in `unread`.
pub fn parse(body: &[u8], unread: &[&str]) -> serde_json::Result<Value> {
    if unread.is_empty() {
        return serde_json::from_slice(body);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Pruned { unread, depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A value at `depth`: 0 is the answer, 1 an item of a list answer (whose `unread` fields are skipped).
#[derive(Clone, Copy)]
struct Pruned<'a> {
    unread: &'a [&'a str],
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        if self.depth == 0 {
            while let Some(item) = seq.next_element_seed(Pruned { depth: 1, ..self })? {
                items.push(item);
            }
        } else {
            while let Some(item) = seq.next_element::<Value>()? {
                items.push(item);
            }
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.depth == 1 && self.unread.contains(&key.as_str()) {
                map.next_value::<IgnoredAny>()?;
            } else {
                out.insert(key, map.next_value::<Value>()?);
            }
        }
        Ok(Value::Object(out))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn list_items_lose_the_unread_fields_and_keep_the_rest() {
        let body = json!([
            {"number": 1, "repository": {"name": "api", "owner": {"login": "acme"}}, "user": {"login": "ada", "repository": 1}},
            {"number": 2.5, "title": null, "labels": [{"name": "bug"}], "ok": true},
            "text",
        ]);
        let parsed = super::parse(body.to_string().as_bytes(), &["repository"]).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"number": 1, "user": {"login": "ada", "repository": 1}},
                {"number": 2.5, "title": null, "labels": [{"name": "bug"}], "ok": true},
                "text",
            ])
        );
    }

    #[test]
    fn answers_that_are_not_lists_are_parsed_whole_and_bad_json_is_an_error() {
        let object = json!({"repository": {"name": "api"}, "items": [{"repository": 1}]});
        assert_eq!(super::parse(object.to_string().as_bytes(), &["repository"]).unwrap(), object);
        assert!(super::parse(b"[{\"a\": 1}", &["repository"]).is_err());
        assert!(super::parse(b"[1] trailing", &["repository"]).is_err());
    }
}
