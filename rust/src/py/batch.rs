//! `Batch`: one processed chunk (pipeline.rs) held in Rust; only what a rule
//! must look at becomes Python objects. Reading a batch changes nothing else:
//! the import records its creates' links with `Differ.add_created`.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use super::convert::mapping_of;
use super::differ::Differ;
use super::identity::IdentityIndex;
use super::sqlite_lib::{sql_error, SqliteLibrary, Value};
use crate::model::{Record, FIELDS, NFIELDS};
use crate::pipeline::{extra_json, process, Processed};
use crate::sources::cells::item_of_cells;
use crate::sources::Limits;

/// An incoming record and the local contacts its identity keys hit (id, kind).
type Claim<'py> = (Bound<'py, PyDict>, Vec<(i64, u8)>);

fn record_dict<'py>(py: Python<'py>, b: &Processed, i: usize) -> PyResult<Bound<'py, PyDict>> {
    let r = &b.records[i];
    let d = PyDict::new(py);
    d.set_item("external_id", &r.external_id)?;
    d.set_item("line", r.line)?;
    for (k, f) in FIELDS.iter().enumerate() {
        d.set_item(*f, &r.fields[k])?;
    }
    d.set_item("extra", extra_json(&r.extra))?;
    let dv = &b.derived[i];
    d.set_item("phone_e164", &dv.phone_e164)?;
    d.set_item("mobile_e164", &dv.mobile_e164)?;
    d.set_item("hash", r.hash as i64)?;
    if !r.modified.is_empty() {
        d.set_item("modified_at", &r.modified)?;
    }
    if b.partial {
        // An incremental record: what it left out keeps the mirror's value.
        let absent: Vec<&str> = (0..NFIELDS)
            .filter(|k| r.present & (1 << k) == 0)
            .map(|k| FIELDS[k])
            .collect();
        d.set_item("absent_fields", absent)?;
        d.set_item("cleared_extra", &r.cleared)?;
    }
    Ok(d)
}

/// A mapping value as the text a file would hold: None is empty, a bool
/// "true"/"false", anything else its `str()`.
fn cell_text(v: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(if v.is_none() {
        String::new()
    } else if let Ok(s) = v.cast::<PyString>() {
        s.to_string()
    } else if v.is_instance_of::<PyBool>() {
        if v.is_truthy()? {
            "true".into()
        } else {
            "false".into()
        }
    } else {
        v.str()?.to_string()
    })
}

/// Values in a create's contacts row: id, source, external_id, the fields,
/// extra, phone_e164, mobile_e164, hash.
const CREATE_WIDTH: usize = NFIELDS + 7;

/// The contacts row of plain create `k` (id `base_id + k`) into `out`, in the
/// order both insert paths bind it (`create_rows`, `insert_creates`).
fn create_values<'a>(
    b: &'a Processed,
    k: usize,
    base_id: i64,
    source: &'a str,
    out: &mut Vec<Value<'a>>,
) {
    let i = b.creates[k];
    let r: &Record = &b.records[i];
    let d = &b.derived[i];
    out.clear();
    out.push(Value::Int(base_id + k as i64));
    out.push(Value::Text(source));
    out.push(Value::Text(&r.external_id));
    out.extend(r.fields.iter().map(|f| Value::Text(f)));
    out.push(Value::Text(&d.extra_json));
    out.push(Value::Text(&d.phone_e164));
    out.push(Value::Text(&d.mobile_e164));
    out.push(Value::Int(r.hash as i64));
}

/// One processed chunk of incoming records, held in Rust; only what a rule
/// must look at is turned into Python objects.
#[pyclass(module = "contactsync_agent._core")]
pub struct Batch {
    pub(super) inner: Arc<Processed>,
}

impl Batch {
    pub(super) fn new(inner: Processed) -> Self {
        Batch {
            inner: Arc::new(inner),
        }
    }
}

#[pymethods]
impl Batch {
    /// Builds a batch from Python mappings (connectors, the API).
    ///
    /// A value over `max_field_bytes` quarantines its record (as in the file
    /// readers); so does a mapping holding `REJECT_KEY`, whose value is the reason
    /// (a connector that refused the record without holding it, e.g. a vCard
    /// property over the limit). Quarantined raw text is cut at 4 kB. A record is
    /// numbered `first_line` + its position, unless it holds `LINE_KEY` (its own line).
    #[staticmethod]
    #[pyo3(signature = (records, mapping, differ, identity = None, region = "AU", first_line = 1, max_field_bytes = 1 << 20, partial = false))]
    #[allow(clippy::too_many_arguments)]
    fn from_dicts(
        py: Python<'_>,
        records: &Bound<'_, PyList>,
        mapping: HashMap<String, String>,
        differ: &Differ,
        identity: Option<&IdentityIndex>,
        region: &str,
        first_line: u64,
        max_field_bytes: usize,
        partial: bool,
    ) -> PyResult<Batch> {
        let mut mapping = mapping_of(mapping)?;
        mapping.partial = partial;
        let limits = Limits {
            max_field_bytes,
            ..Limits::default()
        };
        let mut items = Vec::with_capacity(records.len());
        let mut cells: Vec<(String, String)> = Vec::new();
        for (i, obj) in records.iter().enumerate() {
            let line = first_line + i as u64;
            let dict = obj
                .cast::<PyDict>()
                .map_err(|_| PyValueError::new_err(format!("record {line} is not a mapping")))?;
            cells.clear();
            for (k, v) in dict.iter() {
                cells.push((k.str()?.to_string(), cell_text(&v)?));
            }
            items.push(
                item_of_cells(line, &mut cells, &mapping, &limits, partial)
                    .map_err(PyValueError::new_err)?,
            );
        }
        let differ = differ.inner.clone();
        let ident = identity.map(|i| i.inner.clone());
        let region = region.to_string();
        let mut inner = py.detach(move || process(items, &differ, ident.as_deref(), &region, None));
        inner.partial = partial;
        Ok(Batch::new(inner))
    }

