//! The threads of a file import: the reader thread that parses and processes
//! the next chunk while Python writes this one, the rayon pool it works in, and
//! the lowered priority of both. No Python here: the bindings start a reader
//! and turn what it sends into Python objects; nothing here may panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use crate::diff::{Differ, IdentityIndex};
use crate::pipeline::{process, Processed};
use crate::sources::{Reader, SourceError};

/// What the reader thread sends: a processed chunk, or the error that ends the file.
pub type Msg = Result<Processed, SourceError>;

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread)
/// so that the Python thread, which writes to SQLite and is the bottleneck of
/// a bulk import, wins the CPU when it has work; the readers still get every
/// core while it waits. Elsewhere a no-op. The callers go on without it when
/// it fails (a slower import, not a wrong one).
pub fn lower_thread_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid/getpriority/setpriority only read or set this thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + 5).min(19)) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's nice value (Linux), for checks; None elsewhere.
pub fn thread_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid/getpriority only read this thread's nice value; errno is
    // this thread's own (cleared first: -1 is also a valid nice value).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        if nice == -1 && *libc::__errno_location() != 0 {
            return None;
        }
        Some(nice)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A new worker pool for the readers: one worker per core (rayon's default,
/// `RAYON_NUM_THREADS` honoured), each lowered below the thread that builds it.
fn build_reader_pool() -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("contactsync-worker-{i}"))
        .start_handler(|_| {
            let _ = lower_thread_priority();
        })
        .build()
}

/// The worker pool of the readers, at the lowered priority (built once, by
/// the first reader thread). None if it cannot be built: the reader then works
/// in rayon's global pool.
pub fn reader_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| build_reader_pool().ok()).as_ref()
}

/// Everything a reader thread needs to turn a file into processed batches.
pub struct ReadJob {
    pub reader: Reader,
    /// Records per batch (at least 1).
    pub chunk: usize,
    pub differ: Arc<Mutex<Differ>>,
    pub identity: Option<Arc<RwLock<IdentityIndex>>>,
    pub region: String,
    /// The source of the file. Since schema 6 the reader makes no change-feed
    /// payloads for it (SQLite writes the creates' entries from their rows):
    /// that work no longer competes with the import for the cores.
    pub source: Option<String>,
    /// An incremental file: records say what they carried.
    pub partial: bool,
    /// Told the bytes parsed so far (`Reader::bytes_read`) every
    /// `PROGRESS_STEP` records, for a progress bar; `None`: whole chunks at once.
    pub progress: Option<Arc<AtomicU64>>,
}

/// Records parsed between two updates of `ReadJob::progress`: small enough
/// for a bar that moves several times a second, large enough to keep the
/// parallel parse of a chunk efficient.
pub const PROGRESS_STEP: usize = 4096;

/// The next `chunk` records, read `PROGRESS_STEP` at a time with `progress`
/// told the bytes parsed after each step (the same records, in the same order,
/// as one `next_chunk(chunk)`).
fn next_chunk_metered(
    reader: &mut Reader,
    chunk: usize,
    differ: &Mutex<Differ>,
    progress: Option<&AtomicU64>,
) -> Result<Vec<crate::sources::Item>, SourceError> {
    let Some(meter) = progress else {
        return reader.next_chunk(chunk, Some(differ));
    };
    let mut items = Vec::new();
    while items.len() < chunk {
        let step = PROGRESS_STEP.min(chunk - items.len());
        let got = reader.next_chunk(step, Some(differ))?;
        meter.store(reader.bytes_read(), Ordering::Relaxed);
        if got.is_empty() {
            break;
        }
        items.extend(got);
    }
    Ok(items)
}

