//! Organisation, location and customer-link exports read from CSV: decoded,
//! mapped, cleaned and hashed in parallel, as `entities.map_records` does for
//! records that arrive as mappings (the Python module keeps the rules).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::normalize::clean;
use crate::sources::csvfile::{decode, detect_encoding, line_at, sniff_delimiter, Encoding};
use crate::sources::SourceError;

/// How one kind of entity is mapped (from `entities.EntitySpec`).
pub struct EntityKind {
    pub fields: Vec<String>,
    pub flags: Vec<String>,
    pub required: Vec<String>,
    /// Customer links are known by contact and customer when they have no id.
    pub customer_link: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    pub line: u64,
    pub external_id: String,
    pub values: Vec<String>,
    /// Non-empty unmapped columns, in column order.
    pub extra: Vec<(String, String)>,
    pub deleted: bool,
    pub hash: i64,
}

#[derive(Clone, Copy, PartialEq)]
enum Col {
    Extra,
    Ignore,
    ExternalId,
    Deleted,
    Flag(usize),
    Field(usize, bool),
}

const TRUTHY: [&str; 10] = [
    "1", "true", "yes", "y", "t", "x", "deleted", "delete", "d", "removed",
];

/// 'Y', 'N' or 'NA' as `entities.flag_value` reads a role flag.
pub fn flag_value(raw: &str) -> Option<&'static str> {
    let v = raw.trim().to_lowercase();
    match v.as_str() {
        "y" | "yes" | "true" | "1" | "t" | "x" => Some("Y"),
        "" | "n" | "no" | "false" | "0" | "f" => Some("N"),
        "na" | "n/a" | "n.a." | "not applicable" | "-" => Some("NA"),
        _ => None,
    }
}

/// The documented entity hash: XXH3-64 (signed) of compact JSON
/// `[[values], [[name, value] sorted by name]]`.
pub fn entity_hash(values: &[String], extra: &[(String, String)]) -> i64 {
    let mut sorted: Vec<&(String, String)> = extra.iter().collect();
    sorted.sort();
    let text = serde_json::to_string(&(values, sorted)).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
}

pub type Rejects = Vec<(u64, String, String)>;

/// The largest value one cell may hold (as for contacts: `Limits::default`).
pub const MAX_FIELD_BYTES: usize = 1 << 20;

/// A string as Python's `repr` quotes it (for messages that must read the
/// same from either reader): single quotes unless the text holds one and no
/// double quote; backslashes and the chosen quote escaped.
pub fn py_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// Reads a whole entity CSV: (rows, rejected (line, reason, raw)). `table`
/// maps lower-cased headings to targets; a heading not in it goes to extra.
pub fn read_csv(
    data: Vec<u8>,
    table: &HashMap<String, String>,
    kind: &EntityKind,
    delimiter: Option<u8>,
) -> Result<(Vec<EntityRow>, Rejects), SourceError> {
    if let Some(f) = kind
        .flags
        .iter()
        .chain(&kind.required)
        .find(|f| !kind.fields.contains(f))
    {
        return Err(SourceError::new(
            0,
            0,
            format!("{f:?} is not one of the fields {:?}", kind.fields),
        ));
    }
    let mut data = crate::sources::utf16::to_utf8(data);
    if data.starts_with(b"\xEF\xBB\xBF") {
        data.drain(..3);
    }
    let enc = detect_encoding(&data);
    let delim = delimiter.unwrap_or_else(|| sniff_delimiter(&data));
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .has_headers(false)
        .from_reader(data.as_slice());
    let mut rec = csv::ByteRecord::new();
    let header: Vec<String> = match rdr.read_byte_record(&mut rec) {
        Ok(true) => rec
            .iter()
            .enumerate()
            .map(|(i, h)| {
                decode(h, enc)
                    .map(|s| s.into_owned())
                    .map_err(|_| SourceError::new(1, i as u64 + 1, "header is not valid text"))
            })
            .collect::<Result<_, _>>()?,
        Ok(false) => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(SourceError::new(1, 0, format!("cannot read header: {e}"))),
    };
    let cols = plan(&header, table, kind);
    let mut raw: Vec<(u64, csv::ByteRecord)> = Vec::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            // A blank line is no record (as a mapping reader skips it).
            Ok(true) if rec.len() == 1 && rec[0].is_empty() => {}
            Ok(true) => {
                let line = rec.position().map(|p| line_at(&data, p)).unwrap_or(0);
                raw.push((line, rec.clone()));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(SourceError::new(
                    line,
                    0,
                    format!("cannot split the file into rows: {e}"),
                ));
            }
        }
    }
    let results: Vec<Result<EntityRow, (u64, String, String)>> = raw
        .par_iter()
        .map(|(line, r)| map_row(*line, r, &header, &cols, kind, enc, delim))
        .collect();
    let mut rows = Vec::with_capacity(results.len());
    let mut rejected = Vec::new();
    for r in results {
        match r {
            Ok(row) => rows.push(row),
            Err(e) => rejected.push(e),
        }
    }
    Ok((rows, rejected))
}

