//! `SqliteLibrary`: the SQLite library the mirror's own Python connection runs
//! on, reached from Rust so that a first import's bulk insert binds and steps
//! its rows in a loop here instead of through `executemany` (issue 19: the
//! same 1M rows take 6.1 s through `executemany` and 1.3 s as `INSERT …
//! SELECT`; the difference is the per-row work of the Python binding).
//!
//! Not a second SQLite: nothing is linked. The functions are looked up with
//! `dlsym` in the already loaded `_sqlite3` extension module (and so in the
//! very library it uses), and the connection handle is the one of the
//! caller's `sqlite3.Connection`, so the design's rule (one read-write
//! connection to the mirror per process, one SQLite library) holds. It runs no
//! SQL of its own: the store passes the statement's text, and the statement
//! must run inside the caller's open transaction (refused otherwise). Where
//! any of this is unavailable (another Python, a statically linked module
//! that hides its symbols), the constructor fails and the store keeps
//! `executemany`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

type Db = c_void;
type Stmt = c_void;
/// `sqlite3_destructor_type`; `None` is SQLITE_STATIC (the text outlives the step).
type Destructor = Option<unsafe extern "C" fn(*mut c_void)>;

const SQLITE_ROW: c_int = 100;
const SQLITE_DONE: c_int = 101;
const SQLITE_CONSTRAINT: c_int = 19;

/// The functions of the connection's library the bulk insert uses.
#[derive(Clone, Copy)]
pub(super) struct Api {
    prepare_v2: unsafe extern "C" fn(
        *mut Db,
        *const c_char,
        c_int,
        *mut *mut Stmt,
        *mut *const c_char,
    ) -> c_int,
    bind_text: unsafe extern "C" fn(*mut Stmt, c_int, *const c_char, c_int, Destructor) -> c_int,
    bind_int64: unsafe extern "C" fn(*mut Stmt, c_int, i64) -> c_int,
    bind_parameter_count: unsafe extern "C" fn(*mut Stmt) -> c_int,
    step: unsafe extern "C" fn(*mut Stmt) -> c_int,
    reset: unsafe extern "C" fn(*mut Stmt) -> c_int,
    finalize: unsafe extern "C" fn(*mut Stmt) -> c_int,
    errmsg: unsafe extern "C" fn(*mut Db) -> *const c_char,
    extended_errcode: unsafe extern "C" fn(*mut Db) -> c_int,
    db_filename: unsafe extern "C" fn(*mut Db, *const c_char) -> *const c_char,
    get_autocommit: unsafe extern "C" fn(*mut Db) -> c_int,
    libversion: unsafe extern "C" fn() -> *const c_char,
}

/// A statement being stepped, finalized on every path.
struct Prepared {
    api: Api,
    stmt: *mut Stmt,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: `stmt` came from `prepare_v2` on this library and is finalized once.
        unsafe { (self.api.finalize)(self.stmt) };
    }
}

/// A connection handle and its library, handed to a thread without the GIL.
/// The caller's Python connection stays referenced (and so open) meanwhile;
/// SQLite itself serializes use of one handle.
#[derive(Clone, Copy)]
pub(super) struct Conn {
    api: Api,
    db: *mut Db,
}

// SAFETY: see `Conn`: a handle of a library built thread-safe (Python's
// sqlite3 module requires it) may be used from any thread.
unsafe impl Send for Conn {}

/// One row's values to bind, in parameter order (?1, ?2, ...).
pub(super) enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// A failed statement: SQLite's extended code and message.
pub(super) struct SqlFailure {
    code: c_int,
    message: String,
}

impl Conn {
    fn failure(&self, code: c_int) -> SqlFailure {
        // SAFETY: `db` is an open handle of this library (checked by `conn_of`).
        let message = unsafe {
            let m = (self.api.errmsg)(self.db);
            if m.is_null() {
                format!("SQLite error {code}")
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            }
        };
        // SAFETY: as above.
        let ext = unsafe { (self.api.extended_errcode)(self.db) };
        SqlFailure {
            code: if ext != 0 { ext } else { code },
            message,
        }
    }

