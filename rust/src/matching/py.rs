//! Python bindings of the matching engine: record tables in, a result object
//! out. Conversions only; errors become ValueError / OSError, never panics.

use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::compare::level_of;
use super::config::{Config, FieldType};
use super::engine::{self, Output};
use super::prepare::{RawTable, StrCol};
use super::similarity as sim;
use std::collections::HashMap;

use crate::mapping::{Mapping, Target, RELATIONS};
use crate::model::{field_index, FIELDS};
use crate::sources::csvfile::CsvReader;
use crate::sources::{Limits, SourceError};

fn value_str(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if v.is_none() {
        Ok(String::new())
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(s.to_str()?.to_owned())
    } else {
        Ok(v.str()?.to_str()?.to_owned())
    }
}

fn column_of(list: &Bound<'_, PyAny>, n: usize, name: &str) -> PyResult<StrCol> {
    let list = list
        .cast::<PyList>()
        .map_err(|_| PyValueError::new_err(format!("column {name:?} must be a list")))?;
    if list.len() != n {
        return Err(PyValueError::new_err(format!(
            "column {name:?} has {} values for {n} records",
            list.len()
        )));
    }
    let mut col = StrCol::with_capacity(n, n * 10);
    for v in list.iter() {
        if v.is_none() {
            col.push("");
        } else if let Ok(s) = v.cast::<PyString>() {
            col.push(s.to_str()?);
        } else {
            col.push(&value_str(&v)?);
        }
    }
    Ok(col)
}

/// Records to match, stored column by column in Rust.
#[pyclass(module = "contactsync_agent._core", frozen)]
pub struct RecordTable {
    raw: RawTable,
}

#[pymethods]
impl RecordTable {
    /// ids: list of record ids; columns: {name: list of values (str or None)}.
    #[staticmethod]
    fn from_columns(ids: &Bound<'_, PyAny>, columns: &Bound<'_, PyDict>) -> PyResult<RecordTable> {
        let n = ids
            .cast::<PyList>()
            .map_err(|_| PyValueError::new_err("ids must be a list"))?
            .len();
        let ids = column_of(ids, n, "id")?;
        let mut cols = Vec::new();
        for (k, v) in columns.iter() {
            let name: String = k.extract()?;
            cols.push((name.clone(), column_of(&v, n, &name)?));
        }
        Ok(RecordTable {
            raw: RawTable { ids, columns: cols },
        })
    }