/// Starts the reader thread ("contactsync-reader", at the lowered priority, in
/// the reader pool). Batches arrive in file order, at most one ahead of the
/// consumer; an error is the last message. The thread stops when the file
/// ends, after an error, or when the receiver is dropped.
pub fn spawn_reader(job: ReadJob) -> std::io::Result<(Receiver<Msg>, JoinHandle<()>)> {
    let ReadJob {
        mut reader,
        chunk,
        differ,
        identity,
        region,
        source: _,
        partial,
        progress,
    } = job;
    let columns = reader.mapped_columns().map(Arc::new);
    let chunk = chunk.max(1);
    let (tx, rx) = sync_channel::<Msg>(1);
    let handle = std::thread::Builder::new()
        .name("contactsync-reader".into())
        .spawn(move || {
            let _ = lower_thread_priority();
            let mut work = move || loop {
                match next_chunk_metered(&mut reader, chunk, &differ, progress.as_deref()) {
                    Ok(items) if items.is_empty() => break,
                    Ok(items) => {
                        let mut batch = process(items, &differ, identity.as_deref(), &region, None);
                        batch.partial = partial;
                        batch.columns = columns.clone();
                        if tx.send(Ok(batch)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            };
            match reader_pool() {
                Some(pool) => pool.install(work),
                None => work(),
            }
        })?;
    Ok((rx, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;
    use crate::sources::Limits;
    use std::collections::HashMap;

    /// rayon's default size: RAYON_NUM_THREADS if set, else one per core.
    fn expected_threads() -> usize {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    #[test]
    fn the_reader_pool_is_built_once_with_a_named_worker_per_core() {
        let pool = reader_pool().expect("the reader pool builds");
        assert!(
            std::ptr::eq(pool, reader_pool().unwrap()),
            "one pool for every reader"
        );
        let n = expected_threads();
        assert_eq!(pool.current_num_threads(), n);
        let mut names = pool.broadcast(|_| std::thread::current().name().map(str::to_string));
        names.sort();
        let mut want: Vec<_> = (0..n)
            .map(|i| Some(format!("contactsync-worker-{i}")))
            .collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_the_priority_works_here_and_only_for_this_thread() {
        let outer = thread_nice().expect("getpriority works");
        let (before, after) = std::thread::spawn(|| {
            let before = thread_nice().expect("getpriority works");
            lower_thread_priority().expect("setpriority may raise our own nice");
            (before, thread_nice().expect("getpriority works"))
        })
        .join()
        .unwrap();
        assert_eq!(before, outer, "a new thread starts at its creator's nice");
        assert_eq!(after, (before + 5).min(19));
        assert_eq!(
            thread_nice(),
            Some(outer),
            "nice is per thread: the caller keeps its own"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pool_workers_run_below_the_thread_that_builds_the_pool() {
        let (creator, workers) = std::thread::spawn(|| {
            let creator = thread_nice().unwrap();
            let pool = build_reader_pool().unwrap();
            (creator, pool.broadcast(|_| thread_nice()))
        })
        .join()
        .unwrap();
        assert_eq!(workers.len(), expected_threads());
        for nice in workers {
            assert_eq!(nice, Some((creator + 5).min(19)));
        }
    }

    fn job(rows: usize, chunk: usize) -> ReadJob {
        let mut data = String::from("id,email\n");
        for i in 0..rows {
            data.push_str(&format!("A{i},a{i}@example.org\n"));
        }
        let m: HashMap<String, String> = [("id", "external_id"), ("email", "email")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mapping = Mapping::new(&m).unwrap();
        let reader = Reader::open(
            data.into_bytes(),
            "csv",
            mapping,
            Limits::default(),
            None,
            None,
        )
        .unwrap();
        ReadJob {
            reader,
            chunk,
            differ: Arc::new(Mutex::new(Differ::default())),
            identity: None,
            region: "AU".into(),
            source: Some("src".into()),
            partial: false,
            progress: None,
        }
    }

    #[test]
    fn the_reader_thread_delivers_processed_batches_in_file_order() {
        let (rx, handle) = spawn_reader(job(10, 3)).unwrap();
        let batches: Vec<Processed> = rx.iter().map(|m| m.expect("no error")).collect();
        handle.join().expect("the reader thread ends with the file");
        assert_eq!(
            batches.iter().map(|b| b.total).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        let ids: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.external_id.as_str()))
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("A{i}")).collect();
        assert_eq!(ids, want);
        let lines: Vec<u64> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.line))
            .collect();
        assert_eq!(lines, (2..12).collect::<Vec<u64>>());
        for b in &batches {
            assert_eq!(b.creates.len(), b.total, "all new, no identity index");
            assert_eq!(b.payload_source, None, "no feed payloads on the reader");
            assert!(b.create_payloads.is_empty());
            let cols = b.columns.as_deref().expect("a CSV file has columns");
            assert_eq!(cols, &[("email".to_string(), "email".to_string())]);
        }
    }

    #[test]
    fn the_reader_thread_stops_when_the_consumer_goes_away() {
        let j = job(1000, 1);
        let differ = j.differ.clone();
        let (rx, handle) = spawn_reader(j).unwrap();
        let first = rx.recv().unwrap().unwrap();
        assert_eq!(first.records[0].external_id, "A0");
        drop(rx);
        // At most one batch ahead: the next send fails and the thread ends
        // instead of reading the other 998 rows.
        handle.join().expect("the reader thread ends");
        let seen = differ.lock().unwrap().seen();
        assert!(seen <= 3, "read {seen} rows for one batch taken");
    }

    #[test]
    fn a_metered_reader_delivers_the_same_batches_and_counts_every_byte() {
        let rows = PROGRESS_STEP * 2 + 7;
        let plain: Vec<Vec<String>> = {
            let (rx, _) = spawn_reader(job(rows, PROGRESS_STEP * 2)).unwrap();
            rx.iter()
                .map(|m| {
                    m.unwrap()
                        .records
                        .iter()
                        .map(|r| r.external_id.clone())
                        .collect()
                })
                .collect()
        };
        let meter = Arc::new(AtomicU64::new(0));
        let mut j = job(rows, PROGRESS_STEP * 2);
        let total = j.reader.total_bytes();
        j.progress = Some(meter.clone());
        let (rx, handle) = spawn_reader(j).unwrap();
        let metered: Vec<Vec<String>> = rx
            .iter()
            .map(|m| {
                m.unwrap()
                    .records
                    .iter()
                    .map(|r| r.external_id.clone())
                    .collect()
            })
            .collect();
        handle.join().unwrap();
        assert_eq!(metered, plain);
        assert_eq!(meter.load(Ordering::Relaxed), total);
    }
}
