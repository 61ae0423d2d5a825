"""The SQLite mirror: schema, migrations, every write, under the writer lock.

Only this module writes to the database, and it applies a run's plan inside one
transaction. It makes no decisions: the rules (`rules.py`) do.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contactsync_agent.errors import ContactSyncError
from contactsync_agent.locking import WriterLock, real_db_path
from contactsync_agent.mapping import FIELDS

SCHEMA_VERSION = 4
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


# Every column of `contacts` a downstream app may read, in table order.
CONTACT_COLUMNS: tuple[str, ...] = (
    "id",
    "record_type",
    "forced_manual",
    "source",
    "external_id",
    *FIELDS,
    "extra",
    "phone_e164",
    "mobile_e164",
    "hash",
    "source_hash",
    "created_at",
    "updated_at",
    "deleted_at",
)

_FIELD_COLS = ",\n    ".join(f"{f} TEXT NOT NULL DEFAULT ''" for f in FIELDS)

MIGRATIONS: dict[int, str] = {
    1: f"""
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    record_type TEXT NOT NULL DEFAULT 'manual'
        CHECK (record_type IN ('manual', 'external', 'sync')),
    forced_manual INTEGER NOT NULL DEFAULT 0 CHECK (forced_manual IN (0, 1)),
    source TEXT,
    external_id TEXT,
    {_FIELD_COLS},
    extra TEXT NOT NULL DEFAULT '{{}}',
    phone_e164 TEXT NOT NULL DEFAULT '',
    mobile_e164 TEXT NOT NULL DEFAULT '',
    hash INTEGER,
    source_hash INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX contacts_link ON contacts (source, external_id)
    WHERE external_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX contacts_local ON contacts (record_type)
    WHERE record_type != 'sync' AND deleted_at IS NULL;

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('full', 'incremental')),
    origin TEXT,
    origin_hash TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('running', 'ok', 'failed', 'refused', 'aborted')),
    records INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    converted INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    skipped_forced_manual INTEGER NOT NULL DEFAULT 0,
    ignored_external INTEGER NOT NULL DEFAULT 0,
    unlinked INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    review_items INTEGER NOT NULL DEFAULT 0,
    activities INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    allow_mass_delete INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    error TEXT
);
CREATE INDEX runs_source ON runs (source, id);

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    run_id INTEGER,
    op TEXT NOT NULL,
    fields TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX changes_contact ON changes (contact_id);

CREATE TABLE activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER,
    run_id INTEGER,
    source TEXT,
    external_id TEXT,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{{}}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'dismissed')),
    created_at TEXT NOT NULL,
    closed_at TEXT,
    resolution TEXT
);
CREATE INDEX activities_open ON activities (status, contact_id);

CREATE TABLE review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_id INTEGER,
    candidate_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    score REAL,
    explanation TEXT NOT NULL DEFAULT '{{}}',
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected')),
    created_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX review_open ON review_items (status);

CREATE TABLE review_rejections (
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    candidate_id INTEGER NOT NULL,
    rejected_at TEXT NOT NULL,
    PRIMARY KEY (source, external_id, candidate_id)
);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    source TEXT NOT NULL,
    file TEXT,
    line INTEGER,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX quarantine_run ON quarantine (run_id);

