"""Keeping the mirror: erasure (`purge`), online copies (`backup`) and `restore`.

- `purge` hard-deletes contacts soft-deleted longer ago than a cut-off and
  blanks every stored copy of their data (change-feed payloads, activity
  fields, review explanations, held values), plus the raw text of
  quarantined rows and the error text of runs older than the cut-off (and of
  any age when they hold a purged contact's e-mail, phone or name). Feed rows
  stay (payload `{}`), so `seq` only ever grows; a `purge` entry tells feed
  readers the contact is gone. Local ids come from the `contact_id_hwm`
  high-water mark, so a purged id is never handed out again. Runs with
  `secure_delete` on and then waits (bounded) for a TRUNCATE checkpoint, so
  the erased values do not linger in free pages or the WAL; when a reader
  keeps that from completing, the erasure is recorded as pending (`meta`)
  and reported incomplete, until a later checkpoint completes it.
- `prune_files` removes `processed/` and `failed/` files and the hidden
  copies killed `backup`/`restore` runs left, past the retention period
  (`[agent] retention`); `purge` (CLI) and the daemon call it.
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

Orchestration only: every SQL statement and database connection of these is
the store's (`store/maintenance.py`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contactsync_agent.config import AgentConfig
from contactsync_agent.errors import ContactSyncError, LockedError
from contactsync_agent.locking import AgentLock, WriterLock, real_db_path
from contactsync_agent.store import Store
from contactsync_agent.store.maintenance import (  # re-exported: the API's names
    backup_copy,
    check_mirror_file,
    file_last_seq,
    fold_wal,
    restore_copy,
)

#: How long `purge` waits for readers to let go of the WAL (seconds).
PURGE_WAIT = 30.0
# Hidden copies of a backup or restore in progress: `.NAME.partial-PID`,
# `.NAME.restore-PID` and SQLite's `-journal` beside them.
_HIDDEN_COPY = re.compile(r"^\..+\.(?:partial|restore)-(\d+)(?:-journal)?$")


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str
    contacts: int
    kept_in_use: int
    changes_blanked: int
    activities_blanked: int
    reviews_blanked: int
    quarantine_blanked: int
    run_errors_blanked: int = 0
    # False while the erased values may still be in the WAL (a reader kept the
    # checkpoint from finishing): `status` shows the erasure as pending until a
    # later checkpoint (the agent's idle one, or another purge) completes it.
    complete: bool = True
    pending_since: str | None = None
    wal_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PruneReport:
    """Files `prune_files` removed (paths), and the ones it could not remove."""

    removed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "failed": list(self.failed)}


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


def purge(store: Store, older_than_days: float, *, now: datetime | None = None,
          wait: float = PURGE_WAIT) -> PurgeReport:
    """Hard-deletes contacts soft-deleted more than `older_than_days` ago (see module doc).

    Contacts registered as in use (`contact_references`) are kept and counted.
    Then waits up to `wait` seconds for a TRUNCATE checkpoint; when readers keep
    it from completing, the report says `complete=False` and the erasure stays
    recorded as pending (`Store.erasure_pending`) until a checkpoint completes.
    """
    if store.readonly:
        raise ContactSyncError("purge needs the writer: the mirror is open read-only")
    if older_than_days < 0:
        raise ContactSyncError("--older-than must be 0 days or more")
    cutoff = _iso((now or datetime.now(UTC)) - timedelta(days=older_than_days))
    erased = store.maintenance.erase(cutoff)
    # Old page images of the erased rows live in the WAL until it is reset; a
    # reader holding a transaction keeps it from being reset.
    store.idle_checkpoint(wait, force=True)
    pending = store.erasure_pending()
    return PurgeReport(cutoff, len(erased.purged), erased.kept_in_use, erased.changes,
                       erased.activities, erased.reviews, erased.quarantine,
                       erased.run_errors, complete=pending is None,
                       pending_since=pending.get("since") if pending else None,
                       wal_bytes=store.wal_bytes())


def recheck_erasure(db_path: str | os.PathLike[str], report: PurgeReport) -> PurgeReport:
    """`report` brought up to date from the mirror (read-only): closing the
    writer checkpoints once more, which may have completed the erasure."""
    from dataclasses import replace

    ro = Store.open(db_path, readonly=True)
    try:
        pending = ro.erasure_pending()
        return replace(report, complete=pending is None,
                       pending_since=pending.get("since") if pending else None,
                       wal_bytes=ro.wal_bytes())
    finally:
        ro.close()


# ---------------------------------------------------------------- retention of files


def _pid_gone(pid: int) -> bool:
    if os.name != "posix":
        return False  # cannot tell safely: the age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _regular_files(folder: Path, failed: list[str] | None) -> list[tuple[str, os.stat_result]]:
    """The regular files directly in `folder` (never through a link), with their
    stat; none when the folder is a link or missing. A folder that cannot be
    listed goes into `failed` (when given)."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        if failed is not None:
            failed.append(str(folder))
        return []
    out: list[tuple[str, os.stat_result]] = []
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False):
                out.append((e.path, e.stat(follow_symlinks=False)))
        except OSError:
            continue
    return out


