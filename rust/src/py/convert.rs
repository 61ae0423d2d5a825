//! Argument conversions shared by the bindings (here and `matching/py.rs`).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::mapping::Mapping;
use crate::model::NFIELDS;

/// A record's field values, exactly `NFIELDS` of them.
pub(crate) fn fields_vec(fields: Vec<String>) -> PyResult<[String; NFIELDS]> {
    let n = fields.len();
    fields
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("expected {NFIELDS} field values, got {n}")))
}

pub(crate) fn mapping_of(entries: HashMap<String, String>) -> PyResult<Mapping> {
    Mapping::new(&entries).map_err(|e| PyValueError::new_err(format!("mapping: {e}")))
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