    /// Reads a CSV file exactly as `sync` does (encoding, delimiter, the
    /// mapping table of built-in headings plus the source's entries, cleaning)
    /// and keeps `columns`: (name in the table, "field:NAME" for a canonical
    /// field or "column:HEADING" for an unmapped column, case-insensitive).
    /// Without an id column the line number is the id. Returns the table and
    /// what was used: (header, target of each column, id column or None,
    /// encoding, rows rejected, the first few rejections as (line, reason)).
    #[staticmethod]
    #[pyo3(signature = (path, mapping, columns, encoding=None, delimiter=None))]
    fn from_mapped_csv(
        py: Python<'_>,
        path: &str,
        mapping: HashMap<String, String>,
        columns: Vec<(String, String)>,
        encoding: Option<&str>,
        delimiter: Option<&str>,
    ) -> PyResult<(RecordTable, MappedInfo)> {
        let mapping = crate::py::mapping_of(mapping)?;
        let delimiter = crate::py::delimiter_byte(delimiter)?;
        let mut wanted: Vec<Wanted> = Vec::with_capacity(columns.len());
        for (_, spec) in &columns {
            wanted.push(match spec.split_once(':') {
                Some(("field", f)) => Wanted::Field(field_index(f).ok_or_else(|| {
                    PyValueError::new_err(format!("{f:?} is not a canonical field"))
                })?),
                Some(("column", c)) => Wanted::Column(c.trim().to_lowercase()),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "column spec {spec:?}: expected field:NAME or column:HEADING"
                    )))
                }
            });
        }
        let owned = path.to_string();
        let enc = encoding.map(str::to_string);
        let got = py.detach(move || read_mapped_csv(&owned, mapping, &wanted, enc, delimiter));
        let (cols, info) = match got {
            Err(MappedError::Io(e)) => return Err(PyOSError::new_err(format!("{path}: {e}"))),
            Err(MappedError::Source(e)) => return Err(crate::py::source_error(py, path, e)),
            Ok(v) => v,
        };
        let (ids, values) = cols;
        let raw = RawTable {
            ids,
            columns: columns.into_iter().map(|(n, _)| n).zip(values).collect(),
        };
        Ok((RecordTable { raw }, info))
    }

    fn __len__(&self) -> usize {
        self.raw.len()
    }

    #[getter]
    fn columns(&self) -> Vec<String> {
        self.raw.columns.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// (header, target per column, id column, encoding, rejected, first rejections).
type MappedInfo = (
    Vec<String>,
    Vec<String>,
    Option<String>,
    String,
    u64,
    Vec<(u64, String)>,
);

enum Wanted {
    Field(usize),
    Column(String),
}

enum MappedError {
    Io(std::io::Error),
    Source(SourceError),
}

fn target_name(t: Target) -> String {
    match t {
        Target::Field(i) => FIELDS[i].to_string(),
        Target::ExternalId => "external_id".into(),
        Target::Name => "name".into(),
        Target::Deleted => "deleted".into(),
        Target::Extra => "extra".into(),
        Target::Ignore => "ignore".into(),
        Target::Relation(k) => RELATIONS[k].to_string(),
        Target::Modified => "modified_at".into(),
    }
}

type MappedColumns = (StrCol, Vec<StrCol>);

/// Rows per chunk the reader thread splits and maps (see `read_mapped_csv`).
const READ_CHUNK: usize = 32_768;

/// Records per piece a worker copies into columns.
const COLUMN_PIECE: usize = 4_096;

/// What a worker made of one piece of a chunk: ids, the wanted columns, the
/// rows rejected and the first few of them (line, reason).
type Piece = (StrCol, Vec<StrCol>, u64, Vec<(u64, String)>);

/// The columns `wanted` of a piece of records: values copied into the piece's
/// own columns (the records are dropped on the worker that built them).
/// `extra_keys`, per wanted unmapped column: the exact keys of a record's
/// `extra` that name it (case and spaces aside), in `extra`'s sorted order.
fn piece_columns(
    items: Vec<crate::sources::Item>,
    wanted: &[Wanted],
    extra_keys: &[Vec<String>],
) -> Piece {
    let mut ids = StrCol::with_capacity(items.len(), items.len() * 8);
    let mut cols: Vec<StrCol> = wanted
        .iter()
        .map(|_| StrCol::with_capacity(items.len(), items.len() * 10))
        .collect();
    let mut rejected = 0u64;
    let mut first: Vec<(u64, String)> = Vec::new();
    for item in items {
        match item {
            Ok(rec) => {
                ids.push(&rec.external_id);
                for ((w, col), keys) in wanted.iter().zip(cols.iter_mut()).zip(extra_keys) {
                    match w {
                        Wanted::Field(i) => col.push(&rec.fields[*i]),
                        Wanted::Column(_) => col.push(
                            keys.iter()
                                .find_map(|k| {
                                    rec.extra
                                        .binary_search_by(|(x, _)| x.as_str().cmp(k))
                                        .ok()
                                        .map(|at| rec.extra[at].1.as_str())
                                })
                                .unwrap_or(""),
                        ),
                    }
                }
            }
            Err(r) => {
                rejected += 1;
                if first.len() < 10 {
                    first.push((r.line, r.reason));
                }
            }
        }
    }
    (ids, cols, rejected, first)
}

/// Reads the file as `sync` does: a UTF-8 or Windows-1252 file streamed (the
/// reader thread splits rows while the pool maps the previous chunk and
/// copies its columns), a UTF-16 one decoded whole first.
fn read_mapped_csv(
    path: &str,
    mapping: Mapping,
    wanted: &[Wanted],
    encoding: Option<String>,
    delimiter: Option<u8>,
) -> Result<(MappedColumns, MappedInfo), MappedError> {
    use rayon::prelude::*;
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path).map_err(MappedError::Io)?;
    let mut head = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut head)
        .map_err(MappedError::Io)?;
    let (mut rdr, utf16) = if crate::sources::utf16::bom_encoding(&head).is_none() {
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(MappedError::Io)?;
        let rdr = CsvReader::open_file_with(
            file,
            mapping.clone(),
            Limits::default(),
            encoding.as_deref(),
            delimiter,
            true,
        )
        .map_err(MappedError::Source)?;
        (rdr, None)
    } else {
        drop(file);
        let (data, utf16) = crate::sources::utf16::read_file(path).map_err(MappedError::Io)?;
        let rdr = CsvReader::open_with(
            data,
            mapping.clone(),
            Limits::default(),
            Some("utf-8"),
            delimiter,
            true,
        )
        .map_err(MappedError::Source)?;
        (rdr, utf16)
    };
    let header = rdr.header.clone();
    let targets = mapping.resolve_all(&header);
    let id_column = if rdr.line_ids {
        None
    } else {
        targets
            .iter()
            .position(|t| *t == Target::ExternalId)
            .map(|i| header[i].clone())
    };
    let encoding = utf16
        .map(str::to_string)
        .unwrap_or_else(|| rdr.encoding.to_string());
    // an unmapped column is looked up by the keys `extra` can hold for it
    // (headings and relation names), found once from the header
    let extra_keys: Vec<Vec<String>> = wanted
        .iter()
        .map(|w| match w {
            Wanted::Field(_) => Vec::new(),
            Wanted::Column(c) => {
                let mut keys: Vec<String> = header
                    .iter()
                    .map(String::as_str)
                    .chain(RELATIONS.iter().copied())
                    .filter(|k| k.trim().to_lowercase() == *c)
                    .map(str::to_string)
                    .collect();
                keys.sort();
                keys.dedup();
                keys
            }
        })
        .collect();
    let mut ids = StrCol::new();
    let mut cols: Vec<StrCol> = wanted.iter().map(|_| StrCol::new()).collect();
    let mut rejected = 0u64;
    let mut first: Vec<(u64, String)> = Vec::new();
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<Result<Vec<crate::sources::Item>, SourceError>>(1);
    std::thread::scope(|scope| -> Result<(), MappedError> {
        scope.spawn(move || loop {
            match rdr.next_chunk(READ_CHUNK, None) {
                Ok(items) if items.is_empty() => break,
                Ok(items) => {
                    if tx.send(Ok(items)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        });
        for chunk in rx {
            let items = chunk.map_err(MappedError::Source)?;
            let pieces: Vec<Piece> = items
                .into_par_iter()
                .chunks(COLUMN_PIECE)
                .map(|piece| piece_columns(piece, wanted, &extra_keys))
                .collect();
            for (pid, pcols, prej, pfirst) in pieces {
                ids.append(&pid);
                for (c, p) in cols.iter_mut().zip(&pcols) {
                    c.append(p);
                }
                rejected += prej;
                first.extend(pfirst.into_iter().take(10 - first.len()));
            }
        }
        Ok(())
    })?;
    let targets = targets.into_iter().map(target_name).collect();
    Ok((
        (ids, cols),
        (header, targets, id_column, encoding, rejected, first),
    ))
}

/// The outcome of one run: the pairs above threshold, their explanations,
/// clusters and statistics.
#[pyclass(module = "contactsync_agent._core", frozen)]
pub struct MatchOutput {
    out: Output,
}

impl MatchOutput {
    fn id(&self, i: u32) -> &str {
        self.out.ids.get(i as usize)
    }
    fn check(&self, k: usize) -> PyResult<()> {
        if k >= self.out.pairs.len() {
            return Err(PyIndexError::new_err(format!("pair {k} out of range")));
        }
        Ok(())
    }
}

#[pymethods]
impl MatchOutput {
    fn __len__(&self) -> usize {
        self.out.pairs.len()
    }

    /// (left id, right id, probability, weight) of pair k.
    fn pair(&self, k: usize) -> PyResult<(String, String, f64, f64)> {
        self.check(k)?;
        let (i, j) = self.out.pairs[k];
        Ok((
            self.id(i).into(),
            self.id(j).into(),
            self.out.probs[k],
            self.out.weights[k],
        ))
    }

    /// All pairs at once: (left ids, right ids, probabilities, weights).
    #[allow(clippy::type_complexity)]
    fn arrays(&self) -> (Vec<String>, Vec<String>, Vec<f64>, Vec<f64>) {
        let o = &self.out;
        (
            o.pairs.iter().map(|p| self.id(p.0).to_string()).collect(),
            o.pairs.iter().map(|p| self.id(p.1).to_string()).collect(),
            o.probs.clone(),
            o.weights.clone(),
        )
    }

    /// Pair indices, most probable first (equal probabilities in pair order).
    fn order(&self) -> Vec<usize> {
        let p = &self.out.probs;
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
        order
    }

    /// Per field (name, agreement level, weight counted) for pair k.
    fn explain(&self, k: usize) -> PyResult<Vec<(String, String, f64)>> {
        self.check(k)?;
        Ok(self.out.explain(k))
    }

    #[getter]
    fn prior_weight(&self) -> f64 {
        self.out.model.prior_weight()
    }

    #[getter]
    fn fields(&self) -> Vec<String> {
        self.out.field_names.clone()
    }

    #[getter]
    fn is_link(&self) -> bool {
        self.out.split.is_some()
    }

    /// Clusters of two or more records: (member ids, strongest pair index,
    /// weakest holding pair index).
    fn clusters(&self) -> Vec<(Vec<String>, usize, usize)> {
        self.out
            .clusters
            .iter()
            .map(|c| {
                (
                    c.members.iter().map(|m| self.id(*m).to_string()).collect(),
                    c.strongest,
                    c.weakest,
                )
            })
            .collect()
    }

    /// Blocking and estimation statistics as a JSON object.
    fn stats_json(&self) -> String {
        let s = &self.out.stats;
        let rules: Vec<serde_json::Value> = s
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "rule": r.name, "blocks": r.blocks, "pairs": r.pairs,
                    "pairs_raw": r.pairs_raw, "capped_blocks": r.capped_blocks,
                    "capped_pairs": r.capped_pairs, "largest_block": r.largest_block,
                    "scanned_blocks": r.scanned_blocks,
                    "scanned_block_pairs": r.scanned_block_pairs,
                })
            })
            .collect();
        serde_json::json!({
            "records_left": s.records_left,
            "records_right": s.records_right,
            "rules": rules,
            "pairs_compared": s.pairs_compared,
            "capped_blocks": s.capped_blocks,
            "capped_pairs": s.capped_pairs,
            "pairs_above_threshold": s.pairs_above_threshold,
            "estimated_blocking_recall": s.estimated_recall,
            "clusters": self.out.clusters.len(),
            "distinct_patterns": s.distinct_patterns,
            "u_pairs_sampled": s.u_pairs_sampled,
            "em_iterations": s.em_iterations,
            "prior": s.prior,
            "blocked_prior": s.blocked_prior,
            "true_pairs": s.true_pairs,
            "true_pairs_blocked": s.true_pairs_blocked,
            "seconds": s.seconds.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// The fitted model: per field, level labels with m, u and weight.
    fn model_json(&self) -> String {
        let o = &self.out;
        let fields: Vec<serde_json::Value> = o
            .field_names
            .iter()
            .enumerate()
            .map(|(f, name)| {
                let levels: Vec<serde_json::Value> = o.field_kinds[f]
                    .levels()
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(l, label)| {
                        serde_json::json!({
                            "level": label, "m": o.model.m[f][l], "u": o.model.u[f][l],
                            "weight": o.model.w[f][l],
                            "u_household": o.model.u_household[f][l],
                            "household_weight": o.model.w[f][l] + o.model.household_shift[f][l],
                        })
                    })
                    .collect();
                serde_json::json!({"field": name, "levels": levels})
            })
            .collect();
        serde_json::json!({
            "prior": o.model.prior, "source": o.model.source, "fields": fields,
            "household_keys": o.field_names.iter().zip(&o.model.household_key)
                .filter(|(_, k)| **k).map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "household_pairs": {"non_matches": o.model.household_pairs.0,
                                "matches": o.model.household_pairs.1},
        })
        .to_string()
    }
}

