"""Keeping the mirror: erasure (`purge`), online copies (`backup`) and `restore`.

- `purge` hard-deletes contacts soft-deleted longer ago than a cut-off and
  blanks every stored copy of their data (change-feed payloads, activity
  fields, review explanations), plus the raw text of quarantined rows older
  than the cut-off. Feed rows stay (payload `{}`), so `seq` only ever grows;
  a `purge` entry tells feed readers the contact is gone. Local ids come from
  the `contact_id_hwm` high-water mark, so a purged id is never handed out
  again. Runs with `secure_delete` on and truncates the WAL afterwards, so the
  erased values do not linger in free pages.
- `backup` only reads the mirror (a `mode=ro` connection, as every process
  but the writer must) and copies it with SQLite's online backup API in one
  step: one read transaction, so the copy is one committed state even while
  the daemon writes. The copy is written to a private temporary file, checked,
  switched to a single-file journal mode and moved into place.
- `restore` checks the backup (integrity, schema version, the mirror's
  tables) before touching anything, then, holding the agent lock (so no
  agent runs) and the writer lock (no write under way), and once sure no
  other connection has the file open, keeps a copy of the current database,
  removes its WAL and swaps the backup in with an atomic rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.locking import AgentLock, WriterLock, real_db_path
from contactsync_agent.store import SCHEMA_VERSION, Store, now_iso, readonly_uri

REQUIRED_TABLES = ("contacts", "changes", "runs", "meta")
# Rows that belong to one contact and go with it when it is purged (schema 2:
# values held back by field ownership, the contact's organisation link).
PER_CONTACT_TABLES = ("held_values", "contact_organisations")


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str
    contacts: int
    kept_in_use: int
    changes_blanked: int
    activities_blanked: int
    reviews_blanked: int
    quarantine_blanked: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackupReport:
    path: str
    bytes: int
    schema_version: int
    contacts: int
    last_seq: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreReport:
    path: str
    restored_from: str
    previous_kept_at: str | None
    schema_version: int
    contacts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- purge


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def purge(store: Store, older_than_days: float, *, now: datetime | None = None) -> PurgeReport:
    """Hard-deletes contacts soft-deleted more than `older_than_days` ago (see module doc).

    Contacts registered as in use (`contact_references`) are kept and counted.
    """
    if store.readonly:
        raise ContactSyncError("purge needs the writer: the mirror is open read-only")
    if older_than_days < 0:
        raise ContactSyncError("--older-than must be 0 days or more")
    cutoff = _iso((now or datetime.now(UTC)) - timedelta(days=older_than_days))
    conn = store.conn
    conn.execute("PRAGMA secure_delete = ON")
    try:
        with store.transaction():
            # Pin the id high-water mark before any row goes (ids are never reused).
            top = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()[0]
            hwm = int(store.get_meta("contact_id_hwm") or 0)
            if top > hwm:
                store.set_meta("contact_id_hwm", str(top))
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM temp.purge_ids")
            conn.execute(
                "INSERT INTO temp.purge_ids SELECT id FROM contacts "
                "WHERE deleted_at IS NOT NULL AND deleted_at < ? "
                "AND id NOT IN (SELECT contact_id FROM contact_references)",
                (cutoff,),
            )
            kept = conn.execute(
                "SELECT count(DISTINCT c.id) FROM contacts c JOIN contact_references r "
                "ON r.contact_id = c.id WHERE c.deleted_at IS NOT NULL AND c.deleted_at < ?",
                (cutoff,),
            ).fetchone()[0]
            ids = "SELECT id FROM temp.purge_ids"
            changes = conn.execute(
                f"UPDATE changes SET fields = '{{}}' WHERE contact_id IN ({ids}) "
                "AND fields != '{}'"
            ).rowcount
            activities = conn.execute(
                f"UPDATE activities SET fields = '{{}}', resolution = NULL "
                f"WHERE contact_id IN ({ids})"
            ).rowcount
            reviews = conn.execute(
                f"UPDATE review_items SET explanation = '{{}}' WHERE contact_id IN ({ids}) "
                f"OR candidate_id IN ({ids})"
            ).rowcount
            quarantine = conn.execute(
                "UPDATE quarantine SET raw = '' WHERE created_at < ? AND raw != ''", (cutoff,)
            ).rowcount
            purged = [r[0] for r in conn.execute(ids + " ORDER BY id")]
            at = now_iso()
            conn.executemany(
                "INSERT INTO changes (contact_id, run_id, op, fields, reason_code, reason, at) "
                "VALUES (?, NULL, 'purge', '{}', 'purged', ?, ?)",
                [(cid, f"purged: deleted before {cutoff[:10]} (erasure)", at) for cid in purged],
            )
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in PER_CONTACT_TABLES:  # what later schemas keep per contact
                if table in tables:
                    conn.execute(f"DELETE FROM {table} WHERE contact_id IN ({ids})")
            conn.execute(f"DELETE FROM contacts WHERE id IN ({ids})")
            conn.execute("DELETE FROM temp.purge_ids")
    finally:
        conn.execute("PRAGMA secure_delete = OFF")
    # Old page images of the erased rows live in the WAL until it is reset.
    with store.writing(), contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return PurgeReport(cutoff, len(purged), int(kept), changes, activities, reviews, quarantine)


# ---------------------------------------------------------------- backup


def _private_new_file(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    # Windows: os.fsync (FlushFileBuffers) needs a handle open for writing.
    fd = os.open(path, os.O_RDWR if sys.platform == "win32" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_mirror_file(path: Path) -> tuple[int, int]:
    """Checks a database file is a whole, readable mirror this agent can open.

    Returns (schema version, contacts). Raises ContactSyncError naming the problem.
    """
    if not path.is_file():
        raise ContactSyncError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error as e:
        raise ContactSyncError(f"{path}: cannot open as SQLite: {e}") from None
    try:
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            raise ContactSyncError(f"{path}: not a usable SQLite database: {e}") from None
        if result != ["ok"]:
            shown = "; ".join(str(r) for r in result[:3])
            raise ContactSyncError(f"{path}: integrity check failed: {shown}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if version < 1 or missing:
            raise ContactSyncError(
                f"{path}: not a contactsync mirror (schema version {version}"
                + (f", missing tables: {', '.join(missing)}" if missing else "")
                + ")"
            )
        if version > SCHEMA_VERSION:
            raise ContactSyncError(
                f"{path}: schema version {version} is newer than this agent ({SCHEMA_VERSION}); "
                "restore it with a newer contactsync-agent"
            )
        contacts = int(conn.execute("SELECT count(*) FROM contacts").fetchone()[0])
        return version, contacts
    finally:
        conn.close()


def backup(db_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupReport:
    """A consistent copy of the mirror at `dest`: a new file, or a folder to put
    one in with a timestamped name. `dest` names a folder when it is one or
    when it ends in a path separator (`bk/`); such a folder must exist.

    Safe while the daemon runs: the mirror is only read.
    """
    src_path = Path(db_path).expanduser().absolute()
    if not src_path.is_file():
        raise ContactSyncError(f"{src_path}: no mirror database here")
    text = os.fspath(dest)
    out = Path(dest).expanduser().absolute()
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if text.endswith(seps) and not out.is_dir():
        raise ContactSyncError(
            f"{out}{os.sep}: no such folder (the path ends in {os.sep!r}, so the backup "
            "goes into that folder); create it first, or name a file")
    if out.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder, n = out, 1
        out = folder / f"{src_path.stem}-{stamp}.db"
        while out.exists():  # two backups in the same second
            n += 1
            out = folder / f"{src_path.stem}-{stamp}-{n}.db"
    if out.exists():
        raise ContactSyncError(f"{out}: already exists; choose a new backup file name")
    if out.resolve() == src_path.resolve():
        raise ContactSyncError(f"{out}: is the mirror itself")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _private_new_file(tmp)
    try:
        src = sqlite3.connect(readonly_uri(src_path), uri=True)
        try:
            src.execute("PRAGMA busy_timeout = 10000")
            dst = sqlite3.connect(tmp)
            try:
                # pages=-1: every page in one step, under one read transaction.
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        version, contacts = check_mirror_file(tmp)
        conn = sqlite3.connect(readonly_uri(tmp), uri=True)
        try:
            last_seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])
        finally:
            conn.close()
        _fsync_file(tmp)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        for p in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise
    return BackupReport(str(out), out.stat().st_size, version, contacts, last_seq)


# ---------------------------------------------------------------- restore


def restore(db_path: str | os.PathLike[str], backup_path: str | os.PathLike[str]) -> RestoreReport:
    """Replaces the mirror with a checked backup; the old database is kept beside it.

    Needs the agent stopped and no write under way (agent and writer locks; a
    LockedError says who holds them), and no other program with the mirror open.
    """
    db = real_db_path(db_path)  # a symlink stays a symlink: the file it names is replaced
    src = Path(backup_path).expanduser().absolute()
    version, contacts = check_mirror_file(src)  # before anything is touched
    if db.exists() and src.resolve() == db.resolve():
        raise ContactSyncError(f"{src}: is the mirror itself")
    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # No agent may have the file open (it would go on writing the old one), and
    # no write may be under way.
    agent = AgentLock(db)
    agent.acquire()
    lock = WriterLock(db)
    try:
        lock.acquire()
    except BaseException:
        agent.release()
        raise
    try:
        tmp = db.with_name(f".{db.name}.restore-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _private_new_file(tmp)
        try:
            s = sqlite3.connect(readonly_uri(src), uri=True)
            d = sqlite3.connect(tmp)
            try:
                s.backup(d, pages=-1)
                d.execute("PRAGMA journal_mode = DELETE")
            finally:
                d.close()
                s.close()
            check_mirror_file(tmp)
            _fsync_file(tmp)
            kept: Path | None = None
            if db.exists():
                # Fold the WAL into the file, so the file alone is the whole old mirror.
                conn = sqlite3.connect(db)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()
                if db.with_name(db.name + "-wal").exists():
                    # The last connection to close deletes the WAL: another one is
                    # still open (a program with the mirror open), and would go on
                    # using the old file.
                    raise LockedError(str(db), None, purpose="the mirror is still open in "
                                      "another program or reader: close it first")
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                kept = db.with_name(f"{db.name}.pre-restore-{stamp}")
                n = 1
                while kept.exists():
                    kept = db.with_name(f"{db.name}.pre-restore-{stamp}-{n}")
                    n += 1
                try:
                    os.link(db, kept)  # the old file itself, under a new name
                except OSError:
                    shutil.copy2(db, kept)
                os.chmod(kept, 0o600)
            # A WAL left over from the old file must never be applied to the new one.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    db.with_name(db.name + suffix).unlink()
            os.replace(tmp, db)
            _fsync_dir(db.parent)
        except BaseException:
            for p in (tmp, tmp.with_name(tmp.name + "-journal")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            raise
    finally:
        lock.release()
        agent.release()
    return RestoreReport(str(db), str(src), str(kept) if kept else None, version, contacts)


__all__ = ["BackupReport", "PurgeReport", "RestoreReport", "backup", "check_mirror_file",
           "purge", "restore"]
