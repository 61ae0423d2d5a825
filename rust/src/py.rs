//! The PyO3 layer: thin conversions between Python objects and the core.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::diff::{derive, Differ as CoreDiffer, IdentityIndex as CoreIdentity, FLAG_ATTENTION};
use crate::hash::{canonical_bytes, content_hash as core_hash};
use crate::mapping::{build_record, Mapping, Target};
use crate::model::{Record, FIELDS, NFIELDS};
use crate::normalize;
use crate::pipeline::{extra_json, process, Processed};
use crate::sources::{Limits, Reader, RowId, SourceError};

/// A mapping key a connector sets (to the reason) to have `Batch.from_dicts`
/// quarantine that record; no source can name a field so (it starts with NUL).
pub const REJECT_KEY: &str = "\u{0}rejected";
/// A mapping key a connector sets (to a line number) to have `Batch.from_dicts`
/// number that record by its own line in the file (a vCard's first line) rather
/// than by its position; never a field (it starts with NUL).
pub const LINE_KEY: &str = "\u{0}line";

pub(crate) fn source_error(py: Python<'_>, path: &str, e: SourceError) -> PyErr {
    let built = py
        .import("contactsync_agent.errors")
        .and_then(|m| m.getattr("SourceFormatError"))
        .and_then(|cls| cls.call1((path, e.line, e.column, e.message.clone())));
    match built {
        Ok(obj) => PyErr::from_value(obj),
        Err(err) => err,
    }
}

fn fields_vec(fields: Vec<String>) -> PyResult<[String; NFIELDS]> {
    let n = fields.len();
    fields
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("expected {NFIELDS} field values, got {n}")))
}

pub(crate) fn mapping_of(entries: HashMap<String, String>) -> PyResult<Mapping> {
    Mapping::new(&entries).map_err(|e| PyValueError::new_err(format!("mapping: {e}")))
}

// ---------------------------------------------------------------- functions

/// The canonical serialisation of one record (see README, "Content hash").
#[pyfunction]
fn canonical(
    py: Python<'_>,
    fields: Vec<String>,
    extra: Vec<(String, String)>,
) -> PyResult<Py<PyBytes>> {
    let mut extra = extra;
    extra.sort();
    Ok(PyBytes::new(py, &canonical_bytes(&fields_vec(fields)?, &extra)).unbind())
}

/// XXH3-64 of the canonical serialisation, unsigned.
#[pyfunction]
fn content_hash(fields: Vec<String>, extra: Vec<(String, String)>) -> PyResult<u64> {
    let mut extra = extra;
    extra.sort();
    Ok(core_hash(&fields_vec(fields)?, &extra))
}

/// The content hash of an organisation, location or customer link (signed
/// XXH3-64): compact JSON `[[values in the kind's field order], [[name, value]
/// of the extra columns sorted by name]]`, byte for byte what Python's
/// `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes.
#[pyfunction]
fn entity_hash(values: Vec<String>, extra: Vec<(String, String)>) -> i64 {
    crate::entities::entity_hash(&values, &extra)
}

/// A CSV delimiter argument: one byte, or None to sniff it.
pub(crate) fn delimiter_byte(delimiter: Option<&str>) -> PyResult<Option<u8>> {
    match delimiter {
        None => Ok(None),
        Some(d) if d.len() == 1 => Ok(Some(d.as_bytes()[0])),
        Some(d) => Err(PyValueError::new_err(format!(
            "delimiter must be one byte, got {d:?}"
        ))),
    }
}

type EntityTuple = (u64, String, Vec<String>, Vec<(String, String)>, bool, i64);

/// An organisation, location or customer-link CSV file read, mapped, cleaned
/// and hashed off the GIL (`read_entity_csv`).
#[pyclass(module = "contactsync_agent._core", frozen)]
pub struct EntityFile {
    rows: Vec<crate::entities::EntityRow>,
    rejected: crate::entities::Rejects,
    creates: crate::entities::Creates,
}

#[pymethods]
impl EntityFile {
    /// Rows that could not be read: [(line, reason, raw)].
    fn rejected(&self) -> crate::entities::Rejects {
        self.rejected.clone()
    }

