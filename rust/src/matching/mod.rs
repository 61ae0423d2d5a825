//! Record linkage and deduplication engine (issue 3): blocking, comparators,
//! Fellegi–Sunter scoring, clustering. Only `py` touches Python.

pub mod blocking;
pub mod cluster;
pub mod compare;
pub mod config;
pub mod engine;
pub mod nicknames;
pub mod prepare;
mod py;
pub mod scoring;
pub mod similarity;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
