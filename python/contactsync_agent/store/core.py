"""The `Store`: one connection to the mirror and everything at its level:
opening (read-write or read-only), the pragmas, migrating, the writer lock
(`writing()`), transactions, checkpoints (idle, TRUNCATE, the pending
erasure), `meta` and id high-water marks.

The SQL of each concept lives in a part, an attribute of the store:
`store.contacts`, `store.feed`, `store.review`, `store.runs`,
`store.entities`, `store.maintenance`, `store.outbox`. This module and those parts are the
only code that runs SQL on the mirror. It makes no decisions: the rules
(`rules.py`) do.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contactsync_agent import _core
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.locking import WriterLock, real_db_path
from contactsync_agent.store.console import Console
from contactsync_agent.store.contacts import Contacts
from contactsync_agent.store.entities import Entities
from contactsync_agent.store.feed import Feed
from contactsync_agent.store.maintenance import Maintenance
from contactsync_agent.store.outbox import Outbox
from contactsync_agent.store.part import now_iso, readonly_uri
from contactsync_agent.store.review import Review
from contactsync_agent.store.runs import Runs
from contactsync_agent.store.schema import MIGRATIONS, SCHEMA_VERSION, _split_sql

PAGE_SIZE = 16384
BUSY_TIMEOUT_MS = 5000
#: How long `close()`'s TRUNCATE checkpoint waits for readers: not at all.
CLOSE_CHECKPOINT_WAIT = 0.0
#: The agent's idle checkpoint runs when the WAL is bigger than this (an idle
#: agent's heartbeats add a page or two each) or an erasure is pending...
IDLE_CHECKPOINT_MIN_BYTES = 1 << 20
#: ... and waits at most this long (seconds) for readers still using the WAL.
IDLE_CHECKPOINT_WAIT = 1.0
#: `meta` key of a purge whose checkpoint could not complete (JSON).
ERASURE_PENDING_KEY = "erasure.pending"


@dataclass(frozen=True)
class CheckpointResult:
    """What a TRUNCATE checkpoint achieved: `complete` when every frame was
    copied and the WAL emptied; `frames`/`copied` as SQLite reports them
    (-1 when the database was locked); `wal_bytes` the WAL file's size after."""

    complete: bool
    frames: int
    copied: int
    wal_bytes: int


