"""`store.maintenance` and the file-level SQL of `maintenance.py`: the erasure
statements of `purge`, and the connections `backup`, `restore` and the backup
check open on database files (SQLite's online backup API, the integrity check,
folding a WAL into its file).

SQL and SQLite calls only: the orchestration (cut-offs, files, locks, reports,
retention) stays in `maintenance.py`. It must not take the agent or writer
lock itself (restore holds them around these calls).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from contactsync_agent.errors import ContactSyncError
from contactsync_agent.store.part import Part, now_iso, readonly_uri
from contactsync_agent.store.schema import SCHEMA_VERSION

REQUIRED_TABLES = ("contacts", "changes", "runs", "meta")
#: Contact fields whose values purge also looks for in free text (quarantined
#: raw rows, run errors), when at least this long (shorter ones match anything).
TRACED_FIELDS = ("email", "phone", "mobile", "display_name")
MIN_TRACED_LENGTH = 6
ERASED_ERROR = "(the error text was erased by purge)"
# Rows that belong to one contact and go with it when it is purged (schema 2:
# values held back by field ownership, the contact's organisation link; schema 5:
# two-way bases and outbox entries, which hold values too).
PER_CONTACT_TABLES = ("held_values", "contact_organisations", "field_bases", "outbox")


@dataclass(frozen=True)
class Erasure:
    """What one purge's statements did: the purged ids, contacts kept because in
    use, and the rows of each table whose copies were blanked."""

    purged: list[int]
    kept_in_use: int
    changes: int
    activities: int
    reviews: int
    quarantine: int
    run_errors: int


class Maintenance(Part):
    """The erasure of `purge`, on the store's connection."""

    def erase(self, cutoff: str) -> Erasure:
        """Hard-deletes contacts soft-deleted before `cutoff` (not in use) and
        blanks every stored copy of their data, with `secure_delete` on, in one
        transaction under the writer lock; records the erasure as pending when
        anything was erased (see `maintenance.purge`)."""
        store = self._store
        conn = self.conn
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
                # Values distinctive enough to look for in free text (raw rows, errors).
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_values (v TEXT PRIMARY KEY)")
                conn.execute("DELETE FROM temp.purge_values")
                for col in TRACED_FIELDS:
                    conn.execute(
                        f"INSERT OR IGNORE INTO temp.purge_values SELECT {col} FROM contacts "
                        f"WHERE id IN ({ids}) AND length({col}) >= {MIN_TRACED_LENGTH}")
                has_value = ("EXISTS (SELECT 1 FROM temp.purge_values p "
                             "WHERE instr({0}, p.v) > 0)")
                # A bulk create's entry holding its payload by reference ('')
                # is blanked too, and keeps its time (schema 6).
                changes = conn.execute(
                    "UPDATE change_log SET fields = '{}', at = iif(at != '', at, (SELECT "
                    "created_at FROM contacts c WHERE c.id = change_log.contact_id)) "
                    f"WHERE contact_id IN ({ids}) AND fields != '{{}}'"
                ).rowcount
                activities = conn.execute(
                    f"UPDATE activities SET fields = '{{}}', resolution = NULL "
                    f"WHERE contact_id IN ({ids})"
                ).rowcount
                # An item names its incoming record's external id (the purged
                # contact's when it is the item's contact); a rejected pair is
                # remembered by that id, or by the purged local candidate.
                reviews = conn.execute(
                    f"UPDATE review_items SET explanation = '{{}}', external_id = "
                    f"iif(contact_id IN ({ids}), '', external_id) WHERE contact_id IN ({ids}) "
                    f"OR candidate_id IN ({ids})"
                ).rowcount
                conn.execute(
                    f"DELETE FROM review_rejections WHERE candidate_id IN ({ids}) OR "
                    f"(source, external_id) IN (SELECT source, external_id FROM contacts "
                    f"WHERE id IN ({ids}) AND external_id IS NOT NULL)"
                )
                # Quarantined rows and run errors may quote anyone, even people never
                # imported: blanked once older than the cut-off, and at any age when
                # they hold a value of a purged contact.
                quarantine = conn.execute(
                    "UPDATE quarantine SET raw = '' WHERE raw != '' AND (created_at < ? OR "
                    + has_value.format("quarantine.raw") + ")", (cutoff,)
                ).rowcount
                conn.execute("UPDATE quarantine SET reason = ? WHERE "
                             + has_value.format("quarantine.reason"), (ERASED_ERROR,))
                run_errors = conn.execute(
                    "UPDATE runs SET error = ? WHERE error IS NOT NULL AND error != ? "
                    "AND status != 'running' AND (started_at < ? OR "
                    + has_value.format("runs.error") + ")", (ERASED_ERROR, ERASED_ERROR, cutoff)
                ).rowcount
                purged = [r[0] for r in conn.execute(ids + " ORDER BY id")]
                at = now_iso()
                conn.executemany(
                    "INSERT INTO change_log (contact_id, run_id, op, fields, reason_code, reason, "
                    "at) VALUES (?, NULL, 'purge', '{}', 'purged', ?, ?)",
                    [(cid, f"purged: deleted before {cutoff[:10]} (erasure)", at)
                     for cid in purged],
                )
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                for table in PER_CONTACT_TABLES:  # what later schemas keep per contact
                    if table in tables:
                        conn.execute(f"DELETE FROM {table} WHERE contact_id IN ({ids})")
                conn.execute(f"DELETE FROM contacts WHERE id IN ({ids})")
                if "link_snapshot_parts" in tables:
                    # The delete dropped the sources' snapshot marks (trigger); their
                    # parts (schema 8) hold the purged contacts' external ids.
                    conn.execute("DELETE FROM link_snapshot_parts WHERE source NOT IN "
                                 "(SELECT source FROM link_snapshots)")
                conn.execute("DELETE FROM temp.purge_ids")
                conn.execute("DELETE FROM temp.purge_values")
                if purged or changes or activities or reviews or quarantine or run_errors:
                    # Cleared once a checkpoint has emptied the WAL (below, or later).
                    store.mark_erasure_pending({"since": at, "contacts": len(purged),
                                                "purges": 1})
        finally:
            conn.execute("PRAGMA secure_delete = OFF")
        return Erasure(purged, int(kept), changes, activities, reviews, quarantine, run_errors)


# ---------------------------------------------------------------- database files


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
        # `changes` is a view from schema 6 on.
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
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


def backup_copy(src_path: Path, tmp: Path) -> None:
    """`backup`'s copy of the mirror at `src_path` into the new file `tmp`:
    read-only (as every process but the writer must), every page in one step
    under one read transaction, then switched to a single-file journal."""
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


def restore_copy(src: Path, tmp: Path) -> None:
    """`restore`'s copy of the checked backup `src` into the new file `tmp`."""
    s = sqlite3.connect(readonly_uri(src), uri=True)
    d = sqlite3.connect(tmp)
    try:
        s.backup(d, pages=-1)
        d.execute("PRAGMA journal_mode = DELETE")
    finally:
        d.close()
        s.close()


def file_last_seq(path: Path) -> int:
    """The change-feed position of a database file (a backup just written)."""
    conn = sqlite3.connect(readonly_uri(path), uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])
    finally:
        conn.close()


def fold_wal(db: Path) -> None:
    """Folds the WAL of `db` into the file (TRUNCATE checkpoint), so the file alone
    is the whole database; the caller holds the writer lock. Closing this last
    connection deletes the WAL, unless another connection still has it open."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
