//! Record linkage and deduplication engine (issue 3): blocking, comparators,
//! Fellegi–Sunter scoring, clustering. Filled in by the matching work.

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
