//! `EntityFile` and `read_entity_csv`: an organisation, location or
//! customer-link CSV file read by `entities.rs`, handed to Python as rows.

use std::collections::HashMap;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::convert::delimiter_byte;
use super::errors::source_error;

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
pub(super) fn read_entity_csv(
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