    /// Runs `sql` once for each of `rows` rows, binding the values `fill`
    /// puts in its buffer for row k to ?1.. in order; the statement must take
    /// exactly `width` parameters.
    pub(super) fn run_rows<'a, F>(
        &self,
        sql: &str,
        width: usize,
        rows: usize,
        mut fill: F,
    ) -> Result<u64, SqlFailure>
    where
        F: FnMut(usize, &mut Vec<Value<'a>>),
    {
        let text = CString::new(sql).map_err(|_| SqlFailure {
            code: 1,
            message: "statement holds a NUL byte".into(),
        })?;
        let mut stmt: *mut Stmt = std::ptr::null_mut();
        // SAFETY: valid handle, NUL-terminated text (-1: read to the NUL).
        let rc = unsafe {
            (self.api.prepare_v2)(self.db, text.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
        };
        if rc != 0 || stmt.is_null() {
            return Err(self.failure(rc));
        }
        let _finalized_on_return = Prepared {
            api: self.api,
            stmt,
        };
        // SAFETY: `stmt` is a live prepared statement.
        let params = unsafe { (self.api.bind_parameter_count)(stmt) };
        if params as usize != width {
            return Err(SqlFailure {
                code: 1,
                message: format!("statement takes {params} parameters, rows have {width}"),
            });
        }
        let mut row = Vec::with_capacity(width);
        for k in 0..rows {
            fill(k, &mut row);
            for (j, v) in row.iter().enumerate() {
                let idx = j as c_int + 1;
                // SAFETY: `stmt` is live; the text is borrowed from the batch,
                // which outlives this call (SQLITE_STATIC: SQLite does not copy
                // it, and the statement is reset before the next row rebinds).
                let rc = unsafe {
                    match v {
                        Value::Text(s) => {
                            let len = c_int::try_from(s.len()).map_err(|_| SqlFailure {
                                code: 18,
                                message: "string or blob too big".into(),
                            })?;
                            (self.api.bind_text)(stmt, idx, s.as_ptr().cast(), len, None)
                        }
                        Value::Int(i) => (self.api.bind_int64)(stmt, idx, *i),
                    }
                };
                if rc != 0 {
                    return Err(self.failure(rc));
                }
            }
            // SAFETY: `stmt` is live and fully bound.
            let rc = unsafe { (self.api.step)(stmt) };
            if rc != SQLITE_DONE && rc != SQLITE_ROW {
                let failure = self.failure(rc);
                // SAFETY: as above; the reset's own code repeats the failure.
                unsafe { (self.api.reset)(stmt) };
                return Err(failure);
            }
            // SAFETY: as above.
            unsafe { (self.api.reset)(stmt) };
        }
        Ok(rows as u64)
    }
}

/// The SQLite library of the loaded `sqlite3` module (see the module's doc).
#[pyclass(module = "contactsync_agent._core", frozen)]
pub struct SqliteLibrary {
    pub(super) api: Api,
    _handle: Handle,
}

/// A `dlopen` reference, closed when dropped (also when a lookup fails).
struct Handle(usize);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `dlopen` (a reference on a module that
        // stays loaded anyway) and is closed once.
        unsafe { libc::dlclose(self.0 as *mut c_void) };
    }
}

/// Looks `name` up in the library behind `handle`.
fn symbol(handle: *mut c_void, name: &str) -> PyResult<*mut c_void> {
    let c = CString::new(name).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if p.is_null() {
        Err(PyRuntimeError::new_err(format!(
            "the sqlite3 module does not export {name}"
        )))
    } else {
        Ok(p)
    }
}