/// How far a `run_match(..., meter=)` is: its phase (0 reading, 1 blocking,
/// 2 comparing, 3 scoring, 4 done) and the pairs compared so far; atomic,
/// read from any thread.
#[pyclass(module = "contactsync_agent._core", frozen)]
#[derive(Default)]
pub struct MatchMeter {
    inner: std::sync::Arc<engine::Progress>,
}

#[pymethods]
impl MatchMeter {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    #[getter]
    fn phase(&self) -> u8 {
        self.inner.phase.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[getter]
    fn pairs(&self) -> u64 {
        self.inner.pairs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs a link (right given) or a dedupe (right None).
#[pyfunction]
#[pyo3(signature = (config_json, left, right = None, label_column = None, meter = None))]
fn run_match(
    py: Python<'_>,
    config_json: &str,
    left: &RecordTable,
    right: Option<&RecordTable>,
    label_column: Option<&str>,
    meter: Option<&MatchMeter>,
) -> PyResult<MatchOutput> {
    let cfg = Config::from_json(config_json).map_err(PyValueError::new_err)?;
    let (l, r) = (&left.raw, right.map(|r| &r.raw));
    let progress = meter.map(|m| m.inner.clone());
    let out = py
        .detach(|| engine::run_with_progress(&cfg, l, r, label_column, progress.as_deref()))
        .map_err(PyValueError::new_err)?;
    Ok(MatchOutput { out })
}

fn kind_of(kind: &str) -> PyResult<FieldType> {
    serde_json::from_value(serde_json::Value::String(kind.to_string()))
        .map_err(|_| PyValueError::new_err(format!("unknown field type {kind:?}")))
}

// ---- comparators, exposed one by one for tests and one-off use

#[pyfunction]
fn jaro_winkler(a: &str, b: &str) -> f64 {
    sim::jaro_winkler(a, b)
}

#[pyfunction]
fn jaro(a: &str, b: &str) -> f64 {
    sim::jaro(a, b)
}

#[pyfunction]
fn damerau_levenshtein(a: &str, b: &str) -> usize {
    sim::damerau_levenshtein(a, b)
}

#[pyfunction]
fn token_set_ratio(a: &str, b: &str) -> f64 {
    sim::token_set_ratio(a, b)
}

#[pyfunction]
fn name_similarity(a: &str, b: &str) -> f64 {
    sim::name_tokens_similarity(a, b)
}

#[pyfunction]
fn nickname_match(a: &str, b: &str) -> bool {
    sim::nickname_match(a, b)
}

#[pyfunction]
fn soundex(word: &str) -> String {
    sim::soundex(word)
}

/// How two dates agree: "exact", "day_month_swapped", "one_digit_off",
/// "same_year", "different"; None when either cannot be read.
#[pyfunction]
fn compare_dates(a: &str, b: &str) -> Option<&'static str> {
    let (a, b) = (sim::parse_date(a)?, sim::parse_date(b)?);
    Some(match sim::compare_dates(a, b) {
        sim::DateAgreement::Exact => "exact",
        sim::DateAgreement::DayMonthSwapped => "day_month_swapped",
        sim::DateAgreement::OneDigitOff => "one_digit_off",
        sim::DateAgreement::SameYear => "same_year",
        sim::DateAgreement::Different => "different",
    })
}

/// Agreement level label of two raw values of a field type ("given_name",
/// "email", ...), normalised as the engine would.
#[pyfunction]
#[pyo3(signature = (kind, a, b, region = "AU"))]
fn compare_values(kind: &str, a: &str, b: &str, region: &str) -> PyResult<&'static str> {
    let k = kind_of(kind)?;
    let (mut na, mut nb) = (String::new(), String::new());
    super::prepare::normalize(k, a, region, &mut na);
    super::prepare::normalize(k, b, region, &mut nb);
    if na.is_empty() || nb.is_empty() {
        return Ok(k.levels()[0]);
    }
    Ok(k.levels()[level_of(k, &na, &nb) as usize])
}

/// A raw value of a field type normalised as the engine compares it ("" when
/// it has none): for writing rows another engine (Splink) can compare.
#[pyfunction]
#[pyo3(signature = (kind, value, region = "AU"))]
fn normalize_value(kind: &str, value: &str, region: &str) -> PyResult<String> {
    let k = kind_of(kind)?;
    let mut out = String::new();
    super::prepare::normalize(k, value, region, &mut out);
    Ok(out)
}

/// The blocking key under which a normalised given name meets its nicknames
/// (`nick(...)`: "bob" and "robert" give "robert").
#[pyfunction]
fn nickname_key(name: &str) -> String {
    super::nicknames::canonical(name.split(' ').next().unwrap_or(name)).to_string()
}

/// The agreement level labels of a field type, from "missing" up.
#[pyfunction]
fn field_levels(kind: &str) -> PyResult<Vec<&'static str>> {
    Ok(kind_of(kind)?.levels().to_vec())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecordTable>()?;
    m.add_class::<MatchOutput>()?;
    m.add_class::<MatchMeter>()?;
    m.add_function(wrap_pyfunction!(run_match, m)?)?;
    m.add_function(wrap_pyfunction!(jaro_winkler, m)?)?;
    m.add_function(wrap_pyfunction!(jaro, m)?)?;
    m.add_function(wrap_pyfunction!(damerau_levenshtein, m)?)?;
    m.add_function(wrap_pyfunction!(token_set_ratio, m)?)?;
    m.add_function(wrap_pyfunction!(name_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(nickname_match, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_value, m)?)?;
    m.add_function(wrap_pyfunction!(nickname_key, m)?)?;
    m.add_function(wrap_pyfunction!(soundex, m)?)?;
    m.add_function(wrap_pyfunction!(compare_dates, m)?)?;
    m.add_function(wrap_pyfunction!(compare_values, m)?)?;
    m.add_function(wrap_pyfunction!(field_levels, m)?)?;
    Ok(())
}