def prune_files(folders: Iterable[Path], copies_in: Iterable[Path], older_than: float, *,
                now: float | None = None) -> PruneReport:
    """Removes what personal data lingers in files past the retention period.

    - every regular file in each of `folders` (the watched folders'
      `processed/` and `failed/`, with their error notes) last changed more
      than `older_than` seconds ago (the time of the move, ctime, counts: a
      file keeps its export's mtime when it is moved);
    - in each of `copies_in` (the database's folder, backup folders), the
      hidden copies a killed `backup` or `restore` left
      (`.NAME.partial-PID`, `.NAME.restore-PID`, their `-journal`): those of
      a process that is gone (POSIX; a live one may still be writing its
      copy), or, where that cannot be told (Windows), older than `older_than`.

    Links and folders are never followed or removed; a missing folder is
    skipped. Never raises for one file: what could not go is listed.
    """
    cut = (time.time() if now is None else now) - older_than
    removed: list[str] = []
    failed: list[str] = []

    def remove(path: str) -> None:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError:
            failed.append(path)

    for folder in folders:
        for path, st in _regular_files(folder, failed):
            if max(st.st_mtime, st.st_ctime) < cut:
                remove(path)
    for folder in copies_in:
        for path, st in _regular_files(folder, None):
            m = _HIDDEN_COPY.match(os.path.basename(path))
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == os.getpid():
                continue
            if _pid_gone(pid) if os.name == "posix" else st.st_mtime < cut:
                remove(path)
    return PruneReport(tuple(removed), tuple(failed))


def retention_folders(config: AgentConfig) -> list[Path]:
    """`processed/` and `failed/` of every folder source of `config`."""
    out: list[Path] = []
    for s in config.sources.values():
        if s.kind == "folder" and s.path:
            base = Path(s.path)
            out += [base / "processed", base / "failed"]
    return out


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
        backup_copy(src_path, tmp)
        version, contacts = check_mirror_file(tmp)
        last_seq = file_last_seq(tmp)
        _fsync_file(tmp)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
        # Copies earlier backups into this folder left when they were killed.
        prune_files([], [out.parent], float("inf"))
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
            restore_copy(src, tmp)
            check_mirror_file(tmp)
            _fsync_file(tmp)
            kept: Path | None = None
            if db.exists():
                # Fold the WAL into the file, so the file alone is the whole old mirror.
                fold_wal(db)
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


__all__ = ["BackupReport", "PruneReport", "PurgeReport", "RestoreReport", "backup",
           "check_mirror_file", "prune_files", "purge", "recheck_erasure", "restore",
           "retention_folders"]
