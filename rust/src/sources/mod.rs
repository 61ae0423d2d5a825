//! Readers for export files. Each yields records (or quarantined rows) in
//! chunks; a file that cannot be read as a whole is a `SourceError`.

pub mod cells;
pub mod csvfile;
pub mod jsonfile;
pub mod utf16;

use crate::mapping::Mapping;
use crate::model::Record;

/// A whole-file problem: the file is refused.
#[derive(Debug, Clone)]
pub struct SourceError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SourceError {
    pub fn new(line: u64, column: u64, message: impl Into<String>) -> Self {
        SourceError {
            line,
            column,
            message: message.into(),
        }
    }
}

/// A row that could not be read: kept in quarantine with its line and raw text.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
    pub raw: String,
    /// Which record the row was, as far as it can be told.
    pub id: RowId,
}

/// The external id of a quarantined row. In a full snapshot a quarantined row
/// is no absence: its contact is kept; a row that cannot be told at all makes
/// the run skip its deletions (sync.py).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowId {
    /// The id cell was read (the row failed on another cell).
    Read(String),
    /// The id cell of a row with the wrong number of fields: trusted only when
    /// it names a contact the mirror links (the cells may have shifted).
    Guess(String),
    /// Nothing tells which record the row was.
    Unreadable,
    /// Not a record at all (a blank line).
    NotARecord,
}

impl RowId {
    /// The id an id cell's text gives: cleaned, non-empty, no NUL.
    pub fn of_cell(value: Option<&str>) -> RowId {
        match value {
            Some(v) if !v.contains('\0') => {
                let id = crate::normalize::clean(v, false);
                if id.is_empty() {
                    RowId::Unreadable
                } else {
                    RowId::Read(id)
                }
            }
            _ => RowId::Unreadable,
        }
    }
}

pub type Item = Result<Record, Rejected>;

/// Limits that keep memory bounded on hostile input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_field_bytes: usize,
    pub max_raw_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_field_bytes: 1 << 20,
            max_raw_bytes: 4096,
        }
    }
}

pub enum Reader {
    Csv(csvfile::CsvReader),
    Json(jsonfile::JsonReader),
    Ndjson(jsonfile::NdjsonReader),
}

impl Reader {
    pub fn open(
        data: Vec<u8>,
        format: &str,
        mapping: Mapping,
        limits: Limits,
        encoding: Option<&str>,
        delimiter: Option<u8>,
    ) -> Result<Reader, SourceError> {
        match format {
            "csv" => Ok(Reader::Csv(csvfile::CsvReader::open(
                data, mapping, limits, encoding, delimiter,
            )?)),
            "json" => Ok(Reader::Json(jsonfile::JsonReader::open(
                data, mapping, limits,
            )?)),
            "ndjson" | "jsonl" => Ok(Reader::Ndjson(jsonfile::NdjsonReader::open(
                data, mapping, limits,
            )?)),
            other => Err(SourceError::new(
                0,
                0,
                format!("unknown format {other:?} (expected csv, json or ndjson)"),
            )),
        }
    }

    /// The next `n` rows. With a differ, CSV rows whose raw bytes match an
    /// unchanged link come back unbuilt (see `Record::built`).
    pub fn next_chunk(
        &mut self,
        n: usize,
        differ: Option<&std::sync::Mutex<crate::diff::Differ>>,
    ) -> Result<Vec<Item>, SourceError> {
        match self {
            Reader::Csv(r) => r.next_chunk(n, differ),
            Reader::Json(r) => r.next_chunk(n),
            Reader::Ndjson(r) => r.next_chunk(n),
        }
    }

    /// Bytes of the (decoded) text parsed so far, up to `total_bytes`: how
    /// far into the file the reader is, for a progress bar.
    pub fn bytes_read(&self) -> u64 {
        match self {
            Reader::Csv(r) => r.bytes_read(),
            Reader::Json(r) => r.bytes_read(),
            Reader::Ndjson(r) => r.bytes_read(),
        }
    }

    /// Bytes of the (decoded) text in all.
    pub fn total_bytes(&self) -> u64 {
        match self {
            Reader::Csv(r) => r.total_bytes(),
            Reader::Json(r) => r.total_bytes(),
            Reader::Ndjson(r) => r.total_bytes(),
        }
    }

    /// (field, heading) of what the header carries: CSV files only (the
    /// other formats have no header; each record carries its own keys).
    pub fn mapped_columns(&self) -> Option<Vec<(String, String)>> {
        match self {
            Reader::Csv(r) => Some(r.mapped_columns()),
            _ => None,
        }
    }

    pub fn describe(&self) -> Vec<(String, String)> {
        match self {
            Reader::Csv(r) => vec![
                ("encoding".into(), r.encoding.to_string()),
                ("delimiter".into(), (r.delimiter as char).to_string()),
                ("columns".into(), r.header.len().to_string()),
            ],
            Reader::Json(r) => vec![("elements".into(), r.len().to_string())],
            Reader::Ndjson(_) => vec![],
        }
    }
}

pub fn truncate_raw(raw: &str, max: usize) -> String {
    if raw.len() <= max {
        return raw.to_string();
    }
    let mut end = max;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes in all]", &raw[..end], raw.len())
}

/// Refuses a record with a field over the size limit (bounded memory).
pub fn check_size(column: &str, value_len: usize, limits: &Limits) -> Result<(), String> {
    if value_len > limits.max_field_bytes {
        return Err(format!(
            "column {column:?} holds {value_len} bytes, over the limit of {} bytes",
            limits.max_field_bytes
        ));
    }
    Ok(())
}
