//! Python bindings of the contactsync core (`contactsync_agent._core`).
//! Only conversion and registration live here; the work is in the modules.
//! Errors become Python exceptions; nothing may panic across this boundary.

pub mod diff;
pub mod entities;
pub mod hash;
pub mod mapping;
pub mod matching;
pub mod model;
pub mod normalize;
pub mod pipeline;
pub mod runtime;
pub mod sources;

mod py;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("HASH_VERSION", hash::HASH_VERSION)?;
    m.add("FIELDS", model::FIELDS.to_vec())?;
    py::register(m)?;
    matching::register(m)?;
    Ok(())
}