fn plan(header: &[String], table: &HashMap<String, String>, kind: &EntityKind) -> Vec<Col> {
    let mut taken: HashSet<String> = HashSet::new();
    header
        .iter()
        .map(|h| {
            let key = h.trim().trim_start_matches('\u{feff}').to_lowercase();
            let mut t = table.get(&key).map(String::as_str).unwrap_or("extra");
            if t != "extra" && t != "ignore" {
                if taken.contains(t) {
                    t = "extra";
                } else {
                    taken.insert(t.to_string());
                }
            }
            match t {
                "extra" => Col::Extra,
                "ignore" => Col::Ignore,
                "external_id" => Col::ExternalId,
                "deleted" => Col::Deleted,
                other => {
                    if let Some(i) = kind.flags.iter().position(|f| f == other) {
                        Col::Flag(kind.fields.iter().position(|f| f == other).unwrap_or(i))
                    } else if let Some(i) = kind.fields.iter().position(|f| f == other) {
                        Col::Field(i, other == "notes")
                    } else {
                        Col::Extra
                    }
                }
            }
        })
        .collect()
}

fn raw_text(header: &[String], r: &csv::ByteRecord, enc: Encoding) -> String {
    let mut out = String::new();
    for (i, f) in r.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let name = header.get(i).map(String::as_str).unwrap_or("?");
        out.push_str(name);
        out.push('=');
        match decode(f, enc) {
            Ok(v) => out.push_str(&v),
            Err(_) => out.push_str(&String::from_utf8_lossy(f)),
        }
        if out.len() > 2000 {
            break;
        }
    }
    let mut end = out.len().min(2000);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn map_row(
    line: u64,
    r: &csv::ByteRecord,
    header: &[String],
    cols: &[Col],
    kind: &EntityKind,
    enc: Encoding,
    delim: u8,
) -> Result<EntityRow, (u64, String, String)> {
    let reject = |why: String| (line, why, raw_text(header, r, enc));
    // Cells past the header are an error only when they hold something (a
    // trailing delimiter is common in exports and loses nothing).
    if r.iter().skip(header.len()).any(|f| !f.is_empty()) {
        return Err(reject(format!(
            "{} fields where the header has {} (is a {:?} inside a value not quoted?)",
            r.len(),
            header.len(),
            delim as char
        )));
    }
    let mut values = vec![String::new(); kind.fields.len()];
    let mut extra = Vec::new();
    let mut ext = String::new();
    let mut deleted = false;
    for (i, col) in cols.iter().enumerate() {
        let bytes = r.get(i).unwrap_or(b"");
        let v = decode(bytes, enc)
            .map_err(|_| reject(format!("column '{}' is not valid UTF-8", header[i])))?;
        if v.len() > MAX_FIELD_BYTES {
            return Err(reject(format!(
                "column '{}' holds {} bytes (more than {MAX_FIELD_BYTES})",
                header[i],
                v.len()
            )));
        }
        if v.contains('\0') {
            return Err(reject(format!(
                "NUL byte in column {}",
                py_repr(&header[i])
            )));
        }
        match *col {
            Col::Field(k, multiline) => values[k] = clean(&v, multiline),
            Col::Extra => {
                if !v.is_empty() {
                    // A repeated heading keeps its last value, as a mapping would.
                    match extra.iter_mut().find(|(k, _)| *k == header[i]) {
                        Some(slot) => slot.1 = v.into_owned(),
                        None => extra.push((header[i].clone(), v.into_owned())),
                    }
                }
            }
            Col::ExternalId => ext = clean(&v, false),
            Col::Deleted => deleted = TRUTHY.contains(&v.trim().to_lowercase().as_str()),
            Col::Flag(k) => match flag_value(&v) {
                Some(f) => values[k] = f.to_string(),
                None => {
                    return Err(reject(format!(
                        "{}: {} is not Y, N or NA",
                        kind.fields[k],
                        py_repr(&v)
                    )))
                }
            },
            Col::Ignore => {}
        }
    }
    for f in &kind.flags {
        if let Some(k) = kind.fields.iter().position(|x| x == f) {
            if values[k].is_empty() {
                values[k] = "N".to_string();
            }
        }
    }
    let missing: Vec<&String> = kind
        .required
        .iter()
        .filter(|f| {
            kind.fields
                .iter()
                .position(|x| x == *f)
                .is_some_and(|k| values[k].is_empty())
        })
        .collect();
    if !missing.is_empty() && (!deleted || ext.is_empty()) {
        let names: Vec<String> = missing.iter().map(|f| f.replace('_', " ")).collect();
        return Err(reject(format!("empty {}", names.join(" and "))));
    }
    if ext.is_empty() {
        if kind.customer_link {
            let get = |name: &str| {
                kind.fields
                    .iter()
                    .position(|x| x == name)
                    .map(|k| values[k].as_str())
                    .unwrap_or("")
            };
            ext = format!("{}|{}", get("contact_ref"), get("customer"));
        } else {
            return Err(reject("empty external id".to_string()));
        }
    }
    let hash = entity_hash(&values, &extra);
    Ok(EntityRow {
        line,
        external_id: ext,
        values,
        extra,
        deleted,
        hash,
    })
}