/// The function `name` of the library behind `handle`, as the function
/// pointer type `F` (the field it fills spells SQLite's C signature out).
fn load<F: Copy>(handle: *mut c_void, name: &str) -> PyResult<F> {
    let p = symbol(handle, name)?;
    if std::mem::size_of::<F>() != std::mem::size_of::<*mut c_void>() {
        return Err(PyRuntimeError::new_err(format!(
            "{name}: not a function pointer type"
        )));
    }
    // SAFETY: `p` is SQLite's C function of that name (non-null), and `F` is
    // the `unsafe extern "C" fn` type of its signature in sqlite3.h, a pointer
    // of the same size.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

impl SqliteLibrary {
    /// The handle of `conn`, an open `sqlite3.Connection` inside a transaction.
    pub(super) fn conn_of(&self, conn: &Bound<'_, PyAny>) -> PyResult<Conn> {
        let db = handle_of(conn)?;
        // SAFETY: an open handle of this library.
        if unsafe { (self.api.get_autocommit)(db) } != 0 {
            return Err(PyRuntimeError::new_err(
                "a bulk insert runs inside the caller's transaction; none is open",
            ));
        }
        Ok(Conn { api: self.api, db })
    }
}

/// The `sqlite3 *` of an open `sqlite3.Connection`.
fn handle_of(conn: &Bound<'_, PyAny>) -> PyResult<*mut Db> {
    let cls = conn.py().import("sqlite3")?.getattr("Connection")?;
    if !conn.is_instance(&cls)? {
        return Err(PyTypeError::new_err("not a sqlite3.Connection"));
    }
    // CPython's connection object is `{ PyObject_HEAD; sqlite3 *db; ... }`
    // (Modules/_sqlite/connection.h, the same from 2.5 to 3.14); `close()`
    // sets `db` to NULL. `SqliteLibrary::new` refused any other implementation.
    // SAFETY: `conn` is such an object, at least that large.
    let db = unsafe {
        *((conn.as_ptr() as *const u8).add(std::mem::size_of::<pyo3::ffi::PyObject>())
            as *const *mut Db)
    };
    if db.is_null() {
        return Err(PyRuntimeError::new_err("the connection is closed"));
    }
    Ok(db)
}

/// SQLite's failure as the exception Python's sqlite3 module raises for it
/// (IntegrityError for a constraint, OperationalError otherwise), with its
/// `sqlite_errorcode`, so callers handle both paths alike.
pub(super) fn sql_error(py: Python<'_>, f: SqlFailure) -> PyErr {
    let built = (|| -> PyResult<PyErr> {
        let m = py.import("sqlite3")?;
        let cls = if f.code & 0xff == SQLITE_CONSTRAINT {
            m.getattr("IntegrityError")?
        } else {
            m.getattr("OperationalError")?
        };
        let e = cls.call1((f.message.clone(),))?;
        e.setattr("sqlite_errorcode", f.code)?;
        Ok(PyErr::from_value(e))
    })();
    built.unwrap_or_else(|e| e)
}

#[pymethods]
impl SqliteLibrary {
    /// The library of the loaded module at `module_path` (the file of
    /// Python's `_sqlite3`); fails where it cannot be reached safely.
    #[new]
    fn new(py: Python<'_>, module_path: &str) -> PyResult<Self> {
        let implementation: String = py
            .import("sys")?
            .getattr("implementation")?
            .getattr("name")?
            .extract()?;
        if implementation != "cpython" {
            return Err(PyRuntimeError::new_err(format!(
                "{implementation}: its sqlite3 connection is not CPython's"
            )));
        }
        let path = CString::new(module_path).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        // SAFETY: RTLD_NOLOAD: only a library already loaded in the process.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return Err(PyRuntimeError::new_err(format!(
                "{module_path} is not loaded"
            )));
        }
        let guard = Handle(handle as usize);
        let lib = SqliteLibrary {
            api: Api {
                prepare_v2: load(handle, "sqlite3_prepare_v2")?,
                bind_text: load(handle, "sqlite3_bind_text")?,
                bind_int64: load(handle, "sqlite3_bind_int64")?,
                bind_parameter_count: load(handle, "sqlite3_bind_parameter_count")?,
                step: load(handle, "sqlite3_step")?,
                reset: load(handle, "sqlite3_reset")?,
                finalize: load(handle, "sqlite3_finalize")?,
                errmsg: load(handle, "sqlite3_errmsg")?,
                extended_errcode: load(handle, "sqlite3_extended_errcode")?,
                db_filename: load(handle, "sqlite3_db_filename")?,
                get_autocommit: load(handle, "sqlite3_get_autocommit")?,
                libversion: load(handle, "sqlite3_libversion")?,
            },
            _handle: guard,
        };
        Ok(lib)
    }

    /// The library's version (sqlite3_libversion): Python's `sqlite3.sqlite_version`
    /// when it is the module's library.
    fn version(&self) -> String {
        // SAFETY: a static NUL-terminated string.
        unsafe { CStr::from_ptr((self.api.libversion)()) }
            .to_string_lossy()
            .into_owned()
    }

    /// The file of `conn`'s main database as this library sees it through the
    /// handle (the store checks it is its own before using the library).
    fn filename(&self, conn: &Bound<'_, PyAny>) -> PyResult<String> {
        let db = handle_of(conn)?;
        // SAFETY: an open handle; "main" always exists.
        let p = unsafe { (self.api.db_filename)(db, c"main".as_ptr()) };
        Ok(if p.is_null() {
            String::new()
        } else {
            // SAFETY: SQLite's NUL-terminated name, valid while the handle is.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        })
    }
}