CREATE TABLE contact_references (
    contact_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (contact_id, ref)
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE link_snapshots (
    source TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    entries INTEGER NOT NULL,
    saved_at TEXT NOT NULL
);
CREATE TRIGGER link_snapshot_insert AFTER INSERT ON contacts
    WHEN NEW.external_id IS NOT NULL
    BEGIN DELETE FROM link_snapshots WHERE source = NEW.source; END;
CREATE TRIGGER link_snapshot_update
    AFTER UPDATE OF source, external_id, source_hash, record_type, forced_manual, deleted_at
    ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source IN (OLD.source, NEW.source); END;
CREATE TRIGGER link_snapshot_delete AFTER DELETE ON contacts
    BEGIN DELETE FROM link_snapshots WHERE source = OLD.source; END;
""",
}

# Migration 2 (issue 6): organisations, locations, the contact's link to them,
# contact-customer links with roles, field ownership and the entity-aware feed.
# Feed: `changes` gains `entity_type` ('contact', 'organisation', 'location',
# 'customer_link') and `entity_id`; `contact_id` is set on contact entries only
# (NULL for the others), so a reader that knows nothing of entities and asks
# for a contact's entries still gets exactly those. The table is rebuilt
# because SQLite cannot drop the NOT NULL of `contact_id` in place; seq values
# and the AUTOINCREMENT high-water mark are kept.
_ENTITY_FIELDS = """
    email TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    street TEXT NOT NULL DEFAULT '',
    city TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    postcode TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT"""
_ROLE = "TEXT NOT NULL DEFAULT 'N' CHECK ({0} IN ('Y', 'N', 'NA'))"

MIGRATION_2 = f"""
CREATE TABLE changes_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER,
    run_id INTEGER,
    op TEXT NOT NULL,
    fields TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    entity_type TEXT NOT NULL DEFAULT 'contact'
        CHECK (entity_type IN ('contact', 'organisation', 'location', 'customer_link')),
    object_id INTEGER,
    entity_id INTEGER GENERATED ALWAYS AS (coalesce(contact_id, object_id)) VIRTUAL
);
INSERT INTO changes_v2 (seq, contact_id, run_id, op, fields, reason_code, reason, at)
    SELECT seq, contact_id, run_id, op, fields, reason_code, reason, at FROM changes;
DELETE FROM sqlite_sequence WHERE name = 'changes_v2';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'changes_v2', seq FROM sqlite_sequence WHERE name = 'changes';
DROP TABLE changes;
ALTER TABLE changes_v2 RENAME TO changes;
CREATE INDEX changes_contact ON changes (contact_id);
CREATE INDEX changes_entity ON changes (entity_type, object_id) WHERE contact_id IS NULL;

ALTER TABLE runs ADD COLUMN entity_type TEXT NOT NULL DEFAULT 'contact';

CREATE TABLE organisations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    website TEXT NOT NULL DEFAULT '',{_ENTITY_FIELDS}
);
CREATE UNIQUE INDEX organisations_link ON organisations (source, external_id);

CREATE TABLE locations (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',{_ENTITY_FIELDS}
);
CREATE UNIQUE INDEX locations_link ON locations (source, external_id);
CREATE INDEX locations_organisation ON locations (source, organisation_ref);

