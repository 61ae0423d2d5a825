//! JSON exports (one array of objects) and NDJSON (one object a line).

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{check_size, truncate_raw, Item, Limits, Rejected, RowId, SourceError};
use crate::mapping::{build_record, Mapping, Target};

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn object_record(
    line: u64,
    obj: &Map<String, Value>,
    raw: &str,
    mapping: &Mapping,
    limits: &Limits,
) -> Item {
    let reject = |reason: String| Rejected {
        line,
        reason,
        raw: truncate_raw(raw, limits.max_raw_bytes),
        id: object_id(obj, mapping, limits),
    };
    let mut texts = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let t = value_text(v);
        check_size(k, t.len(), limits).map_err(reject)?;
        texts.push((mapping.resolve(k), k.as_str(), t));
    }
    build_record(
        line,
        texts.iter().map(|(t, k, v)| (*t, *k, v.as_str())),
        mapping.partial,
    )
    .map_err(reject)
}

/// The external id of an object that cannot be taken (its first key mapped
/// to the external id), if it can be read.
fn object_id(obj: &Map<String, Value>, mapping: &Mapping, limits: &Limits) -> RowId {
    let cell = obj
        .iter()
        .find(|(k, _)| mapping.resolve(k) == Target::ExternalId)
        .map(|(_, v)| value_text(v))
        .filter(|t| t.len() <= limits.max_field_bytes);
    RowId::of_cell(cell.as_deref())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub struct JsonReader {
    data: Vec<u8>,
    /// (start, end, line) of each top-level element.
    spans: Vec<(usize, usize, u64)>,
    pos: usize,
    mapping: Mapping,
    limits: Limits,
}

impl JsonReader {
    pub fn open(data: Vec<u8>, mapping: Mapping, limits: Limits) -> Result<Self, SourceError> {
        let text = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
        let offset = data.len() - text.len();
        let elements: Vec<&RawValue> = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                // Tell a wrong shape from broken syntax.
                let msg = match serde_json::from_slice::<Value>(text) {
                    Ok(v) => format!(
                        "expected a JSON array of objects at the top level, found {}",
                        kind_of(&v)
                    ),
                    Err(_) if e.is_eof() => format!("truncated JSON: {e}"),
                    Err(_) => format!("invalid JSON: {e}"),
                };
                return Err(SourceError::new(e.line() as u64, e.column() as u64, msg));
            }
        };
        let base = text.as_ptr() as usize;
        let mut spans = Vec::with_capacity(elements.len());
        let mut line = 1u64;
        let mut last = 0usize;
        for el in &elements {
            let start = el.get().as_ptr() as usize - base;
            line += memchr::memchr_iter(b'\n', &text[last..start]).count() as u64;
            last = start;
            spans.push((start + offset, start + offset + el.get().len(), line));
        }
        drop(elements);
        Ok(JsonReader {
            data,
            spans,
            pos: 0,
            mapping,
            limits,
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes up to the next element to read (all of them at the end).
    pub fn bytes_read(&self) -> u64 {
        match self.spans.get(self.pos) {
            Some(&(start, _, _)) => start as u64,
            None => self.total_bytes(),
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Item>, SourceError> {
        let end = (self.pos + n).min(self.spans.len());
        let mut out = Vec::with_capacity(end - self.pos);
        for i in self.pos..end {
            let (s, e, line) = self.spans[i];
            let raw = String::from_utf8_lossy(&self.data[s..e]);
            out.push(match serde_json::from_str::<Value>(&raw) {
                Ok(Value::Object(obj)) => {
                    object_record(line, &obj, &raw, &self.mapping, &self.limits)
                }
                Ok(other) => Err(Rejected {
                    line,
                    reason: format!("element {} is {}, not an object", i + 1, kind_of(&other)),
                    raw: truncate_raw(&raw, self.limits.max_raw_bytes),
                    id: RowId::Unreadable,
                }),
                Err(e) => Err(Rejected {
                    line,
                    reason: format!("element {}: {e}", i + 1),
                    raw: truncate_raw(&raw, self.limits.max_raw_bytes),
                    id: RowId::Unreadable,
                }),
            });
        }
        self.pos = end;
        Ok(out)
    }
}

pub struct NdjsonReader {
    data: Vec<u8>,
    pos: usize,
    line: u64,
    mapping: Mapping,
    limits: Limits,
}

impl NdjsonReader {
    pub fn open(mut data: Vec<u8>, mapping: Mapping, limits: Limits) -> Result<Self, SourceError> {
        if data.starts_with(b"\xEF\xBB\xBF") {
            data.drain(..3);
        }
        Ok(NdjsonReader {
            data,
            pos: 0,
            line: 0,
            mapping,
            limits,
        })
    }

    /// Bytes of the lines read so far.
    pub fn bytes_read(&self) -> u64 {
        self.pos.min(self.data.len()) as u64
    }

    pub fn total_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Item>, SourceError> {
        let mut out = Vec::new();
        while out.len() < n && self.pos < self.data.len() {
            let end = memchr::memchr(b'\n', &self.data[self.pos..])
                .map(|i| self.pos + i)
                .unwrap_or(self.data.len());
            let bytes = &self.data[self.pos..end];
            self.pos = end + 1;
            self.line += 1;
            let line = self.line;
            let raw_lossy = String::from_utf8_lossy(bytes);
            let raw = raw_lossy.trim();
            if raw.is_empty() {
                continue;
            }
            let reject = |reason: String| Rejected {
                line,
                reason,
                raw: truncate_raw(raw, self.limits.max_raw_bytes),
                id: RowId::Unreadable,
            };
            if std::str::from_utf8(bytes).is_err() {
                out.push(Err(reject("invalid UTF-8".into())));
                continue;
            }
            out.push(match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(obj)) => {
                    object_record(line, &obj, raw, &self.mapping, &self.limits)
                }
                Ok(other) => Err(reject(format!(
                    "line is {}, not an object",
                    kind_of(&other)
                ))),
                Err(e) => Err(reject(format!(
                    "invalid JSON at column {}: {e}",
                    e.column()
                ))),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mapping() -> Mapping {
        let m: HashMap<String, String> = [("id", "external_id"), ("name", "name")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Mapping::new(&m).unwrap()
    }

    #[test]
    fn json_elements_have_lines() {
        let data =
            b"[\n {\"id\": \"A\", \"name\": \"John Smith\"},\n 42,\n {\"id\": 7}\n]".to_vec();
        let mut r = JsonReader::open(data, mapping(), Limits::default()).unwrap();
        let items = r.next_chunk(10).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().line, 2);
        let bad = items[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("not an object"));
        assert_eq!(items[2].as_ref().unwrap().external_id, "7");
    }

    #[test]
    fn truncated_and_wrong_shape() {
        let e = JsonReader::open(b"[{\"id\": \"A\"".to_vec(), mapping(), Limits::default())
            .err()
            .unwrap();
        assert!(e.message.starts_with("truncated JSON"), "{}", e.message);
        let e = JsonReader::open(b"{\"id\": \"A\"}".to_vec(), mapping(), Limits::default())
            .err()
            .unwrap();
        assert!(e.message.contains("found an object"), "{}", e.message);
    }

    #[test]
    fn ndjson_lines() {
        let data = b"{\"id\":\"A\"}\n\nnot json\n{\"id\":\"B\"}\n".to_vec();
        let mut r = NdjsonReader::open(data, mapping(), Limits::default()).unwrap();
        let items = r.next_chunk(10).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].as_ref().unwrap_err().line, 3);
        assert_eq!(items[1].as_ref().unwrap_err().id, RowId::Unreadable);
        assert_eq!(items[2].as_ref().unwrap().line, 4);
    }

    #[test]
    fn an_object_over_the_limit_keeps_its_id() {
        let limits = Limits {
            max_field_bytes: 8,
            ..Limits::default()
        };
        let data = b"{\"id\":\"A\",\"name\":\"far too long a name\"}\n{\"id\":\"\"}\n".to_vec();
        let mut r = NdjsonReader::open(data, mapping(), limits).unwrap();
        let items = r.next_chunk(10).unwrap();
        assert_eq!(items[0].as_ref().unwrap_err().id, RowId::Read("A".into()));
        assert_eq!(items[1].as_ref().unwrap_err().id, RowId::Unreadable);
    }
}