    /// Every mapped row: [(line, external id, values, extra pairs, deleted, hash)].
    fn records(&self) -> Vec<EntityTuple> {
        self.rows
            .iter()
            .map(|r| {
                (
                    r.line,
                    r.external_id.clone(),
                    r.values.clone(),
                    r.extra.clone(),
                    r.deleted,
                    r.hash,
                )
            })
            .collect()
    }

    /// For a table without rows of this source: how many rows to create,
    /// the repeats rejected ([(line, reason, raw)]) and the deleted rows.
    fn create_plan(&self) -> (usize, crate::entities::Rejects, usize) {
        (
            self.creates.rows.len(),
            self.creates.duplicates.clone(),
            self.creates.deleted,
        )
    }

    /// The rows to create as `insert_entities` takes them: (id, source,
    /// external id, values..., extra JSON, hash), ids from `base_id` on.
    fn create_rows<'py>(
        &self,
        py: Python<'py>,
        base_id: i64,
        source: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let src = PyString::new(py, source);
        let out = PyList::empty(py);
        for (k, &i) in self.creates.rows.iter().enumerate() {
            let r = &self.rows[i];
            let mut vals: Vec<Bound<'py, PyAny>> = Vec::with_capacity(r.values.len() + 5);
            vals.push((base_id + k as i64).into_pyobject(py)?.into_any());
            vals.push(src.clone().into_any());
            vals.push(PyString::new(py, &r.external_id).into_any());
            for v in &r.values {
                vals.push(PyString::new(py, v).into_any());
            }
            vals.push(PyString::new(py, &crate::entities::extra_json(&r.extra)).into_any());
            vals.push(r.hash.into_pyobject(py)?.into_any());
            out.append(PyTuple::new(py, vals)?)?;
        }
        Ok(out)
    }
}

/// Reads an entity CSV file (UTF-8 or Windows-1252, any delimiter).
#[pyfunction]
#[pyo3(signature = (path, table, fields, flags, required, customer_link, delimiter = None))]
#[allow(clippy::too_many_arguments)]
fn read_entity_csv(
    py: Python<'_>,
    path: &str,
    table: HashMap<String, String>,
    fields: Vec<String>,
    flags: Vec<String>,
    required: Vec<String>,
    customer_link: bool,
    delimiter: Option<&str>,
) -> PyResult<EntityFile> {
    let delimiter = delimiter_byte(delimiter)?;
    let kind = crate::entities::EntityKind {
        fields,
        flags,
        required,
        customer_link,
    };
    let owned = path.to_string();
    let got = py.detach(move || {
        let (data, _) = crate::sources::utf16::read_file(&owned)?;
        Ok::<_, std::io::Error>(
            crate::entities::read_csv(data, &table, &kind, delimiter).map(|(rows, rejected)| {
                let creates = crate::entities::plan_creates(&rows);
                EntityFile {
                    rows,
                    rejected,
                    creates,
                }
            }),
        )
    });
    match got {
        Err(e) => Err(PyOSError::new_err(format!("cannot read {path}: {e}"))),
        Ok(Err(e)) => Err(source_error(py, path, e)),
        Ok(Ok(f)) => Ok(f),
    }
}

#[pyfunction]
fn normalize_name(value: &str) -> String {
    normalize::name_key(value)
}

#[pyfunction]
fn normalize_email(value: &str) -> String {
    normalize::email_key(value)
}

#[pyfunction]
#[pyo3(signature = (value, region = "AU"))]
fn normalize_phone(value: &str, region: &str) -> String {
    normalize::phone_e164(value, region)
}

#[pyfunction]
fn clean_value(value: &str, multiline: bool) -> String {
    normalize::clean(value, multiline)
}

#[pyfunction]
fn split_name(value: &str) -> (String, String) {
    normalize::split_name(value)
}

/// (phone_e164, mobile_e164, identity key) of a record's 14 field values.
#[pyfunction]
#[pyo3(signature = (fields, region = "AU"))]
fn derive_keys(fields: Vec<String>, region: &str) -> PyResult<(String, String, u64)> {
    let d = derive(&fields_vec(fields)?, region);
    Ok((d.phone_e164, d.mobile_e164, d.identity))
}

/// (external id, local id, signed hash, flags) of one link.
type LinkEntry = (String, i64, Option<i64>, u8);
/// An incoming record and the local contacts its identity keys hit (id, kind).
type Claim<'py> = (Bound<'py, PyDict>, Vec<(i64, u8)>);