def _create_private_file(path: Path) -> None:
    """Creates the database file readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)


#: How long a write waits for the writer lock by default (an agent run's length).
DEFAULT_WRITE_WAIT = 120.0


def _db_path(path: str | os.PathLike[str]) -> Path:
    """The database's real path; refuses a file with several hard links.

    SQLite names the WAL and shared-memory files after the path it opened, so
    two hard links of one database would write two different WALs into one file
    (and would key two different writer locks): refused, for readers too."""
    p = real_db_path(path)
    with contextlib.suppress(FileNotFoundError):
        links = p.stat().st_nlink
        if links > 1:
            raise ContactSyncError(
                f"{p}: the database file has {links} hard links; SQLite keys its WAL by "
                "name, so a database reached under two names can be corrupted: remove the "
                "other links (a symlink is fine) or copy it with `contactsync backup`"
            )
    return p


def _file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


#: SQLite's page cache of the writer connection (KiB, negative), and during a
#: first import (`Store.bulk_cache`).
CACHE_KIB = -131072
BULK_CACHE_KIB = -32768

class Store:
    """One connection to the mirror: read-write or read-only.

    A read-write store keeps its connection open but writes and checkpoints only
    while it holds the writer lock (`writing()`; `transaction()` and
    `checkpoint()` take it themselves), waiting up to `lock_wait` seconds for
    it. Reads need no lock (WAL: they see the last commit).

    Each concept's SQL is a part: `contacts`, `feed`, `review`, `runs`,
    `entities`, `maintenance` (attributes, on this store's connection)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: WriterLock | None, *,
                 lock_wait: float = DEFAULT_WRITE_WAIT,
                 on_wait: Callable[[int | None], None] | None = None) -> None:
        self.path = path
        self.conn = conn
        self.lock = lock
        self.readonly = lock is None
        #: Seconds a write waits for the writer lock (math.inf: as long as it takes).
        self.lock_wait = lock_wait
        #: Called once per wait with the holder's pid (the CLI says "waiting ...").
        self.on_wait = on_wait
        #: Called while waiting; may raise to give up (the agent, asked to stop).
        self.interrupt: Callable[[], None] | None = None
        self._depth = 0
        # The file this connection opened (device, inode): a write checks it is
        # still the file at `path`.
        self._file_id: tuple[int, int] | None = None
        # Runs left 'running' by a killed process are marked at the first write.
        self._stale_pending = lock is not None
        # `bulk_library`'s answer and the connection it was checked on.
        self._library: _core.SqliteLibrary | None = None
        self._library_conn: object = None
        # The parts: each concept's SQL, on this store's connection.
        self.contacts = Contacts(self)
        self.feed = Feed(self)
        self.review = Review(self)
        self.console = Console(self)
        self.runs = Runs(self)
        self.entities = Entities(self)
        self.maintenance = Maintenance(self)
        self.outbox = Outbox(self)

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False,
             lock_wait: float = DEFAULT_WRITE_WAIT,
             on_wait: Callable[[int | None], None] | None = None,
             interrupt: Callable[[], None] | None = None) -> Store:
        p = _db_path(path)
        if readonly:
            if not p.exists():
                raise ContactSyncError(f"{p}: no mirror database here (run a sync first)")
            conn = sqlite3.connect(readonly_uri(p), uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            store = cls(p, conn, None)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ContactSyncError(
                    f"{p}: schema version {version} is newer than this agent ({SCHEMA_VERSION})"
                )
            return store
        _create_private_file(p)
        conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
        store = cls(p, conn, WriterLock(p), lock_wait=lock_wait, on_wait=on_wait)
        store.interrupt = interrupt
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # FULL: a commit the change feed has published survives a power cut.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
            # The checkpoint is not left to COMMIT (which would copy a large
            # run's WAL into the database inside the run): `checkpoint()` runs
            # it at close, after each agent run and before a run when the WAL
            # has grown, so the WAL stays bounded by about one run.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA temp_store = MEMORY")
            store._file_id = _file_id(p)
            store._stale_pending = False  # not before the tables exist
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if version != SCHEMA_VERSION or mode != "wal":
                # A new or older database: set up now, under the lock. (An up to
                # date one needs no lock to open, so a CLI write waits once, at
                # its write, not also at its open.)
                with store.writing():
                    # New databases only (a no-op on an existing file): 16 KiB
                    # pages cut a million-contact import by about 1.5 s against
                    # the default 4 KiB (fewer pages, page writes and B-tree
                    # splits), with no loss on the small re-imports; measured in
                    # benches/headline.py.
                    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    store._migrate()
            store._stale_pending = True
        except BaseException:
            conn.close()
            raise
        return store

    @property
    def holding(self) -> bool:
        """True while this store holds the writer lock."""
        return self._depth > 0

    def bulk_library(self) -> _core.SqliteLibrary | None:
        """This connection's own SQLite library, reached from the Rust core for
        a bulk insert (`store.contacts.insert_created`), or None when it cannot
        be reached with certainty: the connection is not a plain
        `sqlite3.Connection`, the `_sqlite3` module hides SQLite's functions,
        the library's version is not the one Python reports, or the handle does
        not open this store's file. `CONTACTSYNC_BULK_BINDING=python` turns it
        off (every insert then goes through `executemany`)."""
        if os.environ.get("CONTACTSYNC_BULK_BINDING") == "python":
            return None
        conn = self.conn
        if conn is self._library_conn:
            return self._library
        self._library_conn, self._library = conn, None
        if type(conn) is not sqlite3.Connection:
            return None
        import _sqlite3  # the extension module whose library the connection runs on

        try:
            library = _core.SqliteLibrary(_sqlite3.__file__)
            if library.version() != sqlite3.sqlite_version:
                return None
            same = os.path.samefile(library.filename(conn), self.path)
        except (RuntimeError, TypeError, OSError):
            return None
        self._library = library if same else None
        return self._library

    @contextlib.contextmanager
    def bulk_cache(self) -> Iterator[None]:
        """A smaller page cache for the block (a first import, issue 19): its
        inserts append (contacts, feed, then one sorted index build), so
        pages are not read again and 128 MiB of them only add to the peak
        memory (measured at 500,000 contacts: 520-550 MB -> 450-470 MB)."""
        self.conn.execute(f"PRAGMA cache_size = {BULK_CACHE_KIB}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")

    @contextlib.contextmanager
    def writing(self, *, polite: bool = False) -> Iterator[None]:
        """Holds the writer lock for the block (re-entrant): every write and
        checkpoint of this connection happens inside one. `polite`: let writers
        already waiting go first (the agent, before a run)."""
        if self.lock is None:
            raise ContactSyncError(f"{self.path}: the mirror is open read-only")
        if self._depth == 0:
            self.lock.wait(self.lock_wait, polite=polite, on_wait=self.on_wait,
                           interrupt=self.interrupt)
            if self._file_id is not None and _file_id(self.path) != self._file_id:
                self.lock.release()
                raise ContactSyncError(
                    f"{self.path}: the database file was replaced (a restore?) since this "
                    "program opened it; open it again")
        self._depth += 1
        try:
            if self._stale_pending:
                # Under the lock no run of another process is under way: a run
                # row still 'running' was left by a killed process.
                self._stale_pending = False
                self.runs.abort_stale()
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.lock.release()

    def close(self) -> None:
        if self.lock is None:
            self.conn.close()
            return
        try:
            replaced = self._file_id is not None and _file_id(self.path) != self._file_id
        except OSError:
            replaced = True
        if replaced or (self._depth == 0 and not self.lock.try_acquire()):
            # A run of the agent (or another write) is under way: no waiting to
            # checkpoint, the agent checkpoints after its run. (Or the file was
            # replaced: nothing of this connection's belongs there.) The close-time
            # checkpoint SQLite itself may run needs every other connection
            # closed (an exclusive lock on the file): it cannot meet a writer.
            self.conn.close()
            return
        self._depth += 1
        try:
            # No waiting for readers here: a downstream reader holding a
            # transaction would add its wait to every CLI write. What a busy
            # reader keeps in the WAL goes at the agent's idle checkpoint (or the
            # next close), and a pending erasure stays recorded until then.
            with contextlib.suppress(sqlite3.Error):
                self.idle_checkpoint(CLOSE_CHECKPOINT_WAIT, force=True)
            # Closing the last connection checkpoints too: under the lock as well.
            self.conn.close()
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.lock.release()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ContactSyncError(
                f"{self.path}: schema version {version} is newer than this agent "
                f"({SCHEMA_VERSION}); upgrade contactsync-agent"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                for stmt in _split_sql(MIGRATIONS[v]):
                    self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version = {v}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the writer lock (waiting for it if busy)."""
        with self.writing():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def rolled_back(self) -> Iterator[None]:
        """One write transaction that is always rolled back (a dry run), its
        AUTOINCREMENT counters included; the caller holds the writer lock."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """One consistent read snapshot for the block (a read transaction never
        blocks the writer); inside a transaction already under way, that one."""
        own_tx = not self.conn.in_transaction
        if own_tx:
            self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if own_tx:
                self.conn.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copies the WAL into the database (PASSIVE: never waits on readers),
        under the writer lock."""
        with self.writing():
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def checkpoint_truncate(self, wait: float) -> CheckpointResult:
        """A TRUNCATE checkpoint: copies every frame of the WAL into the database
        and empties the WAL file, waiting at most `wait` seconds for readers that
        still use it (a reader holding a transaction keeps it busy until it ends).

        `complete` is False when a reader kept it from finishing: the WAL then
        still holds old page images. Writer only; taken under the writer lock
        (nested in the caller's hold, if any)."""
        if self.readonly:
            raise ContactSyncError("a checkpoint needs the writer: the mirror is open read-only")
        with self.writing():
            self.conn.execute(f"PRAGMA busy_timeout = {max(int(wait * 1000), 0)}")
            try:
                busy, frames, copied = self.conn.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:  # locked: as busy as it gets
                busy, frames, copied = 1, -1, -1
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return CheckpointResult(complete=busy == 0, frames=int(frames), copied=int(copied),
                                wal_bytes=self.wal_bytes())

    def idle_checkpoint(self, wait: float = IDLE_CHECKPOINT_WAIT, *,
                        force: bool = False) -> CheckpointResult | None:
        """What the agent runs while idle: a TRUNCATE checkpoint (bounded wait)
        when the WAL holds more than `IDLE_CHECKPOINT_MIN_BYTES` or an erasure
        is pending (or always, with `force`: `close()`); on success a pending
        erasure is recorded complete. None when there was nothing to do.
        Writer only (call it holding the writer lock).

        Only PASSIVE checkpoints run right after a run, and they cannot reset the
        WAL while a reader is using it: under readers that overlap run after run
        the WAL would grow without bound. This one waits a little for them."""
        pending = self.get_meta(ERASURE_PENDING_KEY) is not None
        if not (force or pending) and self.wal_bytes() <= IDLE_CHECKPOINT_MIN_BYTES:
            return None
        result = self.checkpoint_truncate(wait)
        if result.complete and pending:
            self.clear_erasure_pending()
            result = self.checkpoint_truncate(wait)  # the meta write itself
        return result

    def erasure_pending(self) -> dict[str, Any] | None:
        """The purge whose erased values may still be in the WAL or in free pages
        (`purge` could not complete its checkpoint), or None."""
        text = self.get_meta(ERASURE_PENDING_KEY)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def mark_erasure_pending(self, info: dict[str, Any]) -> None:
        """Records an erasure as pending (call inside the purge's transaction)."""
        earlier = self.erasure_pending()
        if earlier:  # keep the oldest pending one's start: that is how long it waits
            info = {**info, "since": earlier.get("since", info.get("since")),
                    "purges": int(earlier.get("purges", 1)) + 1}
        self.set_meta(ERASURE_PENDING_KEY, json.dumps(info, sort_keys=True))

    def clear_erasure_pending(self) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM meta WHERE key = ?", (ERASURE_PENDING_KEY,))
            self.set_meta("erasure.completed_at", now_iso())

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def all_meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def allocate_ids(self, table: str, n: int) -> int:
        """`allocate_contact_ids` for any table with local ids (contacts,
        organisations, locations, contact_customers): `meta` key `<table>_id_hwm`,
        except contacts' historical `contact_id_hwm`."""
        key = HWM_KEYS[table]
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            hwm = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
        else:
            hwm = int(row[0])
        self.set_meta(key, str(hwm + n))
        return int(hwm) + 1

    def peek_id_hwm(self, table: str) -> int:
        """The highest local id handed out so far in `table` (0 if none)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?",
                                (HWM_KEYS[table],)).fetchone()
        if row is not None:
            return int(row[0])
        return int(self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])


HWM_KEYS: dict[str, str] = {
    "contacts": "contact_id_hwm",
    "organisations": "organisation_id_hwm",
    "locations": "location_id_hwm",
    "contact_customers": "customer_link_id_hwm",
}