    #[getter]
    fn total(&self) -> usize {
        self.inner.total
    }

    #[getter]
    fn unchanged(&self) -> usize {
        self.inner.unchanged
    }

    #[getter]
    fn create_count(&self) -> usize {
        self.inner.creates.len()
    }

    /// Quarantined rows that nothing tells apart (no readable external id).
    #[getter]
    fn unidentified(&self) -> usize {
        self.inner.unidentified
    }

    /// [(local id, external id, line)] of linked contacts that quarantined rows
    /// named: kept untouched.
    fn held(&self) -> Vec<(i64, String, u64)> {
        self.inner.held.clone()
    }

    /// [(field, heading)] of what the file's header carries (an unmapped
    /// column as `extra:<heading>`); None for formats
    /// without a header (JSON, NDJSON, mappings).
    fn columns(&self) -> Option<Vec<(String, String)>> {
        self.inner.columns.as_ref().map(|c| c.as_ref().clone())
    }

    /// Change-feed rows (contact id, payload JSON) of the plain creates, ids
    /// from `base_id` on; payloads are written in parallel without the GIL.
    fn create_feed<'py>(
        &self,
        py: Python<'py>,
        base_id: i64,
        source: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let b = &*self.inner;
        let payloads = py.detach(|| b.feed_payloads(source));
        let out = PyList::empty(py);
        for (k, p) in payloads.iter().enumerate() {
            out.append((base_id + k as i64, p))?;
        }
        Ok(out)
    }

    /// The plain creates' contacts rows for `executemany`, as one list:
    /// (id, source, external_id, 14 fields, extra, phone_e164, mobile_e164,
    /// hash), ids from `base_id` on. Links nothing: the caller records the
    /// new links with `Differ.add_created(batch, base_id)`.
    fn create_rows<'py>(
        &self,
        py: Python<'py>,
        base_id: i64,
        source: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let b = &self.inner;
        let out = PyList::empty(py);
        let mut vals = Vec::with_capacity(CREATE_WIDTH);
        for k in 0..b.creates.len() {
            create_values(b, k, base_id, source, &mut vals);
            let row: Vec<Bound<'py, PyAny>> = vals
                .iter()
                .map(|v| match v {
                    Value::Text(s) => Ok(PyString::new(py, s).into_any()),
                    Value::Int(i) => Ok(i.into_pyobject(py)?.into_any()),
                })
                .collect::<PyResult<_>>()?;
            out.append(PyTuple::new(py, row)?)?;
        }
        Ok(out)
    }

    /// Inserts the plain creates' contacts rows (the values `create_rows`
    /// gives, in its order, as ?1..?21) by running the store's `sql` once per
    /// row through `library` on `conn`, inside its open transaction, without
    /// the GIL. Returns the rows inserted; SQLite's failure is raised as
    /// Python's sqlite3 module raises it.
    fn insert_creates(
        &self,
        py: Python<'_>,
        library: &SqliteLibrary,
        conn: &Bound<'_, PyAny>,
        sql: &str,
        base_id: i64,
        source: &str,
    ) -> PyResult<u64> {
        let c = library.conn_of(conn)?;
        let b = &*self.inner;
        let done = py.detach(move || {
            c.run_rows(sql, CREATE_WIDTH, b.creates.len(), |k, vals| {
                create_values(b, k, base_id, source, vals)
            })
        });
        done.map_err(|f| sql_error(py, f))
    }

    /// (local id, organisation_ref, location_ref, position) of the plain creates
    /// that carry an organisation or location key, ids from `base_id` on.
    fn create_relations(&self, base_id: i64) -> Vec<(i64, &str, &str, &str)> {
        self.inner.create_relations(base_id)
    }

    /// External ids of the plain creates, in create order.
    fn create_external_ids(&self) -> Vec<String> {
        self.inner
            .creates
            .iter()
            .map(|&i| self.inner.records[i].external_id.clone())
            .collect()
    }

    /// [(local id, record dict)] of records linked by external id that a rule must decide.
    fn changed<'py>(&self, py: Python<'py>) -> PyResult<Vec<(i64, Bound<'py, PyDict>)>> {
        self.inner
            .changed
            .iter()
            .map(|&(i, id)| Ok((id, record_dict(py, &self.inner, i)?)))
            .collect()
    }

    /// [(record dict, [(contact id, kind)])]: identity-key hits (kind 0 manual, 1 external).
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Vec<Claim<'py>>> {
        self.inner
            .claims
            .iter()
            .map(|(i, hits)| Ok((record_dict(py, &self.inner, *i)?, hits.clone())))
            .collect()
    }

    /// [(manual contact id, differing field, external id)] of near identity matches.
    fn near_misses(&self) -> Vec<(i64, &'static str, String)> {
        self.inner
            .near
            .iter()
            .map(|(i, cid, f)| (*cid, *f, self.inner.records[*i].external_id.clone()))
            .collect()
    }

    /// [(external id, local id or None, line)] of explicit deletes.
    fn deletes(&self) -> Vec<(String, Option<i64>, u64)> {
        self.inner
            .deletes
            .iter()
            .map(|&(i, id)| {
                let r = &self.inner.records[i];
                (r.external_id.clone(), id, r.line)
            })
            .collect()
    }

    /// [(line, reason, raw text)] of rows that could not be taken.
    fn rejected(&self) -> Vec<(u64, String, String)> {
        self.inner
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.clone(), r.raw.clone()))
            .collect()
    }
}
