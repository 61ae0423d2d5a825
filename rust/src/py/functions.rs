//! The module's plain functions: hashing, normalisation and identity keys of
//! one record or value.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::convert::{fields_vec, mapping_of};
use crate::diff::derive;
use crate::hash::{canonical_bytes, content_hash as core_hash};
use crate::mapping::taken_targets;
use crate::normalize;

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

/// (mapped target, target taken) of each column of one record, by the core's
/// mapping table: a column whose target an earlier column took goes to "extra".
#[pyfunction]
fn map_columns(
    columns: Vec<String>,
    mapping: HashMap<String, String>,
) -> PyResult<Vec<(&'static str, &'static str)>> {
    let mapped = mapping_of(mapping)?.resolve_all(&columns);
    let taken = taken_targets(&mapped);
    Ok(mapped
        .iter()
        .zip(taken)
        .map(|(m, t)| (m.name(), t.name()))
        .collect())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(canonical, m)?)?;
    m.add_function(wrap_pyfunction!(content_hash, m)?)?;
    m.add_function(wrap_pyfunction!(entity_hash, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_name, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_email, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_phone, m)?)?;
    m.add_function(wrap_pyfunction!(clean_value, m)?)?;
    m.add_function(wrap_pyfunction!(split_name, m)?)?;
    m.add_function(wrap_pyfunction!(derive_keys, m)?)?;
    m.add_function(wrap_pyfunction!(map_columns, m)?)?;
    Ok(())
}
