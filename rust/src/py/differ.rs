//! `Differ`: one source's links (diff.rs), shared with the reader thread.
//! Changed only by its own methods, called where the import makes the change.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::batch::Batch;
use super::errors::poisoned;
use crate::diff::{Differ as CoreDiffer, FLAG_ATTENTION};

/// (external id, local id, signed hash, flags) of one link.
type LinkEntry = (String, i64, Option<i64>, u8);

/// (external id -> local id, source hash) of one source's linked contacts.
#[pyclass(module = "contactsync_agent._core")]
pub struct Differ {
    pub(super) inner: Arc<Mutex<CoreDiffer>>,
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
        let mut d = self.lock()?;
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

    /// Records the links of `batch`'s plain creates, local ids from `base_id`
    /// on (the ids `Batch.create_rows(base_id, ...)` writes).
    fn add_created(&self, batch: &Batch, base_id: i64) -> PyResult<()> {
        batch.inner.register_created(&mut *self.lock()?, base_id);
        Ok(())
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

    /// What changed since the links were loaded: what `serialize_delta`
    /// writes, as (changed or new links, removed links).
    fn changes(&self) -> PyResult<(usize, usize)> {
        Ok(self.lock()?.changes())
    }

    /// The changes since the links were loaded as a compact delta, to be
    /// applied over the snapshot they were loaded from (see diff.rs).
    fn serialize_delta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock()?.serialize_delta();
        Ok(PyBytes::new(py, &data))
    }

    /// The links of a snapshot, with the deltas saved after it applied in order.
    #[staticmethod]
    #[pyo3(signature = (data, deltas = Vec::new()))]
    fn deserialize(py: Python<'_>, data: &[u8], deltas: Vec<Vec<u8>>) -> PyResult<Differ> {
        // The bytes are read in place (the caller holds them), without the GIL.
        let d = py
            .detach(move || {
                let mut d = CoreDiffer::deserialize(data)?;
                for delta in &deltas {
                    d.apply_delta(delta)?;
                }
                Ok::<_, String>(d)
            })
            .map_err(PyValueError::new_err)?;
        Ok(Differ {
            inner: Arc::new(Mutex::new(d)),
        })
    }
}

impl Differ {
    fn lock(&self) -> PyResult<MutexGuard<'_, CoreDiffer>> {
        self.inner.lock().map_err(|_| poisoned("differ"))
    }
}
