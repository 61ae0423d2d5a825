"""The SQLite mirror: schema, migrations, the writer lock and every write.

Only this module writes to the database, and it applies a run's plan inside one
transaction. It makes no decisions: the rules (`rules.py`) do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.mapping import FIELDS

SCHEMA_VERSION = 1

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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sql_quote(text: str) -> str:
    """A constant of ours as an SQL string literal (never used for input values)."""
    return "'" + text.replace("'", "''") + "'"


def _create_private_file(path: Path) -> None:
    """Creates the database file readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)


class WriterLock:
    """An exclusive flock on `<db>.lock` holding the owner's pid."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(fd)
            raise LockedError(str(self.path.with_suffix("")), holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def holder(self) -> int | None:
        try:
            text = self.path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


class Store:
    """One connection to the mirror: read-write (holding the lock) or read-only."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: WriterLock | None) -> None:
        self.path = path
        self.conn = conn
        self.lock = lock
        self.readonly = lock is None

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        p = Path(path).expanduser().absolute()
        if readonly:
            if not p.exists():
                raise ContactSyncError(f"{p}: no mirror database here (run a sync first)")
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            store = cls(p, conn, None)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ContactSyncError(
                    f"{p}: schema version {version} is newer than this agent ({SCHEMA_VERSION})"
                )
            return store
        _create_private_file(p)
        lock = WriterLock(p)
        lock.acquire()
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit the change feed has published survives a power cut.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA cache_size = -131072")
            conn.execute("PRAGMA temp_store = MEMORY")
            store = cls(p, conn, lock)
            store._migrate()
            store._abort_stale_runs()
        except BaseException:
            lock.release()
            raise
        return store

    def close(self) -> None:
        if not self.readonly:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        if self.lock is not None:
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
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def checkpoint(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

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
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'contact_id_hwm'").fetchone()
        if row is None:
            hwm = self.conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()[0]
        else:
            hwm = int(row[0])
        self.set_meta("contact_id_hwm", str(hwm + n))
        return int(hwm) + 1

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
        out = []
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
        self, rows: Iterable[Any], feed: Iterable[Any], run_id: int | None, at: str,
        reason_code: str, reason: str,
    ) -> None:
        """Bulk insert of new `sync` contacts and their feed entries, as rows
        made by the Rust batch: contacts (id, source, external_id, 14 fields,
        extra, phone_e164, mobile_e164, hash) and feed (contact id, payload)."""
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

    # ------------------------------------------------------------ runs

    def begin_run(self, source: str, mode: str, origin: str | None, origin_hash: str | None,
                  allow_mass_delete: bool) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO runs (source, mode, origin, origin_hash, started_at, status, "
                "allow_mass_delete) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (source, mode, origin, origin_hash, now_iso(), int(allow_mass_delete)),
            )
            return int(cur.lastrowid or 0)

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
