//! Core errors as Python exceptions: a file's `SourceError` becomes the
//! package's `SourceFormatError` (file, line, column, message); a poisoned
//! lock a RuntimeError.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::sources::SourceError;

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

/// A lock a panicking thread left poisoned (`what`: "differ", "index").
pub(crate) fn poisoned(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!("{what} poisoned"))
}
