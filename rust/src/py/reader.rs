//! `open_file` and `FileReader`: an export file read on the reader thread
//! (runtime.rs), its batches handed to Python as they come; `ReadMeter`, the
//! bytes that thread has parsed, for a progress bar.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

use super::batch::Batch;
use super::convert::{delimiter_byte, mapping_of};
use super::differ::Differ;
use super::errors::source_error;
use super::identity::IdentityIndex;
use crate::runtime::{spawn_reader, Msg, ReadJob};
use crate::sources::{Limits, Reader, SourceError};

/// Reads an export file on a background thread, a chunk at a time, and hands
/// over processed batches; the next chunk is parsed while Python writes this one.
#[pyclass(module = "contactsync_agent._core")]
pub struct FileReader {
    rx: Option<Mutex<Receiver<Msg>>>,
    path: String,
    #[pyo3(get)]
    info: HashMap<String, String>,
}

#[pymethods]
impl FileReader {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let Some(rx) = self.rx.as_ref() else {
            return Ok(None);
        };
        let got = py.detach(|| match rx.lock() {
            Ok(r) => r.recv().map_err(|_| ()),
            Err(_) => Err(()),
        });
        match got {
            Ok(Ok(inner)) => Ok(Some(Batch::new(inner))),
            Ok(Err(e)) => {
                self.rx = None;
                Err(source_error(py, &self.path, e))
            }
            Err(_) => {
                self.rx = None;
                Ok(None)
            }
        }
    }
}

/// How far the reader thread of `open_file(..., meter=)` is into its file:
/// two atomic counters, read from any thread without the GIL's help.
#[pyclass(module = "contactsync_agent._core", frozen)]
#[derive(Default)]
pub struct ReadMeter {
    read: Arc<AtomicU64>,
    total: AtomicU64,
}

#[pymethods]
impl ReadMeter {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Bytes of the file's text parsed so far.
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes of the file's text in all (0 until a file is opened).
    #[getter]
    fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[pyfunction]
#[pyo3(signature = (path, format, mapping, differ, identity = None, region = "AU", chunk_size = 50_000, max_field_bytes = 1 << 20, encoding = None, delimiter = None, source = None, partial = false, name = None, meter = None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn open_file(
    py: Python<'_>,
    path: &str,
    format: &str,
    mapping: HashMap<String, String>,
    differ: &Differ,
    identity: Option<&IdentityIndex>,
    region: &str,
    chunk_size: usize,
    max_field_bytes: usize,
    encoding: Option<&str>,
    delimiter: Option<&str>,
    source: Option<&str>,
    partial: bool,
    name: Option<&str>,
    meter: Option<&ReadMeter>,
) -> PyResult<FileReader> {
    // `path` may be /proc/self/fd/N (the caller opened the file once); errors name `name`.
    let shown = name.unwrap_or(path);
    let mut mapping = mapping_of(mapping)?;
    mapping.partial = partial;
    let delimiter = delimiter_byte(delimiter)?;
    let limits = Limits {
        max_field_bytes,
        ..Limits::default()
    };
    let owned_path = path.to_string();
    let fmt = format.to_ascii_lowercase();
    let enc = encoding.map(str::to_string);
    let opened = py.detach(
        move || -> Result<Result<Reader, SourceError>, std::io::Error> {
            // A CSV file in UTF-8 or Windows-1252 is parsed from the file itself
            // (memory never holds it whole); UTF-16 (by its BOM) is decoded
            // while read, and the other formats are parsed in memory.
            if fmt == "csv" {
                let mut file = std::fs::File::open(&owned_path)?;
                let mut head = Vec::with_capacity(2);
                std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 2), &mut head)?;
                if crate::sources::utf16::bom_encoding(&head).is_none() {
                    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
                    return Ok(crate::sources::csvfile::CsvReader::open_file(
                        file,
                        mapping,
                        limits,
                        enc.as_deref(),
                        delimiter,
                    )
                    .map(Reader::Csv));
                }
            }
            let (data, utf16) = crate::sources::utf16::read_file(&owned_path)?;
            let enc = if utf16.is_some() {
                Some("utf-8")
            } else {
                enc.as_deref()
            };
            Ok(Reader::open(data, &fmt, mapping, limits, enc, delimiter))
        },
    );
    let reader = match opened {
        Err(e) => return Err(PyOSError::new_err(format!("cannot read {shown}: {e}"))),
        Ok(Err(e)) => return Err(source_error(py, shown, e)),
        Ok(Ok(r)) => r,
    };
    let info: HashMap<String, String> = reader.describe().into_iter().collect();
    let progress = meter.map(|m| {
        m.total.store(reader.total_bytes(), Ordering::Relaxed);
        m.read.store(0, Ordering::Relaxed);
        m.read.clone()
    });
    let (rx, _thread) = spawn_reader(ReadJob {
        reader,
        chunk: chunk_size,
        differ: differ.inner.clone(),
        identity: identity.map(|i| i.inner.clone()),
        region: region.to_string(),
        source: source.map(str::to_string),
        partial,
        progress,
    })
    .map_err(|e| PyRuntimeError::new_err(format!("cannot start reader thread: {e}")))?;
    Ok(FileReader {
        rx: Some(Mutex::new(rx)),
        path: shown.to_string(),
        info,
    })
}