// ---------------------------------------------------------------- Differ

/// (external id -> local id, source hash) of one source's linked contacts.
#[pyclass(module = "contactsync_agent._core")]
pub struct Differ {
    inner: Arc<Mutex<CoreDiffer>>,
}

#[pymethods]
impl Differ {
    #[new]
    fn new() -> Self {
        Differ {
            inner: Arc::new(Mutex::new(CoreDiffer::default())),
        }
    }

    /// Adds linked contacts: flags bit 0 = needs a rule's attention.
    fn load(
        &self,
        external_ids: Vec<String>,
        local_ids: Vec<i64>,
        hashes: Vec<Option<i64>>,
        flags: Vec<u8>,
    ) -> PyResult<()> {
        let n = external_ids.len();
        if local_ids.len() != n || hashes.len() != n || flags.len() != n {
            return Err(PyValueError::new_err("load: columns differ in length"));
        }
        let mut d = self
            .inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("differ poisoned"))?;
        for (i, e) in external_ids.into_iter().enumerate() {
            d.insert(
                e,
                local_ids[i],
                hashes[i].map(|h| h as u64),
                flags[i] & FLAG_ATTENTION,
            );
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Records seen so far (linked or new).
    fn seen(&self) -> usize {
        self.inner.lock().map(|d| d.seen()).unwrap_or(0)
    }

    /// Raw-row hashes learned this run (then the snapshot is worth saving).
    fn learned(&self) -> PyResult<usize> {
        Ok(self.lock()?.learned())
    }

    /// [(local id, external id)] of linked contacts not seen in this run.
    fn absent(&self) -> Vec<(i64, String)> {
        self.inner.lock().map(|d| d.absent()).unwrap_or_default()
    }

    /// Records a link the run made or changed.
    #[pyo3(signature = (external_id, local_id, hash, flags))]
    fn upsert(
        &self,
        external_id: &str,
        local_id: i64,
        hash: Option<i64>,
        flags: u8,
    ) -> PyResult<()> {
        self.lock()?.upsert(
            external_id,
            local_id,
            hash.map(|h| h as u64),
            flags & FLAG_ATTENTION,
            0,
        );
        Ok(())
    }

    /// Drops a link the run removed, if it still belongs to `local_id`.
    fn remove_if(&self, external_id: &str, local_id: i64) -> PyResult<()> {
        self.lock()?.remove_if(external_id, local_id);
        Ok(())
    }

    /// Sorted (external id, local id, hash, flags) of every link, for checks.
    fn entries(&self) -> PyResult<Vec<LinkEntry>> {
        Ok(self
            .lock()?
            .entries()
            .into_iter()
            .map(|(e, id, h, f)| (e, id, h.map(|h| h as i64), f))
            .collect())
    }

    /// The links as a compact snapshot (see diff.rs for the format).
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock()?.serialize();
        Ok(PyBytes::new(py, &data))
    }

    #[staticmethod]
    fn deserialize(py: Python<'_>, data: &[u8]) -> PyResult<Differ> {
        let owned = data.to_vec();
        let d = py
            .detach(move || CoreDiffer::deserialize(&owned))
            .map_err(PyValueError::new_err)?;
        Ok(Differ {
            inner: Arc::new(Mutex::new(d)),
        })
    }
}

impl Differ {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, CoreDiffer>> {
        self.inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("differ poisoned"))
    }
}

// ---------------------------------------------------------------- IdentityIndex

/// Identity keys of local manual (kind 0) and external (kind 1) contacts.
#[pyclass(module = "contactsync_agent._core")]
pub struct IdentityIndex {
    inner: Arc<RwLock<CoreIdentity>>,
    region: String,
}

#[pymethods]
impl IdentityIndex {
    #[new]
    #[pyo3(signature = (region = "AU"))]
    fn new(region: &str) -> Self {
        IdentityIndex {
            inner: Arc::new(RwLock::new(CoreIdentity::default())),
            region: region.to_string(),
        }
    }