/// `json.dumps(extra, ensure_ascii=False, sort_keys=True)` as the store
/// writes an entity's `extra` ("{}" when empty).
pub fn extra_json(extra: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = extra.iter().collect();
    sorted.sort();
    crate::pipeline::json_object(sorted.into_iter(), ", ", ": ")
}

/// For an import into an empty table (every record is new): the rows to
/// create in file order, with later repeats of an external id rejected as
/// `entities.plan_entities` rejects them; deleted rows are only counted.
pub struct Creates {
    pub rows: Vec<usize>,
    pub duplicates: Rejects,
    pub deleted: usize,
}

pub fn plan_creates(rows: &[EntityRow]) -> Creates {
    let mut seen: HashMap<&str, u64> = HashMap::with_capacity(rows.len());
    let mut out = Creates {
        rows: Vec::with_capacity(rows.len()),
        duplicates: Vec::new(),
        deleted: 0,
    };
    for (i, r) in rows.iter().enumerate() {
        if let Some(first) = seen.get(r.external_id.as_str()) {
            out.duplicates.push((
                r.line,
                format!(
                    "duplicate external id {} (first seen at line {first})",
                    py_repr(&r.external_id)
                ),
                String::new(),
            ));
            continue;
        }
        seen.insert(&r.external_id, r.line);
        if r.deleted {
            out.deleted += 1;
        } else {
            out.rows.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> EntityKind {
        EntityKind {
            fields: vec!["name".into(), "notes".into()],
            flags: vec![],
            required: vec![],
            customer_link: false,
        }
    }

    fn table() -> HashMap<String, String> {
        [("id", "external_id"), ("name", "name"), ("note", "notes")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn maps_cleans_and_keeps_extra_in_column_order() {
        let data = b"ID,Name,ABN,Note\nO1,  Acme   Pty ,123,\"a\nb\"\nO2,Beta,,\n".to_vec();
        let (rows, rej) = read_csv(data, &table(), &org(), None).unwrap();
        assert!(rej.is_empty());
        assert_eq!(rows[0].external_id, "O1");
        assert_eq!(rows[0].values[0], "Acme Pty");
        assert_eq!(rows[0].extra, vec![("ABN".to_string(), "123".to_string())]);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[1].line, 4);
        assert!(rows[1].extra.is_empty());
    }

    #[test]
    fn rejects_with_line_and_reason_and_keeps_going() {
        let data = b"ID,Name\n,NoId\nO2,Ok\nO3,a,b\n".to_vec();
        let (rows, rej) = read_csv(data, &table(), &org(), None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rej[0].0, 2);
        assert_eq!(rej[0].1, "empty external id");
        assert_eq!(rej[1].0, 4);
        assert!(rej[1].1.contains("3 fields"));
    }

    #[test]
    fn creates_skip_repeats_and_count_deletes() {
        let data = b"ID,Name,Deleted\nO1,A,\nO2,B,yes\nO1,C,\nO3,D,\n".to_vec();
        let mut t = table();
        t.insert("deleted".into(), "deleted".into());
        let (rows, _) = read_csv(data, &t, &org(), None).unwrap();
        let c = plan_creates(&rows);
        assert_eq!(c.rows, vec![0, 3]);
        assert_eq!(c.deleted, 1);
        assert_eq!(c.duplicates[0].0, 4);
        assert_eq!(
            c.duplicates[0].1,
            "duplicate external id 'O1' (first seen at line 2)"
        );
    }

    #[test]
    fn extra_json_is_sorted_with_python_separators() {
        let e = vec![
            ("b".to_string(), "2".to_string()),
            ("a\"".to_string(), "é".to_string()),
        ];
        assert_eq!(extra_json(&e), "{\"a\\\"\": \"é\", \"b\": \"2\"}");
        assert_eq!(extra_json(&[]), "{}");
    }

    #[test]
    fn flags_read_as_python_does() {
        assert_eq!(flag_value(" Yes "), Some("Y"));
        assert_eq!(flag_value(""), Some("N"));
        assert_eq!(flag_value("N/A"), Some("NA"));
        assert_eq!(flag_value("maybe"), None);
    }
}
