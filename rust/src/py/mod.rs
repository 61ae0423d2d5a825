//! The PyO3 layer of the import core: conversions between Python objects and
//! the core, one file per bound class or concern. No work lives here:
//! threads, pools and priorities are in `runtime.rs`, the pipeline's rules in
//! `pipeline.rs` and `sources/`. Errors become Python exceptions; nothing may
//! panic across this boundary.

mod batch;
mod convert;
mod differ;
mod entity_file;
mod errors;
mod functions;
mod identity;
mod reader;
mod sqlite_lib;

use pyo3::prelude::*;

pub use crate::sources::cells::{LINE_KEY, REJECT_KEY};
pub(crate) use convert::{delimiter_byte, mapping_of};
pub(crate) use errors::source_error;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    functions::register(m)?;
    m.add_function(wrap_pyfunction!(entity_file::read_entity_csv, m)?)?;
    m.add_function(wrap_pyfunction!(reader::open_file, m)?)?;
    m.add("REJECT_KEY", REJECT_KEY)?;
    m.add("LINE_KEY", LINE_KEY)?;
    m.add_class::<differ::Differ>()?;
    m.add_class::<identity::IdentityIndex>()?;
    m.add_class::<batch::Batch>()?;
    m.add_class::<reader::FileReader>()?;
    m.add_class::<reader::ReadMeter>()?;
    m.add_class::<entity_file::EntityFile>()?;
    m.add_class::<sqlite_lib::SqliteLibrary>()?;
    Ok(())
}
