//! `IdentityIndex`: the identity keys of local contacts (diff.rs), shared
//! with the reader thread.

use std::sync::{Arc, RwLock};

use pyo3::prelude::*;

use super::convert::fields_vec;
use super::errors::poisoned;
use crate::diff::{derive_rows, IdentityIndex as CoreIdentity};

/// Identity keys of local manual (kind 0) and external (kind 1) contacts.
#[pyclass(module = "contactsync_agent._core")]
pub struct IdentityIndex {
    pub(super) inner: Arc<RwLock<CoreIdentity>>,
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
        let mut parsed = Vec::with_capacity(rows.len());
        for (id, kind, f) in rows {
            parsed.push((id, kind, fields_vec(f)?));
        }
        let region = self.region.as_str();
        let derived = py.detach(|| derive_rows(&parsed, region));
        let mut ix = self.inner.write().map_err(|_| poisoned("index"))?;
        for (id, kind, d) in derived {
            ix.add(id, kind, &d);
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.read().map(|i| i.len()).unwrap_or(0)
    }
}