    /// rows: [(contact id, kind, [14 field values])]
    fn add_many(&self, py: Python<'_>, rows: Vec<(i64, u8, Vec<String>)>) -> PyResult<()> {
        let region = self.region.clone();
        let mut parsed = Vec::with_capacity(rows.len());
        for (id, kind, f) in rows {
            parsed.push((id, kind, fields_vec(f)?));
        }
        let derived: Vec<_> = py.detach(|| {
            use rayon::prelude::*;
            parsed
                .par_iter()
                .map(|(id, kind, f)| (*id, *kind, derive(f, &region)))
                .collect()
        });
        let mut ix = self
            .inner
            .write()
            .map_err(|_| PyRuntimeError::new_err("index poisoned"))?;
        for (id, kind, d) in derived {
            ix.add(id, kind, &d);
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.read().map(|i| i.len()).unwrap_or(0)
    }
}

// ---------------------------------------------------------------- Batch

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

/// One processed chunk of incoming records, held in Rust; only what a rule
/// must look at is turned into Python objects.
#[pyclass(module = "contactsync_agent._core")]
pub struct Batch {
    inner: Arc<Processed>,
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
            let mut line = first_line + i as u64;
            let dict = obj
                .cast::<PyDict>()
                .map_err(|_| PyValueError::new_err(format!("record {line} is not a mapping")))?;
            cells.clear();
            for (k, v) in dict.iter() {
                let key = k.str()?.to_string();
                let val = if v.is_none() {
                    String::new()
                } else if let Ok(s) = v.cast::<PyString>() {
                    s.to_string()
                } else if v.is_instance_of::<pyo3::types::PyBool>() {
                    if v.is_truthy()? {
                        "true".into()
                    } else {
                        "false".into()
                    }
                } else {
                    v.str()?.to_string()
                };
                cells.push((key, val));
            }
            if let Some(pos) = cells.iter().position(|(k, _)| k == LINE_KEY) {
                let (_, v) = cells.remove(pos);
                line = v.trim().parse().map_err(|_| {
                    PyValueError::new_err(format!(
                        "record {line}: line number {v:?} is not a number"
                    ))
                })?;
            }
            let refused = cells
                .iter()
                .find(|(k, _)| k == REJECT_KEY)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    cells
                        .iter()
                        .find_map(|(k, v)| crate::sources::check_size(k, v.len(), &limits).err())
                });
            let raw = || {
                let mut raw = String::new();
                for (k, v) in cells.iter().filter(|(k, _)| k != REJECT_KEY) {
                    if raw.len() > limits.max_raw_bytes {
                        break;
                    }
                    if !raw.is_empty() {
                        raw.push_str(", ");
                    }
                    raw.push_str(k);
                    raw.push('=');
                    // At most a little over the raw limit of each value: never a copy
                    // of a value over the field limit.
                    let mut end = v.len().min(limits.max_raw_bytes + 1);
                    while !v.is_char_boundary(end) {
                        end -= 1;
                    }
                    raw.push_str(&v[..end]);
                }
                crate::sources::truncate_raw(&raw, limits.max_raw_bytes)
            };
            // Which record a refused one was: its id cell, unless that cell is
            // itself over the field limit.
            let id_of = || {
                RowId::of_cell(
                    cells
                        .iter()
                        .find(|(k, _)| mapping.resolve(k) == Target::ExternalId)
                        .map(|(_, v)| v.as_str())
                        .filter(|v| v.len() <= limits.max_field_bytes),
                )
            };
            items.push(match refused {
                Some(reason) => Err(crate::sources::Rejected {
                    line,
                    reason,
                    raw: raw(),
                    id: id_of(),
                }),
                None => build_record(
                    line,
                    cells
                        .iter()
                        .map(|(k, v)| (mapping.resolve(k), k.as_str(), v.as_str())),
                    partial,
                )
                .map_err(|reason| crate::sources::Rejected {
                    line,
                    reason,
                    raw: raw(),
                    id: id_of(),
                }),
            });
        }
        let differ = differ.inner.clone();
        let ident = identity.map(|i| i.inner.clone());
        let region = region.to_string();
        let mut inner = py.detach(move || process(items, &differ, ident.as_deref(), &region, None));
        inner.partial = partial;
        Ok(Batch {
            inner: Arc::new(inner),
        })
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

    /// [(field, heading)] of what the file's header carries; None for formats
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
        let b = self.inner.clone();
        let computed: Vec<String>;
        let payloads: &[String] = if b.payload_source.as_deref() == Some(source)
            && b.create_payloads.len() == b.creates.len()
        {
            // Made on the reader's cores while the previous batch was written.
            &b.create_payloads
        } else {
            let (inner, src) = (b.clone(), source.to_string());
            computed = py.detach(move || {
                use rayon::prelude::*;
                inner
                    .creates
                    .par_iter()
                    .map(|&i| crate::pipeline::create_payload(&inner.records[i], &src))
                    .collect()
            });
            &computed
        };
        let out = PyList::empty(py);
        for (k, p) in payloads.iter().enumerate() {
            out.append((base_id + k as i64, p))?;
        }
        Ok(out)
    }

    /// The plain creates' contacts rows for `executemany`, as one list:
    /// (id, source, external_id, 14 fields, extra, phone_e164, mobile_e164,
    /// hash), ids from `base_id` on. Records the new links in `differ`.
    fn create_rows<'py>(
        &self,
        py: Python<'py>,
        base_id: i64,
        source: &str,
        differ: &Differ,
    ) -> PyResult<Bound<'py, PyList>> {
        let b = &self.inner;
        {
            let mut d = differ.lock()?;
            for (k, &i) in b.creates.iter().enumerate() {
                let r = &b.records[i];
                d.upsert(
                    &r.external_id,
                    base_id + k as i64,
                    Some(r.hash),
                    0,
                    r.raw_hash,
                );
            }
        }
        let src = PyString::new(py, source);
        let out = PyList::empty(py);
        for (k, &i) in b.creates.iter().enumerate() {
            let r: &Record = &b.records[i];
            let d = &b.derived[i];
            let mut vals: Vec<Bound<'py, PyAny>> = Vec::with_capacity(NFIELDS + 7);
            vals.push((base_id + k as i64).into_pyobject(py)?.into_any());
            vals.push(src.clone().into_any());
            vals.push(PyString::new(py, &r.external_id).into_any());
            for f in r.fields.iter() {
                vals.push(PyString::new(py, f).into_any());
            }
            vals.push(PyString::new(py, &d.extra_json).into_any());
            vals.push(PyString::new(py, &d.phone_e164).into_any());
            vals.push(PyString::new(py, &d.mobile_e164).into_any());
            vals.push((r.hash as i64).into_pyobject(py)?.into_any());
            out.append(PyTuple::new(py, vals)?)?;
        }
        Ok(out)
    }

    /// (local id, organisation_ref, location_ref, position) of the plain creates
    /// that carry an organisation or location key, ids from `base_id` on.
    fn create_relations(&self, base_id: i64) -> Vec<(i64, &str, &str, &str)> {
        let b = &self.inner;
        let mut out = Vec::new();
        for (k, &i) in b.creates.iter().enumerate() {
            let mut rel = ["", "", ""];
            let mut any = false;
            for (key, value) in &b.records[i].extra {
                if let Some(p) = crate::mapping::RELATIONS.iter().position(|r| r == key) {
                    rel[p] = value.as_str();
                    // A link needs an organisation or a location (as the
                    // set-based relink decides); a position alone is no link.
                    any |= p < 2;
                }
            }
            if any {
                out.push((base_id + k as i64, rel[0], rel[1], rel[2]));
            }
        }
        out
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

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread)
/// so that the Python thread, which writes to SQLite and is the bottleneck of
/// a bulk import, wins the CPU when it has work; the readers still get every
/// core while it waits.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid/getpriority/setpriority only read or set this thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + 5).min(19));
    }
}