CREATE TABLE contact_organisations (
    contact_id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    organisation_ref TEXT NOT NULL DEFAULT '',
    location_ref TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
-- Contacts of an organisation (by location is rarer: scan, or join from the view).
CREATE INDEX contact_organisations_org ON contact_organisations (organisation_ref);

CREATE TABLE contact_customers (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_ref TEXT NOT NULL,
    customer TEXT NOT NULL,
    customer_name TEXT NOT NULL DEFAULT '',
    bill_to {_ROLE.format("bill_to")},
    sold_to {_ROLE.format("sold_to")},
    ship_to {_ROLE.format("ship_to")},
    correspondence {_ROLE.format("correspondence")},
    extra TEXT NOT NULL DEFAULT '{{}}',
    hash INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE UNIQUE INDEX contact_customers_link ON contact_customers (source, external_id);
CREATE INDEX contact_customers_contact ON contact_customers (source, contact_ref);

CREATE TABLE held_values (
    contact_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    source_value TEXT NOT NULL,
    PRIMARY KEY (contact_id, field)
) WITHOUT ROWID;

CREATE TABLE source_policies (
    source TEXT PRIMARY KEY,
    ownership TEXT NOT NULL DEFAULT '{{}}',
    unique_fields TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL
);

CREATE VIEW contacts_with_organisation AS
SELECT c.id AS contact_id, c.record_type, c.source, c.external_id,
       c.given_name, c.family_name, c.display_name, c.email, c.phone, c.mobile,
       co.position AS position,
       o.id AS organisation_id, o.external_id AS organisation_external_id,
       o.name AS organisation_name, o.email AS organisation_email,
       o.phone AS organisation_phone, o.website AS organisation_website,
       l.id AS location_id, l.external_id AS location_external_id,
       l.name AS location_name, l.street AS location_street, l.city AS location_city,
       l.region AS location_region, l.postcode AS location_postcode,
       l.country AS location_country, l.phone AS location_phone,
       l.email AS location_email
FROM contacts c
LEFT JOIN contact_organisations co ON co.contact_id = c.id
LEFT JOIN locations l ON l.source = co.source AND l.external_id = co.location_ref
    AND l.deleted_at IS NULL
LEFT JOIN organisations o ON o.source = co.source
    AND o.external_id = coalesce(nullif(co.organisation_ref, ''), l.organisation_ref)
    AND o.deleted_at IS NULL
WHERE c.deleted_at IS NULL;

CREATE VIEW contact_customer_roles AS
SELECT c.id AS contact_id, cc.id AS link_id, cc.source, cc.customer, cc.customer_name,
       cc.bill_to, cc.sold_to, cc.ship_to, cc.correspondence
FROM contact_customers cc
JOIN contacts c ON c.source = cc.source AND c.external_id = cc.contact_ref
    AND c.deleted_at IS NULL
WHERE cc.deleted_at IS NULL;

CREATE VIEW contact_customer_access AS
SELECT contact_id, customer, 'bill_to' AS role FROM contact_customer_roles WHERE bill_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'sold_to' FROM contact_customer_roles WHERE sold_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'ship_to' FROM contact_customer_roles WHERE ship_to = 'Y'
UNION ALL
SELECT contact_id, customer, 'correspondence' FROM contact_customer_roles
    WHERE correspondence = 'Y'
"""

MIGRATIONS[2] = MIGRATION_2

# Migration 3, for import speed:
# - a new linked contact drops its source's link snapshot through the two
#   insert paths below (once per bulk insert) instead of a per-row trigger,
#   which cost about 0.6 s per million created contacts (updates and deletes
#   keep their triggers);
# - `contact_organisations` loses its index on organisation_ref: nothing of
#   ours looks links up by organisation (the views join by contact id), and
#   keeping it cost about 0.15 s per 200,000 linked contacts; a reader that
#   wants every contact of one organisation scans the table (measured in
#   docs/organisations.md).
MIGRATIONS[3] = """
DROP TRIGGER IF EXISTS link_snapshot_insert;
DROP INDEX IF EXISTS contact_organisations_org;
"""

# Migration 4 (issue 12): a run records whether a column drop was confirmed
# (`--allow-column-drop`), how many deletions it skipped because rows of its
# snapshot could not be identified, and `forced` = 1 for a run started with
# `--force` into a source the config does not list or has disabled.
MIGRATIONS[4] = """
ALTER TABLE runs ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN allow_column_drop INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN deletions_skipped INTEGER NOT NULL DEFAULT 0;
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sql_quote(text: str) -> str:
    """A constant of ours as an SQL string literal (never used for input values)."""
    return "'" + text.replace("'", "''") + "'"


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """The `file:` URI that opens `path` read-only (`uri=True`), with `#`, `?`, `%`
    and the like percent-escaped: pasted raw, `#` would end the path and `?` start
    the query, opening another file (or dropping `mode=ro`)."""
    return Path(path).absolute().as_uri() + "?mode=ro"


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


class Store:
    """One connection to the mirror: read-write or read-only.

    A read-write store keeps its connection open but writes and checkpoints only
    while it holds the writer lock (`writing()`; `transaction()` and
    `checkpoint()` take it themselves), waiting up to `lock_wait` seconds for
    it. Reads need no lock (WAL: they see the last commit)."""

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
            conn.execute("PRAGMA cache_size = -131072")
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
                self._abort_stale_runs()
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

    def _abort_stale_runs(self) -> None:
        """Runs left 'running' by a killed process never committed: say so."""
        with self.transaction():
            self.conn.execute(
                "UPDATE runs SET status = 'aborted', finished_at = ?, "
                "error = 'the process ended before the run committed' WHERE status = 'running'",
                (now_iso(),),
            )

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

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ------------------------------------------------------------ reads

    def contact_row(self, contact_id: int) -> dict[str, Any] | None:
        cur = self.conn.execute(
            f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts WHERE id = ?", (contact_id,)
        )
        row = cur.fetchone()
        return dict(zip(CONTACT_COLUMNS, row, strict=True)) if row else None

    def contact_rows(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        cols = ", ".join(CONTACT_COLUMNS)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT {cols} FROM contacts WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = dict(zip(CONTACT_COLUMNS, row, strict=True))
        return out

    def in_use(self, ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, ref in self.conn.execute(
                f"SELECT contact_id, ref FROM contact_references WHERE contact_id IN ({marks}) "
                "ORDER BY contact_id, ref",
                chunk,
            ):
                out.setdefault(cid, []).append(ref)
        return out

    def linked(self, source: str) -> Iterator[list[tuple[str, int, int | None, int]]]:
        """(external id, local id, source hash, attention flag) of a source's links, in chunks."""
        cur = self.conn.execute(
            "SELECT external_id, id, source_hash, "
            "  (record_type != 'sync' OR forced_manual = 1) "
            "FROM contacts WHERE source = ? AND external_id IS NOT NULL AND deleted_at IS NULL",
            (source,),
        )
        while True:
            rows = cur.fetchmany(100_000)
            if not rows:
                return
            yield rows

    def local_identity_rows(self, source: str) -> list[tuple[int, int, list[str]]]:
        """Manual contacts not linked to `source` (kind 0) and external ones (kind 1)."""
        cols = ", ".join(FIELDS)
        rows = self.conn.execute(
            f"SELECT id, CASE record_type WHEN 'manual' THEN 0 ELSE 1 END, {cols} "
            "FROM contacts WHERE record_type IN ('manual', 'external') AND deleted_at IS NULL "
            "AND NOT (record_type = 'manual' AND source IS ? AND external_id IS NOT NULL)",
            (source,),
        ).fetchall()
        return [(r[0], r[1], list(r[2:])) for r in rows]

    def match_rows(self, where: str, params: Sequence[Any],
                   columns: Sequence[str]) -> list[dict[str, Any]]:
        """Live contacts as records for the matching engine ({"id": str, column: value})."""
        cols = ", ".join(columns)
        return [
            {"id": str(r[0]), **dict(zip(columns, r[1:], strict=True))}
            for r in self.conn.execute(
                f"SELECT id, {cols} FROM contacts WHERE deleted_at IS NULL AND {where} "
                "ORDER BY id", params)
        ]

    def sync_count(self, source: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM contacts WHERE source = ? AND record_type = 'sync' "
                "AND external_id IS NOT NULL AND deleted_at IS NULL",
                (source,),
            ).fetchone()[0]
        )

    def allocate_contact_ids(self, n: int) -> int:
        """Reserves `n` new local ids and returns the first. Ids come from a
        high-water mark in `meta` that only grows, so an id is never reused,
        not even after a hard delete (call inside a transaction)."""
        return self.allocate_ids("contacts", n)

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

    # ------------------------------------------------------------ link snapshots

    def load_snapshot(self, source: str) -> bytes | None:
        row = self.conn.execute(
            "SELECT data FROM link_snapshots WHERE source = ?", (source,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def save_snapshot(self, source: str, data: bytes, entries: int, at: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO link_snapshots (source, data, entries, saved_at) "
            "VALUES (?, ?, ?, ?)",
            (source, data, entries, at),
        )

    def link_rows(self, ids: Sequence[int]) -> list[tuple[int, str | None, str | None,
                                                          int | None, int, str | None]]:
        """(id, source, external id, source hash, attention, deleted_at) of contacts."""
        out: list[tuple[int, str | None, str | None, int | None, int, str | None]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(self.conn.execute(
                "SELECT id, source, external_id, source_hash, "
                "(record_type != 'sync' OR forced_manual = 1), deleted_at "
                f"FROM contacts WHERE id IN ({marks})", chunk))
        return out

    def rejected_pairs(self, source: str) -> set[tuple[str, int]]:
        return {
            (e, c)
            for e, c in self.conn.execute(
                "SELECT external_id, candidate_id FROM review_rejections WHERE source = ?",
                (source,),
            )
        }

    # ------------------------------------------------------------ writes

    def insert_created(
        self, source: str, rows: Iterable[Any], feed: Iterable[Any], run_id: int | None,
        at: str, reason_code: str, reason: str,
    ) -> None:
        """Bulk insert of new `sync` contacts of `source` and their feed entries,
        as rows made by the Rust batch: contacts (id, source, external_id, 14
        fields, extra, phone_e164, mobile_e164, hash) and feed (contact id, payload)."""
        cols = ", ".join(
            ("id", "source", "external_id", *FIELDS, "extra", "phone_e164", "mobile_e164", "hash")
        )
        n = 3 + len(FIELDS) + 4
        marks = ", ".join(f"?{i}" for i in range(1, n + 1))
        self.conn.executemany(
            f"INSERT INTO contacts ({cols}, source_hash, record_type, forced_manual, "
            f"created_at, updated_at) VALUES ({marks}, ?{n}, 'sync', 0, {sql_quote(at)}, "
            f"{sql_quote(at)})",
            rows,
        )
        self.conn.execute("DELETE FROM link_snapshots WHERE source = ?", (source,))
        run = "NULL" if run_id is None else str(int(run_id))
        self.conn.executemany(
            "INSERT INTO changes (contact_id, run_id, op, fields, reason_code, reason, at) "
            f"VALUES (?, {run}, 'create', ?, {sql_quote(reason_code)}, {sql_quote(reason)}, "
            f"{sql_quote(at)})",
            feed,
        )

    def insert_contact(self, values: dict[str, Any], at: str) -> int:
        """Inserts one contact under a newly allocated id (call inside a transaction)."""
        cid = self.allocate_contact_ids(1)
        cols = [c for c in values if c in CONTACT_COLUMNS and c != "id"]
        self.conn.execute(
            f"INSERT INTO contacts (id, {', '.join(cols)}, created_at, updated_at) "
            f"VALUES (?, {', '.join('?' * len(cols))}, ?, ?)",
            [cid, *(values[c] for c in cols), at, at],
        )
        if values.get("external_id") is not None:
            self.conn.execute("DELETE FROM link_snapshots WHERE source IS ?",
                              (values.get("source"),))
        return cid

    def update_contact(self, contact_id: int, values: dict[str, Any], at: str | None) -> None:
        if not values:
            return
        sets = ", ".join(f"{c} = ?" for c in values)
        params = list(values.values())
        if at is not None:
            sets += ", updated_at = ?"
            params.append(at)
        self.conn.execute(f"UPDATE contacts SET {sets} WHERE id = ?", [*params, contact_id])

    def add_change(
        self, contact_id: int, run_id: int | None, op: str, fields: dict[str, Any],
        reason_code: str, reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO changes (contact_id, run_id, op, fields, reason_code, reason, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (contact_id, run_id, op, json.dumps(fields, ensure_ascii=False), reason_code,
             reason, at),
        )
        return int(cur.lastrowid or 0)

    def add_activity(
        self, *, contact_id: int | None, run_id: int | None, source: str | None,
        external_id: str | None, kind: str, fields: dict[str, Any], reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO activities (contact_id, run_id, source, external_id, kind, fields, "
            "reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (contact_id, run_id, source, external_id, kind,
             json.dumps(fields, ensure_ascii=False), reason, at),
        )
        return int(cur.lastrowid or 0)

    def add_review_item(
        self, *, run_id: int | None, source: str, external_id: str, contact_id: int | None,
        candidate_id: int, kind: str, score: float | None, explanation: dict[str, Any],
        reason: str, at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO review_items (run_id, source, external_id, contact_id, candidate_id, "
            "kind, score, explanation, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, source, external_id, contact_id, candidate_id, kind, score,
             json.dumps(explanation, ensure_ascii=False), reason, at),
        )
        return int(cur.lastrowid or 0)

    def add_quarantine(
        self, rows: Iterable[tuple[int, str, str]], *, run_id: int | None, source: str,
        file: str | None, at: str,
    ) -> int:
        data = [(run_id, source, file, line, reason, raw, at) for line, reason, raw in rows]
        self.conn.executemany(
            "INSERT INTO quarantine (run_id, source, file, line, reason, raw, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            data,
        )
        return len(data)

    def add_reference(self, contact_id: int, ref: str, at: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO contact_references (contact_id, ref, registered_at) "
            "VALUES (?, ?, ?)",
            (contact_id, ref, at),
        )

    def remove_reference(self, contact_id: int, ref: str) -> bool:
        cur = self.conn.execute(
            "DELETE FROM contact_references WHERE contact_id = ? AND ref = ?", (contact_id, ref)
        )
        return cur.rowcount > 0

    # ------------------------------------------------------------ organisations, locations,
    # ------------------------------------------------------------ customer links (issue 6)

    def entity_index(self, table: str, source: str) -> dict[str, tuple[int, int, str | None]]:
        """external id -> (local id, hash, deleted_at) of one source's rows of `table`."""
        return {
            e: (i, h, d)
            for e, i, h, d in self.conn.execute(
                f"SELECT external_id, id, hash, deleted_at FROM {table} WHERE source = ?",
                (source,),
            )
        }

    def entity_rows(self, table: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", chunk)
            cols = [d[0] for d in cur.description]
            for row in cur:
                out[row[0]] = dict(zip(cols, row, strict=True))
        return out

    def insert_entities(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                        at: str) -> None:
        """Rows of new entities: values for `columns` (which start with id)."""
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}, created_at, updated_at) "
            f"VALUES ({marks}, {sql_quote(at)}, {sql_quote(at)})",
            rows,
        )

    def add_entity_create_changes(
        self, table: str, entity_type: str, fields: Sequence[str], first_id: int, count: int,
        run_id: int | None, reason_code: str, reason: str, at: str,
    ) -> None:
        """Feed entries of entities just inserted under ids first_id .. first_id +
        count - 1, their payloads ({"source": [null, ...], "external_id": [null,
        ...], every non-empty field, "extra" when there is one}) written by
        SQLite from the rows in one statement (no payload passes through Python)."""
        parts = ["'{\"source\":[null,' || json_quote(source) || "
                 "'],\"external_id\":[null,' || json_quote(external_id) || ']'"]
        for f in fields:
            parts.append(f"CASE WHEN {f} != '' THEN ',\"{f}\":[null,' || json_quote({f}) "
                         "|| ']' ELSE '' END")
        parts.append("CASE WHEN extra != '{}' THEN ',\"extra\":[null,' || extra || ']' "
                     "ELSE '' END || '}'")
        self.conn.execute(
            "INSERT INTO changes (contact_id, run_id, op, fields, reason_code, reason, at, "
            f"entity_type, object_id) SELECT NULL, ?, 'create', {' || '.join(parts)}, ?, ?, ?, "
            f"?, id FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id",
            (run_id, reason_code, reason, at, entity_type, first_id, first_id + count - 1),
        )

    def update_entity(self, table: str, entity_id: int, values: dict[str, Any], at: str) -> None:
        sets = ", ".join(f"{c} = ?" for c in values)
        self.conn.execute(f"UPDATE {table} SET {sets}, updated_at = ? WHERE id = ?",
                          [*values.values(), at, entity_id])

    def add_entity_changes(
        self, entity_type: str, rows: Iterable[tuple[int, str, dict[str, Any]]],
        run_id: int | None, reason_code: str, reason: str, at: str,
    ) -> None:
        """Feed entries of organisations, locations or customer links:
        (entity id, op, payload) each; `contact_id` stays NULL on these."""
        self.conn.executemany(
            "INSERT INTO changes (contact_id, run_id, op, fields, reason_code, reason, at, "
            "entity_type, object_id) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((run_id, op, _FEED_JSON.encode(payload), reason_code, reason, at,
              entity_type, eid) for eid, op, payload in rows),
        )

    def insert_relations(self, source: str, rows: Iterable[tuple[int, str, str, str]],
                         at: str) -> None:
        """`contact_organisations` rows of newly created contacts, as the Rust
        batch hands them over: (contact id, organisation ref, location ref, position)."""
        self.conn.executemany(
            "INSERT INTO contact_organisations (contact_id, source, organisation_ref, "
            f"location_ref, position, updated_at) VALUES (?1, {sql_quote(source)}, ?2, ?3, "
            f"?4, {sql_quote(at)})",
            rows,
        )

    def relink_contacts(self, source: str, first_new_id: int, touched: Sequence[int],
                        at: str) -> None:
        """Rebuilds `contact_organisations` rows of the contacts a run created
        (ids from `first_new_id` on) or changed, from the relation keys the core
        keeps in their `extra` (set-based: one statement per kind)."""
        select = (
            "SELECT id, source, coalesce(json_extract(extra, '$.organisation_ref'), ''), "
            "coalesce(json_extract(extra, '$.location_ref'), ''), "
            "coalesce(json_extract(extra, '$.position'), ''), ? FROM contacts "
        )
        has_ref = ("(instr(extra, '\"organisation_ref\"') > 0 "
                   "OR instr(extra, '\"location_ref\"') > 0)")
        # New ids never had a row (ids are never reused): a plain insert.
        self.conn.execute(
            "INSERT INTO contact_organisations (contact_id, source, organisation_ref, "
            f"location_ref, position, updated_at) {select} WHERE id >= ? AND source = ? "
            f"AND {has_ref}",
            (at, first_new_id, source),
        )
        # Changed contacts still linked to a source: their row follows their extra.
        # (Unlinked ones, kept as manual, keep the relations they had.) A row
        # that would not change is not written: its updated_at stays.
        for start in range(0, len(touched), 500):
            chunk = list(touched[start : start + 500])
            marks = ",".join("?" * len(chunk))
            self.conn.execute(
                "INSERT INTO contact_organisations (contact_id, source, "
                f"organisation_ref, location_ref, position, updated_at) {select} "
                f"WHERE id IN ({marks}) AND source IS NOT NULL AND {has_ref} "
                "ON CONFLICT (contact_id) DO UPDATE SET source = excluded.source, "
                "organisation_ref = excluded.organisation_ref, "
                "location_ref = excluded.location_ref, position = excluded.position, "
                "updated_at = excluded.updated_at "
                "WHERE (source, organisation_ref, location_ref, position) IS NOT "
                "(excluded.source, excluded.organisation_ref, excluded.location_ref, "
                "excluded.position)",
                [at, *chunk],
            )
            self.conn.execute(
                "DELETE FROM contact_organisations WHERE contact_id IN (SELECT id FROM "
                f"contacts WHERE id IN ({marks}) AND source IS NOT NULL AND NOT {has_ref})",
                chunk,
            )

    # ------------------------------------------------------------ ownership (issue 6)

    def held_values(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """contact id -> {field: the source's last value} for local-owned fields."""
        out: dict[int, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for cid, fld, value in self.conn.execute(
                f"SELECT contact_id, field, source_value FROM held_values "
                f"WHERE contact_id IN ({marks})", chunk,
            ):
                out.setdefault(cid, {})[fld] = value
        return out

    def set_held_values(self, contact_id: int, values: dict[str, str]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO held_values (contact_id, field, source_value) "
            "VALUES (?, ?, ?)",
            [(contact_id, f, v) for f, v in values.items()],
        )

    def policy(self, source: str) -> tuple[dict[str, str], list[str]] | None:
        """(ownership, unique fields) last configured for `source`, if any."""
        row = self.conn.execute(
            "SELECT ownership, unique_fields FROM source_policies WHERE source = ?", (source,)
        ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def set_policy(self, source: str, ownership: dict[str, str], unique: Sequence[str],
                   at: str) -> None:
        self.conn.execute(
            "INSERT INTO source_policies (source, ownership, unique_fields, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
            "ownership = excluded.ownership, unique_fields = excluded.unique_fields, "
            "updated_at = excluded.updated_at",
            (source, json.dumps(ownership, sort_keys=True), json.dumps(list(unique)), at),
        )

    # ------------------------------------------------------------ runs

    def begin_run(self, source: str, mode: str, origin: str | None, origin_hash: str | None,
                  allow_mass_delete: bool, entity_type: str = "contact", *,
                  allow_column_drop: bool = False, forced: bool = False) -> int:
        with self.transaction():
            return self.insert_run(source, mode, origin, origin_hash, allow_mass_delete,
                                   entity_type, allow_column_drop=allow_column_drop,
                                   forced=forced)

    def insert_run(self, source: str, mode: str, origin: str | None, origin_hash: str | None,
                   allow_mass_delete: bool, entity_type: str = "contact", *,
                   allow_column_drop: bool = False, forced: bool = False) -> int:
        """The run row, inside the caller's transaction (a dry run rolls it back)."""
        cur = self.conn.execute(
            "INSERT INTO runs (source, mode, origin, origin_hash, started_at, status, "
            "allow_mass_delete, entity_type, allow_column_drop, forced) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (source, mode, origin, origin_hash, now_iso(), int(allow_mass_delete),
             entity_type, int(allow_column_drop), int(forced)),
        )
        return int(cur.lastrowid or 0)
    def feed_seq(self) -> int:
        """The highest change-feed seq so far (0 if none)."""
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])

    def run_preview(self, after_seq: int, limit: int) -> dict[str, list[dict[str, Any]]]:
        """The first `limit` contact feed entries after `after_seq` of each kind
        (creates, converts, updates, deletes, unlinks): what a dry run shows
        before it rolls back."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key, op in (("creates", "create"), ("converts", "convert"), ("updates", "update"),
                        ("deletes", "delete"), ("unlinks", "unlink")):
            rows = self.conn.execute(
                "SELECT ch.contact_id, ch.fields, ch.reason, c.external_id FROM changes ch "
                "LEFT JOIN contacts c ON c.id = ch.contact_id WHERE ch.seq > ? AND ch.op = ? "
                "AND ch.contact_id IS NOT NULL ORDER BY ch.seq LIMIT ?",
                (after_seq, op, limit))
            items: list[dict[str, Any]] = []
            for cid, fields_json, reason, ext in rows:
                fields = json.loads(fields_json)
                link = fields.get("external_id")
                if ext is None and isinstance(link, list):  # an unlink removed it
                    ext = link[0] if link[0] is not None else link[1]
                if op == "create":
                    fields = {f: after for f, (_, after) in fields.items()}
                items.append({"contact_id": cid, "external_id": ext, "fields": fields,
                              "reason": reason})
            out[key] = items
        return out

    def finish_run(self, run_id: int, status: str, counts: dict[str, int], *,
                   error: str | None, duration_ms: int) -> None:
        """Called inside the run's transaction for 'ok', in its own for failures."""
        cols = [c for c in counts if c in RUN_COUNTS]
        sets = "".join(f", {c} = ?" for c in cols)
        self.conn.execute(
            f"UPDATE runs SET status = ?, finished_at = ?, error = ?, duration_ms = ?{sets} "
            "WHERE id = ?",
            [status, now_iso(), error, duration_ms, *(counts[c] for c in cols), run_id],
        )


_FEED_JSON = json.JSONEncoder(ensure_ascii=False)

HWM_KEYS: dict[str, str] = {
    "contacts": "contact_id_hwm",
    "organisations": "organisation_id_hwm",
    "locations": "location_id_hwm",
    "contact_customers": "customer_link_id_hwm",
}

RUN_COUNTS: tuple[str, ...] = (
    "records",
    "created",
    "converted",
    "updated",
    "unchanged",
    "skipped_forced_manual",
    "ignored_external",
    "unlinked",
    "deleted",
    "review_items",
    "activities",
    "rejected",
    "deletions_skipped",
)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; a trigger's body keeps its inner semicolons."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part
        if buf.strip().upper().startswith("CREATE TRIGGER") and "END" not in part.upper():
            buf += ";"
            continue
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    return out