/// The worker pool of the readers, at the lowered priority (built once).
fn reader_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("contactsync-worker-{i}"))
            .start_handler(|_| lower_thread_priority())
            .build()
            .ok()
    })
    .as_ref()
}

// ---------------------------------------------------------------- FileReader

type Msg = Result<Processed, SourceError>;

/// Reads an export file on a background thread, a chunk at a time, and hands
/// over processed batches; the next chunk is parsed while Python writes this one.
#[pyclass(module = "contactsync_agent._core")]
pub struct FileReader {
    rx: Option<Mutex<Receiver<Msg>>>,
    path: String,
    #[pyo3(get)]
    info: HashMap<String, String>,
}

#[pymethods]
impl FileReader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let Some(rx) = self.rx.as_ref() else {
            return Ok(None);
        };
        let got = py.detach(|| match rx.lock() {
            Ok(r) => r.recv().map_err(|_| ()),
            Err(_) => Err(()),
        });
        match got {
            Ok(Ok(inner)) => Ok(Some(Batch {
                inner: Arc::new(inner),
            })),
            Ok(Err(e)) => {
                self.rx = None;
                Err(source_error(py, &self.path, e))
            }
            Err(_) => {
                self.rx = None;
                Ok(None)
            }
        }
    }
}

#[pyfunction]
#[pyo3(signature = (path, format, mapping, differ, identity = None, region = "AU", chunk_size = 50_000, max_field_bytes = 1 << 20, encoding = None, delimiter = None, source = None, partial = false, name = None))]
#[allow(clippy::too_many_arguments)]
fn open_file(
    py: Python<'_>,
    path: &str,
    format: &str,
    mapping: HashMap<String, String>,
    differ: &Differ,
    identity: Option<&IdentityIndex>,
    region: &str,
    chunk_size: usize,
    max_field_bytes: usize,
    encoding: Option<&str>,
    delimiter: Option<&str>,
    source: Option<&str>,
    partial: bool,
    name: Option<&str>,
) -> PyResult<FileReader> {
    // `path` may be /proc/self/fd/N (the caller opened the file once); errors name `name`.
    let shown = name.unwrap_or(path);
    let mut mapping = mapping_of(mapping)?;
    mapping.partial = partial;
    let delimiter = delimiter_byte(delimiter)?;
    let limits = Limits {
        max_field_bytes,
        ..Limits::default()
    };
    let owned_path = path.to_string();
    let fmt = format.to_ascii_lowercase();
    let enc = encoding.map(str::to_string);
    let opened = py.detach(
        move || -> Result<Result<Reader, SourceError>, std::io::Error> {
            // UTF-16 (by its BOM) is decoded while read; the text is UTF-8 then.
            let (data, utf16) = crate::sources::utf16::read_file(&owned_path)?;
            let enc = if utf16.is_some() {
                Some("utf-8")
            } else {
                enc.as_deref()
            };
            Ok(Reader::open(data, &fmt, mapping, limits, enc, delimiter))
        },
    );
    let mut reader = match opened {
        Err(e) => return Err(PyOSError::new_err(format!("cannot read {shown}: {e}"))),
        Ok(Err(e)) => return Err(source_error(py, shown, e)),
        Ok(Ok(r)) => r,
    };
    let info: HashMap<String, String> = reader.describe().into_iter().collect();
    let columns = reader.mapped_columns().map(Arc::new);
    let (tx, rx) = sync_channel::<Msg>(1);
    let differ = differ.inner.clone();
    let ident = identity.map(|i| i.inner.clone());
    let region = region.to_string();
    let chunk = chunk_size.max(1);
    let src = source.map(str::to_string);
    std::thread::Builder::new()
        .name("contactsync-reader".into())
        .spawn(move || {
            lower_thread_priority();
            let mut work = move || loop {
                match reader.next_chunk(chunk, Some(&differ)) {
                    Ok(items) if items.is_empty() => break,
                    Ok(items) => {
                        let mut batch =
                            process(items, &differ, ident.as_deref(), &region, src.as_deref());
                        batch.partial = partial;
                        batch.columns = columns.clone();
                        if tx.send(Ok(batch)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            };
            match reader_pool() {
                Some(pool) => pool.install(work),
                None => work(),
            }
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start reader thread: {e}")))?;
    Ok(FileReader {
        rx: Some(Mutex::new(rx)),
        path: shown.to_string(),
        info,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(canonical, m)?)?;
    m.add_function(wrap_pyfunction!(content_hash, m)?)?;
    m.add_function(wrap_pyfunction!(entity_hash, m)?)?;
    m.add_function(wrap_pyfunction!(read_entity_csv, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_name, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_email, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_phone, m)?)?;
    m.add_function(wrap_pyfunction!(clean_value, m)?)?;
    m.add_function(wrap_pyfunction!(split_name, m)?)?;
    m.add_function(wrap_pyfunction!(derive_keys, m)?)?;
    m.add_function(wrap_pyfunction!(open_file, m)?)?;
    m.add("REJECT_KEY", REJECT_KEY)?;
    m.add("LINE_KEY", LINE_KEY)?;
    m.add_class::<Differ>()?;
    m.add_class::<IdentityIndex>()?;
    m.add_class::<Batch>()?;
    m.add_class::<FileReader>()?;
    m.add_class::<EntityFile>()?;
    Ok(())
}
